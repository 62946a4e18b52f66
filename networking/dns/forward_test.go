package dns

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestForwardCachesUntilTheTTLRunsOut(t *testing.T) {
	up := startUpstream(t, answerA("192.0.2.7", 1))
	_, addr := startServer(t, Config{Upstreams: []netip.AddrPort{up.addr}}, &Records{})
	for i, network := range []string{"udp", "tcp"} {
		r := ask(t, addr, network, "Example.ORG.", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.7" {
			t.Fatalf("over %s: %v", network, r)
		}
		if r.Authoritative || !r.RecursionAvailable {
			t.Errorf("forwarded answer: aa=%v ra=%v, want aa=false ra=true", r.Authoritative, r.RecursionAvailable)
		}
		if r.Question[0].Name != "Example.ORG." {
			t.Errorf("question echoed as %q", r.Question[0].Name)
		}
		if n := up.queries.Load(); n != 1 {
			t.Fatalf("query %d: upstream asked %d times, want once (the second from the cache)", i+1, n)
		}
	}
	time.Sleep(1100 * time.Millisecond)
	ask(t, addr, "udp", "example.org.", dns.TypeA)
	if n := up.queries.Load(); n != 2 {
		t.Errorf("after the 1 s TTL ran out: upstream asked %d times, want 2", n)
	}
}

func TestForwardCachesNegativeAnswersForTheSOAMinimum(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg).SetRcode(req, dns.RcodeNameError)
		m.Ns = []dns.RR{&dns.SOA{
			Hdr: dns.RR_Header{Name: "org.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 3600},
			Ns:  "a.org.", Mbox: "b.org.", Serial: 1, Refresh: 1, Retry: 1, Expire: 1, Minttl: 1,
		}}
		_ = w.WriteMsg(m)
	})
	_, addr := startServer(t, Config{Upstreams: []netip.AddrPort{up.addr}}, &Records{})
	for range 3 {
		if r := ask(t, addr, "udp", "missing.org.", dns.TypeAAAA); r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 {
			t.Fatalf("forwarded NXDOMAIN: %v", r)
		}
	}
	if n := up.queries.Load(); n != 1 {
		t.Errorf("upstream asked %d times, want once", n)
	}
	time.Sleep(1100 * time.Millisecond)
	ask(t, addr, "udp", "missing.org.", dns.TypeAAAA)
	if n := up.queries.Load(); n != 2 {
		t.Errorf("after the SOA minimum (1 s, less than its TTL): upstream asked %d times, want 2", n)
	}
}

func TestForwardCoalescesConcurrentQuestions(t *testing.T) {
	slow := answerA("192.0.2.8", 60)
	up := startUpstream(t, func(w dns.ResponseWriter, req *dns.Msg) {
		time.Sleep(200 * time.Millisecond)
		slow(w, req)
	})
	_, addr := startServer(t, Config{Upstreams: []netip.AddrPort{up.addr}}, &Records{})
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if r := ask(t, addr, "udp", "slow.example.", dns.TypeA); len(r.Answer) != 1 {
				t.Errorf("answer %v", r)
			}
		})
	}
	wg.Wait()
	if n := up.queries.Load(); n != 1 {
		t.Errorf("10 concurrent identical questions: upstream asked %d times, want once", n)
	}
}

func TestForwardRetriesTruncatedAnswersOverTCP(t *testing.T) {
	// 100 addresses: 1,600 bytes, more than UDP carries here.
	up := startUpstream(t, func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg).SetReply(req)
		for i := range 100 {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.IPv4(192, 0, 2, byte(i)),
			})
		}
		if _, udp := w.LocalAddr().(*net.UDPAddr); udp {
			m.Truncate(512)
		}
		_ = w.WriteMsg(m)
	})
	_, addr := startServer(t, Config{Upstreams: []netip.AddrPort{up.addr}}, &Records{})
	r := ask(t, addr, "tcp", "many.example.", dns.TypeA)
	if len(r.Answer) != 100 || r.Truncated {
		t.Fatalf("over TCP: %d addresses (truncated %v), want all 100", len(r.Answer), r.Truncated)
	}
	if n := up.queries.Load(); n != 2 {
		t.Errorf("upstream asked %d times, want twice (UDP, then TCP)", n)
	}
	// The client over UDP gets what fits and TC, and retries over TCP.
	r = ask(t, addr, "udp", "many.example.", dns.TypeA)
	if !r.Truncated || len(r.Answer) == 0 || len(r.Answer) >= 100 {
		t.Errorf("over UDP without EDNS: %d addresses, truncated %v; want some and TC", len(r.Answer), r.Truncated)
	}
}

func TestUpstreamFailureIsServfailQuickly(t *testing.T) {
	// A resolver that reads and never answers.
	silent, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loopback))
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	silentAddr := silent.LocalAddr().(*net.UDPAddr).AddrPort()
	good := startUpstream(t, answerA("192.0.2.9", 60))
	tests := []struct {
		name      string
		upstreams []netip.AddrPort
		rcode     int
		within    time.Duration
	}{
		// Refused at once (ICMP port unreachable): no waiting.
		{"refused", []netip.AddrPort{deadUpstream(t)}, dns.RcodeServerFailure, 100 * time.Millisecond},
		{"silent", []netip.AddrPort{silentAddr}, dns.RcodeServerFailure, 500 * time.Millisecond},
		{"no upstream", []netip.AddrPort{}, dns.RcodeServerFailure, 50 * time.Millisecond},
		// The next upstream answers in the time the silent one leaves.
		{"silent then good", []netip.AddrPort{silentAddr, good.addr}, dns.RcodeSuccess, 500 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := startServer(t, Config{Upstreams: tc.upstreams, ForwardTimeout: 300 * time.Millisecond}, &Records{})
			for range 2 { // the failure is not cached: each try waits again, and fails again
				start := time.Now()
				r := ask(t, addr, "udp", "example.net.", dns.TypeA)
				took := time.Since(start)
				if r.Rcode != tc.rcode {
					t.Errorf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
				}
				if took > tc.within {
					t.Errorf("answered in %v, want within %v", took, tc.within)
				}
			}
		})
	}
}

