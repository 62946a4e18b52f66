package pki

import (
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/security/identity"
)

// endpoint builds Credentials for id from a fresh CSR round trip.
func endpoint(t *testing.T, ca *testCA, clock Clock, id identity.ID, ttl time.Duration) *Credentials {
	t.Helper()
	chain, key := issue(t, ca.issuer, id, ttl)
	c, err := NewCredentials(CredentialsConfig{Chain: chain, Key: key, Bundle: ca.bundle, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestVerifyPeer(t *testing.T) {
	clock := newFakeClock()
	ca := newTestCA(t, "prod", clock)
	other := newTestCA(t, "prod", clock) // same cluster name, different keys
	self := endpoint(t, ca, clock, identity.Server("prod", "s1"), time.Hour)
	peerID := identity.Node("prod", "n1")
	good, _ := issue(t, ca.issuer, peerID, time.Hour)
	foreign, _ := issue(t, other.issuer, peerID, time.Hour)
	revoked, _ := issue(t, ca.issuer, identity.Node("prod", "n2"), time.Hour)
	if err := self.SetRevocations(self.Revocations().Add(clock.Now(), revoked[0].SerialNumber)); err != nil {
		t.Fatal(err)
	}
	noURI, _ := forge(t, ca.issuer, func(c *x509.Certificate) {})
	twoURIs, _ := forge(t, ca.issuer, func(c *x509.Certificate) {
		c.URIs = []*url.URL{mustURL("spiffe://prod/node/a"), mustURL("spiffe://prod/node/b")}
	})
	httpURI, _ := forge(t, ca.issuer, func(c *x509.Certificate) { c.URIs = []*url.URL{mustURL("https://prod/node/a")} })
	otherDomain, _ := forge(t, ca.issuer, func(c *x509.Certificate) { c.URIs = []*url.URL{mustURL("spiffe://evil/node/a")} })
	noClientAuth, _ := forge(t, ca.issuer, func(c *x509.Certificate) {
		c.URIs = []*url.URL{mustURL("spiffe://prod/node/a")}
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}
	})

	tests := []struct {
		name  string
		chain []*x509.Certificate
		at    time.Duration // clock offset from t0
		want  error
		msg   string
	}{
		{"valid", good, 0, nil, ""},
		{"valid leaf only (intermediate from bundle)", good[:1], 0, nil, ""},
		{"valid, with a foreign intermediate attached", []*x509.Certificate{good[0], other.issuer.Cert}, 0, nil, ""},
		{"valid near the end", good, 59 * time.Minute, nil, ""},
		{"expired", good, time.Hour + time.Second, ErrExpired, "expired at"},
		{"valid on a clock 2 minutes behind the CA's", good, -2 * time.Minute, nil, ""},
		{"not yet valid", good, -6 * time.Minute, ErrNotYetValid, "valid from"},
		{"wrong CA", foreign, 0, ErrUnknownAuthority, "does not chain"},
		{"wrong CA, our intermediate attached", []*x509.Certificate{foreign[0], ca.issuer.Cert}, 0, ErrUnknownAuthority, "unknown authority"},
		{"revoked", revoked, 0, ErrRevoked, "revocation list #1"},
		{"no SPIFFE ID", noURI, 0, ErrBadIdentity, "0 URI SANs"},
		{"two SPIFFE IDs", twoURIs, 0, ErrBadIdentity, "2 URI SANs"},
		{"not spiffe://", httpURI, 0, ErrBadIdentity, "not a spiffe:// ID"},
		{"other trust domain", otherDomain, 0, ErrBadIdentity, `not in cluster "prod"`},
		{"wrong key usage", noClientAuth, 0, ErrWrongUsage, "extended key usage"},
		{"CA as leaf", []*x509.Certificate{ca.issuer.Cert}, 0, ErrBadIdentity, "is a CA"},
		{"empty chain", nil, 0, ErrNoCertificate, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock.Set(t0.Add(tt.at))
			id, err := self.VerifyPeer(tt.chain)
			if tt.want == nil {
				if err != nil || id != peerID {
					t.Fatalf("VerifyPeer = %v, %v; want %v", id, err, peerID)
				}
				return
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.want.Error()) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want %q with %q", err, tt.want, tt.msg)
			}
			if !id.IsZero() {
				t.Fatalf("returned an ID with an error: %v", id)
			}
		})
	}
}

