package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"nexus.dev/nexus/security/identity"
)

func TestRenewAt(t *testing.T) {
	nb := t0
	na := t0.Add(24 * time.Hour)
	tests := []struct {
		name   string
		nb, na time.Time
		jitter float64
		want   time.Time
	}{
		{"no jitter: half-life", nb, na, 0, t0.Add(12 * time.Hour)},
		{"full jitter: 60%", nb, na, 1, t0.Add(12*time.Hour + 144*time.Minute)},
		{"half jitter", nb, na, 0.5, t0.Add(12*time.Hour + 72*time.Minute)},
		{"negative jitter clamped", nb, na, -3, t0.Add(12 * time.Hour)},
		{"jitter above 1 clamped", nb, na, 7, t0.Add(12*time.Hour + 144*time.Minute)},
		{"NaN jitter", nb, na, math.NaN(), t0.Add(12 * time.Hour)},
		{"short lifetime", nb, nb.Add(10 * time.Second), 0, t0.Add(5 * time.Second)},
		{"empty lifetime", nb, nb, 0.5, nb},
		{"inverted", na, nb, 0.5, na},
	}
	for _, tt := range tests {
		if got := RenewAt(tt.nb, tt.na, tt.jitter); !got.Equal(tt.want) {
			t.Errorf("%s: RenewAt = %s, want %s", tt.name, got, tt.want)
		}
	}
	// Bounds for any jitter: within [50%, 60%] of the lifetime.
	for j := 0.0; j <= 1; j += 0.01 {
		got := RenewAt(nb, na, j)
		if got.Before(t0.Add(12*time.Hour)) || got.After(t0.Add(12*time.Hour+144*time.Minute)) {
			t.Fatalf("jitter %v: %s outside [50%%, 60%%]", j, got)
		}
	}
}

// renewHarness is an endpoint with a Renewer whose round trip is the test
// CA, counting calls and optionally failing.
type renewHarness struct {
	clock   *fakeClock
	ca      *testCA
	creds   *Credentials
	renewer *Renewer
	calls   atomic.Int32
	fail    atomic.Int32 // fail this many calls first
	noSave  atomic.Int32 // fail this many saves first
	saved   chan []*x509.Certificate
}

func newRenewHarness(t *testing.T, ttl time.Duration, jitter float64) *renewHarness {
	h := &renewHarness{clock: newFakeClock(), saved: make(chan []*x509.Certificate, 10)}
	h.ca = newTestCA(t, "prod", h.clock)
	h.creds = endpoint(t, h.ca, h.clock, identity.Node("prod", "n1"), ttl)
	var err error
	h.renewer, err = NewRenewer(RenewerConfig{
		Credentials: h.creds,
		Clock:       h.clock,
		Jitter:      func() float64 { return jitter },
		Renew: func(_ context.Context, csr []byte) ([]*x509.Certificate, error) {
			h.calls.Add(1)
			if h.fail.Load() > 0 {
				h.fail.Add(-1)
				return nil, errors.New("CA unreachable")
			}
			return h.ca.issuer.Sign(csr, identity.Node("prod", "n1"), ttl)
		},
		Renewed: func(chain []*x509.Certificate, _ *ecdsa.PrivateKey) error {
			if h.noSave.Load() > 0 {
				h.noSave.Add(-1)
				return errors.New("write node.key: read-only file system")
			}
			h.saved <- chain
			return nil
		},
		RetryInterval: time.Second,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *renewHarness) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.renewer.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run = %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not stop")
		}
	})
}

func (h *renewHarness) waitSaved(t *testing.T) []*x509.Certificate {
	t.Helper()
	select {
	case c := <-h.saved:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no renewal")
		return nil
	}
}

