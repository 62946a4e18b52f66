package networking

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// DefaultIPv4Cluster is the cluster's IPv4 prefix when none is configured.
// It avoids the ranges other container tools and Kubernetes distributions
// default to (podman 10.88/16, docker 172.17/16, k3s 10.42/16 and 10.43/16,
// Kubernetes services 10.96/12) and the test harness's 10.77.0.0/24, so a
// machine that runs one of them next to Nexus needs no configuration.
var DefaultIPv4Cluster = netip.MustParsePrefix("10.71.0.0/16")

// DefaultNodeIPv4Bits is the size of each node's IPv4 prefix: a /24 holds
// 253 containers (.1 is the gateway, .0 and .255 are not used).
const DefaultNodeIPv4Bits = 24

// nodeIPv6Bits is the size of each node's IPv6 prefix. A /64 is the unit
// IPv6 routes and SLAAC assume; it is never configurable.
const nodeIPv6Bits = 64

const (
	minClusterIPv6Bits = 16 // fewer bits would be most of the address space
	minClusterIPv4Bits = 8
	minNodeIPv4Bits    = 16
	maxNodeIPv4Bits    = 28 // 13 containers; a /29 or smaller is not worth a node
)

// ClusterPrefixes are the address ranges all nodes' prefixes come from. In
// a configuration (ParseClusterPrefixes) a zero field means "the cluster's,
// or the default"; the cluster's own (IPAM.Cluster) have every field set.
type ClusterPrefixes struct {
	// IPv6 is the cluster's IPv6 prefix, normally a unique local /48
	// (RFC 4193) generated on first use; each node gets a /64 of it.
	IPv6 netip.Prefix `json:"ipv6"`
	// IPv4 is the cluster's IPv4 prefix (DefaultIPv4Cluster by default);
	// each node gets a /NodeIPv4Bits of it.
	IPv4 netip.Prefix `json:"ipv4"`
	// NodeIPv4Bits is the prefix length of each node's IPv4 prefix
	// (DefaultNodeIPv4Bits by default).
	NodeIPv4Bits int `json:"nodeIPv4Bits"`
}

// NodePrefixes are one node's container address ranges.
type NodePrefixes struct {
	IPv6 netip.Prefix `json:"ipv6"`
	IPv4 netip.Prefix `json:"ipv4"`
}

// ErrBadPrefix marks a prefix that cannot be used as configured.
var ErrBadPrefix = errors.New("unusable address prefix")

// ParseClusterPrefixes parses the cluster prefixes an operator configures.
// Each may be left empty (0 for nodeIPv4Bits) to keep what the cluster
// already has, or, on the cluster's first node, to get the default: a
// generated unique local /48, DefaultIPv4Cluster and DefaultNodeIPv4Bits.
// Unset fields are zero in the result.
func ParseClusterPrefixes(ipv6, ipv4 string, nodeIPv4Bits int) (ClusterPrefixes, error) {
	c := ClusterPrefixes{NodeIPv4Bits: nodeIPv4Bits}
	var err error
	if ipv6 != "" {
		if c.IPv6, err = parsePrefix("IPv6 cluster prefix", ipv6); err != nil {
			return ClusterPrefixes{}, err
		}
	}
	if ipv4 != "" {
		if c.IPv4, err = parsePrefix("IPv4 cluster prefix", ipv4); err != nil {
			return ClusterPrefixes{}, err
		}
	}
	if err := c.validate(); err != nil {
		return ClusterPrefixes{}, err
	}
	return c, nil
}

func parsePrefix(what, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: %s %q: want an address and a length such as fd12:3456:789a::/48 or 10.71.0.0/16", ErrBadPrefix, what, s)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("%w: %s %q has bits set after the first %d: use %s", ErrBadPrefix, what, s, p.Bits(), p.Masked())
	}
	return p, nil
}