func TestNodeCannotClaimAnotherNode(t *testing.T) {
	clock := newFakeClock()
	ca := newTestCA(t, "prod", clock)
	server := endpoint(t, ca, clock, identity.Server("prod", "s1"), time.Hour)
	nodeA, _ := issue(t, ca.issuer, identity.Node("prod", "a"), time.Hour)

	got, err := server.VerifyPeer(nodeA)
	if err != nil {
		t.Fatal(err)
	}
	if got != identity.Node("prod", "a") {
		t.Fatalf("VerifyPeer = %v, want node a", got)
	}
	err = RequireIdentity(got, identity.Node("prod", "b"))
	if !errors.Is(err, ErrWrongIdentity) || !strings.Contains(err.Error(), "spiffe://prod/node/a") || !strings.Contains(err.Error(), "acts for spiffe://prod/node/b") {
		t.Fatalf("RequireIdentity: %v", err)
	}
	if err := RequireIdentity(got, identity.Node("prod", "a")); err != nil {
		t.Fatal(err)
	}
}

func TestCredentialsRefuseMismatchedKey(t *testing.T) {
	clock := newFakeClock()
	ca := newTestCA(t, "prod", clock)
	chain, _ := issue(t, ca.issuer, identity.Node("prod", "n1"), time.Hour)
	otherKey, _ := GenerateKey()
	if _, err := NewCredentials(CredentialsConfig{Chain: chain, Key: otherKey, Bundle: ca.bundle, Clock: clock}); err == nil || !strings.Contains(err.Error(), "not for this private key") {
		t.Fatalf("err = %v", err)
	}
	foreign := newTestCA(t, "prod", clock)
	fchain, fkey := issue(t, foreign.issuer, identity.Node("prod", "n1"), time.Hour)
	if _, err := NewCredentials(CredentialsConfig{Chain: fchain, Key: fkey, Bundle: ca.bundle, Clock: clock}); !errors.Is(err, ErrUnknownAuthority) {
		t.Fatalf("foreign certificate: %v", err)
	}
}

func TestSubscribe(t *testing.T) {
	clock := newFakeClock()
	ca := newTestCA(t, "prod", clock)
	c := endpoint(t, ca, clock, identity.Node("prod", "n1"), time.Hour)
	ch, cancel := c.Subscribe()
	ch2, cancel2 := c.Subscribe()
	defer cancel2()

	pending := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	rl := c.Revocations().Add(clock.Now(), big.NewInt(42))
	if err := c.SetRevocations(rl); err != nil {
		t.Fatal(err)
	}
	if err := c.SetBundle(ca.bundle); err != nil { // a second change before anyone reads: coalesced, no block
		t.Fatal(err)
	}
	if !pending(ch) || pending(ch) {
		t.Fatal("want exactly one pending notification")
	}
	if !pending(ch2) {
		t.Fatal("second subscriber not notified")
	}
	// Same-number list: nothing changed, no notification. Older list: refused.
	if err := c.SetRevocations(rl); err != nil || pending(ch) {
		t.Fatalf("same list: err %v", err)
	}
	if err := c.SetRevocations(NewRevocationList("prod")); err == nil || !strings.Contains(err.Error(), "older") {
		t.Fatalf("older list: %v", err)
	}
	if err := c.SetRevocations(NewRevocationList("evil").Add(clock.Now()).Add(clock.Now())); err == nil {
		t.Fatal("list for another cluster accepted")
	}
	cancel()
	cancel()
	if err := c.SetRevocations(rl.Add(clock.Now(), big.NewInt(43))); err != nil {
		t.Fatal(err)
	}
	if pending(ch) {
		t.Fatal("notified after cancel")
	}
	if !pending(ch2) {
		t.Fatal("remaining subscriber not notified")
	}
}

