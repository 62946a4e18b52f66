package transport_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/transport"
	"nexus.dev/nexus/transport/transporttest"
)

const cluster = "test.nexus"

var (
	serverID = identity.Server(cluster, "s1")
	nodeA    = identity.Node(cluster, "a")
	nodeB    = identity.Node(cluster, "b")
)

func newCA(t *testing.T) *transporttest.CA {
	t.Helper()
	ca, err := transporttest.NewCA("test root")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *transporttest.CA, id identity.ID) *tls.Certificate {
	t.Helper()
	c, err := ca.IssueValid(id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// echo is the service every test serves.
var echo = transport.Service{
	Handler: transport.HandlerFunc(func(ctx context.Context, peer identity.ID, method string, req []byte) ([]byte, error) {
		switch method {
		case "echo":
			return req, nil
		case "peer":
			return []byte(peer.String()), nil
		case "serial":
			c, _ := transport.ConnFromContext(ctx)
			return []byte(c.PeerCertificate().SerialNumber.String()), nil
		case "fail":
			return nil, &transport.RemoteError{Code: 1042, Message: "boom"}
		}
		return nil, fmt.Errorf("unknown method %s", method)
	}),
	StreamHandler: transport.StreamHandlerFunc(func(ctx context.Context, peer identity.ID, method string, s *transport.ServerStream) error {
		switch method {
		case "count": // server streaming: Request() messages
			n, err := strconv.Atoi(string(s.Request()))
			if err != nil {
				return err
			}
			for i := range n {
				if err := s.Send([]byte(strconv.Itoa(i))); err != nil {
					return err
				}
			}
			return nil
		case "sum": // client streaming: total bytes received
			total := 0
			for {
				m, err := s.Recv()
				if errors.Is(err, io.EOF) {
					return s.Send([]byte(strconv.Itoa(total)))
				}
				if err != nil {
					return err
				}
				total += len(m)
			}
		}
		return fmt.Errorf("unknown method %s", method)
	}),
	OnConn: func(ctx context.Context, c *transport.Conn) { // datagram echo
		for {
			p, err := c.ReceiveDatagram(ctx)
			if err != nil {
				return
			}
			c.SendDatagram(append([]byte("echo:"), p...))
		}
	},
}

// logBuffer collects a component's log for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type server struct {
	l     *transport.Listener
	creds *transporttest.Credentials
	log   *logBuffer
	addr  string
}

// allowAll authorizes any verified peer for any service.
func allowAll(identity.ID, string) error { return nil }

// startServer listens on [::1] (or cfg.Addr) with creds and serves echo as
// "nexus-test" unless cfg says otherwise.
func startServer(t *testing.T, creds *transporttest.Credentials, cfg transport.ListenerConfig) *server {
	t.Helper()
	s := &server{creds: creds, log: &logBuffer{}}
	if cfg.Addr == "" {
		cfg.Addr = "[::1]:0"
	}
	cfg.Credentials = creds
	if cfg.Services == nil {
		cfg.Services = map[string]transport.Service{"nexus-test": echo}
	}
	if cfg.Authorize == nil {
		cfg.Authorize = allowAll
	}
	cfg.Logger = slog.New(slog.NewTextHandler(s.log, nil))
	l, err := transport.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.l = l
	s.addr = l.Addr().String()
	done := make(chan error, 1)
	go func() { done <- l.Serve(context.Background()) }()
	t.Cleanup(func() {
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s
}

func newDialer(t *testing.T, creds transport.Credentials, tune transport.Tuning) *transport.Dialer {
	t.Helper()
	d, err := transport.NewDialer(transport.DialerConfig{
		Credentials: creds,
		Tuning:      tune,
		Backoff:     transport.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// pair is a server with serverID and a dialer with nodeA, one CA.
func pair(t *testing.T) (*transporttest.CA, *server, *transporttest.Credentials, *transport.Dialer, transport.Target) {
	ca := newCA(t)
	s := startServer(t, transporttest.NewCredentials(ca, issue(t, ca, serverID)), transport.ListenerConfig{})
	cc := transporttest.NewCredentials(ca, issue(t, ca, nodeA))
	d := newDialer(t, cc, transport.Tuning{})
	return ca, s, cc, d, transport.Target{Addr: s.addr, Service: "nexus-test", Verify: transport.ExpectID(serverID)}
}

func TestRoundTrip(t *testing.T) {
	_, _, _, d, tgt := pair(t)
	ctx := ctxT(t)
	got, err := d.Call(ctx, tgt, "echo", []byte("hello"))
	if err != nil || string(got) != "hello" {
		t.Fatalf("echo = %q, %v; want hello", got, err)
	}
	got, err = d.Call(ctx, tgt, "peer", nil)
	if err != nil || string(got) != nodeA.String() {
		t.Fatalf("server saw peer %q, %v; want %s", got, err, nodeA)
	}
	_, err = d.Call(ctx, tgt, "fail", nil)
	var re *transport.RemoteError
	if !errors.As(err, &re) || re.Code != 1042 || re.Message != "boom" {
		t.Fatalf("fail = %v; want RemoteError 1042 boom", err)
	}
	c, err := d.Conn(ctx, tgt)
	if err != nil || c.Peer() != serverID {
		t.Fatalf("conn peer = %v, %v; want %s", c.Peer(), err, serverID)
	}
}

func TestStreaming(t *testing.T) {
	_, _, _, d, tgt := pair(t)
	ctx := ctxT(t)

	s, err := d.Stream(ctx, tgt, "count", []byte("5"))
	if err != nil {
		t.Fatal(err)
	}
	s.CloseSend()
	var got []string
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("server stream recv: %v", err)
		}
		got = append(got, string(m))
	}
	s.Close()
	if strings.Join(got, ",") != "0,1,2,3,4" {
		t.Fatalf("server stream got %v", got)
	}

	s, err = d.Stream(ctx, tgt, "sum", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 10 {
		if err := s.Send(make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	s.CloseSend()
	m, err := s.Recv()
	if err != nil || string(m) != "10000" {
		t.Fatalf("client stream response %q, %v; want 10000", m, err)
	}
}

func TestFrameTooLarge(t *testing.T) {
	ca := newCA(t)
	srv := startServer(t, transporttest.NewCredentials(ca, issue(t, ca, serverID)), transport.ListenerConfig{Tuning: transport.Tuning{MaxFrameSize: 1024}})
	tgt := transport.Target{Addr: srv.addr, Service: "nexus-test", Verify: transport.ExpectID(serverID)}
	ctx := ctxT(t)

	d := newDialer(t, transporttest.NewCredentials(ca, issue(t, ca, nodeA)), transport.Tuning{})
	_, err := d.Call(ctx, tgt, "echo", make([]byte, 4096))
	var re *transport.RemoteError
	if !errors.As(err, &re) || re.Code != transport.CodeFrameTooLarge || !strings.Contains(err.Error(), "exceeds the maximum frame size of 1024 bytes") {
		t.Fatalf("oversized request: %v; want a frame-too-large error from the server", err)
	}
	if got, err := d.Call(ctx, tgt, "echo", []byte("small")); err != nil || string(got) != "small" {
		t.Fatalf("connection unusable after a refused frame: %q, %v", got, err)
	}

	small := newDialer(t, transporttest.NewCredentials(ca, issue(t, ca, nodeA)), transport.Tuning{MaxFrameSize: 100})
	_, err = small.Call(ctx, tgt, "echo", make([]byte, 200))
	var tl *transport.FrameTooLargeError
	if !errors.As(err, &tl) || tl.Size < 200 || tl.Max != 100 {
		t.Fatalf("local oversized request: %v; want FrameTooLargeError", err)
	}
}

func TestUnknownService(t *testing.T) {
	_, _, _, d, tgt := pair(t)
	tgt.Service = "nexus-nope"
	_, err := d.Call(ctxT(t), tgt, "echo", nil)
	if err == nil || !strings.Contains(err.Error(), "no application protocol") {
		t.Fatalf("unknown service: %v; want a no-application-protocol refusal", err)
	}
}

func TestDualStackAcceptsIPv4(t *testing.T) {
	ca := newCA(t)
	srv := startServer(t, transporttest.NewCredentials(ca, issue(t, ca, serverID)), transport.ListenerConfig{Addr: "[::]:0"})
	_, port, _ := net.SplitHostPort(srv.addr)
	d := newDialer(t, transporttest.NewCredentials(ca, issue(t, ca, nodeA)), transport.Tuning{})
	for _, host := range []string{"::1", "127.0.0.1", "localhost"} {
		tgt := transport.Target{Addr: net.JoinHostPort(host, port), Service: "nexus-test", Verify: transport.ExpectID(serverID)}
		if _, err := d.Call(ctxT(t), tgt, "echo", nil); err != nil {
			t.Errorf("call via %s: %v", host, err)
		}
	}
}

func TestMutualTLSRejections(t *testing.T) {
	ca := newCA(t)
	other := newCA(t)
	now := time.Now()
	mk := func(f func() (*tls.Certificate, error)) *tls.Certificate {
		c, err := f()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	revokedCert := issue(t, ca, nodeA)
	serverCreds := transporttest.NewCredentials(ca, issue(t, ca, serverID))
	serverCreds.Revoke(revokedCert.Leaf.SerialNumber)
	srv := startServer(t, serverCreds, transport.ListenerConfig{})
	tgt := transport.Target{Addr: srv.addr, Service: "nexus-test", Verify: transport.ExpectID(serverID)}

	tests := []struct {
		name       string
		creds      *transporttest.Credentials
		clientErr  string // what the client is told
		serverLogs string // what the server logs
	}{
		{"no certificate", transporttest.NewCredentials(ca, nil), "certificate required", ""},
		{"other CA", transporttest.NewCredentials(ca, issue(t, other, nodeA)), "unknown certificate authority", "certificate signed by unknown authority"},
		{"expired", transporttest.NewCredentials(ca, mk(func() (*tls.Certificate, error) {
			return ca.Issue(nodeA, now.Add(-2*time.Hour), now.Add(-time.Hour))
		})), "expired certificate", "certificate has expired or is not yet valid: current time"},
		{"not yet valid", transporttest.NewCredentials(ca, mk(func() (*tls.Certificate, error) {
			return ca.Issue(nodeA, now.Add(time.Hour), now.Add(2*time.Hour))
		})), "expired certificate", "is before"},
		{"revoked", transporttest.NewCredentials(ca, revokedCert), "revoked certificate", ": revoked"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newDialer(t, tc.creds, transport.Tuning{})
			_, err := d.Call(ctxT(t), tgt, "echo", nil)
			if err == nil {
				t.Fatal("call succeeded; want the handshake refused")
			}
			if !strings.Contains(err.Error(), tc.clientErr) {
				t.Errorf("client error %q does not say %q", err, tc.clientErr)
			}
			if tc.serverLogs != "" && !strings.Contains(srv.log.String(), tc.serverLogs) {
				t.Errorf("server log does not say %q:\n%s", tc.serverLogs, srv.log)
			}
			t.Logf("client sees: %v", err)
		})
	}

	t.Run("server from another CA", func(t *testing.T) {
		bad := startServer(t, transporttest.NewCredentials(ca, issue(t, other, serverID)), transport.ListenerConfig{})
		d := newDialer(t, transporttest.NewCredentials(ca, issue(t, ca, nodeA)), transport.Tuning{})
		_, err := d.Call(ctxT(t), transport.Target{Addr: bad.addr, Service: "nexus-test", Verify: transport.ExpectID(serverID)}, "echo", nil)
		if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Fatalf("dialing a server of another CA: %v; want unknown authority", err)
		}
	})
}

func TestIdentityBoundToRole(t *testing.T) {
	ca := newCA(t)
	// A node certificate serving where a server is expected: the dialer
	// must refuse it although the CA is right.
	impostor := startServer(t, transporttest.NewCredentials(ca, issue(t, ca, nodeB)), transport.ListenerConfig{})
	d := newDialer(t, transporttest.NewCredentials(ca, issue(t, ca, nodeA)), transport.Tuning{})
	_, err := d.Call(ctxT(t), transport.Target{Addr: impostor.addr, Service: "nexus-test", Verify: transport.ExpectID(serverID)}, "echo", nil)
	if !errors.Is(err, transport.ErrNotAuthorized) || !strings.Contains(err.Error(), "peer is spiffe://test.nexus/node/b, expected spiffe://test.nexus/server/s1") {
		t.Fatalf("impostor server: %v; want refused by the dialer", err)
	}

	// Only servers may speak nexus-store; nodes speak nexus-agent and only as themselves.
	srv := startServer(t, transporttest.NewCredentials(ca, issue(t, ca, serverID)), transport.ListenerConfig{
		Services: map[string]transport.Service{"nexus-store": echo, "nexus-agent": echo},
		Authorize: func(peer identity.ID, service string) error {
			switch {
			case service == "nexus-store" && peer.Kind != identity.KindServer:
				return fmt.Errorf("only servers may speak %s", service)
			case service == "nexus-agent" && peer.Kind != identity.KindNode:
				return fmt.Errorf("only nodes may speak %s", service)
			}
			return nil
		},
	})
	tests := []struct {
		name    string
		id      identity.ID
		service string
		ok      bool
	}{
		{"node speaks agent", nodeA, "nexus-agent", true},
		{"node speaks store", nodeA, "nexus-store", false},
		{"server speaks store", identity.Server(cluster, "s2"), "nexus-store", true},
		{"server speaks agent", identity.Server(cluster, "s2"), "nexus-agent", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newDialer(t, transporttest.NewCredentials(ca, issue(t, ca, tc.id)), transport.Tuning{})
			got, err := d.Call(ctxT(t), transport.Target{Addr: srv.addr, Service: tc.service, Verify: transport.ExpectID(serverID)}, "peer", nil)
			if tc.ok && (err != nil || string(got) != tc.id.String()) {
				t.Fatalf("got %q, %v; want accepted as %s", got, err, tc.id)
			}
			if !tc.ok && (err == nil || !strings.Contains(err.Error(), "access denied")) {
				t.Fatalf("got %v; want access denied", err)
			}
		})
	}
	if !strings.Contains(srv.log.String(), "only servers may speak nexus-store") {
		t.Errorf("server log does not say why:\n%s", srv.log)
	}
}

func TestRenewalKeepsConnections(t *testing.T) {
	ca, srv, cc, d, tgt := pair(t)
	ctx := ctxT(t)
	c, err := d.Conn(ctx, tgt)
	if err != nil {
		t.Fatal(err)
	}
	oldServerSerial := c.PeerCertificate().SerialNumber.String()
	oldClientSerial, err := c.Call(ctx, "serial", nil)
	if err != nil {
		t.Fatal(err)
	}

	newServer, newClient := issue(t, ca, serverID), issue(t, ca, nodeA)
	srv.creds.SetCertificate(newServer)
	cc.SetCertificate(newClient)

	// The same connection keeps working and still shows the old certificates.
	for range 3 {
		got, err := c.Call(ctx, "serial", nil)
		if err != nil || string(got) != string(oldClientSerial) {
			t.Fatalf("call on the existing connection after renewal: %q, %v", got, err)
		}
	}
	if c2, _ := d.Conn(ctx, tgt); c2 != c {
		t.Fatal("renewal replaced the pooled connection")
	}

	// A new connection presents the new certificates, both ways.
	d2 := newDialer(t, cc, transport.Tuning{})
	nc, err := d2.Conn(ctx, tgt)
	if err != nil {
		t.Fatal(err)
	}
	if got := nc.PeerCertificate().SerialNumber.String(); got != newServer.Leaf.SerialNumber.String() || got == oldServerSerial {
		t.Errorf("new connection: server serial %s, want the renewed %s", got, newServer.Leaf.SerialNumber)
	}
	got, err := nc.Call(ctx, "serial", nil)
	if err != nil || string(got) != newClient.Leaf.SerialNumber.String() {
		t.Errorf("new connection: server saw client serial %s (%v), want the renewed %s", got, err, newClient.Leaf.SerialNumber)
	}
}

func TestRevocationClosesLiveConnections(t *testing.T) {
	ca, srv, cc, d, tgt := pair(t)
	ctx := ctxT(t)
	c, err := d.Conn(ctx, tgt)
	if err != nil {
		t.Fatal(err)
	}
	// In TLS 1.3 the client is done before the server has checked its
	// certificate; a call makes sure the server has accepted it.
	if _, err := c.Call(ctx, "echo", nil); err != nil {
		t.Fatal(err)
	}
	clientCert, _ := cc.GetCertificate()

	srv.creds.Revoke(clientCert.Leaf.SerialNumber)
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection of a revoked client still open")
	}
	var ae *quic.ApplicationError
	if !errors.As(c.Err(), &ae) || ae.ErrorCode != transport.CloseCertificateRevoked || ae.ErrorMessage != "certificate revoked" {
		t.Fatalf("close error %v; want application error %#x \"certificate revoked\"", c.Err(), transport.CloseCertificateRevoked)
	}
	_, err = d.Call(ctx, tgt, "echo", nil)
	if err == nil || !strings.Contains(err.Error(), "revoked certificate") {
		t.Fatalf("new connection with a revoked certificate: %v; want refused", err)
	}

	// The dialer side re-verifies too: revoking the server's certificate
	// in the client's credentials closes the client's connection.
	cc2 := transporttest.NewCredentials(ca, issue(t, ca, nodeB))
	d2 := newDialer(t, cc2, transport.Tuning{})
	c2, err := d2.Conn(ctx, tgt)
	if err != nil {
		t.Fatal(err)
	}
	cc2.Revoke(c2.PeerCertificate().SerialNumber)
	select {
	case <-c2.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("dialer kept a connection to a revoked server")
	}
	if _, err := d2.Call(ctx, tgt, "echo", nil); err == nil || !strings.Contains(err.Error(), ": revoked") {
		t.Fatalf("redial of a revoked server: %v; want refused", err)
	}
}

func TestReconnectAfterServerRestart(t *testing.T) {
	ca := newCA(t)
	sc := transporttest.NewCredentials(ca, issue(t, ca, serverID))
	s1 := startServer(t, sc, transport.ListenerConfig{})
	d := newDialer(t, transporttest.NewCredentials(ca, issue(t, ca, nodeA)), transport.Tuning{})
	tgt := transport.Target{Addr: s1.addr, Service: "nexus-test", Verify: transport.ExpectID(serverID)}
	ctx := ctxT(t)
	c1, err := d.Conn(ctx, tgt)
	if err != nil {
		t.Fatal(err)
	}
	s1.l.Close()
	<-c1.Done()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = d.Call(short, tgt, "echo", nil)
	cancel()
	if err == nil {
		t.Fatal("call with the server down succeeded")
	}

	startServer(t, sc, transport.ListenerConfig{Addr: s1.addr})
	got, err := d.Call(ctx, tgt, "echo", []byte("back"), transport.Idempotent())
	if err != nil || string(got) != "back" {
		t.Fatalf("call after restart: %q, %v", got, err)
	}
	if c2, _ := d.Conn(ctx, tgt); c2 == c1 {
		t.Fatal("still on the old connection")
	}
}

func TestPoolSharesOneConnection(t *testing.T) {
	_, srv, _, d, tgt := pair(t)
	ctx := ctxT(t)
	before := srv.creds.Handshakes.Load()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Go(func() {
			msg := []byte(strconv.Itoa(i))
			got, err := d.Call(ctx, tgt, "echo", msg)
			if err == nil && string(got) != string(msg) {
				err = fmt.Errorf("got %q, want %q", got, msg)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.creds.Handshakes.Load() - before; n != 1 {
		t.Fatalf("64 concurrent calls made %d handshakes; want 1 shared connection", n)
	}
}

func TestDatagrams(t *testing.T) {
	_, _, _, d, tgt := pair(t)
	ctx := ctxT(t)
	c, err := d.Conn(ctx, tgt)
	if err != nil {
		t.Fatal(err)
	}
	// Datagrams are unreliable: resend until the echo arrives.
	got := make(chan []byte, 1)
	go func() {
		p, err := c.ReceiveDatagram(ctx)
		if err == nil {
			got <- p
		}
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := c.SendDatagram([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-got:
			if string(p) != "echo:ping" {
				t.Fatalf("datagram %q, want echo:ping", p)
			}
			return
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("no datagram came back")
		}
	}
}

func TestBackoffDelay(t *testing.T) {
	b := transport.Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Jitter: 0.2}
	tests := []struct {
		failures int
		r        float64
		want     time.Duration
	}{
		{1, 0.5, 100 * time.Millisecond},
		{2, 0.5, 200 * time.Millisecond},
		{4, 0.5, 800 * time.Millisecond},
		{5, 0.5, time.Second},
		{50, 0.5, time.Second},
		{1, 0, 80 * time.Millisecond},
		{5, 0.75, 1100 * time.Millisecond},
	}
	for _, tc := range tests {
		if got := b.Delay(tc.failures, tc.r); got.Round(time.Microsecond) != tc.want {
			t.Errorf("Delay(%d, %v) = %v, want %v", tc.failures, tc.r, got, tc.want)
		}
	}
}

func TestAnonymousServiceForCallersWithoutCertificates(t *testing.T) {
	ca := newCA(t)
	open := transport.Service{Anonymous: true, Handler: transport.HandlerFunc(func(ctx context.Context, peer identity.ID, method string, req []byte) ([]byte, error) {
		return []byte("peer=" + peer.String() + " zero=" + strconv.FormatBool(peer.IsZero())), nil
	})}
	s := startServer(t, transporttest.NewCredentials(ca, issue(t, ca, serverID)), transport.ListenerConfig{
		Services: map[string]transport.Service{"nexus-test": echo, "nexus-open": open}})
	ctx := ctxT(t)
	var seen identity.ID
	verify := func(chain []*x509.Certificate) (identity.ID, error) {
		id, err := identity.Parse(chain[0].URIs[0].String())
		seen = id
		return id, err
	}
	c, err := transport.DialAnonymous(ctx, s.addr, "nexus-open", verify, transport.Tuning{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.Call(ctx, "who", nil)
	if err != nil || !strings.Contains(string(got), "zero=true") {
		t.Fatalf("anonymous call: %q, %v", got, err)
	}
	if seen != serverID || c.Peer() != serverID {
		t.Fatalf("the caller's verify saw %v, conn peer %v", seen, c.Peer())
	}

	// Other services still demand a certificate.
	c2, err := transport.DialAnonymous(ctx, s.addr, "nexus-test", verify, transport.Tuning{})
	if err == nil {
		_, err = c2.Call(ctx, "echo", nil)
		c2.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("anonymous call to a mutual-TLS service: %v", err)
	}

	// A verify function that refuses the server stops the dial.
	if _, err := transport.DialAnonymous(ctx, s.addr, "nexus-open", func([]*x509.Certificate) (identity.ID, error) {
		return identity.ID{}, errors.New("pin mismatch")
	}, transport.Tuning{}); err == nil || !strings.Contains(err.Error(), "pin mismatch") {
		t.Fatalf("refused server: %v", err)
	}
}