// validate checks the fields of c that are set.
func (c ClusterPrefixes) validate() error {
	if c.IPv6.IsValid() {
		p := c.IPv6
		switch {
		case !p.Addr().Is6() || p.Addr().Is4In6():
			return fmt.Errorf("%w: IPv6 cluster prefix %s is not an IPv6 prefix", ErrBadPrefix, p)
		case p.Addr().IsLoopback(), p.Addr().IsMulticast(), p.Addr().IsLinkLocalUnicast(), p.Addr().IsUnspecified():
			return fmt.Errorf("%w: IPv6 cluster prefix %s is a loopback, multicast, link-local or unspecified range: use a unique local /48 such as fd12:3456:789a::/48", ErrBadPrefix, p)
		case p.Bits() < minClusterIPv6Bits || p.Bits() >= nodeIPv6Bits:
			return fmt.Errorf("%w: IPv6 cluster prefix %s: the length must be /%d to /%d so that it holds several /64 node prefixes (a /48 is usual)", ErrBadPrefix, p, minClusterIPv6Bits, nodeIPv6Bits-1)
		}
	}
	nodeBits := c.nodeIPv4Bits()
	if nodeBits < minNodeIPv4Bits || nodeBits > maxNodeIPv4Bits {
		return fmt.Errorf("%w: node IPv4 prefix length /%d: use /%d to /%d (/%d holds 253 containers)", ErrBadPrefix, nodeBits, minNodeIPv4Bits, maxNodeIPv4Bits, DefaultNodeIPv4Bits)
	}
	p := c.IPv4
	switch {
	case !p.IsValid():
		return nil
	case !p.Addr().Is4():
		return fmt.Errorf("%w: IPv4 cluster prefix %s is not an IPv4 prefix", ErrBadPrefix, p)
	case p.Addr().IsLoopback(), p.Addr().IsMulticast(), p.Addr().IsLinkLocalUnicast(), p.Overlaps(netip.MustParsePrefix("0.0.0.0/8")),
		p.Overlaps(netip.MustParsePrefix("240.0.0.0/4")):
		return fmt.Errorf("%w: IPv4 cluster prefix %s overlaps a loopback, multicast, link-local or reserved range: use a private range such as %s", ErrBadPrefix, p, DefaultIPv4Cluster)
	case p.Bits() < minClusterIPv4Bits || p.Bits() >= nodeBits:
		return fmt.Errorf("%w: IPv4 cluster prefix %s: the length must be /%d to /%d so that it holds several /%d node prefixes", ErrBadPrefix, p, minClusterIPv4Bits, nodeBits-1, nodeBits)
	}
	return nil
}

func (c ClusterPrefixes) nodeIPv4Bits() int {
	if c.NodeIPv4Bits == 0 {
		return DefaultNodeIPv4Bits
	}
	return c.NodeIPv4Bits
}

// complete reports whether every field is set and valid, as in the store.
func (c ClusterPrefixes) complete() error {
	if !c.IPv6.IsValid() || !c.IPv4.IsValid() || c.NodeIPv4Bits == 0 {
		return fmt.Errorf("%w: cluster prefixes %+v lack a field", ErrBadPrefix, c)
	}
	return c.validate()
}

// withDefaults fills the fields of c that are unset: a generated unique
// local /48, DefaultIPv4Cluster, DefaultNodeIPv4Bits.
func (c ClusterPrefixes) withDefaults() (ClusterPrefixes, error) {
	if !c.IPv6.IsValid() {
		p, err := GenerateULA(nil)
		if err != nil {
			return ClusterPrefixes{}, err
		}
		c.IPv6 = p
	}
	if !c.IPv4.IsValid() {
		c.IPv4 = DefaultIPv4Cluster
	}
	c.NodeIPv4Bits = c.nodeIPv4Bits()
	return c, c.validate()
}

// conflicts describes how the fields set in want differ from have, the
// cluster's prefixes as stored; "" when they agree.
func (want ClusterPrefixes) conflicts(have ClusterPrefixes) string {
	var d []string
	if want.IPv6.IsValid() && want.IPv6 != have.IPv6 {
		d = append(d, fmt.Sprintf("IPv6 %s (configured %s)", have.IPv6, want.IPv6))
	}
	if want.IPv4.IsValid() && want.IPv4 != have.IPv4 {
		d = append(d, fmt.Sprintf("IPv4 %s (configured %s)", have.IPv4, want.IPv4))
	}
	if want.NodeIPv4Bits != 0 && want.NodeIPv4Bits != have.NodeIPv4Bits {
		d = append(d, fmt.Sprintf("node IPv4 prefix length /%d (configured /%d)", have.NodeIPv4Bits, want.NodeIPv4Bits))
	}
	return strings.Join(d, ", ")
}

// subnets is the number of node prefix pairs the cluster holds: node i gets
// the i-th /64 and the i-th IPv4 prefix, so the smaller family bounds it.
func (c ClusterPrefixes) subnets() int {
	v4 := c.nodeIPv4Bits() - c.IPv4.Bits()
	v6 := nodeIPv6Bits - c.IPv6.Bits()
	return 1 << min(v4, v6, 30)
}

// nodeSubnets is the number of node prefix pairs nodes may get: all but
// the last, which holds the service ranges (ServiceRanges).
func (c ClusterPrefixes) nodeSubnets() int { return c.subnets() - 1 }

// serviceIPv6Bits is the size of the IPv6 service range: 65,536
// addresses, far more than the IPv4 range, and few enough that a full
// range is an error the user can act on rather than a scan without end.
const serviceIPv6Bits = 112

