package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"

	"nexus.dev/nexus/security/identity"
)

// Handler serves unary calls. The error it returns reaches the caller as a
// *RemoteError (with the handler's code if it returns a *RemoteError).
type Handler interface {
	Serve(ctx context.Context, peer identity.ID, method string, req []byte) ([]byte, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, peer identity.ID, method string, req []byte) ([]byte, error)

// Serve calls f.
func (f HandlerFunc) Serve(ctx context.Context, peer identity.ID, method string, req []byte) ([]byte, error) {
	return f(ctx, peer, method, req)
}

// StreamHandler serves streaming calls: server streaming (read
// s.Request(), Send any number of messages), client streaming (Recv until
// io.EOF, Send one response) or both. Returning ends the call; a non-nil
// error reaches the caller as a *RemoteError after the messages sent.
type StreamHandler interface {
	ServeStream(ctx context.Context, peer identity.ID, method string, s *ServerStream) error
}

// StreamHandlerFunc adapts a function to StreamHandler.
type StreamHandlerFunc func(ctx context.Context, peer identity.ID, method string, s *ServerStream) error

// ServeStream calls f.
func (f StreamHandlerFunc) ServeStream(ctx context.Context, peer identity.ID, method string, s *ServerStream) error {
	return f(ctx, peer, method, s)
}

// Service is what a Listener runs for one ALPN protocol. Nil fields refuse
// that kind of use.
type Service struct {
	Handler       Handler
	StreamHandler StreamHandler
	// OnConn, if set, runs in its own goroutine for every authenticated
	// connection of the service (tunnels use it for datagrams); its ctx
	// ends when the connection closes.
	OnConn func(ctx context.Context, c *Conn)
	// Anonymous lets callers without a client certificate connect (the
	// join service: a machine that joins has no certificate yet). Their
	// peer identity is the zero ID; Authorize is not asked for them. A
	// caller that does present a certificate is verified as usual.
	Anonymous bool
}

// ListenerConfig configures Listen.
type ListenerConfig struct {
	// Addr is the UDP address to listen on; "[::]:port" (the default,
	// with port 0) also accepts IPv4 where the OS allows dual stack.
	Addr string
	// Credentials supplies the certificate and verifies clients. Required.
	Credentials Credentials
	// Services maps an ALPN protocol name ("nexus-store", ...) to what
	// serves it. A client asking for another name fails the handshake.
	Services map[string]Service
	// Authorize decides whether a verified peer may speak a service, for
	// example only servers may speak nexus-store. Required: deny by default.
	Authorize func(peer identity.ID, service string) error
	Tuning
	Logger *slog.Logger
}

// Listener accepts connections for several services on one UDP socket.
type Listener struct {
	cfg      ListenerConfig
	tuning   Tuning
	log      *slog.Logger
	udp      *net.UDPConn
	tr       *quic.Transport
	ql       *quic.Listener
	services map[string]Service

	mu     sync.Mutex
	conns  map[*Conn]struct{}
	closed bool

	wg          sync.WaitGroup
	ctx         context.Context // ends at Close; parent of every handler's ctx
	cancel      context.CancelFunc
	unsubscribe func()
	closeOnce   sync.Once
}

// handshakeSlotKey finds, in a connection's context, the identity its
// handshake verified, so it is not verified twice.
type handshakeSlotKey struct{}

type handshakeSlot struct{ peer atomic.Pointer[identity.ID] }

// Listen binds the UDP socket (in the calling thread's network namespace)
// and starts accepting handshakes; Serve runs the services.
func Listen(cfg ListenerConfig) (*Listener, error) {
	if cfg.Credentials == nil {
		return nil, errors.New("listen: Credentials is required")
	}
	if cfg.Authorize == nil {
		return nil, errors.New("listen: Authorize is required (return nil to allow a peer)")
	}
	if len(cfg.Services) == 0 {
		return nil, errors.New("listen: no Services to serve")
	}
	if cfg.Addr == "" {
		cfg.Addr = "[::]:0"
	}
	l := &Listener{
		cfg:      cfg,
		tuning:   cfg.Tuning.withDefaults(),
		log:      loggerOr(cfg.Logger),
		services: cfg.Services,
		conns:    map[*Conn]struct{}{},
	}
	ensureUDPBufferLimits(l.log)
	ua, err := net.ResolveUDPAddr("udp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	l.udp, err = net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	l.tr = &quic.Transport{
		Conn: l.udp,
		ConnContext: func(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
			return context.WithValue(ctx, handshakeSlotKey{}, &handshakeSlot{}), nil
		},
	}
	l.ql, err = l.tr.Listen(l.tlsConfig(), l.tuning.quicConfig())
	if err != nil {
		l.udp.Close()
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	ch, unsubscribe := cfg.Credentials.Subscribe()
	l.unsubscribe = unsubscribe
	l.wg.Go(func() { l.reverifyOnChange(ch) })
	return l, nil
}

func (l *Listener) tlsConfig() *tls.Config {
	protos := make([]string, 0, len(l.services))
	for name := range l.services {
		protos = append(protos, name)
	}
	slices.Sort(protos)
	base := baseTLS()
	base.NextProtos = protos
	base.ClientAuth = tls.RequireAnyClientCert
	base.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return l.cfg.Credentials.GetCertificate()
	}
	// A per-handshake config carries the slot the verified identity goes
	// into; the slot lives in the connection's context.
	base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		slot, _ := hello.Context().Value(handshakeSlotKey{}).(*handshakeSlot)
		if slot == nil {
			return nil, errors.New("transport: handshake without connection context")
		}
		c := base.Clone()
		c.GetConfigForClient = nil
		anonymous := l.services[negotiate(protos, hello.SupportedProtos)].Anonymous
		if anonymous {
			c.ClientAuth = tls.RequestClientCert
		}
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			service := cs.NegotiatedProtocol
			if anonymous && len(cs.PeerCertificates) == 0 {
				slot.peer.Store(&identity.ID{})
				return nil
			}
			id, err := verifyChain(l.cfg.Credentials, cs.PeerCertificates, func(id identity.ID) error {
				return l.cfg.Authorize(id, service)
			})
			if err != nil {
				l.log.Warn("refused connection", "remote", hello.Conn.RemoteAddr(), "service", service, "err", err)
				return err
			}
			slot.peer.Store(&id)
			return nil
		}
		return c, nil
	}
	return base
}

