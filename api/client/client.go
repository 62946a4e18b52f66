package client

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
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"nexus.dev/nexus/internal/buildinfo"
)

// Settings are what a Client needs: from a config context (Resolve), or
// given directly by a program that holds its own credentials (the agent).
type Settings struct {
	// Server is https://host:port.
	Server string
	// Failover are more servers of the same cluster (https://host:port).
	// A request whose connection fails moves the client to the next
	// server, where it is sent again when that is safe (a read, or a
	// request that never reached the failed server); watches resume
	// there. SetServers replaces the list while the client runs.
	Failover []string
	// RootCAs are the only roots the server's certificate may chain to:
	// the cluster's CA.
	RootCAs *x509.CertPool
	// VerifyServer, when set, checks the server's chain (leaf first)
	// instead of RootCAs and the host name: for a peer whose certificate
	// names an identity, not a host (a node's agent, which a server calls
	// for logs and exec).
	VerifyServer func(chain []*x509.Certificate) error
	// Certificate is the client certificate, or GetClientCertificate
	// returns the current one (credentials that are renewed while the
	// client runs); nil for none (a token, or health checks only).
	Certificate          *tls.Certificate
	GetClientCertificate func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	// Token is a service account token, sent as a bearer token.
	Token string
	// HTTP3 speaks HTTP/3 over QUIC instead of HTTP/2 over TCP.
	HTTP3 bool
	// Timeout bounds one request that is not a watch (default 30 s).
	Timeout time.Duration
	// DialTimeout bounds a connection attempt (default 10 s, and at most
	// half of Timeout): how long a server that does not answer holds a
	// request before the next server is tried.
	DialTimeout time.Duration
	// KeepAlive is how long a connection may stay silent before it is
	// probed; one whose probe is not answered within half as long again
	// is dropped, failing its requests and moving its watches to the next
	// server (default 30 s: a dead connection is noticed within 45 s).
	// An agent, which must fail over within seconds, sets a few seconds.
	KeepAlive time.Duration
	// UserAgent defaults to nexus/<version>.
	UserAgent string
	// Logger receives a debug record per request (default: none).
	Logger *slog.Logger
	// WrapTransport, when set, wraps the HTTP transport: for tracing,
	// metrics, or a test that acts between a request and its answer.
	WrapTransport func(http.RoundTripper) http.RoundTripper
}

// DefaultTimeout bounds one request (watches excepted) when Settings has
// no Timeout: long enough for a loaded server's slowest list page, short
// enough that a stuck server does not hang a command.
const DefaultTimeout = 30 * time.Second

const (
	defaultDialTimeout = 10 * time.Second
	// An idle connection is probed after defaultKeepAlive without a frame
	// and dropped when the probe is not answered within half as long
	// again, so a watch on a connection that died silently (a peer that
	// vanished, a NAT that forgot it) is resumed within a minute, not
	// never.
	defaultKeepAlive = 30 * time.Second
	// maxResponseBody bounds one answer: an object is at most the server's
	// 3 MiB body limit; a list page is at most listPageSize of them.
	maxResponseBody = 256 << 20
	// listPageSize is the page size List asks for when the caller gives
	// none, so a big collection comes in bounded pieces.
	listPageSize = 500
	// maxRetries is how often a request refused with 429 is tried again.
	maxRetries = 3
	// maxRetryAfter caps how long one Retry-After is honoured.
	maxRetryAfter = 10 * time.Second
)

// Client talks to an API server, and fails over to the cluster's other
// servers when it has their addresses. It is safe for concurrent use.
type Client struct {
	proto       string
	hc          *http.Client
	token       string
	userAgent   string
	timeout     time.Duration
	dialTimeout time.Duration
	log         *slog.Logger
	closeIdle   func()
	closeAll    func() error

	mu    sync.Mutex
	conns map[io.Closer]struct{}

	smu     sync.Mutex
	servers []endpoint // never empty
	cur     int        // the server requests go to
}

// endpoint is one API server.
type endpoint struct {
	raw  string // as given
	base *url.URL
}

func parseEndpoint(s string) (endpoint, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return endpoint{}, fmt.Errorf("API server %q: must be an https:// URL with a host, e.g. https://10.0.0.1:7443", s)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return endpoint{raw: s, base: u}, nil
}

