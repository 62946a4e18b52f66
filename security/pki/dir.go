package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"nexus.dev/nexus/security/identity"
)

// File names inside a Dir.
const (
	RootCertFile            = "root.crt"
	RootKeyFile             = "root.key" // optionally encrypted with a passphrase
	IntermediateCertFile    = "intermediate.crt"
	IntermediateKeyFile     = "intermediate.key"
	OldIntermediateCertFile = "intermediate-old.crt" // present during a rotation
	BundleFile              = "bundle.pem"           // roots + intermediates
	RevocationsFile         = "revocations.json"     // signed RevocationList
	NodeCertFile            = "node.crt"             // this machine's chain, leaf first
	NodeKeyFile             = "node.key"
)

// Dir is a server's PKI state on disk (normally <data-dir>/pki): the CA
// certificates and keys, the trust bundle, the signed revocation list and
// this machine's own certificate. Keys are written 0600 and refused on load
// if group or others can read them.
//
// The root key is the one that may be encrypted with a passphrase: it is
// needed only to rotate the intermediate. The intermediate key signs every
// renewal, so it stays unencrypted (0600) for the server to use unattended.
type Dir struct {
	Path  string
	Clock Clock // default SystemClock
}

func (d Dir) file(name string) string { return filepath.Join(d.Path, name) }
func (d Dir) now() time.Time          { return clockOr(d.Clock).Now() }

// InitConfig configures Dir.Init.
type InitConfig struct {
	Cluster         string
	ServerName      string // this machine's name; its server certificate goes to node.crt
	Passphrase      []byte // encrypts the root key when set
	RootTTL         time.Duration
	IntermediateTTL time.Duration
	LeafTTL         time.Duration
}

// Init creates a new CA: root, intermediate, bundle, an empty revocation
// list and a server certificate for this machine. It refuses to overwrite
// an existing CA.
func (d Dir) Init(cfg InitConfig) error {
	if _, err := os.Stat(d.file(RootCertFile)); err == nil {
		return fmt.Errorf("a CA already exists in %s: use it, or move that directory away to start a new cluster", d.Path)
	}
	if err := identity.Server(cfg.Cluster, cfg.ServerName).Validate(); err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	if err := os.MkdirAll(d.Path, 0o700); err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	root, err := NewRoot(RootConfig{Cluster: cfg.Cluster, TTL: cfg.RootTTL, Clock: d.Clock})
	if err != nil {
		return err
	}
	issuer, err := root.NewIssuer(IssuerConfig{TTL: cfg.IntermediateTTL, LeafTTL: cfg.LeafTTL, Clock: d.Clock})
	if err != nil {
		return err
	}
	bundle, err := NewBundle(root.Cert, issuer.Cert)
	if err != nil {
		return err
	}
	list, err := NewRevocationList(cfg.Cluster).Sign(issuer)
	if err != nil {
		return err
	}
	steps := []func() error{
		func() error { return WriteKeyFile(d.file(RootKeyFile), root.Key.(*ecdsa.PrivateKey), cfg.Passphrase) },
		func() error { return WriteFileAtomic(d.file(RootCertFile), EncodeCertificates(root.Cert), 0o644) },
		func() error { return d.writeIssuer(issuer) },
		func() error { return WriteFileAtomic(d.file(BundleFile), bundle.PEM(), 0o644) },
		func() error { return WriteFileAtomic(d.file(RevocationsFile), list, 0o644) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("init CA: %w", err)
		}
	}
	_, err = d.IssueNode(identity.Server(cfg.Cluster, cfg.ServerName), cfg.LeafTTL)
	return err
}

func (d Dir) writeIssuer(i *Issuer) error {
	if err := WriteKeyFile(d.file(IntermediateKeyFile), i.Key.(*ecdsa.PrivateKey), nil); err != nil {
		return err
	}
	return WriteFileAtomic(d.file(IntermediateCertFile), EncodeCertificates(i.Cert), 0o644)
}

// Root loads the root CA; passphrase is needed if its key is encrypted.
func (d Dir) Root(passphrase []byte) (*Root, error) {
	cert, key, err := d.loadCA("root", RootCertFile, RootKeyFile, passphrase)
	if err != nil {
		return nil, err
	}
	return &Root{Cert: cert, Key: key}, nil
}