// ServiceRanges are where Services' virtual IPs come from: the first /112
// of the IPv6 /64 and the whole IPv4 prefix of the cluster's last node
// prefix pair, which node IPAM never hands out, so no container address
// and no node's route ever overlaps a virtual IP. With the defaults (a /48
// and 10.71.0.0/16 of /24s) that is <ula>:ff::/112 and 10.71.255.0/24. v4
// is invalid when the cluster has no IPv4 prefix.
func (c ClusterPrefixes) ServiceRanges() (v6, v4 netip.Prefix) {
	if !c.IPv6.IsValid() || c.subnets() < 2 {
		return netip.Prefix{}, netip.Prefix{}
	}
	last := c.node(c.subnets() - 1)
	v6 = netip.PrefixFrom(last.IPv6.Addr(), serviceIPv6Bits)
	if c.IPv4.IsValid() {
		v4 = last.IPv4
	}
	return v6, v4
}

// node returns the i-th node's prefixes; 0 <= i < c.subnets().
func (c ClusterPrefixes) node(i int) NodePrefixes {
	b6 := c.IPv6.Addr().As16()
	hi := binary.BigEndian.Uint64(b6[:8]) | uint64(i)
	binary.BigEndian.PutUint64(b6[:8], hi)
	b4 := c.IPv4.Addr().As4()
	v4 := binary.BigEndian.Uint32(b4[:]) | uint32(i)<<(32-c.nodeIPv4Bits())
	binary.BigEndian.PutUint32(b4[:], v4)
	return NodePrefixes{
		IPv6: netip.PrefixFrom(netip.AddrFrom16(b6), nodeIPv6Bits),
		IPv4: netip.PrefixFrom(netip.AddrFrom4(b4), c.nodeIPv4Bits()),
	}
}

// GenerateULA returns a unique local IPv6 /48 (RFC 4193 section 3.2): fd00::/8
// followed by a 40-bit random global ID read from r (crypto/rand when nil).
func GenerateULA(r io.Reader) (netip.Prefix, error) {
	if r == nil {
		r = rand.Reader
	}
	var b [16]byte
	b[0] = 0xfd
	if _, err := io.ReadFull(r, b[1:6]); err != nil {
		return netip.Prefix{}, fmt.Errorf("generate a unique local IPv6 prefix: %w", err)
	}
	return netip.PrefixFrom(netip.AddrFrom16(b), 48), nil
}

// validate checks that p is a usable pair of node prefixes.
func (p NodePrefixes) validate() error {
	if !p.IPv6.IsValid() || !p.IPv6.Addr().Is6() || p.IPv6.Addr().Is4In6() || p.IPv6.Bits() != nodeIPv6Bits || p.IPv6 != p.IPv6.Masked() {
		return fmt.Errorf("%w: node IPv6 prefix %s: want a /64 such as fd12:3456:789a:1::/64", ErrBadPrefix, p.IPv6)
	}
	if !p.IPv4.IsValid() || !p.IPv4.Addr().Is4() || p.IPv4.Bits() < minNodeIPv4Bits || p.IPv4.Bits() > maxNodeIPv4Bits || p.IPv4 != p.IPv4.Masked() {
		return fmt.Errorf("%w: node IPv4 prefix %s: want a /%d to /%d such as 10.71.1.0/24", ErrBadPrefix, p.IPv4, minNodeIPv4Bits, maxNodeIPv4Bits)
	}
	return nil
}

// hosts is the number of host indexes in the node's prefixes; index 0 is
// the network, 1 the gateway, and the last is IPv4's broadcast address, so
// containers get 2 .. hosts()-2.
func (p NodePrefixes) hosts() int { return 1 << (32 - p.IPv4.Bits()) }

// addrs returns the addresses with host index i in both prefixes.
func (p NodePrefixes) addrs(i int) (v6, v4 netip.Addr) {
	b6 := p.IPv6.Addr().As16()
	binary.BigEndian.PutUint64(b6[8:], uint64(i))
	b4 := p.IPv4.Addr().As4()
	binary.BigEndian.PutUint32(b4[:], binary.BigEndian.Uint32(b4[:])|uint32(i))
	return netip.AddrFrom16(b6), netip.AddrFrom4(b4)
}

// hostIndex4 returns the host index of a in p's IPv4 prefix, and whether a
// is a container address of it (not the network, gateway or broadcast).
func (p NodePrefixes) hostIndex4(a netip.Addr) (int, bool) {
	if !p.IPv4.Contains(a) {
		return 0, false
	}
	b, base := a.As4(), p.IPv4.Addr().As4()
	i := int(binary.BigEndian.Uint32(b[:]) - binary.BigEndian.Uint32(base[:]))
	return i, i >= 2 && i <= p.hosts()-2
}

// Gateways are the bridge's addresses in the node's prefixes (the first
// of each; IPv4 invalid when the node has no IPv4 prefix): the
// containers' default routes, and where the node's own services for its
// containers (the cluster DNS) listen.
func (p NodePrefixes) Gateways() (v6, v4 netip.Addr) { return p.addrs(1) }