// negotiate is the ALPN choice crypto/tls makes: the first of the server's
// protocols the client offers.
func negotiate(server, client []string) string {
	for _, p := range server {
		if slices.Contains(client, p) {
			return p
		}
	}
	return ""
}

// Addr returns the bound UDP address.
func (l *Listener) Addr() net.Addr { return l.udp.LocalAddr() }

// Serve accepts connections and serves their calls until Close or ctx ends;
// it returns nil after Close.
func (l *Listener) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	for {
		qc, err := l.ql.Accept(ctx)
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, quic.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		slot, _ := qc.Context().Value(handshakeSlotKey{}).(*handshakeSlot)
		var peer *identity.ID
		if slot != nil {
			peer = slot.peer.Load()
		}
		if peer == nil { // cannot happen: VerifyConnection ran before Accept returns
			qc.CloseWithError(CloseNormal, "unverified")
			continue
		}
		c := &Conn{qc: qc, peer: *peer, service: qc.ConnectionState().TLS.NegotiatedProtocol, maxFrame: l.tuning.MaxFrameSize}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			qc.CloseWithError(CloseNormal, "listener closed")
			return nil
		}
		l.conns[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.serveConn(c)
	}
}

func (l *Listener) serveConn(c *Conn) {
	defer l.wg.Done()
	defer func() {
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
	}()
	svc := l.services[c.service]
	ctx, cancel := context.WithCancel(l.ctx)
	defer cancel()
	stop := context.AfterFunc(c.qc.Context(), cancel)
	defer stop()
	if svc.OnConn != nil {
		l.wg.Go(func() { svc.OnConn(ctx, c) })
	}
	for {
		s, err := c.qc.AcceptStream(ctx)
		if err != nil {
			return
		}
		l.wg.Go(func() { l.serveStream(ctx, c, svc, s) })
	}
}

