package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/miekg/dns"

	"nexus.dev/nexus/networking/lb"
)

// rawQuery sends b over UDP and returns the reply, or nil when none comes
// within 300 ms.
func rawQuery(t *testing.T, addr string, b []byte) *dns.Msg {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf[:n]); err != nil {
		t.Fatalf("reply does not unpack: %v", err)
	}
	return m
}

func pack(t *testing.T, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMalformedAndUnsupportedQueries(t *testing.T) {
	records := clusterRecords()
	_, addr := startServer(t, Config{}, &records)
	query := func(edit func(m *dns.Msg)) []byte {
		m := new(dns.Msg).SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
		m.Id = 4242
		edit(m)
		return pack(t, m)
	}
	withOPT := func(version uint8) func(m *dns.Msg) {
		return func(m *dns.Msg) {
			m.SetEdns0(1232, false)
			m.IsEdns0().SetVersion(version)
		}
	}
	tests := []struct {
		name  string
		query []byte
		rcode int // -1: no reply at all
	}{
		{"shorter than a header", []byte{1, 2, 3, 4, 5}, -1},
		{"a response", query(func(m *dns.Msg) { m.Response = true }), -1},
		{"no question", query(func(m *dns.Msg) { m.Question = nil }), dns.RcodeFormatError},
		{"two questions", query(func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }), dns.RcodeFormatError},
		{"cut short", query(func(*dns.Msg) {})[:20], dns.RcodeFormatError},
		{"answer section in a query", query(func(m *dns.Msg) {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "x.", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: net.IPv4(1, 2, 3, 4)}, &dns.A{Hdr: dns.RR_Header{Name: "y.", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: net.IPv4(1, 2, 3, 4)}}
		}), dns.RcodeFormatError},
		{"two OPT records", query(func(m *dns.Msg) {
			m.SetEdns0(1232, false)
			m.Extra = append(m.Extra, &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}})
		}), dns.RcodeFormatError},
		{"EDNS version 1", query(withOPT(1)), dns.RcodeBadVers},
		{"EDNS version 0", query(withOPT(0)), dns.RcodeSuccess},
		{"UPDATE", query(func(m *dns.Msg) { m.Opcode = dns.OpcodeUpdate }), dns.RcodeNotImplemented},
		{"NOTIFY", query(func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }), dns.RcodeNotImplemented},
		{"class CHAOS", query(func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }), dns.RcodeNotImplemented},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := rawQuery(t, addr, tc.query)
			switch {
			case tc.rcode == -1 && r != nil:
				t.Fatalf("got a reply (%s), want none", dns.RcodeToString[r.Rcode])
			case tc.rcode == -1:
				return
			case r == nil:
				t.Fatalf("no reply, want %s", dns.RcodeToString[tc.rcode])
			case r.Rcode != tc.rcode:
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			case r.Id != 4242 && len(tc.query) > 12:
				t.Errorf("reply id %d, want the query's 4242", r.Id)
			}
		})
	}
}

// TestLargeAnswersAreTruncatedToTheClientsBuffer checks that a headless
// Service with many instances gets TC over UDP at the client's size (512
// bytes without EDNS, at most 1232 with) and everything over TCP.
func TestLargeAnswersAreTruncatedToTheClientsBuffer(t *testing.T) {
	var backends []Backend
	for i := range 200 {
		backends = append(backends, Backend{Instance: fmt.Sprintf("big-%d", i), Addrs: []netip.Addr{netip.AddrFrom16([16]byte{0xfd, 15: byte(i)})}})
	}
	_, addr := startServer(t, Config{}, &Records{Services: []Service{{Namespace: "default", Name: "big", Headless: true, Backends: backends}}})
	name := "big.default.svc.cluster.local."
	for _, tc := range []struct {
		name    string
		network string
		edns    uint16
		max     int
	}{
		{"udp", "udp", 0, dns.MinMsgSize},
		{"udp edns 4096", "udp", 4096, upstreamUDPSize},
		{"udp edns 800", "udp", 800, 800},
		{"tcp", "tcp", 0, dns.MaxMsgSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := new(dns.Msg).SetQuestion(name, dns.TypeAAAA)
			if tc.edns != 0 {
				m.SetEdns0(tc.edns, false)
			}
			c := &dns.Client{Net: tc.network, UDPSize: max(tc.edns, dns.MinMsgSize), Timeout: 5 * time.Second}
			r, _, err := c.Exchange(m, addr)
			if err != nil {
				t.Fatal(err)
			}
			r.Compress = true // as sent
			size := r.Len()
			if size > tc.max {
				t.Errorf("answer of %d bytes, more than %d", size, tc.max)
			}
			if tc.network == "tcp" {
				if len(r.Answer) != 200 || r.Truncated {
					t.Errorf("over TCP: %d records, truncated %v; want 200", len(r.Answer), r.Truncated)
				}
			} else if !r.Truncated || len(r.Answer) == 0 {
				t.Errorf("%d records, truncated %v: want some and TC", len(r.Answer), r.Truncated)
			}
		})
	}
}