func TestRenewerRenewsAtHalfLifeWithNewKey(t *testing.T) {
	const ttl = time.Hour
	h := newRenewHarness(t, ttl, 0.5)
	first, _ := h.creds.GetCertificate()
	leaf := h.creds.Leaf()
	want := RenewAt(leaf.NotBefore, leaf.NotAfter, 0.5)
	h.run(t)

	for i := range 3 {
		tm := h.clock.waitTimer(t)
		if !tm.at.Equal(want) {
			t.Fatalf("renewal %d scheduled at %s, want %s", i, tm.at, want)
		}
		h.clock.Set(want.Add(-time.Millisecond))
		if n := h.calls.Load(); n != int32(i) {
			t.Fatalf("renewed before its time: %d calls", n)
		}
		h.clock.Set(want)
		chain := h.waitSaved(t)
		got, _ := h.creds.GetCertificate()
		if got.Leaf != chain[0] {
			t.Fatalf("GetCertificate does not serve the renewed certificate")
		}
		if got.PrivateKey.(*ecdsa.PrivateKey).Equal(first.PrivateKey) {
			t.Fatal("renewal reused the old key")
		}
		if got.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 || !got.Leaf.NotBefore.After(first.Leaf.NotBefore) {
			t.Fatal("not a new certificate")
		}
		if !got.Leaf.PublicKey.(*ecdsa.PublicKey).Equal(got.PrivateKey.(*ecdsa.PrivateKey).Public()) {
			t.Fatal("served certificate and key do not match")
		}
		if id, err := h.creds.VerifyPeer(chain); err != nil || id != identity.Node("prod", "n1") {
			t.Fatalf("renewed certificate does not verify: %v %v", id, err)
		}
		first = got
		want = RenewAt(got.Leaf.NotBefore, got.Leaf.NotAfter, 0.5)
	}
}

func TestRenewerRetriesWithBackoff(t *testing.T) {
	h := newRenewHarness(t, time.Hour, 0)
	h.fail.Store(2)
	leaf := h.creds.Leaf()
	h.run(t)

	tm := h.clock.waitTimer(t)
	h.clock.Set(tm.at) // first attempt fails
	tm = h.clock.waitTimer(t)
	if d := tm.at.Sub(h.clock.Now()); d != time.Second {
		t.Fatalf("first retry in %s, want 1s", d)
	}
	h.clock.Set(tm.at) // second attempt fails
	tm = h.clock.waitTimer(t)
	if d := tm.at.Sub(h.clock.Now()); d != 2*time.Second {
		t.Fatalf("second retry in %s, want 2s", d)
	}
	if h.creds.Leaf() != leaf {
		t.Fatal("certificate changed by a failed renewal")
	}
	h.clock.Set(tm.at)
	h.waitSaved(t)
	if h.calls.Load() != 3 {
		t.Fatalf("%d calls, want 3", h.calls.Load())
	}
}

// A renewal whose save fails is an error (the copy on disk would expire),
// and Run retries it rather than waiting for the next half-life.
func TestRenewerReportsAndRetriesUnsavedRenewal(t *testing.T) {
	h := newRenewHarness(t, time.Hour, 0)
	h.noSave.Store(1)
	err := h.renewer.RenewNow(context.Background())
	if !errors.Is(err, ErrNotSaved) || !strings.Contains(err.Error(), "read-only file system") {
		t.Fatalf("RenewNow with a failing save = %v, want ErrNotSaved with the cause", err)
	}

	h = newRenewHarness(t, time.Hour, 0)
	h.noSave.Store(1)
	h.run(t)
	tm := h.clock.waitTimer(t)
	h.clock.Set(tm.at) // renews, but the save fails
	tm = h.clock.waitTimer(t)
	if d := tm.at.Sub(h.clock.Now()); d != time.Second {
		t.Fatalf("after a failed save the next attempt is in %s, want the 1s retry", d)
	}
	h.clock.Set(tm.at)
	h.waitSaved(t)
}

func TestRenewNowKicksRun(t *testing.T) {
	h := newRenewHarness(t, time.Hour, 0)
	h.run(t)
	old := h.clock.waitTimer(t)
	h.clock.Advance(time.Minute)
	if err := h.renewer.RenewNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.waitSaved(t)
	next := h.clock.waitTimer(t) // Run recomputed for the new certificate
	leaf := h.creds.Leaf()
	if !next.at.Equal(RenewAt(leaf.NotBefore, leaf.NotAfter, 0)) || next.at.Equal(old.at) {
		t.Fatalf("after RenewNow: timer at %s (old %s)", next.at, old.at)
	}
}

func TestRenewNowRefusesAnotherIdentity(t *testing.T) {
	clock := newFakeClock()
	ca := newTestCA(t, "prod", clock)
	creds := endpoint(t, ca, clock, identity.Node("prod", "n1"), time.Hour)
	before := creds.Leaf()
	r, err := NewRenewer(RenewerConfig{
		Credentials: creds, Clock: clock, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Renew: func(_ context.Context, csr []byte) ([]*x509.Certificate, error) {
			return ca.issuer.Sign(csr, identity.Node("prod", "n2"), time.Hour)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.RenewNow(context.Background()); !errors.Is(err, ErrWrongIdentity) || !strings.Contains(err.Error(), "someone else") {
		t.Fatalf("err = %v", err)
	}
	if creds.Leaf() != before {
		t.Fatal("certificate replaced")
	}
}
