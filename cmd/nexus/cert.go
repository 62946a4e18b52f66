package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
)

func pkiDir(opts *globalOptions) pki.Dir {
	return pki.Dir{Path: filepath.Join(opts.dataDir, "pki")}
}

func newCertCommand(opts *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Manage the cluster's certificate authority and this machine's certificate",
		Long: `Manage the cluster's PKI: a root CA, an issuing intermediate, and short-lived
certificates (24 h by default) whose only URI SAN is the holder's SPIFFE ID.
Private keys never leave the machine that uses them: every certificate is issued
from a certificate signing request. State lives in <data-dir>/pki.`,
	}
	cmd.AddCommand(
		newCertInitCommand(opts),
		newCertShowCommand(opts),
		newCertIssueCommand(opts),
		newCertRenewCommand(opts),
		newCertRevokeCommand(opts),
		newCertRotateIntermediateCommand(opts),
	)
	return cmd
}

func newCertInitCommand(opts *globalOptions) *cobra.Command {
	var (
		cluster, name, passFile string
		cfg                     pki.InitConfig
	)
	cmd := &cobra.Command{
		Use:   "init --cluster NAME",
		Short: "Create the cluster's root and intermediate CA and this server's certificate",
		Long: `Create a new certificate authority in <data-dir>/pki: a root CA (10 years), an
issuing intermediate (1 year) signed by it, the trust bundle, an empty signed
revocation list, and a server certificate for this machine.

The root key is needed only to rotate the intermediate: encrypt it with
--passphrase-file (scrypt + AES-256-GCM) or keep root.key offline. The command
refuses to overwrite an existing CA.`,
		Example: `  nexus cert init --cluster prod --passphrase-file /root/ca-passphrase`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cluster == "" {
				return errors.New("--cluster is required: the cluster's name, used as the SPIFFE trust domain (e.g. --cluster prod)")
			}
			if name == "" {
				h, err := os.Hostname()
				if err != nil {
					return fmt.Errorf("find this machine's name: %w: pass --name", err)
				}
				name = strings.ToLower(h)
			}
			if err := identity.Server(cluster, name).Validate(); err != nil {
				return fmt.Errorf("%w: pass a valid --cluster and --name", err)
			}
			pass, err := readPassphrase(passFile)
			if err != nil {
				return err
			}
			cfg.Cluster, cfg.ServerName, cfg.Passphrase = cluster, name, pass
			d := pkiDir(opts)
			if err := d.Init(cfg); err != nil {
				return err
			}
			root, err := d.RootCert()
			if err != nil {
				return err
			}
			keyNote := "encrypted with the passphrase"
			if pass == nil {
				keyNote = "NOT encrypted: keep it offline, or use --passphrase-file next time"
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Created the CA for cluster %q in %s\n", cluster, d.Path)
			fmt.Fprintf(w, "  root CA:       %s (key %s, %s)\n", pki.RootCertFile, pki.RootKeyFile, keyNote)
			fmt.Fprintf(w, "  intermediate:  %s\n", pki.IntermediateCertFile)
			fmt.Fprintf(w, "  this server:   %s in %s\n", identity.Server(cluster, name), pki.NodeCertFile)
			fmt.Fprintf(w, "  root pin:      %s\n", pki.Pin(root))
			fmt.Fprintf(w, "Next: nexus token create --role agent, to let other machines join.\n")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cluster, "cluster", "", "cluster name, the SPIFFE trust domain (required; a-z, 0-9, '-', '.', '_')")
	f.StringVar(&name, "name", "", "this server's name in its certificate (default: the host name)")
	f.StringVar(&passFile, "passphrase-file", "", "file holding a passphrase that encrypts the root CA key")
	f.DurationVar(&cfg.RootTTL, "root-ttl", pki.DefaultRootTTL, "lifetime of the root CA")
	f.DurationVar(&cfg.IntermediateTTL, "intermediate-ttl", pki.DefaultIntermediateTTL, "lifetime of the intermediate CA")
	f.DurationVar(&cfg.LeafTTL, "ttl", pki.DefaultLeafTTL, "lifetime of this server's certificate")
	return cmd
}

// certInfo is what `cert show` prints about one certificate.
type certInfo struct {
	Subject     string    `json:"subject"`
	SPIFFEID    string    `json:"spiffeId,omitempty"`
	TrustDomain string    `json:"trustDomain,omitempty"`
	Serial      string    `json:"serial"`
	NotBefore   time.Time `json:"notBefore"`
	NotAfter    time.Time `json:"notAfter"`
	Remaining   string    `json:"remaining"`
	Expired     bool      `json:"expired"`
	Issuer      string    `json:"issuer"`
	Fingerprint string    `json:"fingerprint"`
	IsCA        bool      `json:"isCA"`
	Pin         string    `json:"pin,omitempty"`
}

func describeCert(c *x509.Certificate, now time.Time) certInfo {
	info := certInfo{
		Subject:     c.Subject.String(),
		Serial:      pki.SerialString(c),
		NotBefore:   c.NotBefore.UTC(),
		NotAfter:    c.NotAfter.UTC(),
		Expired:     now.After(c.NotAfter),
		Issuer:      c.Issuer.String(),
		Fingerprint: "sha256:" + pki.Fingerprint(c),
		IsCA:        c.IsCA,
	}
	if info.Expired {
		info.Remaining = "expired " + now.Sub(c.NotAfter).Round(time.Second).String() + " ago"
	} else {
		info.Remaining = c.NotAfter.Sub(now).Round(time.Second).String()
	}
	if c.IsCA {
		info.TrustDomain, _ = pki.TrustDomain(c)
		info.Pin = pki.Pin(c)
	} else if id, err := pki.LeafIdentity(c); err == nil {
		info.SPIFFEID = id.String()
	} else {
		info.SPIFFEID = "(none: " + err.Error() + ")"
	}
	return info
}

func newCertShowCommand(opts *globalOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "show [FILE]",
		Short: "Show the certificates in a PEM file (default: this machine's certificate)",
		Long: `Show each certificate in a PEM file: subject, SPIFFE ID (or trust domain and
pin for a CA), serial, validity and remaining time, issuer and SHA-256
fingerprint. Without FILE it shows <data-dir>/pki/node.crt.`,
		Example: `  nexus cert show
  nexus cert show /var/lib/nexus/pki/bundle.pem -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("unknown output format %q: use text or json", output)
			}
			path := filepath.Join(pkiDir(opts).Path, pki.NodeCertFile)
			if len(args) == 1 {
				path = args[0]
			}
			certs, err := pki.ReadCertificatesFile(path)
			if err != nil {
				return fmt.Errorf("%w: give a PEM certificate file, or create this machine's with nexus cert init", err)
			}
			now := time.Now()
			infos := make([]certInfo, len(certs))
			for i, c := range certs {
				infos[i] = describeCert(c, now)
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), infos)
			}
			return printCertInfos(cmd.OutOrStdout(), path, infos)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func printCertInfos(w io.Writer, path string, infos []certInfo) error {
	var b bytes.Buffer
	for i, in := range infos {
		fmt.Fprintf(&b, "%s: certificate %d of %d\n", path, i+1, len(infos))
		fmt.Fprintf(&b, "  Subject:      %s\n", in.Subject)
		if in.IsCA {
			fmt.Fprintf(&b, "  CA for:       %s\n", in.TrustDomain)
			fmt.Fprintf(&b, "  Pin:          %s\n", in.Pin)
		} else {
			fmt.Fprintf(&b, "  SPIFFE ID:    %s\n", in.SPIFFEID)
		}
		fmt.Fprintf(&b, "  Serial:       %s\n", in.Serial)
		fmt.Fprintf(&b, "  Valid:        %s to %s\n", in.NotBefore.Format(time.RFC3339), in.NotAfter.Format(time.RFC3339))
		fmt.Fprintf(&b, "  Remaining:    %s\n", in.Remaining)
		fmt.Fprintf(&b, "  Issuer:       %s\n", in.Issuer)
		fmt.Fprintf(&b, "  Fingerprint:  %s\n", in.Fingerprint)
	}
	_, err := w.Write(b.Bytes())
	return err
}

func newCertIssueCommand(opts *globalOptions) *cobra.Command {
	var (
		user, node, server, out string
		ttl                     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "issue (--user|--node|--server) NAME --out DIR",
		Short: "Issue a certificate from the local CA (key made here, signed from a CSR)",
		Long: `Make a new private key and CSR on this machine and sign it with the local
intermediate CA. Writes DIR/NAME.key (mode 0600), DIR/NAME.crt (the chain, leaf
first) and DIR/ca.pem (the trust bundle), creating DIR if needed; if it fails,
it leaves nothing it created behind. NAME is a-z, 0-9, '-', '.', '_' (and '@'),
at most 251 characters, since it is also a file name. Use it for people and
tools (--user); nodes and servers normally get theirs by joining with a token.`,
		Example: `  nexus cert issue --user alice --out ./alice-creds`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("--out is required: the directory to write NAME.key, NAME.crt and ca.pem to")
			}
			d := pkiDir(opts)
			root, err := d.RootCert()
			if err != nil {
				return err
			}
			cluster, err := pki.TrustDomain(root)
			if err != nil {
				return err
			}
			var ids []identity.ID
			for _, c := range []struct {
				name string
				mk   func(string, string) identity.ID
			}{{user, identity.User}, {node, identity.Node}, {server, identity.Server}} {
				if c.name != "" {
					ids = append(ids, c.mk(cluster, c.name))
				}
			}
			if len(ids) != 1 {
				return errors.New("give exactly one of --user, --node or --server")
			}
			id := ids[0]
			if err := id.Validate(); err != nil {
				return err
			}
			files, err := d.IssueFiles(out, id, ttl)
			if err != nil {
				return err
			}
			leaf := files.Chain[0]
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Issued %s (serial %s), valid until %s\n", id, pki.SerialString(leaf), leaf.NotAfter.UTC().Format(time.RFC3339))
			fmt.Fprintf(w, "  key:         %s (0600: keep it private)\n", files.KeyFile)
			fmt.Fprintf(w, "  certificate: %s\n", files.CertFile)
			fmt.Fprintf(w, "  trust:       %s\n", files.BundleFile)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&user, "user", "", "issue a user certificate (spiffe://<cluster>/user/NAME)")
	f.StringVar(&node, "node", "", "issue a node certificate (spiffe://<cluster>/node/NAME)")
	f.StringVar(&server, "server", "", "issue a server certificate (spiffe://<cluster>/server/NAME)")
	f.StringVar(&out, "out", "", "directory to write the key, certificate and trust bundle to (required)")
	f.DurationVar(&ttl, "ttl", pki.DefaultLeafTTL, "certificate lifetime")
	return cmd
}

func newCertRenewCommand(opts *globalOptions) *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "renew",
		Short: "Renew this machine's certificate now, with a new key, from the local CA",
		Long: `Renew <data-dir>/pki/node.crt now: make a new key and CSR and have the local
intermediate CA sign it for the same SPIFFE ID. A running server renews on its
own at half-life; use this after a rotation or if the certificate expired.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			chain, err := pkiDir(opts).RenewNode(context.Background(), ttl)
			if err != nil {
				return err
			}
			id, _ := pki.LeafIdentity(chain[0])
			fmt.Fprintf(cmd.OutOrStdout(), "Renewed %s: serial %s, valid until %s\n", id, pki.SerialString(chain[0]), chain[0].NotAfter.UTC().Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", pki.DefaultLeafTTL, "certificate lifetime")
	return cmd
}

func newCertRevokeCommand(opts *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke SERIAL...",
		Short: "Revoke certificates by serial number",
		Long: `Add serial numbers (hex, as nexus cert show prints them) to the cluster's
revocation list, re-sign it with the intermediate CA and save it to
<data-dir>/pki/revocations.json. Every verifier refuses a revoked certificate
once it has the new list.`,
		Example: `  nexus cert revoke 3f9a0c...`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var serials []*big.Int
			for _, a := range args {
				s, err := pki.ParseSerial(a)
				if err != nil {
					return err
				}
				serials = append(serials, s)
			}
			rl, err := pkiDir(opts).Revoke(serials...)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Revoked %s; revocation list #%d now holds %d serial(s)\n", strings.Join(args, ", "), rl.Number(), len(rl.Serials()))
			return nil
		},
	}
}

