package transport

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"

	"nexus.dev/nexus/security/identity"
)

// Application error codes a connection is closed with.
const (
	// CloseNormal: the endpoint is shutting down or the caller closed it.
	CloseNormal quic.ApplicationErrorCode = 0
	// CloseCertificateRevoked: re-verification after a trust bundle or
	// revocation change failed; the reason names the failure.
	CloseCertificateRevoked quic.ApplicationErrorCode = 0x4e01
)

// streamCancelled is the stream error code for an abandoned call.
const streamCancelled quic.StreamErrorCode = 1

// Conn is one authenticated QUIC connection to a peer, for one service.
// Calls on it each use their own stream; datagrams share its keys.
type Conn struct {
	qc       *quic.Conn
	peer     identity.ID
	service  string
	maxFrame int
	client   bool
	// release frees what the connection owns alone (the UDP socket of
	// DialAnonymous); nil for pooled connections.
	release func()
}

// Peer returns the peer's verified identity.
func (c *Conn) Peer() identity.ID { return c.peer }

// PeerCertificate returns the leaf certificate the peer presented in the
// handshake of this connection.
func (c *Conn) PeerCertificate() *x509.Certificate {
	chain := c.qc.ConnectionState().TLS.PeerCertificates
	if len(chain) == 0 {
		return nil
	}
	return chain[0]
}

// Service returns the service (ALPN) the connection speaks.
func (c *Conn) Service() string { return c.service }

// LocalAddr returns the local UDP address.
func (c *Conn) LocalAddr() net.Addr { return c.qc.LocalAddr() }

// RemoteAddr returns the peer's UDP address.
func (c *Conn) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }

// Done is closed when the connection is closed, by either side or by an
// idle timeout.
func (c *Conn) Done() <-chan struct{} { return c.qc.Context().Done() }

// Err returns why the connection closed, or nil while it is open.
func (c *Conn) Err() error {
	if c.qc.Context().Err() == nil {
		return nil
	}
	return context.Cause(c.qc.Context())
}

// Close closes the connection; calls in flight fail.
func (c *Conn) Close() error {
	err := c.qc.CloseWithError(CloseNormal, "closed")
	if c.release != nil {
		c.release()
	}
	return err
}

// SendDatagram sends p as one unreliable QUIC datagram (RFC 9221). It fails
// with a *quic.DatagramTooLargeError when p does not fit in a packet.
func (c *Conn) SendDatagram(p []byte) error { return c.qc.SendDatagram(p) }

// ReceiveDatagram waits for the next datagram from the peer.
func (c *Conn) ReceiveDatagram(ctx context.Context) ([]byte, error) {
	return c.qc.ReceiveDatagram(ctx)
}

// CallOption modifies one call.
type CallOption func(*callOptions)

type callOptions struct {
	idempotent bool
}

// Idempotent marks a call as safe to run more than once. The Dialer retries
// such a call once on a new connection when the connection it used breaks
// before the response arrives. (It would also be the condition for 0-RTT,
// which is refused for now: see the package documentation.)
func Idempotent() CallOption { return func(o *callOptions) { o.idempotent = true } }

// Call runs a unary call on this connection: it sends req to method and
// returns the response, or the handler's error as a *RemoteError.
func (c *Conn) Call(ctx context.Context, method string, req []byte) ([]byte, error) {
	if !c.client {
		return nil, errors.New("calls go from the dialing side; this connection was accepted")
	}
	s, err := c.qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("call %s on %s: open stream: %w", method, c.peer, err)
	}
	stop := watchStream(ctx, s)
	defer stop()
	f := NewFramer(s, s, c.maxFrame)
	werr := f.WriteCall(KindUnary, method, req)
	if werr == nil {
		werr = s.Close()
	}
	var tl *FrameTooLargeError
	if errors.As(werr, &tl) {
		s.CancelWrite(streamCancelled)
		s.CancelRead(streamCancelled)
		return nil, fmt.Errorf("call %s on %s: request: %w", method, c.peer, werr)
	}
	// Even when the write failed (the peer may have refused the request
	// with STOP_SENDING), the peer's error frame says why: read it.
	resp, err := f.ReadResponse()
	if err != nil {
		s.CancelRead(streamCancelled)
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		} else if errors.Is(err, io.EOF) && werr != nil {
			err = werr
		}
		var re *RemoteError
		if errors.As(err, &re) {
			return nil, err
		}
		return nil, fmt.Errorf("call %s on %s: %w", method, c.peer, err)
	}
	// Consume the FIN so quic-go can retire the stream.
	var one [1]byte
	if n, _ := s.Read(one[:]); n != 0 {
		s.CancelRead(streamCancelled)
	}
	return resp, nil
}

// watchStream cancels s when ctx ends before stop is called, which unblocks
// any read or write on it.
func watchStream(ctx context.Context, s *quic.Stream) (stop func() bool) {
	if ctx.Done() == nil {
		return func() bool { return true }
	}
	return context.AfterFunc(ctx, func() {
		s.CancelWrite(streamCancelled)
		s.CancelRead(streamCancelled)
	})
}

// Stream opens a streaming call to method with an initial request payload
// (which may be empty). Use Send and CloseSend for the client's messages and
// Recv for the server's: a server-streaming call sends req and calls
// CloseSend at once; a client-streaming call Sends its messages, calls
// CloseSend and Recv's the single response.
func (c *Conn) Stream(ctx context.Context, method string, req []byte) (*Stream, error) {
	if !c.client {
		return nil, errors.New("calls go from the dialing side; this connection was accepted")
	}
	s, err := c.qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s on %s: open stream: %w", method, c.peer, err)
	}
	st := &Stream{s: s, f: NewFramer(s, s, c.maxFrame), method: method, conn: c}
	st.stop = watchStream(ctx, s)
	if err := st.f.WriteCall(KindStream, method, req); err != nil {
		st.Close()
		return nil, fmt.Errorf("stream %s on %s: %w", method, c.peer, err)
	}
	return st, nil
}

// Stream is the caller's end of a streaming call. Send and CloseSend may be
// used from one goroutine while Recv is used from another.
type Stream struct {
	s      *quic.Stream
	f      *Framer
	method string
	conn   *Conn
	stop   func() bool

	sendClosed atomic.Bool
	closeOnce  sync.Once
}

// Send sends one message.
func (s *Stream) Send(p []byte) error {
	if err := s.f.WriteMessage(p); err != nil {
		return fmt.Errorf("stream %s on %s: send: %w", s.method, s.conn.peer, err)
	}
	return nil
}

// CloseSend tells the server that no more messages follow.
func (s *Stream) CloseSend() error {
	s.sendClosed.Store(true)
	return s.s.Close()
}

// Recv returns the server's next message, io.EOF when the server finished
// without error, or the handler's error as a *RemoteError.
func (s *Stream) Recv() ([]byte, error) {
	p, err := s.f.ReadResponse()
	if err != nil {
		var re *RemoteError
		if !errors.Is(err, io.EOF) && !errors.As(err, &re) {
			err = fmt.Errorf("stream %s on %s: recv: %w", s.method, s.conn.peer, err)
		}
		s.Close()
		return nil, err
	}
	return p, nil
}

// Close abandons the call (if it is not finished) and releases the stream.
// Always call it, or read until Recv fails.
func (s *Stream) Close() error {
	s.closeOnce.Do(func() {
		s.stop()
		// After CloseSend the FIN must stay: cancelling would discard
		// messages the server has not acknowledged yet.
		if !s.sendClosed.Load() {
			s.s.CancelWrite(streamCancelled)
		}
		s.s.CancelRead(streamCancelled)
	})
	return nil
}
