package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// DefaultDomain is the cluster domain when none is configured.
const DefaultDomain = "cluster.local"

// Defaults of Config.
const (
	defaultCacheSize      = 4096
	defaultForwardTimeout = 2 * time.Second
	defaultResolvConf     = "/etc/resolv.conf"
)

// Config configures a Server.
type Config struct {
	// Listen are the addresses to serve, each over UDP and TCP: the node
	// bridge's addresses, port 53. Port 0 picks a free port, the same
	// for UDP and TCP (tests).
	Listen []netip.AddrPort
	// Domain is the cluster domain; DefaultDomain when empty.
	Domain string
	// Upstreams are the resolvers names outside the cluster are
	// forwarded to. When nil, the nameservers of ResolvConf are used,
	// loopback ones included: the server runs in the node's network
	// namespace, where a local stub such as systemd-resolved's
	// 127.0.0.53 is reachable (containers could not reach it, which is
	// why they ask this server).
	Upstreams []netip.AddrPort
	// ResolvConf is the file Upstreams are read from when nil;
	// /etc/resolv.conf when empty.
	ResolvConf string
	// CacheSize bounds the number of forwarded answers kept; 4096 when
	// 0, no cache when negative.
	CacheSize int
	// ForwardTimeout bounds the time spent on the upstreams for one
	// question before the client gets SERVFAIL; 2 s when 0.
	ForwardTimeout time.Duration
	// Log receives upstream failures and listener errors; slog.Default()
	// when nil.
	Log *slog.Logger
}

// Server is the cluster DNS server. Create it with New, give it the
// cluster's names with Update, serve with Start and stop with Close.
type Server struct {
	domain string
	listen []netip.AddrPort
	log    *slog.Logger
	fwd    *forwarder
	// zone is nil until the first Update: questions under the domain are
	// answered SERVFAIL until then rather than NXDOMAIN for names that
	// exist (CoreDNS does the same before it has synced).
	zone   atomic.Pointer[zone]
	serial atomic.Uint32

	ctx    context.Context // cancelled by Close: ends forwarding in flight
	cancel context.CancelFunc

	mu      sync.Mutex
	servers []*dns.Server
	addrs   []netip.AddrPort
	done    sync.WaitGroup
	closed  bool
}

// New checks cfg and returns a Server that does not serve yet.
func New(cfg Config) (*Server, error) {
	domain := cfg.Domain
	if domain == "" {
		domain = DefaultDomain
	}
	domain = strings.ToLower(dns.Fqdn(domain))
	if domain == "." || len(domain) > 200 || !validDomain(domain) {
		return nil, fmt.Errorf("cluster DNS: domain %q: want DNS labels of lower-case letters, digits and '-' separated by dots, e.g. %q", cfg.Domain, DefaultDomain)
	}
	if len(cfg.Listen) == 0 {
		return nil, errors.New("cluster DNS: no listen address: give the node bridge's addresses")
	}
	for _, l := range cfg.Listen {
		if !l.IsValid() || l.Addr().Zone() != "" {
			return nil, fmt.Errorf("cluster DNS: listen address %s: want an IP address without a zone and a port", l)
		}
	}
	upstreams := cfg.Upstreams
	if upstreams == nil {
		path := cfg.ResolvConf
		if path == "" {
			path = defaultResolvConf
		}
		var err error
		if upstreams, err = readUpstreams(path); err != nil {
			return nil, fmt.Errorf("cluster DNS: %w", err)
		}
	}
	for _, u := range upstreams {
		if !u.IsValid() || u.Addr().IsUnspecified() || u.Port() == 0 {
			return nil, fmt.Errorf("cluster DNS: upstream %s: want a resolver's address and port", u)
		}
		for _, l := range cfg.Listen {
			if u == l {
				return nil, fmt.Errorf("cluster DNS: upstream %s is one of the server's own addresses: questions would loop; give the node's resolvers in Upstreams", u)
			}
		}
	}
	cacheSize := cfg.CacheSize
	if cacheSize == 0 {
		cacheSize = defaultCacheSize
	}
	timeout := cfg.ForwardTimeout
	if timeout <= 0 {
		timeout = defaultForwardTimeout
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	if len(upstreams) == 0 {
		log.Warn("cluster DNS: no upstream resolver; names outside the cluster domain get SERVFAIL: add a nameserver to the node's resolv.conf", "domain", domain)
	}
	s := &Server{
		domain: domain,
		listen: cfg.Listen,
		log:    log,
		fwd:    newForwarder(upstreams, timeout, cacheSize, log),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Update replaces every cluster name the server answers with r's, at once:
// the next question sees the new records. Records that cannot be names are
// left out; the error names each of them, and the rest apply.
func (s *Server) Update(r Records) error {
	z, err := buildZone(s.domain, r, s.serial.Add(1))
	s.zone.Store(z)
	if err != nil {
		return fmt.Errorf("cluster DNS: records left out: %w", err)
	}
	return nil
}

// Start binds every listen address over UDP and TCP and serves them until
// Close. It fails, serving nothing, when any address cannot be bound.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.servers != nil {
		return errors.New("cluster DNS: Start called twice or after Close")
	}
	var conns []listener
	for _, l := range s.listen {
		c, err := bind(l)
		if err != nil {
			for _, c := range conns {
				c.close()
			}
			return fmt.Errorf("cluster DNS: %w (is another DNS server, such as dnsmasq or systemd-resolved, bound there?)", err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		s.addrs = append(s.addrs, c.addr)
		s.serve(&dns.Server{PacketConn: c.udp, Handler: s, UDPSize: dns.MaxMsgSize}, c.addr, "udp")
		s.serve(&dns.Server{Listener: c.tcp, Handler: s}, c.addr, "tcp")
	}
	return nil
}

// serve runs srv until Shutdown, returning once it has started so that a
// Close right after Start finds it running.
func (s *Server) serve(srv *dns.Server, addr netip.AddrPort, network string) {
	started, exited := make(chan struct{}), make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	s.servers = append(s.servers, srv)
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		defer close(exited)
		if err := srv.ActivateAndServe(); err != nil {
			s.log.Error("cluster DNS: serving stopped", "addr", addr, "net", network, "err", err)
		}
	}()
	select {
	case <-started:
	case <-exited:
	}
}

// Addrs returns the addresses served (with the ports picked for port 0).
func (s *Server) Addrs() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]netip.AddrPort(nil), s.addrs...)
}