func TestRevocationList(t *testing.T) {
	clock := newFakeClock()
	ca := newTestCA(t, "prod", clock)
	foreign := newTestCA(t, "prod", clock)
	elsewhere := newTestCA(t, "evil", clock)

	rl := NewRevocationList("prod")
	rl2 := rl.Add(clock.Now(), big.NewInt(5), big.NewInt(1<<40))
	if rl.Contains(big.NewInt(5)) || !rl2.Contains(big.NewInt(5)) || !rl2.Contains(big.NewInt(1<<40)) || rl2.Contains(big.NewInt(6)) {
		t.Fatal("Add/Contains")
	}
	if rl2.Number() != 1 {
		t.Fatalf("Number = %d", rl2.Number())
	}
	signed, err := rl2.Sign(ca.issuer)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseRevocationList(signed, ca.bundle, clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got.Number() != 1 || !got.Contains(big.NewInt(1<<40)) || len(got.Serials()) != 2 || !got.Updated().Equal(clock.Now()) {
		t.Fatalf("round trip: #%d %v", got.Number(), got.Serials())
	}

	byForeign, _ := rl2.Sign(foreign.issuer)
	elseList, _ := NewRevocationList("evil").Sign(elsewhere.issuer)
	leafChain, leafKey := issue(t, ca.issuer, identity.Node("prod", "n1"), time.Hour)
	byLeaf, _ := rl2.Sign(&Issuer{Cert: leafChain[0], Key: leafKey})
	tampered := []byte(strings.Replace(string(signed), `"payload": "`, `"payload": "eyJ2`, 1))
	tests := []struct {
		name string
		data []byte
		b    *Bundle
		at   time.Duration
		want string
	}{
		{"foreign signer", byForeign, ca.bundle, 0, "not a CA in the trust bundle"},
		{"other cluster", elseList, elsewhere.bundle, 0, "bad revocation list"},
		{"signed by a leaf", byLeaf, ca.bundle, 0, "may not sign"},
		{"signer dropped from the bundle", signed, ca.bundle.RemoveIntermediate(ca.issuer.Cert), 0, "not a CA in the trust bundle"},
		{"tampered", tampered, ca.bundle, 0, ""},
		{"signer expired", signed, ca.bundle, 2 * DefaultIntermediateTTL, "expired"},
		{"garbage", []byte("{"), ca.bundle, 0, "bad revocation list"},
		{"no signer", []byte(`{"payload":"e30="}`), ca.bundle, 0, "no signer"},
	}
	for _, tt := range tests {
		if tt.name == "other cluster" {
			// signed correctly for evil, presented to prod
			tt.b = ca.bundle
		}
		_, err := ParseRevocationList(tt.data, tt.b, clock.Now().Add(tt.at))
		if !errors.Is(err, ErrBadRevocationList) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestRevokedIntermediateRevokesItsLeaves(t *testing.T) {
	clock := newFakeClock()
	ca := newTestCA(t, "prod", clock)
	self := endpoint(t, ca, clock, identity.Server("prod", "s1"), time.Hour)
	peer, _ := issue(t, ca.issuer, identity.Node("prod", "n1"), time.Hour)
	ch, cancel := self.Subscribe()
	defer cancel()
	if err := self.SetRevocations(self.Revocations().Add(clock.Now(), ca.issuer.Cert.SerialNumber)); err != nil {
		t.Fatal(err)
	}
	<-ch
	if _, err := self.VerifyPeer(peer); !errors.Is(err, ErrRevoked) {
		t.Fatalf("err = %v", err)
	}
}

func TestIntermediateRotation(t *testing.T) {
	clock := newFakeClock()
	ca := newTestCA(t, "prod", clock)
	self := endpoint(t, ca, clock, identity.Server("prod", "s1"), time.Hour)
	fromOld, _ := issue(t, ca.issuer, identity.Node("prod", "old"), time.Hour)

	next, err := ca.root.NewIssuer(IssuerConfig{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	rot := IntermediateRotation{Old: ca.issuer.Cert, New: next.Cert}
	overlap, err := rot.Start(self.Bundle(), clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	ch, cancel := self.Subscribe()
	defer cancel()
	if err := self.SetBundle(overlap); err != nil {
		t.Fatal(err)
	}
	<-ch
	fromNew, _ := issue(t, next, identity.Node("prod", "new"), time.Hour)
	for _, chain := range [][]*x509.Certificate{fromOld, fromNew, fromOld[:1], fromNew[:1]} {
		if _, err := self.VerifyPeer(chain); err != nil {
			t.Errorf("during overlap: %v", err)
		}
	}

	if err := self.SetBundle(rot.DropOld(overlap)); err != nil {
		t.Fatal(err)
	}
	<-ch
	if _, err := self.VerifyPeer(fromNew); err != nil {
		t.Errorf("new after DropOld: %v", err)
	}
	if _, err := self.VerifyPeer(fromOld); !errors.Is(err, ErrUnknownAuthority) {
		t.Errorf("old after DropOld: err = %v, want unknown authority", err)
	}
	// An intermediate from another root cannot be slipped into the bundle.
	foreign := newTestCA(t, "prod", clock)
	if _, err := (IntermediateRotation{Old: next.Cert, New: foreign.issuer.Cert}).Start(overlap, clock.Now()); !errors.Is(err, ErrUnknownAuthority) {
		t.Errorf("foreign intermediate: %v", err)
	}
}

// TestRootRotationWalk follows the root rotation procedure in the package
// documentation step by step.
func TestRootRotationWalk(t *testing.T) {
	clock := newFakeClock()
	ca := newTestCA(t, "prod", clock)
	updated := endpoint(t, ca, clock, identity.Server("prod", "s1"), 48*time.Hour)  // receives each new bundle
	stale := endpoint(t, ca, clock, identity.Node("prod", "offline"), 48*time.Hour) // keeps the old bundle
	leafOld, _ := issue(t, ca.issuer, identity.Node("prod", "a"), time.Hour)
	oldPin := Pin(ca.root.Cert)

	// 1. New root, trusted next to the old one.
	root2, err := NewRoot(RootConfig{Cluster: "prod", Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	b, err := updated.Bundle().AddRoot(root2.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := updated.SetBundle(b); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddRoot(ca.issuer.Cert); err == nil {
		t.Fatal("AddRoot accepted an intermediate")
	}

	// ... and a new intermediate under it, trusted next to the old one.
	issuer2, err := root2.NewIssuer(IssuerConfig{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	rot := IntermediateRotation{Old: ca.issuer.Cert, New: issuer2.Cert}
	if b, err = rot.Start(b, clock.Now()); err != nil {
		t.Fatal(err)
	}
	if err := updated.SetBundle(b); err != nil {
		t.Fatal(err)
	}

	// 2. Issue from the new hierarchy: both verify where the bundle arrived.
	leafNew, _ := issue(t, issuer2, identity.Node("prod", "b"), time.Hour)
	for name, chain := range map[string][]*x509.Certificate{"old leaf": leafOld, "new leaf": leafNew} {
		if _, err := updated.VerifyPeer(chain); err != nil {
			t.Errorf("step 2, updated verifier, %s: %v", name, err)
		}
	}
	// A verifier the bundle has not reached yet refuses the new leaf, even
	// with the new intermediate attached: why step 1 waits for distribution.
	if _, err := stale.VerifyPeer(leafNew); !errors.Is(err, ErrUnknownAuthority) {
		t.Errorf("stale verifier: %v", err)
	}

	// 3. One leaf lifetime later: drop the old intermediate and root.
	clock.Advance(2 * time.Hour)
	leafNew, _ = issue(t, issuer2, identity.Node("prod", "b"), time.Hour) // renewed
	b = rot.DropOld(b)
	if b, err = b.RemoveRoot(ca.root.Cert); err != nil {
		t.Fatal(err)
	}
	if _, err := b.RemoveRoot(root2.Cert); err == nil {
		t.Fatal("removed the last root")
	}
	if err := updated.SetBundle(b); err != nil {
		t.Fatal(err)
	}
	if _, err := updated.VerifyPeer(leafNew); err != nil {
		t.Errorf("step 3, new leaf: %v", err)
	}
	leafOld, _ = issue(t, ca.issuer, identity.Node("prod", "a"), time.Hour) // the old CA is no longer trusted
	if _, err := updated.VerifyPeer(leafOld); !errors.Is(err, ErrUnknownAuthority) {
		t.Errorf("step 3, leaf from the old hierarchy: %v", err)
	}
	if err := VerifyPin(root2.Cert, Pin(root2.Cert)); err != nil {
		t.Error(err)
	}
	if err := VerifyPin(root2.Cert, oldPin); !errors.Is(err, ErrPinMismatch) {
		t.Errorf("old pin for the new root: %v", err)
	}
	if len(b.Roots()) != 1 || len(b.Intermediates()) != 1 || !b.Roots()[0].Equal(root2.Cert) {
		t.Errorf("final bundle: %d roots, %d intermediates", len(b.Roots()), len(b.Intermediates()))
	}
	// The bundle survives its file format.
	pb, err := ParseBundle(b.PEM())
	if err != nil || len(pb.Roots()) != 1 || len(pb.Intermediates()) != 1 {
		t.Fatalf("ParseBundle: %v", err)
	}
}

func TestVerifyPin(t *testing.T) {
	ca := newTestCA(t, "prod", newFakeClock())
	other := newTestCA(t, "prod", newFakeClock())
	pin := Pin(ca.root.Cert)
	if !strings.HasPrefix(pin, "sha256:") || len(pin) != len("sha256:")+64 {
		t.Fatalf("pin %q", pin)
	}
	tests := []struct {
		pin  string
		want string
	}{
		{pin, ""},
		{" " + pin + "\n", ""},
		{Pin(other.root.Cert), "do not join"},
		{Pin(ca.issuer.Cert), "do not join"},
		{"sha256:zz", "not a CA pin"},
		{"md5:" + pin[7:], "not a CA pin"},
		{"", "not a CA pin"},
	}
	for _, tt := range tests {
		err := VerifyPin(ca.root.Cert, tt.pin)
		if tt.want == "" {
			if err != nil {
				t.Errorf("%q: %v", tt.pin, err)
			}
			continue
		}
		if !errors.Is(err, ErrPinMismatch) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: err = %v, want %q", tt.pin, err, tt.want)
		}
	}
}