func parseEndpoints(servers []string) ([]endpoint, error) {
	eps := make([]endpoint, 0, len(servers))
	for _, s := range servers {
		ep, err := parseEndpoint(s)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(eps, func(e endpoint) bool { return e.raw == ep.raw }) {
			eps = append(eps, ep)
		}
	}
	return eps, nil
}

// New makes a client. It does not connect: the first request does.
func New(s Settings) (*Client, error) {
	eps, err := parseEndpoints(append([]string{s.Server}, s.Failover...))
	if err != nil {
		return nil, err
	}
	if s.RootCAs == nil && s.VerifyServer == nil {
		return nil, fmt.Errorf("API server %s: no CA to verify it with (the cluster's CA certificate)", s.Server)
	}
	c := &Client{servers: eps, token: s.Token, userAgent: s.UserAgent, timeout: s.Timeout,
		dialTimeout: s.DialTimeout, log: s.Logger, conns: map[io.Closer]struct{}{}}
	if c.userAgent == "" {
		c.userAgent = "nexus/" + buildinfo.Version
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.dialTimeout <= 0 {
		c.dialTimeout = defaultDialTimeout
	}
	c.dialTimeout = min(c.dialTimeout, c.timeout/2)
	keepAlive := s.KeepAlive
	if keepAlive <= 0 {
		keepAlive = defaultKeepAlive
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	conf := &tls.Config{RootCAs: s.RootCAs, MinVersion: tls.VersionTLS13, GetClientCertificate: s.GetClientCertificate}
	if verify := s.VerifyServer; verify != nil {
		conf.InsecureSkipVerify = true // VerifyConnection is the check
		conf.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server presented no certificate")
			}
			if err := verify(cs.PeerCertificates); err != nil {
				return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
			}
			return nil
		}
	}
	if s.Certificate != nil && s.GetClientCertificate == nil {
		conf.Certificates = []tls.Certificate{*s.Certificate}
	}
	if s.HTTP3 {
		c.proto = "HTTP/3"
		tr := &http3.Transport{
			TLSClientConfig: conf,
			// A handshake gets at most half a request's time, so that a
			// server that does not answer is reported as such (QUIC hears
			// no refusal from a closed port) before the request times out.
			QUICConfig: &quic.Config{KeepAlivePeriod: keepAlive, MaxIdleTimeout: keepAlive + keepAlive/2, HandshakeIdleTimeout: c.dialTimeout},
			Dial:       c.dialQUIC,
		}
		c.hc = &http.Client{Transport: tr}
		c.closeIdle, c.closeAll = tr.CloseIdleConnections, tr.Close
	} else {
		c.proto = "HTTP/2"
		tr := &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         c.dialTCP,
			TLSClientConfig:     conf,
			ForceAttemptHTTP2:   true,
			TLSHandshakeTimeout: c.dialTimeout,
			IdleConnTimeout:     90 * time.Second,
			HTTP2:               &http.HTTP2Config{SendPingTimeout: keepAlive, PingTimeout: keepAlive / 2},
		}
		// Only HTTP/2: the API's server speaks it, and a fallback to
		// HTTP/1.1 would take one connection per watch.
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetHTTP2(true)
		c.hc = &http.Client{Transport: tr}
		c.closeIdle, c.closeAll = tr.CloseIdleConnections, func() error { tr.CloseIdleConnections(); return nil }
	}
	if s.WrapTransport != nil {
		c.hc.Transport = s.WrapTransport(c.hc.Transport)
	}
	return c, nil
}

// Server is the URL of the server requests go to now.
func (c *Client) Server() string { return c.endpoint().raw }

// Servers are the URLs of every server the client knows, the one in use
// first.
func (c *Client) Servers() []string {
	c.smu.Lock()
	defer c.smu.Unlock()
	out := make([]string, 0, len(c.servers))
	for i := range c.servers {
		out = append(out, c.servers[(c.cur+i)%len(c.servers)].raw)
	}
	return out
}

// SetServers replaces the servers the client fails over between (a
// refreshed list of the cluster's servers). The server in use stays in
// use while it is in the list; an empty list changes nothing.
func (c *Client) SetServers(servers []string) error {
	eps, err := parseEndpoints(servers)
	if err != nil || len(eps) == 0 {
		return err
	}
	c.smu.Lock()
	defer c.smu.Unlock()
	cur := c.servers[c.cur].raw
	c.servers, c.cur = eps, 0
	for i, ep := range eps {
		if ep.raw == cur {
			c.cur = i
		}
	}
	return nil
}

