package dns

import (
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"nexus.dev/nexus/networking/lb"
)

var loopback = netip.MustParseAddrPort("127.0.0.1:0")

// startServer runs a Server on a random loopback port with cfg (Listen
// and, when nil, Upstreams filled in: a dead upstream, so that no test
// ever asks a real resolver) and the records r.
func startServer(t testing.TB, cfg Config, r *Records) (*Server, string) {
	t.Helper()
	if cfg.Listen == nil {
		cfg.Listen = []netip.AddrPort{loopback}
	}
	if cfg.Upstreams == nil {
		cfg.Upstreams = []netip.AddrPort{deadUpstream(t)}
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r != nil {
		if err := s.Update(*r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s, s.Addrs()[0].String()
}

// deadUpstream is a loopback port nothing listens on: a query there is
// refused at once (ICMP port unreachable).
func deadUpstream(t testing.TB) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loopback))
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().(*net.UDPAddr).AddrPort()
	c.Close()
	return addr
}

// upstream is a fake resolver on loopback that counts the queries it gets.
type upstream struct {
	addr    netip.AddrPort
	queries atomic.Int64
}

// startUpstream serves h on a random loopback port over UDP and TCP.
func startUpstream(t testing.TB, h func(w dns.ResponseWriter, req *dns.Msg)) *upstream {
	t.Helper()
	l, err := bind(loopback)
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{addr: l.addr}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		u.queries.Add(1)
		h(w, req)
	})
	for _, srv := range []*dns.Server{{PacketConn: l.udp, Handler: handler}, {Listener: l.tcp, Handler: handler}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.ActivateAndServe()
		}()
		<-started
		t.Cleanup(func() {
			_ = srv.Shutdown()
			<-done
		})
	}
	return u
}

// answerA answers every A question with addr and the given TTL.
func answerA(addr string, ttl uint32) func(w dns.ResponseWriter, req *dns.Msg) {
	return func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg).SetReply(req)
		if req.Question[0].Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
				A:   net.ParseIP(addr),
			})
		}
		_ = w.WriteMsg(m)
	}
}

// ask sends one question to the server over network ("udp" or "tcp").
func ask(t testing.TB, addr, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg).SetQuestion(name, qtype)
	return exchange(t, addr, network, m)
}

func exchange(t testing.TB, addr, network string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", m.Question[0].Name, dns.TypeToString[m.Question[0].Qtype], network, err)
	}
	return r
}

// clusterRecords is a small cluster: a dual-stack Service with named and
// unnamed ports, an IPv4-only one, a headless one with two ready
// instances, a headless one with none, and instances.
func clusterRecords() Records {
	return Records{
		Services: []Service{
			{
				Namespace: "default", Name: "web",
				VirtualIPs: []netip.Addr{netip.MustParseAddr("fd00:96::10"), netip.MustParseAddr("10.96.0.10")},
				Ports: []Port{
					{Name: "http", Port: 80, Protocol: lb.TCP},
					{Name: "dns", Port: 53, Protocol: lb.UDP},
					{Port: 8080, Protocol: lb.TCP},
				},
			},
			{
				Namespace: "default", Name: "legacy",
				VirtualIPs: []netip.Addr{netip.MustParseAddr("10.96.0.11")},
			},
			{
				Namespace: "data", Name: "db", Headless: true,
				Ports: []Port{{Name: "pg", Port: 5432, Protocol: lb.TCP}},
				Backends: []Backend{
					{Instance: "db-0", Addrs: []netip.Addr{netip.MustParseAddr("fd00:1::2"), netip.MustParseAddr("10.1.0.2")}},
					{Instance: "db-1", Addrs: []netip.Addr{netip.MustParseAddr("fd00:1::3"), netip.MustParseAddr("10.1.0.3")}},
				},
			},
			{
				Namespace: "data", Name: "empty", Headless: true,
				Ports: []Port{{Name: "pg", Port: 5432, Protocol: lb.TCP}},
			},
		},
		Instances: []Instance{
			{Namespace: "default", Name: "web-1", Addrs: []netip.Addr{netip.MustParseAddr("fd00:1::7"), netip.MustParseAddr("10.1.0.7")}},
			{Namespace: "data", Name: "db-0", Addrs: []netip.Addr{netip.MustParseAddr("fd00:1::2"), netip.MustParseAddr("10.1.0.2")}},
		},
	}
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
