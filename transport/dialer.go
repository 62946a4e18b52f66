package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"nexus.dev/nexus/security/identity"
)

// Backoff paces redials of a peer that cannot be reached: the n-th
// consecutive failure waits about Initial*2^(n-1), capped at Max, with
// ±Jitter of it randomised so a fleet does not redial in step.
type Backoff struct {
	Initial time.Duration // 100 ms
	Max     time.Duration // 10 s
	Jitter  float64       // 0.2
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = 100 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 10 * time.Second
	}
	if b.Jitter <= 0 || b.Jitter > 1 {
		b.Jitter = 0.2
	}
	return b
}

// Delay returns the wait after the given number of consecutive failures
// (at least 1); r is a random number in [0, 1).
func (b Backoff) Delay(failures int, r float64) time.Duration {
	d := b.Initial
	for i := 1; i < failures && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	return time.Duration(float64(d) * (1 + b.Jitter*(2*r-1)))
}

// DialerConfig configures NewDialer.
type DialerConfig struct {
	// Credentials supplies the client certificate and verifies servers. Required.
	Credentials Credentials
	// LocalAddr is the UDP address all outgoing connections share
	// ("[::]:0", dual stack, by default).
	LocalAddr string
	Backoff   Backoff
	Tuning
	Logger *slog.Logger
}

// Target names a peer and what it must be.
type Target struct {
	// Addr is "host:port"; a name may resolve to several addresses, which
	// are tried IPv6 first.
	Addr string
	// Service is the ALPN protocol to speak ("nexus-store", ...).
	Service string
	// Verify binds the peer's verified identity to the role expected of
	// it (see ExpectID, ExpectKind). Required: a certificate from the
	// right CA is not enough, it must be the right peer.
	Verify func(identity.ID) error
}

// Dialer makes connections and keeps one per (service, address), shared by
// concurrent calls.
type Dialer struct {
	cfg    DialerConfig
	tuning Tuning
	bo     Backoff
	log    *slog.Logger
	udp    *net.UDPConn
	tr     *quic.Transport

	mu     sync.Mutex
	pool   map[poolKey]*poolEntry
	closed bool

	ctx         context.Context
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	unsubscribe func()
	closeOnce   sync.Once
}

type poolKey struct{ service, addr string }

// poolEntry is the connection to one peer and its redial state.
type poolEntry struct {
	mu          sync.Mutex
	conn        *Conn
	verify      func(identity.ID) error // of the dial that made conn
	dialing     chan struct{}           // closed when the dial in flight ends
	failures    int
	nextAttempt time.Time
	lastErr     error
}

// NewDialer binds the Dialer's UDP socket, in the calling thread's network
// namespace.
func NewDialer(cfg DialerConfig) (*Dialer, error) {
	if cfg.Credentials == nil {
		return nil, errors.New("new dialer: Credentials is required")
	}
	if cfg.LocalAddr == "" {
		cfg.LocalAddr = "[::]:0"
	}
	d := &Dialer{
		cfg:    cfg,
		tuning: cfg.Tuning.withDefaults(),
		bo:     cfg.Backoff.withDefaults(),
		log:    loggerOr(cfg.Logger),
		pool:   map[poolKey]*poolEntry{},
	}
	ensureUDPBufferLimits(d.log)
	ua, err := net.ResolveUDPAddr("udp", cfg.LocalAddr)
	if err != nil {
		return nil, fmt.Errorf("new dialer on %s: %w", cfg.LocalAddr, err)
	}
	if d.udp, err = net.ListenUDP("udp", ua); err != nil {
		return nil, fmt.Errorf("new dialer on %s: %w", cfg.LocalAddr, err)
	}
	d.tr = &quic.Transport{Conn: d.udp}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	ch, unsubscribe := cfg.Credentials.Subscribe()
	d.unsubscribe = unsubscribe
	d.wg.Go(func() { d.reverifyOnChange(ch) })
	return d, nil
}

