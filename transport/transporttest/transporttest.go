// Package transporttest provides real, small test credentials for the
// transport: an ECDSA P-256 root CA issuing leaves with SPIFFE URI SANs,
// and a Credentials whose leaf can be swapped (renewal) and whose
// revocation set can grow (revocation), notifying subscribers. It is for
// tests and benchmarks; security/pki is the production implementation.
package transporttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/transport"
)

// CA is a self-signed root that issues leaves directly.
type CA struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA makes a root CA valid from an hour ago for a day.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, key: key}, nil
}

// Issue makes a leaf for id valid from notBefore to notAfter, usable as
// client and server certificate.
func (ca *CA) Issue(id identity.ID, notBefore, notAfter time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: id.Name},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// IssueValid issues a leaf valid from a minute ago for an hour.
func (ca *CA) IssueValid(id identity.ID) (*tls.Certificate, error) {
	now := time.Now()
	return ca.Issue(id, now.Add(-time.Minute), now.Add(time.Hour))
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

// Credentials implements transport.Credentials over one CA.
type Credentials struct {
	roots *x509.CertPool

	mu      sync.Mutex
	cert    *tls.Certificate
	revoked map[string]bool
	subs    map[int]chan struct{}
	nextSub int

	// Handshakes counts GetCertificate calls: one per handshake.
	Handshakes atomic.Int64
}

// NewCredentials returns credentials presenting cert (nil presents none)
// and trusting ca.
func NewCredentials(ca *CA, cert *tls.Certificate) *Credentials {
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return &Credentials{roots: roots, cert: cert, revoked: map[string]bool{}, subs: map[int]chan struct{}{}}
}

// SetCertificate swaps the presented certificate, as a renewal does.
func (c *Credentials) SetCertificate(cert *tls.Certificate) {
	c.mu.Lock()
	c.cert = cert
	c.mu.Unlock()
}

// Revoke adds serial to the revocation list and notifies subscribers.
func (c *Credentials) Revoke(serial *big.Int) {
	c.mu.Lock()
	c.revoked[serial.String()] = true
	subs := make([]chan struct{}, 0, len(c.subs))
	for _, ch := range c.subs {
		subs = append(subs, ch)
	}
	c.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default: // a notification is already pending
		}
	}
}

// GetCertificate implements transport.Credentials.
func (c *Credentials) GetCertificate() (*tls.Certificate, error) {
	c.Handshakes.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert == nil {
		return &tls.Certificate{}, nil // present no certificate
	}
	return c.cert, nil
}

// VerifyPeer implements transport.Credentials.
func (c *Credentials) VerifyPeer(chain []*x509.Certificate) (identity.ID, error) {
	if len(chain) == 0 {
		return identity.ID{}, errors.New("no certificate")
	}
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         c.roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return identity.ID{}, fmt.Errorf("chain: %w", err)
	}
	c.mu.Lock()
	revoked := c.revoked[leaf.SerialNumber.String()]
	c.mu.Unlock()
	if revoked {
		return identity.ID{}, fmt.Errorf("serial %x: %w", leaf.SerialNumber, transport.ErrRevoked)
	}
	if len(leaf.URIs) != 1 {
		return identity.ID{}, fmt.Errorf("want exactly one URI SAN, have %d", len(leaf.URIs))
	}
	return identity.Parse(leaf.URIs[0].String())
}

// Subscribe implements transport.Credentials.
func (c *Credentials) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	id := c.nextSub
	c.nextSub++
	c.subs[id] = ch
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.subs, id)
		c.mu.Unlock()
	}
}