func newCertRotateIntermediateCommand(opts *globalOptions) *cobra.Command {
	var (
		passFile      string
		finish, force bool
		ttl, leafTTL  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "rotate-intermediate",
		Short: "Replace the issuing intermediate CA, with an overlap in which both are trusted",
		Long: `Start an intermediate rotation: sign a new intermediate with the root (give
--passphrase-file if the root key is encrypted), add it to the trust bundle
next to the old one, issue from it from now on and renew this machine's
certificate from it. Certificates from the old intermediate keep verifying.

After one leaf lifetime (--leaf-ttl, 24 h by default) every certificate has
renewed from the new intermediate; then run it again with --finish to remove
the old intermediate from the bundle.`,
		Example: `  nexus cert rotate-intermediate --passphrase-file /root/ca-passphrase
  nexus cert rotate-intermediate --finish`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d := pkiDir(opts)
			if finish {
				if err := d.FinishIntermediateRotation(force, leafTTL); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "Removed the old intermediate from the trust bundle; the rotation is finished.")
				return nil
			}
			pass, err := readPassphrase(passFile)
			if err != nil {
				return err
			}
			safe, err := d.StartIntermediateRotation(pass, ttl, leafTTL)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Issuing from a new intermediate; the old one stays trusted.\nAfter %s run: nexus cert rotate-intermediate --finish\n", safe.UTC().Format(time.RFC3339))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&passFile, "passphrase-file", "", "file holding the root key's passphrase")
	f.BoolVar(&finish, "finish", false, "finish the rotation: drop the old intermediate from the bundle")
	f.BoolVar(&force, "force", false, "with --finish: do not wait one leaf lifetime")
	f.DurationVar(&ttl, "ttl", pki.DefaultIntermediateTTL, "lifetime of the new intermediate")
	f.DurationVar(&leafTTL, "leaf-ttl", pki.DefaultLeafTTL, "lifetime of leaf certificates, i.e. how long the overlap must last")
	return cmd
}

// maxPassphraseFileSize bounds --passphrase-file: a passphrase is a line.
const maxPassphraseFileSize = 4 << 10

// readPassphrase reads a passphrase file (trailing newline removed); an
// empty name means no passphrase.
func readPassphrase(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	data, err := fsutil.ReadFileLimit(path, maxPassphraseFileSize)
	if err != nil {
		return nil, fmt.Errorf("read passphrase: %w", err)
	}
	data = bytes.TrimRight(data, "\r\n")
	if len(data) == 0 {
		return nil, fmt.Errorf("passphrase file %s is empty: write the passphrase into it", path)
	}
	return data, nil
}