// endpoint is the server requests go to now.
func (c *Client) endpoint() endpoint {
	c.smu.Lock()
	defer c.smu.Unlock()
	return c.servers[c.cur]
}

// serverCount is how many servers the client knows.
func (c *Client) serverCount() int {
	c.smu.Lock()
	defer c.smu.Unlock()
	return len(c.servers)
}

// failed moves requests to the next server after a connection to ep
// failed, unless a request that failed at the same time already did.
func (c *Client) failed(ep endpoint) { c.failedHost(ep.base.Host) }

// failedHost is failed for the server at host (host:port).
func (c *Client) failedHost(host string) {
	c.smu.Lock()
	defer c.smu.Unlock()
	if len(c.servers) < 2 || c.servers[c.cur].base.Host != host {
		return
	}
	failed := c.servers[c.cur].raw
	c.cur = (c.cur + 1) % len(c.servers)
	c.log.Warn("API server unreachable: using the next one", "failed", failed, "next", c.servers[c.cur].raw)
}

// Proto is "HTTP/2" or "HTTP/3".
func (c *Client) Proto() string { return c.proto }

// Close ends every connection; the client must not be used afterwards.
func (c *Client) Close() error {
	c.CloseConnections()
	return c.closeAll()
}

// CloseConnections ends every open connection to the server, including
// those carrying watches, which resume on new ones. A program whose
// client certificate was renewed calls it so that the server sees the new
// one: a connection keeps the certificate it was opened with.
func (c *Client) CloseConnections() {
	c.mu.Lock()
	conns := make([]io.Closer, 0, len(c.conns))
	for conn := range c.conns {
		conns = append(conns, conn)
	}
	c.mu.Unlock()
	for _, conn := range conns {
		_ = conn.Close()
	}
	c.closeIdle()
}

func (c *Client) track(conn io.Closer) {
	c.mu.Lock()
	c.conns[conn] = struct{}{}
	c.mu.Unlock()
}

func (c *Client) untrack(conn io.Closer) {
	c.mu.Lock()
	delete(c.conns, conn)
	c.mu.Unlock()
}

// dialError is a connection that could not be made: the request never
// reached the server, so it may be sent to another.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func (c *Client) dialTCP(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: c.dialTimeout}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, &dialError{err}
	}
	tc := &trackedConn{Conn: conn, c: c}
	c.track(tc)
	return tc, nil
}

type trackedConn struct {
	net.Conn
	c    *Client
	once sync.Once
}

func (t *trackedConn) Close() error {
	t.once.Do(func() { t.c.untrack(t) })
	return t.Conn.Close()
}

type quicCloser struct{ conn *quic.Conn }

func (q quicCloser) Close() error { return q.conn.CloseWithError(0, "closed by the client") }

func (c *Client) dialQUIC(ctx context.Context, addr string, tlsConf *tls.Config, qc *quic.Config) (*quic.Conn, error) {
	conn, err := quic.DialAddrEarly(ctx, addr, tlsConf, qc)
	if err != nil {
		return nil, &dialError{err}
	}
	qcl := quicCloser{conn}
	c.track(qcl)
	go func() {
		<-conn.Context().Done()
		c.untrack(qcl)
	}()
	return conn, nil
}

// Healthy asks the server whether it is up (GET /healthz), which needs no
// rights: a check that it is reachable and is who it should be.
func (c *Client) Healthy(ctx context.Context) error {
	_, err := c.call(ctx, request{method: http.MethodGet, path: "/healthz"})
	return err
}

// call sends a request and reads the whole answer.
func (c *Client) call(ctx context.Context, req request) ([]byte, error) {
	resp, err := c.do(ctx, req)
	if err != nil {
		return nil, err
	}
	return c.readBody(resp, req)
}

// request is one API call.
type request struct {
	method string
	path   string
	query  url.Values
	body   []byte
	// bodyStream, instead of body, is a body sent while the answer is
	// read (exec); such a request is never sent twice.
	bodyStream io.Reader
	ctype      string
	// stream leaves the answer's body open and unbounded in time (watch).
	stream bool
}

