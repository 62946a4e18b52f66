package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/sys/unix"
)

// ServeConfig is where and how the API is served.
type ServeConfig struct {
	// Addr is host:port, served over TCP (HTTPS with HTTP/2) and UDP
	// (HTTP/3) at once.
	Addr string
	// GetCertificate returns the server's serving certificate: issued by
	// the cluster PKI with the DNS names and addresses clients dial, and
	// renewed while the server runs.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// NoHTTP3 serves HTTPS only.
	NoHTTP3 bool
}

// TLSConfig is the API's TLS: 1.3 only, and a client certificate asked for
// but not required at the handshake (bearer tokens and the health checks
// need none); every request checks the certificate against the current
// bundle and revocation list instead, so a revocation reaches connections
// that are already open.
func TLSConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: getCert,
		ClientAuth:     tls.RequestClientCert,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// Listeners are the bound sockets of a served API.
type Listeners struct {
	TCP net.Listener
	UDP net.PacketConn // nil with NoHTTP3
}

// Listen binds the API's TCP and UDP ports before anything is served, so
// a busy port fails at start.
func Listen(cfg ServeConfig) (*Listeners, error) {
	for attempt := 1; ; attempt++ {
		ls, err := listen(cfg)
		// With port 0 the kernel picks a free TCP port, whose UDP twin
		// another process may hold: pick again.
		if err == nil || !errors.Is(err, unix.EADDRINUSE) || !anyPort(cfg.Addr) || attempt == 10 {
			return ls, err
		}
	}
}

func listen(cfg ServeConfig) (*Listeners, error) {
	tcp, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (tcp): %w", cfg.Addr, err)
	}
	ls := &Listeners{TCP: tcp}
	if !cfg.NoHTTP3 {
		// The same port over UDP, so clients that know the TCP address
		// find HTTP/3 with it (Alt-Svc says so too).
		udp, err := net.ListenPacket("udp", tcp.Addr().String())
		if err != nil {
			tcp.Close()
			return nil, fmt.Errorf("listen on %s (udp, for HTTP/3): %w", tcp.Addr(), err)
		}
		ls.UDP = udp
	}
	return ls, nil
}

// anyPort reports whether addr asks for any free port (port 0 or none).
func anyPort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && (port == "" || port == "0")
}

// Serve answers API requests on ls until ctx ends, then shuts down: new
// requests are refused and running ones get up to 5 s.
func (s *Server) Serve(ctx context.Context, ls *Listeners, cfg ServeConfig) error {
	tlsConf := TLSConfig(cfg.GetCertificate)
	handler := s.Handler()
	var h3 *http3.Server
	if ls.UDP != nil {
		h3 = &http3.Server{Handler: handler, TLSConfig: http3.ConfigureTLSConfig(tlsConf.Clone()),
			ConnContext: func(cctx context.Context, _ *quic.Conn) context.Context {
				// Requests end with the server: open watches too.
				cctx, cancel := context.WithCancel(cctx)
				context.AfterFunc(ctx, cancel)
				return withConnAuth(cctx)
			}}
		inner := handler
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor < 3 {
				_ = h3.SetQUICHeaders(w.Header()) // Alt-Svc: h3 on the same port
			}
			inner.ServeHTTP(w, r)
		})
	}
	hs := &http.Server{
		Handler: handler,
		// Requests end with the server: open watches do not hold up a
		// shutdown (or the port a restart needs).
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnContext:       func(ctx context.Context, _ net.Conn) context.Context { return withConnAuth(ctx) },
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          nil,
	}
	errc := make(chan error, 2)
	go func() { errc <- hs.ServeTLS(ls.TCP, "", "") }()
	if h3 != nil {
		go func() { errc <- h3.Serve(ls.UDP) }()
	}
	// quic-go does not close a socket it was given: the caller's to close.
	defer func() {
		if ls.UDP != nil {
			ls.UDP.Close()
		}
	}()
	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.shutdown(hs, h3)
			return fmt.Errorf("serve the API: %w", err)
		}
	}
	s.shutdown(hs, h3)
	return nil
}

func (s *Server) shutdown(hs *http.Server, h3 *http3.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(ctx)
	if h3 != nil {
		_ = h3.Shutdown(ctx)
	}
}
