package pki

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"sync"
	"testing"
	"time"

	"nexus.dev/nexus/security/identity"
)

// fakeClock is a manual clock: time moves only on Advance, and every timer
// created is announced on created so a test can wait for the code under test
// to start waiting.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	created chan *fakeTimer
}

type fakeTimer struct {
	clock   *fakeClock
	at      time.Time
	ch      chan time.Time
	stopped bool
	fired   bool
}

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func newFakeClock() *fakeClock {
	return &fakeClock{now: t0, created: make(chan *fakeTimer, 100)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	t := &fakeTimer{clock: c, at: c.now.Add(d), ch: make(chan time.Time, 1)}
	c.timers = append(c.timers, t)
	c.mu.Unlock()
	c.created <- t
	return t
}

// Set moves the clock to at and fires due timers.
func (c *fakeClock) Set(at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = at
	for _, t := range c.timers {
		if !t.stopped && !t.fired && !t.at.After(c.now) {
			t.fired = true
			t.ch <- c.now
		}
	}
}

func (c *fakeClock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

func (c *fakeClock) waitTimer(t *testing.T) *fakeTimer {
	t.Helper()
	select {
	case tm := <-c.created:
		return tm
	case <-time.After(5 * time.Second):
		t.Fatal("no timer was started")
		return nil
	}
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }
func (t *fakeTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	was := !t.stopped && !t.fired
	t.stopped = true
	return was
}

// testCA is a root, an issuer and the bundle trusting both.
type testCA struct {
	root   *Root
	issuer *Issuer
	bundle *Bundle
}

func newTestCA(t *testing.T, cluster string, clock Clock) *testCA {
	t.Helper()
	root, err := NewRoot(RootConfig{Cluster: cluster, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := root.NewIssuer(IssuerConfig{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBundle(root.Cert, issuer.Cert)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{root: root, issuer: issuer, bundle: b}
}

// issue runs the CSR flow for id and returns the chain and key.
func issue(t *testing.T, i *Issuer, id identity.ID, ttl time.Duration) ([]*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := CreateCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := i.Sign(csr, id, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return chain, key
}

// forge signs an arbitrary leaf template with the issuer's key, for
// certificates the CA itself would never issue.
func forge(t *testing.T, i *Issuer, mutate func(*x509.Certificate)) ([]*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := GenerateKey()
	now := i.Clock.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: "forged"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	mutate(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, i.Cert, &key.PublicKey, i.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return []*x509.Certificate{c, i.Cert}, key
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