// Conn returns the pooled connection to t, dialing it if there is none.
// While a peer is failing, a dial waits for its backoff to pass, or fails at
// once with the last error if ctx would end first.
func (d *Dialer) Conn(ctx context.Context, t Target) (*Conn, error) {
	if t.Verify == nil {
		return nil, fmt.Errorf("dial %s %s: Target.Verify is required (use ExpectID)", t.Service, t.Addr)
	}
	key := poolKey{t.Service, t.Addr}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, fmt.Errorf("dial %s %s: %w", t.Service, t.Addr, net.ErrClosed)
	}
	e := d.pool[key]
	if e == nil {
		e = &poolEntry{}
		d.pool[key] = e
	}
	d.mu.Unlock()
	for {
		e.mu.Lock()
		if c := e.conn; c != nil && c.qc.Context().Err() == nil {
			e.mu.Unlock()
			// The connection was verified against its dialer's Verify;
			// this caller may expect something else of the same address.
			if err := t.Verify(c.peer); err != nil {
				return nil, fmt.Errorf("dial %s %s: %w: %s: %w", t.Service, t.Addr, ErrNotAuthorized, c.peer, err)
			}
			return c, nil
		}
		if ch := e.dialing; ch != nil {
			e.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("dial %s %s: %w", t.Service, t.Addr, ctx.Err())
			}
		}
		if wait := time.Until(e.nextAttempt); wait > 0 {
			lastErr := e.lastErr
			e.mu.Unlock()
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
				return nil, fmt.Errorf("dial %s %s: next attempt in %v (backing off after %w)", t.Service, t.Addr, wait.Round(time.Millisecond), lastErr)
			}
			timer := time.NewTimer(wait)
			select {
			case <-timer.C:
				continue
			case <-ctx.Done():
				timer.Stop()
				return nil, fmt.Errorf("dial %s %s: %w", t.Service, t.Addr, ctx.Err())
			}
		}
		ch := make(chan struct{})
		e.dialing = ch
		e.mu.Unlock()

		c, err := d.dial(ctx, t)

		e.mu.Lock()
		e.dialing = nil
		close(ch)
		if err != nil {
			if ctx.Err() == nil { // the caller giving up says nothing about the peer
				e.failures++
				e.nextAttempt = time.Now().Add(d.bo.Delay(e.failures, rand.Float64()))
				e.lastErr = err
			}
			e.mu.Unlock()
			return nil, err
		}
		e.failures, e.lastErr, e.nextAttempt = 0, nil, time.Time{}
		e.conn, e.verify = c, t.Verify
		e.mu.Unlock()
		d.mu.Lock()
		closed := d.closed
		d.mu.Unlock()
		if closed {
			c.qc.CloseWithError(CloseNormal, "dialer closed")
			return nil, fmt.Errorf("dial %s %s: %w", t.Service, t.Addr, net.ErrClosed)
		}
		return c, nil
	}
}

// dial resolves t.Addr and tries its addresses, IPv6 first.
func (d *Dialer) dial(ctx context.Context, t Target) (*Conn, error) {
	host, port, err := net.SplitHostPort(t.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", t.Service, t.Addr, err)
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("dial %s %s: resolve: %w", t.Service, t.Addr, err)
		}
		// Stable: keeps the resolver's order within each family.
		slices.SortStableFunc(addrs, func(a, b netip.Addr) int {
			return boolInt(a.Unmap().Is4()) - boolInt(b.Unmap().Is4())
		})
	}
	p, err := net.LookupPort("udp", port)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", t.Service, t.Addr, err)
	}
	var errs []error
	for _, a := range addrs {
		c, err := d.dialAddr(ctx, t, netip.AddrPortFrom(a, uint16(p)))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("dial %s %s: %w", t.Service, t.Addr, errors.Join(errs...))
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (d *Dialer) dialAddr(ctx context.Context, t Target, ap netip.AddrPort) (*Conn, error) {
	var peer identity.ID
	conf := baseTLS()
	conf.NextProtos = []string{t.Service}
	conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return d.cfg.Credentials.GetCertificate()
	}
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		id, err := verifyChain(d.cfg.Credentials, cs.PeerCertificates, t.Verify)
		if err != nil {
			return err
		}
		peer = id
		return nil
	}
	qc, err := d.tr.Dial(ctx, net.UDPAddrFromAddrPort(ap), conf, d.tuning.quicConfig())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ap, err)
	}
	return &Conn{qc: qc, peer: peer, service: t.Service, maxFrame: d.tuning.MaxFrameSize, client: true}, nil
}

