package pki

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"nexus.dev/nexus/security/identity"
)

// Credentials is one endpoint's side of mutual TLS: its current certificate
// and key, the trust bundle and revocation list it verifies peers with, and
// the clock it judges validity by. It satisfies the transport's Credentials
// interface. All methods are safe for concurrent use; every setter swaps a
// pointer, so a handshake sees either the old or the new state.
type Credentials struct {
	clock Clock
	cert  atomic.Pointer[tls.Certificate]
	id    atomic.Pointer[identity.ID]
	trust atomic.Pointer[trustState]

	mu   sync.Mutex // guards subs and orders trust updates
	subs map[*subscriber]struct{}
}

type trustState struct {
	bundle  *Bundle
	revoked *RevocationList
	cluster string
}

type subscriber struct{ ch chan struct{} }

// CredentialsConfig configures NewCredentials.
type CredentialsConfig struct {
	Chain       []*x509.Certificate // this endpoint's certificate, leaf first
	Key         *ecdsa.PrivateKey   // the leaf's key, made on this machine
	Bundle      *Bundle
	Revocations *RevocationList // nil means none revoked
	Clock       Clock           // default SystemClock
}

// NewCredentials checks that the certificate matches the key, chains to the
// bundle and names a SPIFFE ID, and returns the endpoint's credentials.
func NewCredentials(cfg CredentialsConfig) (*Credentials, error) {
	if cfg.Bundle == nil {
		return nil, errors.New("credentials: no trust bundle")
	}
	cluster, err := cfg.Bundle.TrustDomain()
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	rl := cfg.Revocations
	if rl == nil {
		rl = NewRevocationList(cluster)
	}
	c := &Credentials{clock: clockOr(cfg.Clock), subs: map[*subscriber]struct{}{}}
	c.trust.Store(&trustState{bundle: cfg.Bundle, revoked: rl, cluster: cluster})
	if err := c.SetCertificate(cfg.Chain, cfg.Key); err != nil {
		return nil, err
	}
	return c, nil
}

// GetCertificate returns the current certificate (leaf and intermediates)
// and key. It is called on every handshake, so a renewal takes effect for
// the next connection.
func (c *Credentials) GetCertificate() (*tls.Certificate, error) {
	return c.cert.Load(), nil
}

// Identity is the SPIFFE ID in this endpoint's own certificate.
func (c *Credentials) Identity() identity.ID { return *c.id.Load() }

// Leaf is this endpoint's current leaf certificate.
func (c *Credentials) Leaf() *x509.Certificate { return c.cert.Load().Leaf }

// Bundle is the current trust bundle.
func (c *Credentials) Bundle() *Bundle { return c.trust.Load().bundle }

// Revocations is the current revocation list.
func (c *Credentials) Revocations() *RevocationList { return c.trust.Load().revoked }

// VerifyPeer checks a peer's presented chain (leaf first) against the
// current bundle, at the current time, and against the revocation list, and
// returns the SPIFFE ID in the leaf. Whether that ID may act as the
// principal the peer claims is the caller's decision (RequireIdentity).
// Errors wrap ErrNoCertificate, ErrExpired, ErrNotYetValid,
// ErrUnknownAuthority, ErrWrongUsage, ErrRevoked or ErrBadIdentity.
func (c *Credentials) VerifyPeer(chain []*x509.Certificate) (identity.ID, error) {
	t := c.trust.Load()
	verified, err := t.bundle.Verify(chain, c.clock.Now())
	if err != nil {
		return identity.ID{}, fmt.Errorf("verify peer: %w", err)
	}
	for _, cert := range verified {
		if t.revoked.Contains(cert.SerialNumber) {
			return identity.ID{}, fmt.Errorf("verify peer: %w: certificate %s (%q) is on revocation list #%d", ErrRevoked, SerialString(cert), cert.Subject.CommonName, t.revoked.Number())
		}
	}
	id, err := LeafIdentity(chain[0])
	if err != nil {
		return identity.ID{}, fmt.Errorf("verify peer: %w", err)
	}
	if id.Cluster != t.cluster {
		return identity.ID{}, fmt.Errorf("verify peer: %w: %s is not in cluster %q", ErrBadIdentity, id, t.cluster)
	}
	return id, nil
}

