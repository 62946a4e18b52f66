package join

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
	"nexus.dev/nexus/security/token"
	"nexus.dev/nexus/transport"
)

// cluster is a server's PKI directory, token store and join listener.
type cluster struct {
	dir    pki.Dir
	tokens *token.Store
	addr   string
	pin    string
	now    *fakeNow
}

type fakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeNow) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeNow) Advance(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

// newCluster initialises a CA named name and serves joins on [::1].
// bundle, if set, replaces what the server hands out.
func newCluster(t *testing.T, name string, bundle func(*pki.Bundle) *pki.Bundle) *cluster {
	t.Helper()
	base := t.TempDir()
	c := &cluster{dir: pki.Dir{Path: filepath.Join(base, "pki")}, now: &fakeNow{t: time.Now()}}
	if err := c.dir.Init(pki.InitConfig{Cluster: name, ServerName: "s1"}); err != nil {
		t.Fatal(err)
	}
	c.tokens = token.NewStore(token.StoreConfig{Path: filepath.Join(base, "tokens.json"), Now: c.now.Now})
	root, err := c.dir.RootCert()
	if err != nil {
		t.Fatal(err)
	}
	c.pin = pki.Pin(root)
	creds, err := c.dir.Credentials()
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Cluster: name, Tokens: c.tokens,
		Issuer: func() (*pki.Issuer, error) { return c.dir.Issuer(0) },
		Bundle: func() (*pki.Bundle, error) {
			b, err := c.dir.Bundle()
			if err == nil && bundle != nil {
				b = bundle(b)
			}
			return b, err
		}}
	l, err := transport.Listen(transport.ListenerConfig{Addr: "[::1]:0", Credentials: creds,
		Services:  map[string]transport.Service{ServiceName: srv.Service()},
		Authorize: func(identity.ID, string) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Serve(context.Background()) }()
	t.Cleanup(func() { l.Close(); <-done })
	c.addr = l.Addr().String()
	return c
}

func (c *cluster) token(t *testing.T, role token.Role, ttl time.Duration, uses int) string {
	t.Helper()
	tok, _, err := c.tokens.Create(role, ttl, uses)
	if err != nil {
		t.Fatal(err)
	}
	return tok.String()
}

func (c *cluster) usesLeft(t *testing.T) int {
	t.Helper()
	recs, err := c.tokens.List()
	if err != nil || len(recs) != 1 {
		t.Fatalf("token list: %v %v", recs, err)
	}
	return recs[0].UsesLeft
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestJoinIssuesACertificateForTheTokensRole(t *testing.T) {
	c := newCluster(t, "prod", nil)
	for _, tt := range []struct {
		role token.Role
		want identity.ID
	}{
		{token.RoleAgent, identity.Node("prod", "m1")},
		{token.RoleServer, identity.Server("prod", "m1")},
	} {
		res, err := Join(ctxT(t), Config{Addr: c.addr, Token: c.token(t, tt.role, time.Hour, 1), Pin: c.pin, Name: "m1"})
		if err != nil {
			t.Fatalf("%s join: %v", tt.role, err)
		}
		if res.ID != tt.want {
			t.Fatalf("%s join got %s, want %s", tt.role, res.ID, tt.want)
		}
		if !res.Chain[0].PublicKey.(*ecdsa.PublicKey).Equal(res.Key.Public()) {
			t.Fatal("the certificate is not for the joiner's own key")
		}
		if _, err := res.Bundle.Verify(res.Chain, time.Now()); err != nil {
			t.Fatalf("issued chain does not verify: %v", err)
		}
		// The new credentials work for mutual TLS with the cluster.
		if _, err := pki.NewCredentials(pki.CredentialsConfig{Chain: res.Chain, Key: res.Key, Bundle: res.Bundle}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestJoinRejectsBadTokens(t *testing.T) {
	c := newCluster(t, "prod", nil)
	tok := c.token(t, token.RoleAgent, time.Hour, 1)
	if _, err := Join(ctxT(t), Config{Addr: c.addr, Token: tok, Pin: c.pin, Name: "m1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Join(ctxT(t), Config{Addr: c.addr, Token: tok, Pin: c.pin, Name: "m2"}); !strings.Contains(fmt.Sprint(err), "no uses left") {
		t.Fatalf("second use of a one-use token: %v", err)
	}

	c2 := newCluster(t, "prod2", nil)
	expiring := c2.token(t, token.RoleAgent, time.Hour, 5)
	c2.now.Advance(2 * time.Hour)
	if _, err := Join(ctxT(t), Config{Addr: c2.addr, Token: expiring, Pin: c2.pin, Name: "m1"}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v", err)
	}

	forged := strings.Join(append(strings.Split(expiring, ".")[:2], "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), ".")
	if _, err := Join(ctxT(t), Config{Addr: c2.addr, Token: forged, Pin: c2.pin, Name: "m1"}); err == nil {
		t.Fatal("a token with the wrong secret was accepted")
	}
	if _, err := Join(ctxT(t), Config{Addr: c2.addr, Token: "nxt1.garbage", Pin: c2.pin, Name: "m1"}); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("malformed token: %v", err)
	}
}

func TestJoinerRefusesAServerThatDoesNotMatchThePin(t *testing.T) {
	real := newCluster(t, "prod", nil)
	tok := real.token(t, token.RoleAgent, time.Hour, 1)

	// Wrong pin against the real server: refused before the token is sent.
	other := newCluster(t, "other", nil)
	_, err := Join(ctxT(t), Config{Addr: real.addr, Token: tok, Pin: other.pin, Name: "m1"})
	if !errors.Is(err, ErrServerNotTrusted) || !errors.Is(err, pki.ErrPinMismatch) {
		t.Fatalf("wrong pin: %v", err)
	}
	if real.usesLeft(t) != 1 {
		t.Fatal("the token was consumed although the joiner refused the server")
	}

	// An impostor with its own CA, shown the real pin.
	if _, err := Join(ctxT(t), Config{Addr: other.addr, Token: tok, Pin: real.pin, Name: "m1"}); !errors.Is(err, ErrServerNotTrusted) {
		t.Fatalf("impostor server: %v", err)
	}

	// An impostor that hands out the real (public) root beside its own CA.
	realBundle, err := real.dir.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	sneaky := newCluster(t, "prod", func(own *pki.Bundle) *pki.Bundle {
		b, err := own.AddRoot(realBundle.Roots()[0])
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
	if _, err := Join(ctxT(t), Config{Addr: sneaky.addr, Token: tok, Pin: real.pin, Name: "m1"}); !errors.Is(err, ErrServerNotTrusted) {
		t.Fatalf("impostor offering the real root beside its own: %v", err)
	}
	if real.usesLeft(t) != 1 {
		t.Fatal("the token was consumed")
	}
}

func TestServerRejectsBadRequestsWithoutBurningTheToken(t *testing.T) {
	c := newCluster(t, "prod", nil)
	tok := c.token(t, token.RoleAgent, time.Hour, 1)
	conn, err := transport.DialAnonymous(ctxT(t), c.addr, ServiceName, func(chain []*x509.Certificate) (identity.ID, error) {
		return pki.LeafIdentity(chain[0])
	}, transport.Tuning{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	key, _ := pki.GenerateKey()
	csr, _ := pki.CreateCSR(key, identity.Node("prod", "m1"))
	for name, req := range map[string]Request{
		"garbage CSR": {Token: tok, Name: "m1", CSR: []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")},
		"bad name":    {Token: tok, Name: "../etc", CSR: csr},
		"upper case":  {Token: tok, Name: "M1", CSR: csr},
		"empty token": {Token: "", Name: "m1", CSR: csr},
	} {
		data, _ := json.Marshal(req)
		if _, err := conn.Call(ctxT(t), "join", data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := conn.Call(ctxT(t), "join", []byte("{not json")); err == nil {
		t.Error("garbage JSON accepted")
	}
	if c.usesLeft(t) != 1 {
		t.Fatal("a rejected request consumed the token")
	}
}