// loadCA loads a CA certificate and its key and checks that they belong
// together.
func (d Dir) loadCA(what, certFile, keyFile string, passphrase []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cert, err := d.readCert(certFile)
	if err != nil {
		return nil, nil, err
	}
	key, err := ReadKeyFile(d.file(keyFile), passphrase)
	if err != nil {
		return nil, nil, fmt.Errorf("load %s CA: %w", what, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("load %s CA: %s does not belong to %s", what, keyFile, certFile)
	}
	return cert, key, nil
}

// RootCert loads the root certificate only (e.g. to print its pin).
func (d Dir) RootCert() (*x509.Certificate, error) { return d.readCert(RootCertFile) }

// Issuer loads the issuing intermediate CA.
func (d Dir) Issuer(leafTTL time.Duration) (*Issuer, error) {
	cert, key, err := d.loadCA("intermediate", IntermediateCertFile, IntermediateKeyFile, nil)
	if err != nil {
		return nil, err
	}
	return &Issuer{Cert: cert, Key: key, LeafTTL: leafTTL, Clock: d.Clock}, nil
}

// Bundle loads the trust bundle.
func (d Dir) Bundle() (*Bundle, error) {
	data, err := d.read(BundleFile)
	if err != nil {
		return nil, err
	}
	return ParseBundle(data)
}

// Revocations loads and verifies the revocation list.
func (d Dir) Revocations(b *Bundle) (*RevocationList, error) {
	data, err := d.read(RevocationsFile)
	if err != nil {
		return nil, err
	}
	return ParseRevocationList(data, b, d.now())
}

// Credentials loads this machine's certificate and key with the bundle and
// revocation list, ready for the transport.
func (d Dir) Credentials() (*Credentials, error) {
	b, err := d.Bundle()
	if err != nil {
		return nil, err
	}
	rl, err := d.Revocations(b)
	if err != nil {
		return nil, err
	}
	data, err := d.read(NodeCertFile)
	if err != nil {
		return nil, err
	}
	chain, err := ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.file(NodeCertFile), err)
	}
	key, err := ReadKeyFile(d.file(NodeKeyFile), nil)
	if err != nil {
		return nil, err
	}
	c, err := NewCredentials(CredentialsConfig{Chain: chain, Key: key, Bundle: b, Revocations: rl, Clock: d.Clock})
	if err != nil {
		return nil, fmt.Errorf("%s: %w: renew it with nexus cert renew", d.file(NodeCertFile), err)
	}
	return c, nil
}

// IssueNode makes a new key for this machine and has the local CA sign it
// for id, writing node.key and node.crt.
func (d Dir) IssueNode(id identity.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	return d.IssueTo(d.Path, NodeCertFile, NodeKeyFile, id, ttl)
}

// IssueTo makes a key and CSR, has the local CA sign the CSR for id, and
// writes the key (0600) and the chain into outDir.
func (d Dir) IssueTo(outDir, certName, keyName string, id identity.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	issuer, err := d.Issuer(ttl)
	if err != nil {
		return nil, err
	}
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := CreateCSR(key, id)
	if err != nil {
		return nil, err
	}
	chain, err := issuer.Sign(csr, id, ttl)
	if err != nil {
		return nil, err
	}
	if err := d.writeChain(filepath.Join(outDir, certName), filepath.Join(outDir, keyName), chain, key); err != nil {
		return nil, err
	}
	return chain, nil
}

func (d Dir) writeChain(certPath, keyPath string, chain []*x509.Certificate, key *ecdsa.PrivateKey) error {
	if err := WriteKeyFile(keyPath, key, nil); err != nil {
		return err
	}
	return WriteFileAtomic(certPath, EncodeCertificates(chain...), 0o644)
}

// RenewNode renews this machine's certificate now through a Renewer whose
// round trip is the local CA, and saves it.
func (d Dir) RenewNode(ctx context.Context, ttl time.Duration) ([]*x509.Certificate, error) {
	creds, err := d.Credentials()
	if err != nil && !errors.Is(err, ErrExpired) && !errors.Is(err, ErrUnknownAuthority) {
		return nil, err
	}
	if err != nil { // expired, or from a dropped intermediate: re-issue for the same identity
		data, rerr := d.read(NodeCertFile)
		if rerr != nil {
			return nil, rerr
		}
		chain, perr := ParseCertificates(data)
		if perr != nil {
			return nil, perr
		}
		id, ierr := LeafIdentity(chain[0])
		if ierr != nil {
			return nil, ierr
		}
		return d.IssueNode(id, ttl)
	}
	issuer, err := d.Issuer(ttl)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	r, err := NewRenewer(RenewerConfig{
		Credentials: creds,
		Clock:       d.Clock,
		Renew: func(_ context.Context, csr []byte) ([]*x509.Certificate, error) {
			return issuer.Sign(csr, creds.Identity(), ttl)
		},
		Renewed: func(chain []*x509.Certificate, key *ecdsa.PrivateKey) error {
			out = chain
			return d.writeChain(d.file(NodeCertFile), d.file(NodeKeyFile), chain, key)
		},
	})
	if err != nil {
		return nil, err
	}
	if err := r.RenewNow(ctx); err != nil {
		return nil, err
	}
	return out, nil
}

