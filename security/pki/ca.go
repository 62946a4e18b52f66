package pki

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"

	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/security/identity"
)

// Default lifetimes.
const (
	DefaultRootTTL         = 10 * 365 * 24 * time.Hour
	DefaultIntermediateTTL = 365 * 24 * time.Hour
	DefaultLeafTTL         = 24 * time.Hour
)

// maxBackdate is how far NotBefore is set in the past, so that a verifier
// whose clock is behind the CA's accepts a fresh certificate: machines of a
// cluster may disagree by a few minutes (issue #15 asks for ±2 minutes;
// Kubernetes' signer backdates by 5 minutes too). Leaves shorter than 50
// minutes are backdated by a tenth of their lifetime only.
const maxBackdate = 5 * time.Minute

// Root is the root CA: a self-signed certificate and its key. Its only jobs
// are signing intermediates and cross-signing a successor root.
type Root struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// RootConfig configures NewRoot.
type RootConfig struct {
	Cluster string        // the SPIFFE trust domain
	TTL     time.Duration // default DefaultRootTTL
	Clock   Clock         // default SystemClock
}

// NewRoot makes a new root key and self-signed certificate for a cluster.
func NewRoot(cfg RootConfig) (*Root, error) {
	if err := (identity.Node(cfg.Cluster, "x")).Validate(); err != nil {
		return nil, fmt.Errorf("new root CA: cluster name: %w", err)
	}
	key, err := GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("new root CA: %w", err)
	}
	now := clockOr(cfg.Clock).Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "Nexus root CA " + now.UTC().Format("2006-01-02"), Organization: []string{cfg.Cluster}},
		NotBefore:             now.Add(-maxBackdate),
		NotAfter:              now.Add(durationOr(cfg.TTL, DefaultRootTTL)),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            -1,
		URIs:                  []*url.URL{trustDomainURL(cfg.Cluster)},
	}
	cert, err := sign(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("new root CA: %w", err)
	}
	return &Root{Cert: cert, Key: key}, nil
}

// IssuerConfig configures Root.NewIssuer.
type IssuerConfig struct {
	TTL     time.Duration // the intermediate's lifetime; default DefaultIntermediateTTL
	LeafTTL time.Duration // default lifetime of the leaves it issues; default DefaultLeafTTL
	Clock   Clock         // default SystemClock
}

// NewIssuer makes a new intermediate key, has the root sign it, and returns
// the issuing CA. Used at init and for intermediate rotation; an intermediate
// made on another machine goes through SignIntermediate instead.
func (r *Root) NewIssuer(cfg IssuerConfig) (*Issuer, error) {
	key, err := GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("new intermediate CA: %w", err)
	}
	td, err := TrustDomain(r.Cert)
	if err != nil {
		return nil, err
	}
	csr, err := createCSR(key, "Nexus intermediate CA", trustDomainURL(td))
	if err != nil {
		return nil, err
	}
	cert, err := r.SignIntermediate(csr, cfg.TTL, cfg.Clock)
	if err != nil {
		return nil, err
	}
	return &Issuer{Cert: cert, Key: key, LeafTTL: cfg.LeafTTL, Clock: cfg.Clock}, nil
}

// SignIntermediate signs an intermediate CA certificate for the key in a
// CSR. The intermediate can sign leaves only (MaxPathLen 0).
func (r *Root) SignIntermediate(csrPEM []byte, ttl time.Duration, clock Clock) (*x509.Certificate, error) {
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, fmt.Errorf("sign intermediate: %w", err)
	}
	td, err := TrustDomain(r.Cert)
	if err != nil {
		return nil, err
	}
	now := clockOr(clock).Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "Nexus intermediate CA " + now.UTC().Format("2006-01-02T15:04:05"), Organization: []string{td}},
		NotBefore:             now.Add(-maxBackdate),
		NotAfter:              clampAfter(now.Add(durationOr(ttl, DefaultIntermediateTTL)), r.Cert.NotAfter),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{trustDomainURL(td)},
	}
	cert, err := sign(tmpl, r.Cert, csr.PublicKey, r.Key)
	if err != nil {
		return nil, fmt.Errorf("sign intermediate: %w", err)
	}
	return cert, nil
}

// Issuer is the issuing intermediate CA: it signs leaf certificates from
// CSRs and the revocation list.
type Issuer struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	LeafTTL time.Duration // default DefaultLeafTTL
	Clock   Clock         // default SystemClock
}

// Sign issues a leaf certificate for id to the key in csrPEM and returns the
// chain to present (leaf, then this intermediate). The CA decides the
// subject, the single URI SAN (id), the usages and the validity: ttl, or the
// issuer's LeafTTL when ttl is 0, never past the intermediate's own expiry.
// Nothing but the public key is taken from the CSR.
func (i *Issuer) Sign(csrPEM []byte, id identity.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	return i.SignLeaf(csrPEM, id, LeafOptions{TTL: ttl})
}

// LeafOptions add to a leaf what its identity alone does not say.
type LeafOptions struct {
	// TTL is the lifetime (0: the issuer's LeafTTL).
	TTL time.Duration
	// Groups are a user's groups (RBAC subjects), written as subject
	// organizations after the cluster name, as Kubernetes reads groups
	// from client certificates. Users only.
	Groups []string
	// DNSNames and IPAddresses are the names clients dial to reach a server
	// (the API's serving certificate): a client checks them as it checks any
	// HTTPS host. Servers only.
	DNSNames    []string
	IPAddresses []net.IP
}