// do sends r and returns the answer of a 2xx status; any other status is
// an *APIError, no answer a *ConnectionError. The caller closes the body.
func (c *Client) do(ctx context.Context, r request) (*http.Response, error) {
	var lastErr error
	failovers := 0
	for attempt := 0; ; attempt++ {
		ep := c.endpoint()
		u := *ep.base
		u.Path += r.path
		u.RawQuery = r.query.Encode()
		resp, err := c.send(ctx, r, ep, u.String())
		if err == nil {
			return resp, nil
		}
		lastErr = err
		if c.failover(ep, r, err) && failovers < c.serverCount()-1 {
			failovers++
			continue
		}
		wait, retry := c.retryable(r, err, attempt)
		if !retry {
			return nil, lastErr
		}
		c.log.Debug("retrying API request", "method", r.method, "url", u.String(), "after", wait, "error", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, lastErr
		case <-t.C:
		}
	}
}

// failover moves to the next server when err is a connection to ep that
// failed (not a server that proved to be someone else), and says whether
// r may be sent again at once to it: a read, or any request that never
// reached ep. A request with a streamed body (exec) is never sent twice.
func (c *Client) failover(ep endpoint, r request, err error) bool {
	var ce *ConnectionError
	if !errors.As(err, &ce) || ce.UntrustedServer() {
		return false
	}
	c.failed(ep)
	var de *dialError
	return r.bodyStream == nil && (r.method == http.MethodGet || errors.As(err, &de))
}

// retryable says whether a failed request may be sent again, and after
// how long: a 429 (refused before it was processed) after its Retry-After,
// and a read that lost its connection (nothing changed on the server).
func (c *Client) retryable(r request, err error, attempt int) (time.Duration, bool) {
	if attempt >= maxRetries || r.bodyStream != nil {
		return 0, false
	}
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests {
		return min(max(ae.RetryAfter, 100*time.Millisecond), maxRetryAfter), true
	}
	// One more try of a read whose connection broke (a server restarting,
	// CloseConnections); not of one that got no answer in time, which would
	// only double the wait for a server that is not there.
	var ce *ConnectionError
	var ne net.Error
	timedOut := errors.Is(err, errNoAnswer) || (errors.As(err, &ne) && ne.Timeout())
	if errors.As(err, &ce) && attempt == 0 && r.method == http.MethodGet && !r.stream && !ce.UntrustedServer() && !timedOut {
		return 200 * time.Millisecond, true
	}
	return 0, false
}

func (c *Client) send(ctx context.Context, r request, ep endpoint, u string) (*http.Response, error) {
	parent := ctx
	var cancel context.CancelFunc = func() {}
	if !r.stream {
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	if r.bodyStream != nil {
		body = r.bodyStream
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("Accept", "application/json")
	if r.ctype != "" {
		req.Header.Set("Content-Type", r.ctype)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		cancel()
		if err := parent.Err(); err != nil {
			return nil, err
		}
		c.log.Debug("API request failed", "method", r.method, "url", u, "proto", c.proto, "error", err)
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w within %s", errNoAnswer, c.timeout)
		}
		return nil, &ConnectionError{Server: ep.raw, Proto: c.proto, Err: unwrapURLError(err)}
	}
	c.log.Debug("API request", "method", r.method, "url", u, "status", resp.StatusCode, "proto", resp.Proto, "duration", time.Since(start))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
		return resp, nil
	}
	defer cancel()
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	return nil, newAPIError(r.method, r.path, resp.StatusCode, resp.Header, data)
}

// errNoAnswer is a request that got no answer within its timeout.
var errNoAnswer = errors.New("no answer")

// unwrapURLError drops the *url.Error around a transport error: its text
// repeats the method and URL, which ConnectionError says better.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// cancelBody ends a request's context when its body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// readBody reads a whole answer, bounded.
func (c *Client) readBody(resp *http.Response, r request) ([]byte, error) {
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	if err != nil {
		return nil, &ConnectionError{Server: c.Server(), Proto: c.proto, Err: fmt.Errorf("read the answer to %s %s: %w", r.method, r.path, err)}
	}
	if len(data) > maxResponseBody {
		return nil, fmt.Errorf("%s %s: the answer is larger than %d MiB", r.method, r.path, maxResponseBody>>20)
	}
	return data, nil
}