// Close stops serving, ends the forwarding in flight and waits for it.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	servers := s.servers
	s.mu.Unlock()
	s.cancel()
	var errs []error
	for _, srv := range servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, srv.ShutdownContext(ctx))
		cancel()
	}
	s.done.Wait()
	return errors.Join(errs...)
}

// listener is one listen address bound over UDP and TCP.
type listener struct {
	addr netip.AddrPort
	udp  net.PacketConn
	tcp  net.Listener
}

func (c listener) close() {
	c.udp.Close()
	c.tcp.Close()
}

// bind binds addr over UDP and TCP. For port 0 it binds UDP on a free
// port, then TCP on the same port, trying again when that one is taken.
//
// The sockets are bound with IP_FREEBIND: the bridge's IPv6 address stays
// tentative while the bridge has no port up (no carrier, so no duplicate
// address detection yet), and the server must serve it from the start.
func bind(addr netip.AddrPort) (listener, error) {
	const tries = 20
	lc := net.ListenConfig{Control: freebind}
	ctx := context.Background()
	for i := 0; ; i++ {
		pc, err := lc.ListenPacket(ctx, "udp", addr.String())
		if err != nil {
			return listener{}, fmt.Errorf("listen on %s/udp: %w", addr, err)
		}
		udp := pc.(*net.UDPConn)
		bound := netip.AddrPortFrom(addr.Addr(), udp.LocalAddr().(*net.UDPAddr).AddrPort().Port())
		ln, err := lc.Listen(ctx, "tcp", bound.String())
		if err == nil {
			return listener{addr: bound, udp: udp, tcp: ln.(*net.TCPListener)}, nil
		}
		udp.Close()
		if addr.Port() != 0 || i == tries || !errors.Is(err, syscall.EADDRINUSE) {
			return listener{}, fmt.Errorf("listen on %s/tcp: %w", bound, err)
		}
	}
}

// validDomain reports whether domain (fully qualified) is DNS labels of
// lower-case letters, digits and '-'.
func validDomain(domain string) bool {
	for _, l := range strings.Split(strings.TrimSuffix(domain, "."), ".") {
		if !validLabel(l) {
			return false
		}
	}
	return true
}

// freebind lets a socket bind an address the node does not (yet) have
// ready.
func freebind(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if strings.HasSuffix(network, "6") {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
		}
	})
	return errors.Join(err, serr)
}
