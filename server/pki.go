package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
)

// The API's serving certificate: the server's identity plus the names and
// addresses clients dial, issued by the cluster CA.
const (
	ServingCertFile = "api.crt"
	ServingKeyFile  = "api.key"
	// AgentCertFile and AgentKeyFile are the node certificate of the
	// agent `nexus up` runs beside the server.
	AgentCertFile = "agent.crt"
	AgentKeyFile  = "agent.key"
)

// servingNames are the DNS names and addresses the serving certificate
// covers: loopback, this host's name and addresses, and what the operator
// advertises.
func servingNames(advertise []string) (dns []string, ips []net.IP) {
	dns = []string{"localhost"}
	ips = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if h, err := os.Hostname(); err == nil && h != "" {
		dns = append(dns, h)
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && !ipn.IP.IsLinkLocalUnicast() {
				ips = append(ips, ipn.IP)
			}
		}
	}
	for _, a := range advertise {
		if ip := net.ParseIP(a); ip != nil {
			ips = append(ips, ip)
		} else if a != "" {
			dns = append(dns, a)
		}
	}
	slices.Sort(dns)
	dns = slices.Compact(dns)
	slices.SortFunc(ips, func(a, b net.IP) int { return slices.Compare(a.To16(), b.To16()) })
	ips = slices.CompactFunc(ips, func(a, b net.IP) bool { return a.Equal(b) })
	return dns, ips
}