// SignLeaf is Sign with options: groups for a user, host names and
// addresses for a server's serving certificate.
func (i *Issuer) SignLeaf(csrPEM []byte, id identity.ID, opts LeafOptions) ([]*x509.Certificate, error) {
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", id, err)
	}
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	td, err := TrustDomain(i.Cert)
	if err != nil {
		return nil, err
	}
	if id.Cluster != td {
		return nil, fmt.Errorf("issue certificate for %s: this CA is for cluster %q", id, td)
	}
	if len(opts.Groups) > 0 && id.Kind != identity.KindUser {
		return nil, fmt.Errorf("issue certificate for %s: only users have groups", id)
	}
	for _, g := range opts.Groups {
		if g == "" || len(g) > 253 || strings.ContainsAny(g, ",/\\\x00") {
			return nil, fmt.Errorf("issue certificate for %s: group %q: use 1-253 characters without ',', '/' or '\\'", id, g)
		}
	}
	if (len(opts.DNSNames) > 0 || len(opts.IPAddresses) > 0) && id.Kind != identity.KindServer {
		return nil, fmt.Errorf("issue certificate for %s: only servers get host names and addresses", id)
	}
	ttl := durationOr(opts.TTL, durationOr(i.LeafTTL, DefaultLeafTTL))
	if ttl < 0 {
		return nil, fmt.Errorf("issue certificate for %s: negative lifetime %s", id, ttl)
	}
	now := clockOr(i.Clock).Now()
	if now.After(i.Cert.NotAfter) {
		return nil, fmt.Errorf("issue certificate for %s: the intermediate CA expired at %s: rotate it (nexus cert rotate-intermediate)", id, i.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if id.Kind == identity.KindUser {
		usage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: id.Name, Organization: append([]string{td}, opts.Groups...), OrganizationalUnit: []string{string(id.Kind)}},
		NotBefore:             now.Add(-min(maxBackdate, ttl/10)),
		NotAfter:              clampAfter(now.Add(ttl), i.Cert.NotAfter),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usage,
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              opts.DNSNames,
		IPAddresses:           opts.IPAddresses,
	}
	leaf, err := sign(tmpl, i.Cert, csr.PublicKey, i.Key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", id, err)
	}
	return []*x509.Certificate{leaf, i.Cert}, nil
}

// Groups returns the groups of a user's certificate: its subject
// organizations except the one naming the cluster. (DER sorts the values of
// a SET, so their order in the certificate is not the order they were
// given in; a group named like the cluster cannot be expressed.)
func Groups(leaf *x509.Certificate, cluster string) []string {
	var groups []string
	for _, o := range leaf.Subject.Organization {
		if o != cluster {
			groups = append(groups, o)
		}
	}
	return groups
}

// sign fills in a random 128-bit serial and signs tmpl.
func sign(tmpl, parent *x509.Certificate, pub any, key crypto.Signer) (*x509.Certificate, error) {
	if err := checkKey(pub); err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial.Add(serial, big.NewInt(1)) // never zero
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// TrustDomain returns the cluster name a CA certificate is for, from its
// spiffe://<cluster> URI SAN.
func TrustDomain(ca *x509.Certificate) (string, error) {
	if len(ca.URIs) != 1 || ca.URIs[0].Scheme != "spiffe" || ca.URIs[0].Host == "" || (ca.URIs[0].Path != "" && ca.URIs[0].Path != "/") {
		return "", fmt.Errorf("CA certificate %q has no spiffe://<cluster> URI SAN: it is not a Nexus CA", ca.Subject.CommonName)
	}
	return ca.URIs[0].Host, nil
}

func trustDomainURL(cluster string) *url.URL { return &url.URL{Scheme: "spiffe", Host: cluster} }

// SerialString formats a serial number the way the CLI shows and accepts it.
func SerialString(c *x509.Certificate) string { return hex.EncodeToString(c.SerialNumber.Bytes()) }

// ParseSerial reads a serial as printed by SerialString (colons allowed).
func ParseSerial(s string) (*big.Int, error) {
	s = strings.ReplaceAll(s, ":", "")
	b, err := hex.DecodeString(s)
	if err != nil || len(b) == 0 || len(b) > 20 {
		return nil, fmt.Errorf("serial %q is not a hex serial number (as shown by nexus cert show)", s)
	}
	return new(big.Int).SetBytes(b), nil
}

// Fingerprint is the SHA-256 of a certificate's DER encoding, hex.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// EncodeCertificates PEM-encodes certificates in order.
func EncodeCertificates(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// MaxCertificateFileSize bounds a PEM file of certificates read from disk (a
// chain, a trust bundle): a P-256 certificate is under 1 KiB of PEM, so this
// is room for a thousand, and a file named by mistake (/dev/zero, a disk
// image) is refused instead of read into memory.
const MaxCertificateFileSize = 1 << 20

// ReadCertificatesFile reads a PEM file of certificates, refusing one larger
// than MaxCertificateFileSize (fsutil.ErrTooLarge); errors name the file.
func ReadCertificatesFile(path string) ([]*x509.Certificate, error) {
	data, err := fsutil.ReadFileLimit(path, MaxCertificateFileSize)
	if err != nil {
		return nil, err
	}
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

// ParseCertificates reads one or more PEM CERTIFICATE blocks.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		block, rest := pem.Decode(data)
		if block == nil {
			if len(bytes.TrimSpace(data)) != 0 {
				return nil, errors.New("parse certificates: data that is not PEM")
			}
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("parse certificates: PEM block %q is not a CERTIFICATE", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificates: %w", err)
		}
		certs = append(certs, c)
		data = rest
	}
	if len(certs) == 0 {
		return nil, errors.New("parse certificates: no CERTIFICATE block found")
	}
	return certs, nil
}

func clockOr(c Clock) Clock {
	if c == nil {
		return SystemClock{}
	}
	return c
}

func durationOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func clampAfter(t, limit time.Time) time.Time {
	if t.After(limit) {
		return limit
	}
	return t
}
