package networking

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseClusterPrefixes(t *testing.T) {
	for _, tc := range []struct {
		v6, v4 string
		bits   int
		want   string // error substring; "" for success
	}{
		{"", "", 0, ""},
		{"fd12:3456:789a::/48", "10.71.0.0/16", 24, ""},
		{"fd12:3456:789a::/56", "172.20.0.0/14", 22, ""},
		{"fd12:3456:789a::1/48", "", 0, "use fd12:3456:789a::/48"},
		{"fd12::/64", "", 0, "/16 to /63"},
		{"fe80::/48", "", 0, "link-local"},
		{"10.0.0.0/8", "", 0, "not an IPv6 prefix"},
		{"", "fd00::/48", 0, "not an IPv4 prefix"},
		{"", "127.0.0.0/16", 0, "loopback"},
		{"", "10.71.0.0/24", 0, "/8 to /23"},
		{"", "10.71.0.0/16", 30, "node IPv4 prefix length /30"},
		{"", "10.71.0.1/16", 0, "use 10.71.0.0/16"},
		{"", "10.71.0.0", 0, "want an address and a length"},
		{"nonsense", "", 0, "IPv6 cluster prefix \"nonsense\""},
	} {
		_, err := ParseClusterPrefixes(tc.v6, tc.v4, tc.bits)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrBadPrefix)) {
			t.Errorf("ParseClusterPrefixes(%q, %q, %d): %v, want %q", tc.v6, tc.v4, tc.bits, err, tc.want)
		}
	}
}

func TestNodePrefixesAndAddresses(t *testing.T) {
	c := ClusterPrefixes{IPv6: netip.MustParsePrefix("fd12:3456:789a::/48"), IPv4: netip.MustParsePrefix("10.71.0.0/16"), NodeIPv4Bits: 24}
	if got := c.subnets(); got != 256 {
		t.Fatalf("subnets %d, want 256 (the IPv4 /16 of /24s bounds it)", got)
	}
	n := c.node(5)
	if n.IPv6.String() != "fd12:3456:789a:5::/64" || n.IPv4.String() != "10.71.5.0/24" {
		t.Fatalf("node 5: %+v", n)
	}
	if err := n.validate(); err != nil {
		t.Fatal(err)
	}
	v6, v4 := n.addrs(7)
	if v6.String() != "fd12:3456:789a:5::7" || v4.String() != "10.71.5.7" {
		t.Fatalf("host 7: %s %s", v6, v4)
	}
	g6, g4 := n.Gateways()
	if g6.String() != "fd12:3456:789a:5::1" || g4.String() != "10.71.5.1" {
		t.Fatalf("gateways %s %s", g6, g4)
	}
	for a, want := range map[string]bool{"10.71.5.2": true, "10.71.5.254": true, "10.71.5.1": false, "10.71.5.255": false, "10.71.6.2": false} {
		if _, ok := n.hostIndex4(netip.MustParseAddr(a)); ok != want {
			t.Errorf("hostIndex4(%s) ok=%v, want %v", a, ok, want)
		}
	}
	last := c.node(c.subnets() - 1)
	if last.IPv4.String() != "10.71.255.0/24" || last.IPv6.String() != "fd12:3456:789a:ff::/64" {
		t.Fatalf("last node: %+v", last)
	}
	if c.nodeSubnets() != 255 {
		t.Fatalf("node subnets %d, want 255: the last pair is the services'", c.nodeSubnets())
	}
	if v6, v4 := c.ServiceRanges(); v6.String() != "fd12:3456:789a:ff::/112" || v4.String() != "10.71.255.0/24" {
		t.Fatalf("service ranges %s %s, want the last pair's fd12:3456:789a:ff::/112 and 10.71.255.0/24", v6, v4)
	}
}

func TestGenerateULA(t *testing.T) {
	p, err := GenerateULA(bytes.NewReader([]byte{1, 2, 3, 4, 5}))
	if err != nil || p.String() != "fd01:203:405::/48" {
		t.Fatalf("GenerateULA: %s, %v; want fd01:203:405::/48 (fd, then the 40-bit global ID)", p, err)
	}
	a, _ := GenerateULA(nil)
	b, _ := GenerateULA(nil)
	if a == b || a.Bits() != 48 || a.Addr().As16()[0] != 0xfd {
		t.Fatalf("two generated prefixes %s and %s: want distinct fd00::/8 /48s", a, b)
	}
}

func FuzzParseClusterPrefixes(f *testing.F) {
	f.Add("fd12:3456:789a::/48", "10.71.0.0/16", 24)
	f.Add("", "", 0)
	f.Add("fd00::/63", "10.0.0.0/8", 28)
	f.Add("::ffff:10.0.0.0/104", "1.2.3.4/32", 16)
	f.Fuzz(func(t *testing.T, v6, v4 string, bits int) {
		c, err := ParseClusterPrefixes(v6, v4, bits)
		if err != nil {
			return
		}
		full, err := c.withDefaults()
		if err != nil {
			// Only a node prefix length that the default IPv4 prefix cannot
			// hold, which the cluster's own prefix may; IPAM.Cluster says so.
			if c.IPv4.IsValid() || !errors.Is(err, ErrBadPrefix) {
				t.Fatalf("accepted %q %q %d but completed it is invalid: %v", v6, v4, bits, err)
			}
			return
		}
		if err := full.complete(); err != nil {
			t.Fatalf("accepted %q %q %d: %v", v6, v4, bits, err)
		}
		// Every node prefix of an accepted cluster is valid and inside it.
		for _, i := range []int{0, 1, full.subnets() - 1} {
			n := full.node(i)
			if err := n.validate(); err != nil {
				t.Fatalf("%+v node %d: %v", full, i, err)
			}
			if !full.IPv6.Contains(n.IPv6.Addr()) || !full.IPv4.Contains(n.IPv4.Addr()) {
				t.Fatalf("%+v node %d: %+v is outside the cluster", full, i, n)
			}
		}
		if full.node(0) == full.node(full.subnets()-1) && full.subnets() > 1 {
			t.Fatalf("%+v: first and last node prefixes are the same", full)
		}
	})
}