// Revoke adds serials to the revocation list, re-signs it and saves it.
func (d Dir) Revoke(serials ...*big.Int) (*RevocationList, error) {
	b, err := d.Bundle()
	if err != nil {
		return nil, err
	}
	rl, err := d.Revocations(b)
	if err != nil {
		return nil, err
	}
	issuer, err := d.Issuer(0)
	if err != nil {
		return nil, err
	}
	rl = rl.Add(d.now(), serials...)
	data, err := rl.Sign(issuer)
	if err != nil {
		return nil, err
	}
	if err := WriteFileAtomic(d.file(RevocationsFile), data, 0o644); err != nil {
		return nil, err
	}
	return rl, nil
}

// ErrRotationInProgress means an intermediate rotation was started and not
// finished.
var ErrRotationInProgress = errors.New("an intermediate rotation is in progress")

// StartIntermediateRotation signs a new intermediate with the root (whose
// key may need passphrase), trusts it next to the old one, issues from it
// from now on, re-signs the revocation list with it and renews this
// machine's certificate from it. It returns the earliest time
// FinishIntermediateRotation may drop the old intermediate without breaking
// leaves it issued.
func (d Dir) StartIntermediateRotation(passphrase []byte, ttl, leafTTL time.Duration) (time.Time, error) {
	if _, err := os.Stat(d.file(OldIntermediateCertFile)); err == nil {
		return time.Time{}, fmt.Errorf("%w: finish it first (nexus cert rotate-intermediate --finish)", ErrRotationInProgress)
	}
	root, err := d.Root(passphrase)
	if err != nil {
		return time.Time{}, err
	}
	old, err := d.Issuer(leafTTL)
	if err != nil {
		return time.Time{}, err
	}
	b, err := d.Bundle()
	if err != nil {
		return time.Time{}, err
	}
	rl, err := d.Revocations(b)
	if err != nil {
		return time.Time{}, err
	}
	next, err := root.NewIssuer(IssuerConfig{TTL: ttl, LeafTTL: leafTTL, Clock: d.Clock})
	if err != nil {
		return time.Time{}, err
	}
	b, err = IntermediateRotation{Old: old.Cert, New: next.Cert}.Start(b, d.now())
	if err != nil {
		return time.Time{}, err
	}
	list, err := rl.Sign(next)
	if err != nil {
		return time.Time{}, err
	}
	// Order matters for a crash: record the old intermediate before the new
	// one replaces it, and trust the new one before anything is issued from it.
	steps := []func() error{
		func() error {
			return WriteFileAtomic(d.file(OldIntermediateCertFile), EncodeCertificates(old.Cert), 0o644)
		},
		func() error { return WriteFileAtomic(d.file(BundleFile), b.PEM(), 0o644) },
		func() error { return d.writeIssuer(next) },
		func() error { return WriteFileAtomic(d.file(RevocationsFile), list, 0o644) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return time.Time{}, fmt.Errorf("rotate intermediate: %w", err)
		}
	}
	if _, err := os.Stat(d.file(NodeCertFile)); err == nil {
		if _, err := d.RenewNode(context.Background(), leafTTL); err != nil {
			return time.Time{}, fmt.Errorf("rotate intermediate: renew this machine's certificate: %w", err)
		}
	}
	return d.now().Add(durationOr(leafTTL, DefaultLeafTTL)), nil
}

// FinishIntermediateRotation drops the old intermediate from the bundle.
// Unless force is set it refuses while leaves from the old one may still be
// valid (one leaf lifetime after the rotation started).
func (d Dir) FinishIntermediateRotation(force bool, leafTTL time.Duration) error {
	old, err := d.readCert(OldIntermediateCertFile)
	if errors.Is(err, fs.ErrNotExist) {
		return errors.New("no intermediate rotation is in progress: start one with nexus cert rotate-intermediate")
	}
	if err != nil {
		return err
	}
	cur, err := d.readCert(IntermediateCertFile)
	if err != nil {
		return err
	}
	if safe := cur.NotBefore.Add(maxBackdate + durationOr(leafTTL, DefaultLeafTTL)); !force && d.now().Before(safe) {
		return fmt.Errorf("certificates from the old intermediate may be valid until %s: wait until then, or pass --force if none are in use", stamp(safe))
	}
	b, err := d.Bundle()
	if err != nil {
		return err
	}
	b = IntermediateRotation{Old: old, New: cur}.DropOld(b)
	if err := WriteFileAtomic(d.file(BundleFile), b.PEM(), 0o644); err != nil {
		return err
	}
	return os.Remove(d.file(OldIntermediateCertFile))
}

func (d Dir) read(name string) ([]byte, error) {
	data, err := os.ReadFile(d.file(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s does not exist: create the CA first (nexus cert init --cluster NAME), or check --data-dir: %w", d.file(name), err)
	}
	return data, err
}

func (d Dir) readCert(name string) (*x509.Certificate, error) {
	data, err := d.read(name)
	if err != nil {
		return nil, err
	}
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.file(name), err)
	}
	return certs[0], nil
}