func (l *Listener) serveStream(ctx context.Context, c *Conn, svc Service, s *quic.Stream) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The stream's own context ends when the caller gives up (STOP_SENDING).
	stop := context.AfterFunc(s.Context(), cancel)
	defer stop()
	f := NewFramer(s, s, l.tuning.MaxFrameSize)
	fail := func(err error) {
		code, msg := errorFrame(err)
		f.WriteError(code, msg)
		s.CancelRead(streamCancelled)
		s.Close()
	}
	typ, body, err := f.ReadFrame()
	if err != nil {
		var tl *FrameTooLargeError
		if errors.As(err, &tl) {
			fail(fmt.Errorf("request refused: %w", err))
			return
		}
		s.CancelRead(streamCancelled)
		s.CancelWrite(streamCancelled)
		return
	}
	if typ != FrameCall {
		fail(&RemoteError{Code: CodeBadFrame, Message: fmt.Sprintf("first frame has type %d, want a call", typ)})
		return
	}
	kind, method, payload, err := ParseCall(body)
	if err != nil {
		fail(err)
		return
	}
	ctx = context.WithValue(ctx, connKey{}, c)
	switch kind {
	case KindUnary:
		if svc.Handler == nil {
			fail(&RemoteError{Code: CodeUnimplemented, Message: fmt.Sprintf("service %s takes no unary calls", c.service)})
			return
		}
		// The caller closed its side after the call frame; reading the FIN
		// lets quic-go retire the stream.
		var one [1]byte
		if n, err := s.Read(one[:]); n != 0 || !errors.Is(err, io.EOF) {
			fail(&RemoteError{Code: CodeBadFrame, Message: "unary call: data after the call frame"})
			return
		}
		resp, err := svc.Handler.Serve(ctx, c.peer, method, payload)
		if err != nil {
			fail(err)
			return
		}
		if err := f.WriteMessage(resp); err != nil {
			fail(fmt.Errorf("response to %s: %w", method, err))
			return
		}
		s.Close()
	case KindStream:
		if svc.StreamHandler == nil {
			fail(&RemoteError{Code: CodeUnimplemented, Message: fmt.Sprintf("service %s takes no streaming calls", c.service)})
			return
		}
		ss := &ServerStream{f: f, req: payload}
		if err := svc.StreamHandler.ServeStream(ctx, c.peer, method, ss); err != nil {
			fail(err)
			return
		}
		if !ss.readEOF {
			s.CancelRead(streamCancelled)
		}
		s.Close()
	default:
		fail(&RemoteError{Code: CodeBadFrame, Message: fmt.Sprintf("unknown call kind %d", kind)})
	}
}

type connKey struct{}

// ConnFromContext returns the connection a handler's call arrived on.
func ConnFromContext(ctx context.Context) (*Conn, bool) {
	c, ok := ctx.Value(connKey{}).(*Conn)
	return c, ok
}

// ServerStream is a handler's end of a streaming call.
type ServerStream struct {
	f       *Framer
	req     []byte
	readEOF bool
}

// Request returns the payload of the call frame.
func (s *ServerStream) Request() []byte { return s.req }

// Recv returns the caller's next message, or io.EOF once the caller has
// closed its side.
func (s *ServerStream) Recv() ([]byte, error) {
	typ, body, err := s.f.ReadFrame()
	if err != nil {
		if errors.Is(err, io.EOF) {
			s.readEOF = true
		}
		return nil, err
	}
	if typ != FrameMessage {
		return nil, &RemoteError{Code: CodeBadFrame, Message: fmt.Sprintf("unexpected frame type %d from caller", typ)}
	}
	return body, nil
}

// Send sends one message to the caller.
func (s *ServerStream) Send(p []byte) error { return s.f.WriteMessage(p) }

// reverifyOnChange re-verifies every live connection whenever the trust
// bundle or revocation list changes.
func (l *Listener) reverifyOnChange(ch <-chan struct{}) {
	for {
		select {
		case <-l.ctx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
		}
		l.mu.Lock()
		conns := make([]*Conn, 0, len(l.conns))
		for c := range l.conns {
			conns = append(conns, c)
		}
		l.mu.Unlock()
		for _, c := range conns {
			if c.peer.IsZero() {
				continue // anonymous: nothing was verified, nothing to re-verify
			}
			reverify(l.log, l.cfg.Credentials, c, func(id identity.ID) error { return l.cfg.Authorize(id, c.service) })
		}
	}
}

// reverify checks c's peer chain again and closes c when it fails.
func reverify(log *slog.Logger, creds Credentials, c *Conn, role func(identity.ID) error) {
	chain := c.qc.ConnectionState().TLS.PeerCertificates
	_, err := verifyChain(creds, chain, role)
	if err == nil {
		return
	}
	reason := "certificate no longer trusted"
	if errors.Is(err, ErrRevoked) {
		reason = "certificate revoked"
	}
	log.Warn("closing connection after re-verification", "peer", c.peer, "service", c.service, "reason", reason, "err", err)
	c.qc.CloseWithError(CloseCertificateRevoked, reason)
}

// Close stops accepting, closes every connection and waits for handlers.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		conns := make([]*Conn, 0, len(l.conns))
		for c := range l.conns {
			conns = append(conns, c)
		}
		l.mu.Unlock()
		l.cancel()
		l.unsubscribe()
		err = l.ql.Close()
		for _, c := range conns {
			c.qc.CloseWithError(CloseNormal, "listener closed")
		}
		l.wg.Wait()
		if terr := l.tr.Close(); terr != nil && err == nil {
			err = terr
		}
		l.udp.Close()
	})
	return err
}
