package transport_test

// These tests run the transport with the real cluster PKI (security/pki):
// certificates from CSRs, renewal, intermediate rotation, revocation and
// expiry, judged by an injected clock.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"nexus.dev/nexus/internal/testnet"
	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
	"nexus.dev/nexus/transport"
)

// manualClock is a pki.Clock that moves only when told.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// NewTimer returns a timer that never fires: these tests renew by hand.
func (c *manualClock) NewTimer(time.Duration) pki.Timer { return stoppedTimer{} }

type stoppedTimer struct{}

func (stoppedTimer) C() <-chan time.Time { return nil }
func (stoppedTimer) Stop() bool          { return true }

// cluster is a root, an issuer and the shared trust state of a test.
type testCluster struct {
	t      *testing.T
	clock  *manualClock
	root   *pki.Root
	issuer *pki.Issuer
	bundle *pki.Bundle
}

func newTestCluster(t *testing.T) *testCluster {
	t.Helper()
	clock := &manualClock{now: time.Now()}
	root, err := pki.NewRoot(pki.RootConfig{Cluster: cluster, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := root.NewIssuer(pki.IssuerConfig{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	b, err := pki.NewBundle(root.Cert, iss.Cert)
	if err != nil {
		t.Fatal(err)
	}
	return &testCluster{t: t, clock: clock, root: root, issuer: iss, bundle: b}
}

// issue makes a key and CSR for id, as the endpoint would, and has the
// current issuer sign it.
func (c *testCluster) issue(id identity.ID) ([]*x509.Certificate, *ecdsa.PrivateKey) {
	c.t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		c.t.Fatal(err)
	}
	csr, err := pki.CreateCSR(key, id)
	if err != nil {
		c.t.Fatal(err)
	}
	chain, err := c.issuer.Sign(csr, id, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	return chain, key
}

// leaf issues a certificate for id and wraps it in credentials that trust
// the cluster's current bundle and judge time by its clock.
func (c *testCluster) leaf(id identity.ID) ([]*x509.Certificate, *pki.Credentials) {
	c.t.Helper()
	chain, key := c.issue(id)
	creds, err := pki.NewCredentials(pki.CredentialsConfig{Chain: chain, Key: key, Bundle: c.bundle, Clock: c.clock})
	if err != nil {
		c.t.Fatal(err)
	}
	return chain, creds
}

// renew gives creds a new key and certificate from the current issuer.
func (c *testCluster) renew(creds *pki.Credentials) *x509.Certificate {
	c.t.Helper()
	chain, key := c.issue(creds.Identity())
	if err := creds.SetCertificate(chain, key); err != nil {
		c.t.Fatal(err)
	}
	return chain[0]
}

func listenPKI(t *testing.T, creds *pki.Credentials) string {
	t.Helper()
	l, err := transport.Listen(transport.ListenerConfig{Addr: "[::1]:0", Credentials: creds,
		Services: map[string]transport.Service{"nexus-test": echo}, Authorize: allowAll})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Serve(context.Background()) }()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String()
}

func TestPKIConnectionSurvivesRenewalAndRotation(t *testing.T) {
	c := newTestCluster(t)
	_, serverCreds := c.leaf(serverID)
	_, clientCreds := c.leaf(nodeA)
	addr := listenPKI(t, serverCreds)
	d := newDialer(t, clientCreds, transport.Tuning{})
	tgt := transport.Target{Addr: addr, Service: "nexus-test", Verify: transport.ExpectID(serverID)}
	ctx := ctxT(t)

	conn, err := d.Conn(ctx, tgt)
	if err != nil {
		t.Fatal(err)
	}
	callOn := func(what string) {
		t.Helper()
		if got, err := conn.Call(ctx, "echo", []byte(what)); err != nil || string(got) != what {
			t.Fatalf("%s: call on the first connection: %q, %v", what, got, err)
		}
	}
	callOn("before")

	// Renewal at half-life on both sides: the connection goes on, a new
	// connection presents the new certificate.
	c.clock.Advance(13 * time.Hour)
	newServer := c.renew(serverCreds)
	c.renew(clientCreds)
	callOn("after renewal")
	d2 := newDialer(t, clientCreds, transport.Tuning{})
	c2, err := d2.Conn(ctx, tgt)
	if err != nil {
		t.Fatal(err)
	}
	if c2.PeerCertificate().SerialNumber.Cmp(newServer.SerialNumber) != 0 {
		t.Fatal("a new connection did not present the renewed certificate")
	}

	// Intermediate rotation: both intermediates trusted, leaves renewed from
	// the new one; the first connection (old leaves) keeps working.
	newIssuer, err := c.root.NewIssuer(pki.IssuerConfig{Clock: c.clock})
	if err != nil {
		t.Fatal(err)
	}
	rot := pki.IntermediateRotation{Old: c.issuer.Cert, New: newIssuer.Cert}
	overlap, err := rot.Start(c.bundle, c.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, cr := range []*pki.Credentials{serverCreds, clientCreds} {
		if err := cr.SetBundle(overlap); err != nil {
			t.Fatal(err)
		}
	}
	c.issuer, c.bundle = newIssuer, overlap
	c.renew(serverCreds)
	c.renew(clientCreds)
	time.Sleep(20 * time.Millisecond) // let re-verification run
	callOn("during the overlap")

	// One leaf lifetime later the old intermediate is dropped: connections
	// authenticated through it close, and calls go on over new ones.
	c.clock.Advance(20 * time.Hour)
	c.renew(serverCreds)
	c.renew(clientCreds)
	final := rot.DropOld(overlap)
	for _, cr := range []*pki.Credentials{serverCreds, clientCreds} {
		if err := cr.SetBundle(final); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-conn.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a connection authenticated through the dropped intermediate stayed open")
	}
	if got, err := d.Call(ctx, tgt, "echo", []byte("after rotation")); err != nil || string(got) != "after rotation" {
		t.Fatalf("call after the rotation: %q, %v", got, err)
	}
}

func TestPKIRevocationAndExpiry(t *testing.T) {
	c := newTestCluster(t)
	serverChain, serverCreds := c.leaf(serverID)
	_, clientCreds := c.leaf(nodeA)
	addr := listenPKI(t, serverCreds)
	d := newDialer(t, clientCreds, transport.Tuning{})
	tgt := transport.Target{Addr: addr, Service: "nexus-test", Verify: transport.ExpectID(serverID)}
	ctx := ctxT(t)
	conn, err := d.Conn(ctx, tgt)
	if err != nil {
		t.Fatal(err)
	}

	// A node certificate cannot pass for the server.
	_, impostor := c.leaf(nodeB)
	fake := listenPKI(t, impostor)
	if _, err := d.Call(ctx, transport.Target{Addr: fake, Service: "nexus-test", Verify: transport.ExpectID(serverID)}, "echo", nil); !errors.Is(err, transport.ErrNotAuthorized) {
		t.Fatalf("a node posing as the server: %v, want ErrNotAuthorized", err)
	}

	// Revoking the server's certificate closes the live connection and
	// refuses new ones.
	list := pki.NewRevocationList(cluster).Add(c.clock.Now(), serverChain[0].SerialNumber)
	if err := clientCreds.SetRevocations(list); err != nil {
		t.Fatal(err)
	}
	select {
	case <-conn.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the connection to a revoked server stayed open")
	}
	if _, err := d.Call(ctx, tgt, "echo", nil); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("call to a revoked server: %v", err)
	}

	// An expired client certificate is refused by a fresh server.
	_, serverCreds2 := c.leaf(serverID)
	addr2 := listenPKI(t, serverCreds2)
	c.clock.Advance(25 * time.Hour)
	_, err = d.Call(ctx, transport.Target{Addr: addr2, Service: "nexus-test", Verify: transport.ExpectID(serverID)}, "echo", nil)
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("call with expired certificates: %v", err)
	}
}

// TestTwoProcessesAcrossHosts: a server process in harness host 0 and this
// test process dialing from host 1, over IPv6, with certificates issued by
// the cluster PKI through CSRs.
func TestTwoProcessesAcrossHosts(t *testing.T) {
	nw := testnet.New(t, testnet.Options{Hosts: 2})
	h0, h1 := nw.Hosts[0], nw.Hosts[1]
	c := newTestCluster(t)
	dir := t.TempDir()
	chain, key := c.issue(serverID)
	if err := os.WriteFile(filepath.Join(dir, "server.crt"), pki.EncodeCertificates(chain...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKeyFile(filepath.Join(dir, "server.key"), key, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bundle.pem"), c.bundle.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := h0.Command(ctx, os.Args[0], "-test.run=^TestServeProcess$")
	srv.Env = append(os.Environ(), "NEXUS_TEST_SERVE_DIR="+dir)
	stdout, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "listening ") {
		t.Fatalf("server process: %q, %v", line, err)
	}
	port := strings.TrimSpace(strings.TrimPrefix(line, "listening "))

	_, clientCreds := c.leaf(nodeA)
	var d *transport.Dialer
	var reply []byte
	if err := h1.Do(func() error {
		d = newDialer(t, clientCreds, transport.Tuning{})
		tgt := transport.Target{Addr: net.JoinHostPort(h0.IPv6.String(), port), Service: "nexus-test", Verify: transport.ExpectID(serverID)}
		var err error
		reply, err = d.Call(ctx, tgt, "peer", nil)
		return err
	}); err != nil {
		t.Fatalf("call from host 1 to the server process in host 0: %v", err)
	}
	if string(reply) != nodeA.String() {
		t.Fatalf("the server saw the caller as %q, want %s", reply, nodeA)
	}
	if !h0.IPv6.Is6() || h0.IPv6.Is4In6() {
		t.Fatalf("host address %s is not IPv6", h0.IPv6)
	}
}

// TestServeProcess is the server side of TestTwoProcessesAcrossHosts, run in
// a child process; it does nothing in a normal test run.
func TestServeProcess(t *testing.T) {
	dir := os.Getenv("NEXUS_TEST_SERVE_DIR")
	if dir == "" {
		t.Skip("helper process for TestTwoProcessesAcrossHosts")
	}
	data, err := os.ReadFile(filepath.Join(dir, "server.crt"))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := pki.ParseCertificates(data)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.ReadKeyFile(filepath.Join(dir, "server.key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err = os.ReadFile(filepath.Join(dir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := pki.ParseBundle(data)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := pki.NewCredentials(pki.CredentialsConfig{Chain: chain, Key: key, Bundle: bundle})
	if err != nil {
		t.Fatal(err)
	}
	l, err := transport.Listen(transport.ListenerConfig{Addr: "[::]:0", Credentials: creds,
		Services: map[string]transport.Service{"nexus-test": echo}, Authorize: allowAll})
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	fmt.Printf("listening %s\n", port)
	_ = l.Serve(context.Background()) // until the parent kills this process
}
