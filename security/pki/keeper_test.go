package pki

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"nexus.dev/nexus/security/identity"
)

// keeperFixture is a certificate in files and the credentials loaded from
// them, as a server process has.
type keeperFixture struct {
	ca                *testCA
	clock             *fakeClock
	creds             *Credentials
	cert, key, bundle string
	revocations       string
	id                identity.ID
	dir               string
}

func newKeeperFixture(t *testing.T) *keeperFixture {
	t.Helper()
	clock := newFakeClock()
	f := &keeperFixture{ca: newTestCA(t, "keep", clock), clock: clock, id: identity.Server("keep", "s1"), dir: t.TempDir()}
	f.cert, f.key = filepath.Join(f.dir, "node.crt"), filepath.Join(f.dir, "node.key")
	f.bundle, f.revocations = filepath.Join(f.dir, "bundle.pem"), filepath.Join(f.dir, "revocations.json")
	chain, key := issue(t, f.ca.issuer, f.id, 0)
	if err := writeChain(f.cert, f.key, chain, key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.bundle, f.ca.bundle.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	f.writeRevocations(t, NewRevocationList("keep"))
	var err error
	f.creds, err = NewCredentials(CredentialsConfig{Chain: chain, Key: key, Bundle: f.ca.bundle, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *keeperFixture) writeRevocations(t *testing.T, l *RevocationList) {
	t.Helper()
	data, err := l.Sign(f.ca.issuer)
	if err != nil {
		t.Fatal(err)
	}
	// A new stamp even within the file system's time resolution.
	if err := os.WriteFile(f.revocations, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Millisecond)
	_ = os.Chtimes(f.revocations, time.Now(), time.Now().Add(time.Duration(l.Number())*time.Second))
}

func (f *keeperFixture) keeper(t *testing.T, withCA bool) *Keeper {
	t.Helper()
	cfg := KeeperConfig{Credentials: f.creds, CertFile: f.cert, KeyFile: f.key, BundleFile: f.bundle, RevocationsFile: f.revocations, Clock: f.clock}
	if withCA {
		cfg.Issue = func(_ context.Context, csr []byte) ([]*x509.Certificate, error) {
			return f.ca.issuer.Sign(csr, f.id, 0)
		}
	}
	k, err := NewKeeper(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeeperRenewsWithTheLocalCAAtHalfLife(t *testing.T) {
	f := newKeeperFixture(t)
	k := f.keeper(t, true)
	first := f.creds.Leaf()
	f.clock.Advance(6 * time.Hour) // a quarter of 24 h: not yet
	k.Check(context.Background())
	if !f.creds.Leaf().Equal(first) {
		t.Fatal("renewed before half-life")
	}
	f.clock.Advance(9 * time.Hour) // 15 h: past 50-60 % (plus the minute of backdating)
	k.Check(context.Background())
	now := f.creds.Leaf()
	if now.Equal(first) || !now.NotAfter.After(first.NotAfter) {
		t.Fatalf("not renewed at 15 h of 24: serial %s", SerialString(now))
	}
	// Saved: what a restart would load is the new certificate and its key.
	chain, err := ReadCertificatesFile(f.cert)
	if err != nil || !chain[0].Equal(now) {
		t.Fatalf("the files hold another certificate: %v", err)
	}
	key, err := ReadKeyFile(f.key, nil)
	if err != nil || !key.PublicKey.Equal(now.PublicKey) {
		t.Fatalf("the key file does not match the new certificate: %v", err)
	}
}

func TestKeeperReloadsChangedFiles(t *testing.T) {
	f := newKeeperFixture(t)
	k := f.keeper(t, false)
	// A certificate renewed on the CA machine and copied over.
	chain, key := issue(t, f.ca.issuer, f.id, 0)
	if err := writeChain(f.cert, f.key, chain, key); err != nil {
		t.Fatal(err)
	}
	k.Check(context.Background())
	if !f.creds.Leaf().Equal(chain[0]) {
		t.Fatal("a new certificate in the files was not picked up")
	}
	// A revocation takes effect: the list is installed, so a revoked peer
	// fails verification (live connections are re-checked by Credentials).
	peer, _ := issue(t, f.ca.issuer, identity.Node("keep", "n1"), 0)
	if _, err := f.creds.VerifyPeer(peer); err != nil {
		t.Fatal(err)
	}
	f.writeRevocations(t, NewRevocationList("keep").Add(f.clock.Now(), peer[0].SerialNumber))
	k.Check(context.Background())
	if _, err := f.creds.VerifyPeer(peer); !errors.Is(err, ErrRevoked) {
		t.Fatalf("after nexus cert revoke: %v", err)
	}
	// A certificate for someone else is refused, and the old one stays.
	other, okey := issue(t, f.ca.issuer, identity.Server("keep", "s2"), 0)
	if err := writeChain(f.cert, f.key, other, okey); err != nil {
		t.Fatal(err)
	}
	k.Check(context.Background())
	if !f.creds.Leaf().Equal(chain[0]) {
		t.Fatal("a certificate for another server was installed")
	}
	// A half-written file is not installed either; the complete one is,
	// at the next check.
	good, gkey := issue(t, f.ca.issuer, f.id, 0)
	if err := writeChain(f.cert, f.key, good, gkey); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(f.cert)
	if err := os.WriteFile(f.cert, data[:len(data)/4], 0o644); err != nil {
		t.Fatal(err)
	}
	k.Check(context.Background())
	if f.creds.Leaf().Equal(good[0]) {
		t.Fatal("installed a half-written certificate")
	}
	if err := os.WriteFile(f.cert, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_ = os.Chtimes(f.cert, time.Now(), time.Now().Add(time.Hour))
	k.Check(context.Background())
	if !f.creds.Leaf().Equal(good[0]) {
		t.Fatal("the completed certificate was not picked up")
	}
}