func TestUpstreamServfailTriesTheNext(t *testing.T) {
	failing := startUpstream(t, func(w dns.ResponseWriter, req *dns.Msg) {
		_ = w.WriteMsg(new(dns.Msg).SetRcode(req, dns.RcodeServerFailure))
	})
	good := startUpstream(t, answerA("192.0.2.10", 60))
	_, addr := startServer(t, Config{Upstreams: []netip.AddrPort{failing.addr, good.addr}}, &Records{})
	r := ask(t, addr, "udp", "example.com.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("answer %v, want the second upstream's", r)
	}
	if failing.queries.Load() != 1 || good.queries.Load() != 1 {
		t.Errorf("upstreams asked %d and %d times, want once each", failing.queries.Load(), good.queries.Load())
	}
}

// TestReverseOfOtherAddressesIsForwarded checks that PTR questions for
// addresses the cluster does not hold go to the upstreams.
func TestReverseOfOtherAddressesIsForwarded(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg).SetReply(req)
		m.Answer = []dns.RR{&dns.PTR{Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 60}, Ptr: "host.example."}}
		_ = w.WriteMsg(m)
	})
	records := clusterRecords()
	_, addr := startServer(t, Config{Upstreams: []netip.AddrPort{up.addr}}, &records)
	if r := ask(t, addr, "udp", "7.2.0.192.in-addr.arpa.", dns.TypePTR); len(r.Answer) != 1 || r.Answer[0].(*dns.PTR).Ptr != "host.example." {
		t.Errorf("PTR of an outside address: %v", r)
	}
	if r := ask(t, addr, "udp", "11.0.96.10.in-addr.arpa.", dns.TypePTR); len(r.Answer) != 1 || r.Answer[0].(*dns.PTR).Ptr != "legacy.default.svc.cluster.local." {
		t.Errorf("PTR of a virtual IP: %v", r)
	}
	if n := up.queries.Load(); n != 1 {
		t.Errorf("upstream asked %d times, want once", n)
	}
}

func TestCacheTTL(t *testing.T) {
	a := func(ttl uint32) dns.RR {
		return &dns.A{Hdr: dns.RR_Header{Name: "x.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: net.IPv4(192, 0, 2, 1)}
	}
	soa := func(ttl, minttl uint32) dns.RR {
		return &dns.SOA{Hdr: dns.RR_Header{Name: "x.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl}, Ns: "a.", Mbox: "b.", Minttl: minttl}
	}
	tests := []struct {
		name string
		msg  dns.Msg
		want time.Duration // 0: not cached
	}{
		{"smallest record TTL", dns.Msg{Answer: []dns.RR{a(30), a(10)}}, 10 * time.Second},
		{"capped at an hour", dns.Msg{Answer: []dns.RR{a(86400)}}, time.Hour},
		{"zero TTL", dns.Msg{Answer: []dns.RR{a(0)}}, 0},
		{"NXDOMAIN: SOA minimum below its TTL", dns.Msg{MsgHdr: dns.MsgHdr{Rcode: dns.RcodeNameError}, Ns: []dns.RR{soa(600, 30)}}, 30 * time.Second},
		{"NODATA: SOA TTL below its minimum", dns.Msg{Ns: []dns.RR{soa(20, 600)}}, 20 * time.Second},
		{"negative capped at 5 minutes", dns.Msg{Ns: []dns.RR{soa(86400, 86400)}}, 5 * time.Minute},
		{"negative without SOA", dns.Msg{MsgHdr: dns.MsgHdr{Rcode: dns.RcodeNameError}}, 0},
		{"SERVFAIL", dns.Msg{MsgHdr: dns.MsgHdr{Rcode: dns.RcodeServerFailure}, Ns: []dns.RR{soa(60, 60)}}, 0},
		{"truncated", dns.Msg{MsgHdr: dns.MsgHdr{Truncated: true}, Answer: []dns.RR{a(60)}}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := cacheTTL(&tc.msg)
			if ok != (tc.want > 0) || got != tc.want {
				t.Errorf("cacheTTL = %v, %v; want %v", got, ok, tc.want)
			}
		})
	}
}

func TestCacheEvictsTheLeastRecentlyUsedAndLowersTTLs(t *testing.T) {
	c := newCache(2)
	now := time.Unix(1000, 0)
	msg := func(ttl uint32) *dns.Msg {
		return &dns.Msg{Answer: []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "x.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: net.IPv4(192, 0, 2, 1)}}}
	}
	c.put("a", msg(100), now)
	c.put("b", msg(100), now)
	c.get("a", now) // a is now more recent than b
	c.put("c", msg(100), now)
	if _, ok := c.get("b", now); ok {
		t.Error("b, the least recently used, was kept over the size")
	}
	m, ok := c.get("a", now.Add(30500*time.Millisecond))
	if !ok || m.Answer[0].Header().Ttl != 70 {
		t.Errorf("a after 30.5 s: %v, %v; want TTL 70", m, ok)
	}
	if _, ok := c.get("c", now.Add(100*time.Second)); ok {
		t.Error("c served at its expiry")
	}
	for i := range 10 {
		c.put(fmt.Sprint(i), msg(100), now)
	}
	if c.lru.Len() != 2 || len(c.items) != 2 {
		t.Errorf("cache holds %d/%d entries, want at most 2", c.lru.Len(), len(c.items))
	}
}
