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
	"slices"
	"time"

	"nexus.dev/nexus/internal/fsutil"
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

// BundleFileName is the trust bundle's name next to credentials that
// IssueFiles writes.
const BundleFileName = "ca.pem"

// Errors of a Dir; test with errors.Is.
var (
	// ErrNoDir means a Dir was used with an empty Path: its files would
	// land in the current directory.
	ErrNoDir = errors.New("the PKI directory path is empty")
	// ErrChain means the CA files do not form a chain the cluster trusts:
	// the intermediate was not signed by the root next to it, or the trust
	// bundle lacks either.
	ErrChain = errors.New("the CA files do not form a trusted chain")
	// ErrNameTooLong means a file named after an identity would be longer
	// than the file system allows.
	ErrNameTooLong = errors.New("file name too long")
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
func (d Dir) Init(cfg InitConfig) (err error) {
	if d.Path == "" {
		return fmt.Errorf("init CA: %w", ErrNoDir)
	}
	if _, err := os.Stat(d.file(RootCertFile)); err == nil {
		return fmt.Errorf("a CA already exists in %s: use it, or move that directory away to start a new cluster", d.Path)
	}
	if err := identity.Server(cfg.Cluster, cfg.ServerName).Validate(); err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	undoDir, err := fsutil.MkdirAll(d.Path, 0o700)
	if err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	// A failed init takes away what it wrote, so that running it again
	// (once the cause is fixed) does not find half a CA.
	var written []string
	defer func() {
		if err != nil {
			for _, name := range written {
				_ = os.Remove(d.file(name))
			}
			undoDir()
		}
	}()
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
	rootKey, err := MarshalKey(root.Key.(*ecdsa.PrivateKey), cfg.Passphrase)
	if err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	issuerKey, err := MarshalKey(issuer.Key.(*ecdsa.PrivateKey), nil)
	if err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{RootKeyFile, rootKey, 0o600},
		{RootCertFile, EncodeCertificates(root.Cert), 0o644},
		{IntermediateKeyFile, issuerKey, 0o600},
		{IntermediateCertFile, EncodeCertificates(issuer.Cert), 0o644},
		{BundleFile, bundle.PEM(), 0o644},
		{RevocationsFile, list, 0o644},
	}
	for _, f := range files {
		if err := WriteFileAtomic(d.file(f.name), f.data, f.perm); err != nil {
			return fmt.Errorf("init CA: %w", err)
		}
		written = append(written, f.name)
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

// RootCert loads the root certificate (e.g. to print its pin) after the
// chain check of Issuer: a pin of a root that did not sign the intermediate
// would make every joiner refuse the CA.
func (d Dir) RootCert() (*x509.Certificate, error) {
	inter, err := d.readCert(IntermediateCertFile)
	if err != nil {
		return nil, err
	}
	return d.rootOf(inter)
}

// Issuer loads the issuing intermediate CA and checks the chain: the root
// CA in the directory signed it, and the trust bundle holds both, since
// leaves from any other intermediate would verify nowhere. A broken chain
// is refused with an error that wraps ErrChain and names the file.
func (d Dir) Issuer(leafTTL time.Duration) (*Issuer, error) {
	i, err := d.loadIssuer(leafTTL)
	if err != nil {
		return nil, err
	}
	if _, err := d.rootOf(i.Cert); err != nil {
		return nil, err
	}
	return i, nil
}

// rootOf loads the root and checks that it signed inter and that the trust
// bundle holds both.
func (d Dir) rootOf(inter *x509.Certificate) (*x509.Certificate, error) {
	root, err := d.readCert(RootCertFile)
	if err != nil {
		return nil, err
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("check CA chain: %w: %s does not verify against %s (%v): the two come from different CAs. Restore the %s that signed it (%s lists the roots this cluster trusts), or, if the root was replaced on purpose, sign a new intermediate with it (nexus cert rotate-intermediate)",
			ErrChain, d.file(IntermediateCertFile), d.file(RootCertFile), err, RootCertFile, d.file(BundleFile))
	}
	b, err := d.Bundle()
	if err != nil {
		return nil, err
	}
	for _, c := range []struct {
		file string
		cert *x509.Certificate
		in   []*x509.Certificate
	}{{RootCertFile, root, b.Roots()}, {IntermediateCertFile, inter, b.Intermediates()}} {
		if !slices.ContainsFunc(c.in, c.cert.Equal) {
			return nil, fmt.Errorf("check CA chain: %w: the trust bundle %s does not hold %s, so nothing it signs would verify: restore the bundle.pem that goes with it", ErrChain, d.file(BundleFile), d.file(c.file))
		}
	}
	return root, nil
}

// loadIssuer loads the intermediate without the chain check: for the
// rotation, which replaces it.
func (d Dir) loadIssuer(leafTTL time.Duration) (*Issuer, error) {
	cert, key, err := d.loadCA("intermediate", IntermediateCertFile, IntermediateKeyFile, nil)
	if err != nil {
		return nil, err
	}
	return &Issuer{Cert: cert, Key: key, LeafTTL: leafTTL, Clock: d.Clock}, nil
}

// Bundle loads the trust bundle.
func (d Dir) Bundle() (*Bundle, error) {
	data, err := d.read(BundleFile, MaxCertificateFileSize)
	if err != nil {
		return nil, err
	}
	b, err := ParseBundle(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.file(BundleFile), err)
	}
	return b, nil
}

// Revocations loads and verifies the revocation list.
func (d Dir) Revocations(b *Bundle) (*RevocationList, error) {
	data, err := d.read(RevocationsFile, maxRevocationListSize)
	if err != nil {
		return nil, err
	}
	rl, err := ParseRevocationList(data, b, d.now())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.file(RevocationsFile), err)
	}
	return rl, nil
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
	chain, err := d.readChain(NodeCertFile)
	if err != nil {
		return nil, err
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
// writes the key (0600) and the chain into outDir, which must exist. File
// names longer than outDir's file system allows are refused (ErrNameTooLong)
// before anything is written.
func (d Dir) IssueTo(outDir, certName, keyName string, id identity.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	if err := checkFileNames(outDir, certName, keyName); err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", id, err)
	}
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
	if err := writeChain(filepath.Join(outDir, certName), filepath.Join(outDir, keyName), chain, key); err != nil {
		return nil, err
	}
	return chain, nil
}

