package join

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
	"nexus.dev/nexus/security/token"
	"nexus.dev/nexus/store/embed/embedtest"
	"nexus.dev/nexus/transport"
)

// cluster is a server's PKI directory, token store and join listener.
type cluster struct {
	dir    pki.Dir
	tokens *token.Store
	addr   string
	pin    string
	now    *fakeNow
	admit  *admitter
}

// admitter admits servers as the server package does, minus the store
// membership: it refuses names it was told are members, signs the joiner's
// intermediate with the cluster's root, and fails when told to.
type admitter struct {
	dir     pki.Dir
	mu      sync.Mutex
	members map[string]bool
	fail    error
}

func (a *admitter) CheckServer(_ context.Context, name, _ string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.members[name] {
		return fmt.Errorf("server %q is already a member of the store", name)
	}
	return nil
}

func (a *admitter) AdmitServer(_ context.Context, name, peerAddr string, csr []byte) (*ServerGrant, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return nil, a.fail
	}
	root, err := a.dir.Root(nil)
	if err != nil {
		return nil, err
	}
	inter, err := root.SignIntermediate(csr, 0, nil)
	if err != nil {
		return nil, err
	}
	a.members[name] = true
	return &ServerGrant{Intermediate: pki.EncodeCertificates(inter), SecretsKey: []byte("keyring"),
		Members: []Member{{Name: "s1", ID: 1, PeerAddr: "[::1]:7380"}, {Name: name, ID: 2, PeerAddr: peerAddr, Learner: true}}, Revision: 42}, nil
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
func newCluster(t testing.TB, name string, bundle func(*pki.Bundle) *pki.Bundle) *cluster {
	t.Helper()
	base := t.TempDir()
	c := &cluster{dir: pki.Dir{Path: filepath.Join(base, "pki")}, now: &fakeNow{t: time.Now()}}
	if err := c.dir.Init(pki.InitConfig{Cluster: name, ServerName: "s1"}); err != nil {
		t.Fatal(err)
	}
	c.tokens = token.NewStore(token.StoreConfig{Client: embedtest.Client(t), Now: c.now.Now})
	c.admit = &admitter{dir: c.dir, members: map[string]bool{"s1": true}}
	root, err := c.dir.RootCert()
	if err != nil {
		t.Fatal(err)
	}
	c.pin = pki.Pin(root)
	creds, err := c.dir.Credentials()
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Cluster: name, Tokens: c.tokens, Admit: c.admit,
		Servers: func(context.Context) []string { return []string{"https://s1.example:7443"} },
		Issuer:  func() (*pki.Issuer, error) { return c.dir.Issuer(0) },
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

func (c *cluster) token(t testing.TB, role token.Role, ttl time.Duration, uses int) string {
	t.Helper()
	tok, _, err := c.tokens.Create(context.Background(), role, ttl, uses)
	if err != nil {
		t.Fatal(err)
	}
	return tok.String()
}

func (c *cluster) usesLeft(t testing.TB) int {
	t.Helper()
	recs, err := c.tokens.List(context.Background())
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
		res, err := Join(ctxT(t), Config{Addr: c.addr, Token: c.token(t, tt.role, time.Hour, 1), Pin: c.pin, Name: "m1", Role: tt.role, PeerAddr: "[fd00::2]:7380"})
		if err != nil {
			t.Fatalf("%s join: %v", tt.role, err)
		}
		if len(res.Servers) != 1 || res.Servers[0] != "https://s1.example:7443" {
			t.Fatalf("%s join: servers %v", tt.role, res.Servers)
		}
		if tt.role == token.RoleServer {
			checkServerResult(t, res)
		} else if res.Server != nil {
			t.Fatal("an agent got a server grant")
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

// checkServerResult checks a joined server's grant: an intermediate CA for
// its own key, signed by the root it pinned, trusted by the bundle it got,
// able to issue leaves that verify.
func checkServerResult(t *testing.T, res *Result) {
	t.Helper()
	g := res.Server
	if g == nil {
		t.Fatal("a server join got no server grant")
	}
	if !g.Intermediate.PublicKey.(*ecdsa.PublicKey).Equal(g.IntermediateKey.Public()) || !g.Intermediate.IsCA {
		t.Fatal("the intermediate is not a CA for the joiner's own key")
	}
	if err := g.Intermediate.CheckSignatureFrom(g.Root); err != nil || !slices.ContainsFunc(res.Bundle.Roots(), g.Root.Equal) {
		t.Fatalf("the intermediate is not signed by the pinned root: %v", err)
	}
	iss := &pki.Issuer{Cert: g.Intermediate, Key: g.IntermediateKey}
	key, _ := pki.GenerateKey()
	csr, _ := pki.CreateCSR(key, identity.Node(res.ID.Cluster, "n9"))
	chain, err := iss.Sign(csr, identity.Node(res.ID.Cluster, "n9"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res.Bundle.Verify(chain, time.Now()); err != nil {
		t.Fatalf("a leaf from the joined server's own CA does not verify with the bundle it got: %v", err)
	}
	if string(g.SecretsKey) != "keyring" || g.Revision != 42 || len(g.Members) != 2 || !g.Members[1].Learner {
		t.Fatalf("grant %+v", g)
	}
}

// A joining server is refused, keeping the token's use, when its token is
// for an agent, when its name is a member already, when the server it
// asks does not admit servers, and when it gives no address to reach it;
// a use consumed by a join the cluster then failed to admit is given back.
func TestServerJoinRefusals(t *testing.T) {
	c := newCluster(t, "prod", nil)
	join := func(tok, name, peer string) error {
		_, err := Join(ctxT(t), Config{Addr: c.addr, Token: tok, Pin: c.pin, Name: name, Role: token.RoleServer, PeerAddr: peer})
		return err
	}
	agentTok := c.token(t, token.RoleAgent, time.Hour, 1)
	if err := join(agentTok, "s2", "[fd00::2]:7380"); !strings.Contains(fmt.Sprint(err), "joining as agent, not as server") {
		t.Fatalf("a server with an agent token: %v", err)
	}
	if c.usesLeft(t) != 1 {
		t.Fatal("the refused join used the agent token")
	}
	if _, err := c.tokens.Consume(context.Background(), agentTok, token.RoleAgent); err != nil {
		t.Fatal(err)
	}
	recs, _ := c.tokens.List(context.Background())
	if err := c.tokens.Revoke(context.Background(), recs[0].ID); err != nil {
		t.Fatal(err)
	}

	tok := c.token(t, token.RoleServer, time.Hour, 1)
	if err := join(tok, "s1", "[fd00::2]:7380"); !strings.Contains(fmt.Sprint(err), `server "s1" is already a member`) {
		t.Fatalf("a name that is a member: %v", err)
	}
	for _, peer := range []string{"", "[::]:7380", "fd00::2", "[fd00::2]:0"} {
		if err := join(tok, "s2", peer); err == nil || !strings.Contains(err.Error(), "store peer address") {
			t.Fatalf("peer address %q: %v", peer, err)
		}
	}
	c.admit.fail = errors.New("the store has no leader")
	if err := join(tok, "s2", "[fd00::2]:7380"); !strings.Contains(fmt.Sprint(err), "admit server s2: the store has no leader") {
		t.Fatalf("admission failure: %v", err)
	}
	if c.usesLeft(t) != 1 {
		t.Fatal("the use of a join that failed to admit was not given back")
	}
	c.admit.fail = nil
	if err := join(tok, "s2", "[fd00::2]:7380"); err != nil {
		t.Fatalf("retry after the cause was fixed: %v", err)
	}
	if c.usesLeft(t) != 0 {
		t.Fatal("the successful join did not use the token")
	}

	none := newCluster(t, "prod3", nil)
	tok = none.token(t, token.RoleServer, time.Hour, 1)
	none.admit = nil
	srv := &Server{Cluster: "prod3", Tokens: none.tokens, Issuer: func() (*pki.Issuer, error) { return none.dir.Issuer(0) }, Bundle: none.dir.Bundle}
	creds, err := none.dir.Credentials()
	if err != nil {
		t.Fatal(err)
	}
	l, err := transport.Listen(transport.ListenerConfig{Addr: "[::1]:0", Credentials: creds,
		Services: map[string]transport.Service{ServiceName: srv.Service()}, Authorize: func(identity.ID, string) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	go l.Serve(context.Background())
	defer l.Close()
	_, err = Join(ctxT(t), Config{Addr: l.Addr().String(), Token: tok, Pin: none.pin, Name: "s2", Role: token.RoleServer, PeerAddr: "[fd00::2]:7380"})
	if !strings.Contains(fmt.Sprint(err), "does not admit servers") {
		t.Fatalf("a server that admits no servers: %v", err)
	}
}

func FuzzCheckPeerAddr(f *testing.F) {
	for _, s := range []string{"[fd00::1]:7380", "10.0.0.1:7380", "host:1", "[::]:7380", ":7380", "x", "[fd00::1]:99999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if CheckPeerAddr(s) != nil {
			return
		}
		host, port, err := net.SplitHostPort(s)
		if err != nil || host == "" || port == "" {
			t.Fatalf("accepted %q", s)
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			t.Fatalf("accepted an unspecified host: %q", s)
		}
	})
}

// FuzzJoinRequest feeds arbitrary join requests to the server: none may
// panic, none but a well-formed one may use the token, and none is
// admitted as a server without going through the Admitter's checks.
func FuzzJoinRequest(f *testing.F) {
	c := newCluster(f, "prod", nil)
	tok := c.token(f, token.RoleServer, time.Hour, token.MaxUses)
	key, _ := pki.GenerateKey()
	csr, _ := pki.CreateCSR(key, identity.Node("prod", "m1"))
	good, _ := json.Marshal(Request{Token: tok, Name: "m1", CSR: csr, Role: token.RoleServer, Server: &ServerRequest{PeerAddr: "[fd00::9]:7380", IntermediateCSR: csr}})
	f.Add(good)
	f.Add([]byte(`{"token":"` + tok + `","name":"m1","role":"server"}`))
	f.Add([]byte(`{"role":"admin"}`))
	f.Add([]byte(`{`))
	srv := &Server{Cluster: "prod", Tokens: c.tokens, Admit: c.admit,
		Issuer: func() (*pki.Issuer, error) { return c.dir.Issuer(0) }, Bundle: c.dir.Bundle}
	f.Fuzz(func(t *testing.T, data []byte) {
		c.admit.mu.Lock()
		c.admit.members = map[string]bool{"s1": true}
		c.admit.mu.Unlock()
		before := c.usesLeft(t)
		resp, err := srv.join(context.Background(), data)
		after := c.usesLeft(t)
		if err != nil {
			if after != before {
				t.Fatalf("a refused request (%v) used the token", err)
			}
			return
		}
		if after != before-1 {
			t.Fatalf("an accepted request used %d uses", before-after)
		}
		var req Request
		if json.Unmarshal(data, &req) != nil || req.Token != tok {
			t.Fatalf("accepted a request that does not carry the token: %q", data)
		}
		if (req.Role == token.RoleServer) != (resp.Server != nil) {
			t.Fatalf("role %q got server grant %v", req.Role, resp.Server != nil)
		}
	})
}
