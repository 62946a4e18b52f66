package dns

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"nexus.dev/nexus/networking/lb"
)

// BenchmarkRespondClusterName is the hot path of an in-cluster lookup
// without the sockets: parse done, zone lookup, answer built and
// truncated to size.
func BenchmarkRespondClusterName(b *testing.B) {
	records := clusterRecords()
	s, _ := startServer(b, Config{Log: discardLog()}, &records)
	for _, name := range []string{"web.default.svc.cluster.local.", "db.data.svc.cluster.local.", "nope.default.svc.cluster.local."} {
		b.Run(name, func(b *testing.B) {
			req := new(dns.Msg).SetQuestion(name, dns.TypeA)
			b.ReportAllocs()
			for b.Loop() {
				if s.respond(context.Background(), req, false) == nil {
					b.Fatal("no answer")
				}
			}
		})
	}
}

// BenchmarkQueryOverUDP is a client's lookup of a cluster name over
// loopback UDP, one query at a time on one socket.
func BenchmarkQueryOverUDP(b *testing.B) {
	records := clusterRecords()
	_, addr := startServer(b, Config{Log: discardLog()}, &records)
	co, err := dns.Dial("udp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer co.Close()
	req := new(dns.Msg).SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
	b.ReportAllocs()
	for b.Loop() {
		if err := co.WriteMsg(req); err != nil {
			b.Fatal(err)
		}
		r, err := co.ReadMsg()
		if err != nil || len(r.Answer) != 1 {
			b.Fatalf("%v %v", r, err)
		}
	}
}

// BenchmarkRespondCachedForward is a lookup of an outside name served
// from the cache.
func BenchmarkRespondCachedForward(b *testing.B) {
	up := startUpstream(b, answerA("192.0.2.1", 3600))
	s, _ := startServer(b, Config{Upstreams: []netip.AddrPort{up.addr}, Log: discardLog()}, &Records{})
	req := new(dns.Msg).SetQuestion("example.org.", dns.TypeA)
	s.respond(context.Background(), req, false)
	b.ReportAllocs()
	for b.Loop() {
		if r := s.respond(context.Background(), req, false); len(r.Answer) != 1 {
			b.Fatal(r)
		}
	}
	if n := up.queries.Load(); n != 1 {
		b.Fatalf("upstream asked %d times", n)
	}
}

// BenchmarkUpdate builds the view of 1,000 Services (a quarter headless,
// with 4 instances each) and 3,000 instances: the agent's cost on every
// change.
func BenchmarkUpdate(b *testing.B) {
	s, err := New(Config{Listen: []netip.AddrPort{loopback}, Upstreams: []netip.AddrPort{}, Log: discardLog()})
	if err != nil {
		b.Fatal(err)
	}
	var r Records
	for i := range 3000 {
		r.Instances = append(r.Instances, Instance{Namespace: "ns", Name: fmt.Sprintf("i-%d", i),
			Addrs: []netip.Addr{netip.AddrFrom16([16]byte{0xfd, 14: byte(i >> 8), 15: byte(i)})}})
	}
	for i := range 1000 {
		svc := Service{Namespace: "ns", Name: fmt.Sprintf("s-%d", i), Ports: []Port{{Name: "http", Port: 80, Protocol: lb.TCP}}}
		if i%4 == 0 {
			svc.Headless = true
			for j := range 4 {
				in := r.Instances[(i+j)%3000]
				svc.Backends = append(svc.Backends, Backend{Instance: in.Name, Addrs: in.Addrs})
			}
		} else {
			svc.VirtualIPs = []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})}
		}
		r.Services = append(r.Services, svc)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Update(r); err != nil {
			b.Fatal(err)
		}
	}
}