// covers reports whether a serving certificate names every name and address.
func covers(leaf *x509.Certificate, dns []string, ips []net.IP) bool {
	for _, d := range dns {
		if !slices.Contains(leaf.DNSNames, d) {
			return false
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

// servingCredentials loads the API's serving certificate, issuing a new one
// when it is missing, expired or does not cover the names clients dial,
// and a Keeper that renews it at half-life.
func servingCredentials(d pki.Dir, id identity.ID, advertise []string, log *slog.Logger) (*pki.Credentials, *pki.Keeper, error) {
	dns, ips := servingNames(advertise)
	return keptLeaf(d, ServingCertFile, ServingKeyFile, id, pki.LeafOptions{DNSNames: dns, IPAddresses: ips}, "the API serving certificate", log.With("cert", "api"))
}

// keptLeaf loads the certificate in certName/keyName of d when it is for
// id, unexpired and has opts' names, or issues a new one from the local CA
// otherwise, and returns its credentials with a keeper that renews it.
func keptLeaf(d pki.Dir, certName, keyName string, id identity.ID, opts pki.LeafOptions, what string, log *slog.Logger) (*pki.Credentials, *pki.Keeper, error) {
	certFile, keyFile := filepath.Join(d.Path, certName), filepath.Join(d.Path, keyName)
	issue := func(_ context.Context, csr []byte) ([]*x509.Certificate, error) {
		issuer, err := d.Issuer(0)
		if err != nil {
			return nil, err
		}
		return issuer.SignLeaf(csr, id, opts)
	}
	bundle, err := d.Bundle()
	if err != nil {
		return nil, nil, err
	}
	chain, key, err := loadPair(certFile, keyFile)
	usable := err == nil && chain[0].NotAfter.After(time.Now()) && covers(chain[0], opts.DNSNames, opts.IPAddresses)
	if usable {
		if leafID, err := pki.LeafIdentity(chain[0]); err != nil || leafID != id {
			usable = false
		}
	}
	if !usable {
		if key, err = pki.GenerateKey(); err != nil {
			return nil, nil, err
		}
		csr, err := pki.CreateCSR(key, id)
		if err != nil {
			return nil, nil, err
		}
		if chain, err = issue(context.Background(), csr); err != nil {
			return nil, nil, fmt.Errorf("issue %s: %w", what, err)
		}
		if err := pki.WriteKeyFile(keyFile, key, nil); err != nil {
			return nil, nil, err
		}
		if err := pki.WriteFileAtomic(certFile, pki.EncodeCertificates(chain...), 0o644); err != nil {
			return nil, nil, err
		}
		log.Info("issued "+what, "identity", id.String(), "dns", opts.DNSNames, "ips", opts.IPAddresses, "expires", chain[0].NotAfter.UTC().Format(time.RFC3339))
	}
	creds, err := pki.NewCredentials(pki.CredentialsConfig{Chain: chain, Key: key, Bundle: bundle})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certFile, err)
	}
	k, err := pki.NewKeeper(pki.KeeperConfig{Credentials: creds, CertFile: certFile, KeyFile: keyFile,
		BundleFile: filepath.Join(d.Path, pki.BundleFile), RevocationsFile: filepath.Join(d.Path, pki.RevocationsFile),
		Issue: issue, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	return creds, k, nil
}

func loadPair(certFile, keyFile string) ([]*x509.Certificate, *ecdsa.PrivateKey, error) {
	chain, err := pki.ReadCertificatesFile(certFile)
	if err != nil {
		return nil, nil, err
	}
	key, err := pki.ReadKeyFile(keyFile, nil)
	if err != nil {
		return nil, nil, err
	}
	return chain, key, nil
}

// localIssuer loads the issuing CA from d for the API's renewals of node
// certificates, or is nil on a server that does not hold its key.
func localIssuer(d pki.Dir) func() (*pki.Issuer, error) {
	if _, err := os.Stat(filepath.Join(d.Path, pki.IntermediateKeyFile)); err != nil {
		return nil
	}
	return func() (*pki.Issuer, error) { return d.Issuer(0) }
}

// getCertificate adapts credentials to tls.Config.GetCertificate.
func getCertificate(c *pki.Credentials) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.GetCertificate() }
}

// serverCredentials loads this server's own credentials (node.crt: its
// server identity, used for the store's peers and to check clients),
// creating the cluster's CA first on a machine that has no PKI.
func serverCredentials(d pki.Dir, cluster, name string, log *slog.Logger) (*pki.Credentials, *pki.Keeper, error) {
	created, err := d.Bootstrap(pki.InitConfig{Cluster: cluster, ServerName: name})
	if err != nil {
		return nil, nil, err
	}
	if created {
		log.Info("created the cluster's CA: keep root.key safe (or move it offline)", "dir", d.Path, "cluster", cluster)
	}
	creds, err := d.Credentials()
	if errors.Is(err, pki.ErrExpired) {
		// Stopped for longer than a certificate lives: renew from the
		// local CA, as the running server would have.
		if _, rerr := d.RenewNode(context.Background(), 0); rerr == nil {
			creds, err = d.Credentials()
		}
	}
	if err != nil {
		return nil, nil, err
	}
	if id := creds.Identity(); id.Kind != identity.KindServer || (name != "" && id.Name != name) {
		return nil, nil, fmt.Errorf("%s is for %s, not server %q: start with --name %s, or use another --data-dir", filepath.Join(d.Path, pki.NodeCertFile), id, name, id.Name)
	}
	var issue pki.RenewFunc
	if _, err := os.Stat(filepath.Join(d.Path, pki.IntermediateKeyFile)); err == nil {
		issue = func(_ context.Context, csr []byte) ([]*x509.Certificate, error) {
			issuer, err := d.Issuer(0)
			if err != nil {
				return nil, err
			}
			return issuer.Sign(csr, creds.Identity(), 0)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	k, err := pki.NewKeeper(pki.KeeperConfig{Credentials: creds, CertFile: filepath.Join(d.Path, pki.NodeCertFile),
		KeyFile: filepath.Join(d.Path, pki.NodeKeyFile), BundleFile: filepath.Join(d.Path, pki.BundleFile),
		RevocationsFile: filepath.Join(d.Path, pki.RevocationsFile), Issue: issue, Logger: log.With("cert", "server"),
		Warning: "issue a new one on the CA machine (nexus cert issue --server NAME --out DIR) and copy it over; no restart needed"})
	if err != nil {
		return nil, nil, err
	}
	return creds, k, nil
}
