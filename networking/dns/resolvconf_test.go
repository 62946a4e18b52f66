package dns

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestResolvConf(t *testing.T) {
	got := string(ResolvConf("shop", []netip.Addr{netip.MustParseAddr("fd00:0:0:1::1"), netip.MustParseAddr("::ffff:10.0.1.1")}, "corp.example."))
	want := `# Written by the nexus agent: the cluster's DNS server, which forwards other names to the node's resolvers.
nameserver fd00:0:0:1::1
nameserver 10.0.1.1
search shop.svc.corp.example svc.corp.example corp.example
options ndots:5
`
	if got != want {
		t.Errorf("ResolvConf:\n%s\nwant:\n%s", got, want)
	}
}

// TestSearchPath resolves short names the way a container does: the
// search list and ndots of ResolvConf (applied by miekg's NameList, which
// follows resolv.conf(5)), each candidate asked with Go's own resolver
// over the wire, moving on when a name does not exist.
func TestSearchPath(t *testing.T) {
	up := startUpstream(t, answerA("192.0.2.20", 60))
	records := clusterRecords()
	_, addr := startServer(t, Config{Upstreams: []netip.AddrPort{up.addr}}, &records)
	conf, err := dns.ClientConfigFromReader(bytes.NewReader(ResolvConf("default", []netip.Addr{netip.MustParseAddr("127.0.0.1")}, "")))
	if err != nil {
		t.Fatal(err)
	}
	if conf.Ndots != 5 || !slices.Equal(conf.Search, []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"}) {
		t.Fatalf("resolv.conf read back: ndots %d, search %q", conf.Ndots, conf.Search)
	}
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	lookup := func(name string) (string, []string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, candidate := range conf.NameList(name) {
			ips, err := resolver.LookupHost(ctx, candidate)
			var dnsErr *net.DNSError
			if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", candidate, err)
			}
			slices.Sort(ips)
			return candidate, ips
		}
		return "", nil
	}
	tests := []struct {
		name, found string
		ips         []string
	}{
		{"web", "web.default.svc.cluster.local.", []string{"10.96.0.10", "fd00:96::10"}},
		{"web.default", "web.default.svc.cluster.local.", []string{"10.96.0.10", "fd00:96::10"}},
		{"db.data", "db.data.svc.cluster.local.", []string{"10.1.0.2", "10.1.0.3", "fd00:1::2", "fd00:1::3"}},
		{"db.data.svc", "db.data.svc.cluster.local.", []string{"10.1.0.2", "10.1.0.3", "fd00:1::2", "fd00:1::3"}},
		{"web-1.default.instance", "web-1.default.instance.cluster.local.", []string{"10.1.0.7", "fd00:1::7"}},
		{"example.org", "example.org.", []string{"192.0.2.20"}},
	}
	for _, tc := range tests {
		found, ips := lookup(tc.name)
		if found != tc.found || !slices.Equal(ips, tc.ips) {
			t.Errorf("%s: found %q %q, want %q %q", tc.name, found, ips, tc.found, tc.ips)
		}
	}
	// Only example.org. reached the upstream, A and AAAA: the search
	// list's names under the cluster domain were answered by the server.
	if n := up.queries.Load(); n != 2 {
		t.Errorf("upstream asked %d times, want 2 (example.org. A and AAAA)", n)
	}
}

func TestParseUpstreams(t *testing.T) {
	got, err := parseUpstreams(strings.NewReader("# comment\nsearch example.com\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver ::ffff:192.0.2.1\noptions edns0\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{
		netip.MustParseAddrPort("127.0.0.53:53"),
		netip.MustParseAddrPort("[fe80::1%eth0]:53"),
		netip.MustParseAddrPort("192.0.2.1:53"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("upstreams %v, want %v", got, want)
	}
	if _, err := parseUpstreams(strings.NewReader("nameserver resolver.example\n")); err == nil || !strings.Contains(err.Error(), "resolver.example") {
		t.Errorf("a nameserver by name: %v, want an error naming it", err)
	}
}
