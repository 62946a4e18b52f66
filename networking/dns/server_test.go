package dns

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"

	"nexus.dev/nexus/networking/lb"
)

// rrs renders records one a line, sorted, tabs as spaces.
func rrs(list []dns.RR) []string {
	var out []string
	for _, rr := range list {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		out = append(out, strings.Join(strings.Fields(rr.String()), " "))
	}
	slices.Sort(out)
	return out
}

const soaLine = "cluster.local. 1 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. %d 7200 1800 86400 1"

func TestClusterNames(t *testing.T) {
	records := clusterRecords()
	s, addr := startServer(t, Config{}, &records)
	soa := []string{fmt.Sprintf(soaLine, s.serial.Load())}
	tests := []struct {
		name   string
		qtype  uint16
		rcode  int
		answer []string
		ns     []string
		extra  []string
	}{
		{name: "web.default.svc.cluster.local.", qtype: dns.TypeA, answer: []string{
			"web.default.svc.cluster.local. 5 IN A 10.96.0.10"}},
		{name: "web.default.svc.cluster.local.", qtype: dns.TypeAAAA, answer: []string{
			"web.default.svc.cluster.local. 5 IN AAAA fd00:96::10"}},
		// Case does not matter, and the question is echoed as asked.
		{name: "WEB.Default.Svc.CLUSTER.local.", qtype: dns.TypeA, answer: []string{
			"web.default.svc.cluster.local. 5 IN A 10.96.0.10"}},
		// An IPv4-only Service has the name but no AAAA: NODATA.
		{name: "legacy.default.svc.cluster.local.", qtype: dns.TypeAAAA, ns: soa},
		{name: "legacy.default.svc.cluster.local.", qtype: dns.TypeA, answer: []string{
			"legacy.default.svc.cluster.local. 5 IN A 10.96.0.11"}},
		{name: "web.default.svc.cluster.local.", qtype: dns.TypeMX, ns: soa},
		{name: "_http._tcp.web.default.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."},
			extra: []string{
				"web.default.svc.cluster.local. 5 IN A 10.96.0.10",
				"web.default.svc.cluster.local. 5 IN AAAA fd00:96::10"}},
		{name: "_dns._udp.web.default.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"_dns._udp.web.default.svc.cluster.local. 5 IN SRV 0 100 53 web.default.svc.cluster.local."},
			extra: []string{
				"web.default.svc.cluster.local. 5 IN A 10.96.0.10",
				"web.default.svc.cluster.local. 5 IN AAAA fd00:96::10"}},
		// The port is TCP only; the unnamed port has no SRV.
		{name: "_http._udp.web.default.svc.cluster.local.", qtype: dns.TypeSRV, rcode: dns.RcodeNameError, ns: soa},
		// Empty non-terminals exist (NODATA), so a resolver that takes
		// NXDOMAIN as "nothing below" (RFC 8020) still finds the names.
		{name: "_tcp.web.default.svc.cluster.local.", qtype: dns.TypeSRV, ns: soa},
		{name: "default.svc.cluster.local.", qtype: dns.TypeA, ns: soa},
		{name: "svc.cluster.local.", qtype: dns.TypeA, ns: soa},
		{name: "instance.cluster.local.", qtype: dns.TypeA, ns: soa},
		{name: "cluster.local.", qtype: dns.TypeSOA, answer: soa},
		{name: "cluster.local.", qtype: dns.TypeNS, ns: soa},
		// Headless: the ready instances, 1 s.
		{name: "db.data.svc.cluster.local.", qtype: dns.TypeA, answer: []string{
			"db.data.svc.cluster.local. 1 IN A 10.1.0.2",
			"db.data.svc.cluster.local. 1 IN A 10.1.0.3"}},
		{name: "db.data.svc.cluster.local.", qtype: dns.TypeAAAA, answer: []string{
			"db.data.svc.cluster.local. 1 IN AAAA fd00:1::2",
			"db.data.svc.cluster.local. 1 IN AAAA fd00:1::3"}},
		{name: "_pg._tcp.db.data.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{
				"_pg._tcp.db.data.svc.cluster.local. 1 IN SRV 0 50 5432 db-0.data.instance.cluster.local.",
				"_pg._tcp.db.data.svc.cluster.local. 1 IN SRV 0 50 5432 db-1.data.instance.cluster.local."},
			extra: []string{
				"db-0.data.instance.cluster.local. 1 IN A 10.1.0.2",
				"db-0.data.instance.cluster.local. 1 IN AAAA fd00:1::2",
				"db-1.data.instance.cluster.local. 1 IN A 10.1.0.3",
				"db-1.data.instance.cluster.local. 1 IN AAAA fd00:1::3"}},
		// A headless Service without a ready instance has no name (as in CoreDNS).
		{name: "empty.data.svc.cluster.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError, ns: soa},
		{name: "_pg._tcp.empty.data.svc.cluster.local.", qtype: dns.TypeSRV, rcode: dns.RcodeNameError, ns: soa},
		// Instances, including one known only as a headless backend.
		{name: "web-1.default.instance.cluster.local.", qtype: dns.TypeAAAA, answer: []string{
			"web-1.default.instance.cluster.local. 1 IN AAAA fd00:1::7"}},
		{name: "db-1.data.instance.cluster.local.", qtype: dns.TypeA, answer: []string{
			"db-1.data.instance.cluster.local. 1 IN A 10.1.0.3"}},
		// Reverse names of virtual IPs and instance addresses.
		{name: "10.0.96.10.in-addr.arpa.", qtype: dns.TypePTR, answer: []string{
			"10.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local."}},
		{name: reverse(t, "fd00:1::7"), qtype: dns.TypePTR, answer: []string{
			reverse(t, "fd00:1::7") + " 1 IN PTR web-1.default.instance.cluster.local."}},
		// Unknown names under the domain: NXDOMAIN with the SOA.
		{name: "nope.default.svc.cluster.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError, ns: soa},
		{name: "web.other.svc.cluster.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError, ns: soa},
		{name: "web.default.svc.cluster.local.default.svc.cluster.local.", qtype: dns.TypeAAAA, rcode: dns.RcodeNameError, ns: soa},
		{name: "x.cluster.local.", qtype: dns.TypeTXT, rcode: dns.RcodeNameError, ns: soa},
		// No ANY, no zone transfer.
		{name: "web.default.svc.cluster.local.", qtype: dns.TypeANY, rcode: dns.RcodeNotImplemented},
		{name: "cluster.local.", qtype: dns.TypeAXFR, rcode: dns.RcodeNotImplemented},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range tests {
			t.Run(network+"/"+tc.name+"/"+dns.TypeToString[tc.qtype], func(t *testing.T) {
				r := ask(t, addr, network, tc.name, tc.qtype)
				if r.Rcode != tc.rcode {
					t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
				}
				if r.Question[0].Name != tc.name {
					t.Errorf("question echoed as %q, want %q", r.Question[0].Name, tc.name)
				}
				if tc.rcode != dns.RcodeNotImplemented && !r.Authoritative {
					t.Error("answer from the zone is not authoritative")
				}
				for _, sec := range []struct {
					what      string
					got, want []string
				}{{"answer", rrs(r.Answer), tc.answer}, {"authority", rrs(r.Ns), tc.ns}, {"additional", rrs(r.Extra), tc.extra}} {
					if !slices.Equal(sec.got, sec.want) {
						t.Errorf("%s section:\n got %q\nwant %q", sec.what, sec.got, sec.want)
					}
				}
			})
		}
	}
}

func reverse(t *testing.T, addr string) string {
	t.Helper()
	r, err := dns.ReverseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestHeadlessAnswersSpread checks that the order of a headless Service's
// addresses varies, so clients that take the first spread over instances.
func TestHeadlessAnswersSpread(t *testing.T) {
	records := clusterRecords()
	_, addr := startServer(t, Config{}, &records)
	first := map[string]int{}
	for range 40 {
		r := ask(t, addr, "udp", "db.data.svc.cluster.local.", dns.TypeA)
		first[r.Answer[0].(*dns.A).A.String()]++
	}
	if len(first) != 2 {
		t.Errorf("first address over 40 answers: %v, want both instances first at times", first)
	}
}

func TestUpdateIsSeenByTheNextQuery(t *testing.T) {
	s, addr := startServer(t, Config{}, nil)
	name := "db.data.svc.cluster.local."
	if r := ask(t, addr, "udp", name, dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("before the first Update: %s, want SERVFAIL (not synced, not NXDOMAIN)", dns.RcodeToString[r.Rcode])
	}
	for i, ips := range [][]string{{"10.1.0.2"}, {"10.1.0.2", "10.1.0.3"}, {"10.1.0.9"}, nil} {
		var backends []Backend
		for j, ip := range ips {
			backends = append(backends, Backend{Instance: fmt.Sprintf("db-%d", j), Addrs: []netip.Addr{netip.MustParseAddr(ip)}})
		}
		if err := s.Update(Records{Services: []Service{{Namespace: "data", Name: "db", Headless: true, Backends: backends}}}); err != nil {
			t.Fatal(err)
		}
		r := ask(t, addr, "udp", name, dns.TypeA)
		var got []string
		for _, rr := range r.Answer {
			got = append(got, rr.(*dns.A).A.String())
		}
		slices.Sort(got)
		if !slices.Equal(got, ips) {
			t.Errorf("update %d: answer %v, want %v", i, got, ips)
		}
		if len(ips) == 0 && r.Rcode != dns.RcodeNameError {
			t.Errorf("update %d: no ready instance: %s, want NXDOMAIN", i, dns.RcodeToString[r.Rcode])
		}
	}
}

func TestUpdateLeavesOutBadRecords(t *testing.T) {
	s, addr := startServer(t, Config{}, nil)
	err := s.Update(Records{
		Services: []Service{
			{Namespace: "default", Name: "Bad.Name", VirtualIPs: []netip.Addr{netip.MustParseAddr("10.96.0.1")}},
			{Namespace: "default", Name: "good", VirtualIPs: []netip.Addr{netip.MustParseAddr("10.96.0.2"), netip.MustParseAddr("fe80::1%eth0")},
				Ports: []Port{{Name: "x", Port: 1, Protocol: lb.Protocol(132)}}},
			{Namespace: "default", Name: "good", VirtualIPs: []netip.Addr{netip.MustParseAddr("10.96.0.3")}},
		},
		Instances: []Instance{{Namespace: "default", Name: strings.Repeat("a", 64)}},
	})
	if err == nil {
		t.Fatal("Update took invalid records without an error")
	}
	for _, want := range []string{`"default/Bad.Name"`, `fe80::1%eth0`, "protocol 132", "default/good: listed twice", strings.Repeat("a", 64)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	r := ask(t, addr, "udp", "good.default.svc.cluster.local.", dns.TypeA)
	if got := rrs(r.Answer); !slices.Equal(got, []string{"good.default.svc.cluster.local. 5 IN A 10.96.0.2"}) {
		t.Errorf("the valid records were not applied: %q", got)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	listen := netip.MustParseAddrPort("127.0.0.1:53")
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no listen", Config{Upstreams: []netip.AddrPort{}}, "no listen address"},
		{"bad domain", Config{Listen: []netip.AddrPort{listen}, Domain: "Cluster_local", Upstreams: []netip.AddrPort{}}, `domain "Cluster_local"`},
		{"root domain", Config{Listen: []netip.AddrPort{listen}, Domain: ".", Upstreams: []netip.AddrPort{}}, `domain "."`},
		{"loop", Config{Listen: []netip.AddrPort{listen}, Upstreams: []netip.AddrPort{listen}}, "would loop"},
		{"unspecified upstream", Config{Listen: []netip.AddrPort{listen}, Upstreams: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:53")}}, "upstream 0.0.0.0:53"},
		{"no resolv.conf", Config{Listen: []netip.AddrPort{listen}, ResolvConf: "/nonexistent/resolv.conf"}, "/nonexistent/resolv.conf"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestStartFailsOnATakenAddress(t *testing.T) {
	s, addr := startServer(t, Config{}, nil)
	other, err := New(Config{Listen: s.Addrs(), Upstreams: []netip.AddrPort{}})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Start(); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Start on a taken address: %v, want an error naming %s", err, addr)
	}
}

// TestConcurrentQueriesAndUpdates asks while the view is replaced: every
// answer is one whole view or the other, never a mix or nothing (run
// with -race: lookups take no lock).
func TestConcurrentQueriesAndUpdates(t *testing.T) {
	s, _ := startServer(t, Config{Log: discardLog()}, nil)
	views := [][]string{{"10.1.0.2", "10.1.0.3"}, {"10.1.0.4"}}
	update := func(i int) {
		var backends []Backend
		for j, ip := range views[i%2] {
			backends = append(backends, Backend{Instance: fmt.Sprintf("db-%d", j), Addrs: []netip.Addr{netip.MustParseAddr(ip)}})
		}
		if err := s.Update(Records{Services: []Service{{Namespace: "data", Name: "db", Headless: true, Backends: backends,
			Ports: []Port{{Name: "pg", Port: 5432, Protocol: lb.TCP}}}}}); err != nil {
			t.Error(err)
		}
	}
	update(0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			update(i)
		}
	}()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 500 {
				for q, name := range map[uint16]string{dns.TypeA: "DB.data.svc.cluster.local.", dns.TypeSRV: "_pg._tcp.db.data.svc.cluster.local."} {
					r := s.respond(t.Context(), new(dns.Msg).SetQuestion(name, q), false)
					if _, err := r.Pack(); err != nil {
						t.Errorf("pack: %v", err)
						return
					}
					var got []string
					for _, rr := range r.Answer {
						if a, ok := rr.(*dns.A); ok {
							got = append(got, a.A.String())
						}
					}
					slices.Sort(got)
					if q == dns.TypeA && !slices.Equal(got, views[0]) && !slices.Equal(got, views[1]) {
						t.Errorf("answer %q is neither view", got)
						return
					}
					if q == dns.TypeSRV && len(r.Answer) != 1 && len(r.Answer) != 2 {
						t.Errorf("SRV answer of %d records", len(r.Answer))
						return
					}
				}
			}
		})
	}
	wg.Wait()
	<-done
}