// LeafIdentity reads the SPIFFE ID from a leaf certificate's single URI SAN.
func LeafIdentity(leaf *x509.Certificate) (identity.ID, error) {
	if leaf.IsCA {
		return identity.ID{}, fmt.Errorf("%w: certificate %s is a CA, not a leaf", ErrBadIdentity, SerialString(leaf))
	}
	if len(leaf.URIs) != 1 {
		return identity.ID{}, fmt.Errorf("%w: certificate %s has %d URI SANs, want exactly one spiffe:// ID", ErrBadIdentity, SerialString(leaf), len(leaf.URIs))
	}
	id, err := identity.Parse(leaf.URIs[0].String())
	if err != nil {
		return identity.ID{}, fmt.Errorf("%w: certificate %s: %v", ErrBadIdentity, SerialString(leaf), err)
	}
	return id, nil
}

// RequireIdentity checks that a verified peer is the principal it acts
// for: the certificate of node A cannot report for node B.
func RequireIdentity(got, want identity.ID) error {
	if got != want {
		return fmt.Errorf("%w: the peer's certificate is for %s, but it acts for %s", ErrWrongIdentity, got, want)
	}
	return nil
}

// SetCertificate replaces this endpoint's certificate and key, after checking
// they belong together and chain to the current bundle. New handshakes use
// them at once.
func (c *Credentials) SetCertificate(chain []*x509.Certificate, key *ecdsa.PrivateKey) error {
	if len(chain) == 0 || key == nil {
		return errors.New("credentials: need a certificate and its key")
	}
	leaf := chain[0]
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return errors.New("credentials: the certificate is not for this private key")
	}
	if _, err := c.trust.Load().bundle.Verify(chain, c.clock.Now()); err != nil {
		return fmt.Errorf("credentials: own certificate: %w", err)
	}
	id, err := LeafIdentity(leaf)
	if err != nil {
		return fmt.Errorf("credentials: own certificate: %w", err)
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, x := range chain {
		tc.Certificate = append(tc.Certificate, x.Raw)
	}
	c.id.Store(&id)
	c.cert.Store(tc)
	return nil
}

// SetBundle replaces the trust bundle (a rotation step) and tells
// subscribers, so live connections are re-verified.
func (c *Credentials) SetBundle(b *Bundle) error {
	td, err := b.TrustDomain()
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.trust.Load()
	if td != old.cluster {
		return fmt.Errorf("credentials: bundle is for cluster %q, not %q", td, old.cluster)
	}
	c.trust.Store(&trustState{bundle: b, revoked: old.revoked, cluster: old.cluster})
	c.notifyLocked()
	return nil
}

// SetRevocations installs a newer revocation list (verify it first with
// ParseRevocationList) and tells subscribers. A list older than the current
// one is refused so a replay cannot un-revoke a certificate; the same
// number is a no-op.
func (c *Credentials) SetRevocations(l *RevocationList) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.trust.Load()
	if l.Cluster() != old.cluster {
		return fmt.Errorf("credentials: revocation list is for cluster %q, not %q", l.Cluster(), old.cluster)
	}
	switch {
	case l.Number() < old.revoked.Number():
		return fmt.Errorf("credentials: revocation list #%d is older than the current #%d", l.Number(), old.revoked.Number())
	case l.Number() == old.revoked.Number():
		return nil
	}
	c.trust.Store(&trustState{bundle: old.bundle, revoked: l, cluster: old.cluster})
	c.notifyLocked()
	return nil
}

// Subscribe returns a channel that receives a value (non-blocking, buffered
// 1, so bursts coalesce) whenever the bundle or the revocation list changes.
// cancel stops delivery; it is safe to call more than once.
func (c *Credentials) Subscribe() (<-chan struct{}, func()) {
	s := &subscriber{ch: make(chan struct{}, 1)}
	c.mu.Lock()
	c.subs[s] = struct{}{}
	c.mu.Unlock()
	return s.ch, func() {
		c.mu.Lock()
		delete(c.subs, s)
		c.mu.Unlock()
	}
}

func (c *Credentials) notifyLocked() {
	for s := range c.subs {
		select {
		case s.ch <- struct{}{}:
		default:
		}
	}
}