// IssuedFiles is what Dir.IssueFiles wrote.
type IssuedFiles struct {
	Chain                         []*x509.Certificate // leaf first
	KeyFile, CertFile, BundleFile string
}

// IssueFiles issues a certificate for id to a key made here and writes what
// a person or tool needs into outDir, creating it if needed: <name>.key
// (0600), <name>.crt (the chain, leaf first) and BundleFileName (the trust
// bundle). Names too long for outDir's file system are refused before
// anything is written, and a failure part-way removes the files and
// directories this call created.
func (d Dir) IssueFiles(outDir string, id identity.ID, ttl time.Duration) (_ IssuedFiles, err error) {
	if err := id.Validate(); err != nil {
		return IssuedFiles{}, fmt.Errorf("issue certificate: %w", err)
	}
	keyName, certName := id.Name+".key", id.Name+".crt"
	if err := checkFileNames(outDir, keyName, certName, BundleFileName); err != nil {
		return IssuedFiles{}, fmt.Errorf("issue certificate for %s: %w", id, err)
	}
	bundle, err := d.Bundle()
	if err != nil {
		return IssuedFiles{}, err
	}
	out := IssuedFiles{KeyFile: filepath.Join(outDir, keyName), CertFile: filepath.Join(outDir, certName), BundleFile: filepath.Join(outDir, BundleFileName)}
	var fresh []string // files this call creates, rather than replaces
	for _, f := range []string{out.KeyFile, out.CertFile, out.BundleFile} {
		if _, err := os.Lstat(f); errors.Is(err, fs.ErrNotExist) {
			fresh = append(fresh, f)
		}
	}
	undoDir, err := fsutil.MkdirAll(outDir, 0o700)
	if err != nil {
		return IssuedFiles{}, fmt.Errorf("issue certificate for %s: %w", id, err)
	}
	defer func() {
		if err != nil {
			for _, f := range fresh {
				_ = os.Remove(f)
			}
			undoDir()
		}
	}()
	if out.Chain, err = d.IssueTo(outDir, certName, keyName, id, ttl); err != nil {
		return IssuedFiles{}, err
	}
	if err := WriteFileAtomic(out.BundleFile, bundle.PEM(), 0o644); err != nil {
		return IssuedFiles{}, fmt.Errorf("issue certificate for %s: %w", id, err)
	}
	return out, nil
}