// TestAdditionalRecordsAreDroppedBeforeTruncating checks that an SRV
// answer that fits without its additional section comes whole over UDP,
// without TC: the client need not retry over TCP.
func TestAdditionalRecordsAreDroppedBeforeTruncating(t *testing.T) {
	var backends []Backend
	for i := range 8 {
		backends = append(backends, Backend{Instance: fmt.Sprintf("pg-%d", i), Addrs: []netip.Addr{
			netip.AddrFrom16([16]byte{0xfd, 15: byte(i)}), netip.AddrFrom4([4]byte{10, 1, 0, byte(i)})}})
	}
	_, addr := startServer(t, Config{}, &Records{Services: []Service{{Namespace: "default", Name: "pg", Headless: true, Backends: backends,
		Ports: []Port{{Name: "pg", Port: 5432, Protocol: lb.TCP}}}}})
	name := "_pg._tcp.pg.default.svc.cluster.local."
	full := ask(t, addr, "tcp", name, dns.TypeSRV)
	full.Compress = true
	if len(full.Answer) != 8 || len(full.Extra) != 16 || full.Len() <= dns.MinMsgSize {
		t.Fatalf("over TCP: %d SRV, %d additional, %d bytes: want 8, 16 and more than 512 bytes", len(full.Answer), len(full.Extra), full.Len())
	}
	r := ask(t, addr, "udp", name, dns.TypeSRV)
	if len(r.Answer) != 8 || r.Truncated || len(r.Extra) != 0 {
		t.Errorf("over UDP: %d SRV, truncated %v, %d additional; want 8 SRV, no TC, no additional", len(r.Answer), r.Truncated, len(r.Extra))
	}
}

// FuzzRespond feeds arbitrary messages to the request path: it must not
// panic, must answer every query it answers with a message that packs,
// carries the query's id and fits the transport.
func FuzzRespond(f *testing.F) {
	seeds := []*dns.Msg{
		new(dns.Msg).SetQuestion("web.default.svc.cluster.local.", dns.TypeA),
		new(dns.Msg).SetQuestion("_pg._tcp.db.data.svc.cluster.local.", dns.TypeSRV),
		new(dns.Msg).SetQuestion("10.0.96.10.in-addr.arpa.", dns.TypePTR),
		new(dns.Msg).SetQuestion("example.org.", dns.TypeMX),
		new(dns.Msg).SetQuestion("cluster.local.", dns.TypeANY),
		new(dns.Msg).SetQuestion("db.data.svc.cluster.local.", dns.TypeAAAA).SetEdns0(4096, true),
	}
	for _, m := range seeds {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		f.Add(b, true)
	}
	records := clusterRecords()
	s, err := New(Config{Listen: []netip.AddrPort{loopback}, Upstreams: []netip.AddrPort{}, Log: discardLog()})
	if err != nil {
		f.Fatal(err)
	}
	if err := s.Update(records); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte, tcp bool) {
		req := new(dns.Msg)
		if req.Unpack(b) != nil {
			return // the dns.Server answers FORMERR itself
		}
		resp := s.respond(context.Background(), req, tcp)
		if resp == nil {
			if !req.Response {
				t.Fatal("no answer to a query")
			}
			return
		}
		out, err := resp.Pack()
		if err != nil {
			t.Fatalf("answer does not pack: %v\n%v", err, resp)
		}
		if resp.Id != req.Id {
			t.Fatalf("answer id %d, query id %d", resp.Id, req.Id)
		}
		if !tcp && len(out) > upstreamUDPSize {
			t.Fatalf("UDP answer of %d bytes", len(out))
		}
	})
}