// Call runs a unary call on the pooled connection to t. An Idempotent call
// is retried once on a new connection if the one it used broke.
func (d *Dialer) Call(ctx context.Context, t Target, method string, req []byte, opts ...CallOption) ([]byte, error) {
	var o callOptions
	for _, opt := range opts {
		opt(&o)
	}
	for attempt := 0; ; attempt++ {
		c, err := d.Conn(ctx, t)
		if err != nil {
			return nil, err
		}
		resp, err := c.Call(ctx, method, req)
		if err != nil && o.idempotent && attempt == 0 && ctx.Err() == nil && c.Err() != nil {
			continue
		}
		return resp, err
	}
}

// Stream opens a streaming call on the pooled connection to t; see Conn.Stream.
func (d *Dialer) Stream(ctx context.Context, t Target, method string, req []byte) (*Stream, error) {
	c, err := d.Conn(ctx, t)
	if err != nil {
		return nil, err
	}
	return c.Stream(ctx, method, req)
}

func (d *Dialer) reverifyOnChange(ch <-chan struct{}) {
	for {
		select {
		case <-d.ctx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
		}
		type live struct {
			c      *Conn
			verify func(identity.ID) error
		}
		var conns []live
		d.mu.Lock()
		for _, e := range d.pool {
			e.mu.Lock()
			if e.conn != nil {
				conns = append(conns, live{e.conn, e.verify})
			}
			e.mu.Unlock()
		}
		d.mu.Unlock()
		for _, l := range conns {
			reverify(d.log, d.cfg.Credentials, l.c, l.verify)
		}
	}
}

// Close closes every pooled connection and the socket.
func (d *Dialer) Close() error {
	var err error
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		var conns []*Conn
		for _, e := range d.pool {
			e.mu.Lock()
			if e.conn != nil {
				conns = append(conns, e.conn)
			}
			e.mu.Unlock()
		}
		d.mu.Unlock()
		d.cancel()
		d.unsubscribe()
		d.wg.Wait()
		for _, c := range conns {
			c.qc.CloseWithError(CloseNormal, "dialer closed")
		}
		err = d.tr.Close()
		d.udp.Close()
	})
	return err
}

// DialAnonymous connects to an Anonymous service without a client
// certificate: how a machine that has none yet reaches the join service.
// verify judges the server's chain (leaf first) in place of Credentials,
// typically by a CA pin. The connection has its own UDP socket, freed by
// Close; it is not pooled.
func DialAnonymous(ctx context.Context, addr, service string, verify func(chain []*x509.Certificate) (identity.ID, error), tuning Tuning) (*Conn, error) {
	if verify == nil {
		return nil, fmt.Errorf("dial %s %s: a verify function is required", service, addr)
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", service, addr, err)
	}
	udp, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", service, addr, err)
	}
	tr := &quic.Transport{Conn: udp}
	release := func() { tr.Close(); udp.Close() }
	var peer identity.ID
	conf := baseTLS()
	conf.NextProtos = []string{service}
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		id, err := verify(cs.PeerCertificates)
		if err != nil {
			return withAlert(fmt.Errorf("verify server certificate: %w", err))
		}
		peer = id
		return nil
	}
	t := tuning.withDefaults()
	qc, err := tr.Dial(ctx, ua, conf, t.quicConfig())
	if err != nil {
		release()
		return nil, fmt.Errorf("dial %s %s: %w", service, addr, err)
	}
	return &Conn{qc: qc, peer: peer, service: service, maxFrame: t.MaxFrameSize, client: true, release: release}, nil
}