// checkFileNames refuses names longer than the file system holding dir
// allows (statfs f_namelen, 255 bytes on the usual Linux file systems).
func checkFileNames(dir string, names ...string) error {
	limit, err := fsutil.MaxNameLen(dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		if len(n) > limit {
			return fmt.Errorf("%w: %s would be %d bytes, and the file system of %s allows file names of at most %d: use a shorter name", ErrNameTooLong, n, len(n), dir, limit)
		}
	}
	return nil
}

// writeChain writes a key and the chain issued to it. If the chain cannot
// be written, the key file is put back as it was, so the pair on disk never
// mixes an old certificate with a new key.
func writeChain(certPath, keyPath string, chain []*x509.Certificate, key *ecdsa.PrivateKey) error {
	old, readErr := fsutil.ReadFileLimit(keyPath, maxKeyFileSize)
	if err := WriteKeyFile(keyPath, key, nil); err != nil {
		return err
	}
	if err := WriteFileAtomic(certPath, EncodeCertificates(chain...), 0o644); err != nil {
		if readErr == nil {
			_ = WriteFileAtomic(keyPath, old, 0o600)
		} else {
			_ = os.Remove(keyPath)
		}
		return err
	}
	return nil
}

// RenewNode renews this machine's certificate now through a Renewer whose
// round trip is the local CA, and saves it.
func (d Dir) RenewNode(ctx context.Context, ttl time.Duration) ([]*x509.Certificate, error) {
	creds, err := d.Credentials()
	if err != nil && !errors.Is(err, ErrExpired) && !errors.Is(err, ErrUnknownAuthority) {
		return nil, err
	}
	if err != nil { // expired, or from a dropped intermediate: re-issue for the same identity
		chain, rerr := d.readChain(NodeCertFile)
		if rerr != nil {
			return nil, rerr
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
			return writeChain(d.file(NodeCertFile), d.file(NodeKeyFile), chain, key)
		},
	})
	if err != nil {
		return nil, err
	}
	if err := r.RenewNow(ctx); err != nil {
		if errors.Is(err, ErrNotSaved) {
			return nil, fmt.Errorf("%w: make %s writable and renew again", err, d.Path)
		}
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
	old, err := d.loadIssuer(leafTTL)
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

// read reads a file of the directory, refusing one of more than limit
// bytes.
func (d Dir) read(name string, limit int64) ([]byte, error) {
	if d.Path == "" {
		return nil, fmt.Errorf("read %s: %w", name, ErrNoDir)
	}
	data, err := fsutil.ReadFileLimit(d.file(name), limit)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s does not exist: create the CA first (nexus cert init --cluster NAME), or check --data-dir: %w", d.file(name), err)
	}
	return data, err
}

func (d Dir) readChain(name string) ([]*x509.Certificate, error) {
	data, err := d.read(name, MaxCertificateFileSize)
	if err != nil {
		return nil, err
	}
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.file(name), err)
	}
	return certs, nil
}

func (d Dir) readCert(name string) (*x509.Certificate, error) {
	certs, err := d.readChain(name)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}
