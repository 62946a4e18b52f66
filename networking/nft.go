package networking

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// TableName is the nftables table (family inet) that holds all of the
// node's rules. Nexus never touches another table.
const TableName = "nexus"

// Chains of the table. The base chains only dispatch; the rules that
// change with containers are all in chainPublish.
const (
	chainGuard       = "guard"       // filter prerouting: no 127.0.0.0/8 from containers
	chainPrerouting  = "prerouting"  // nat prerouting: published ports, traffic from outside
	chainOutput      = "output"      // nat output: published ports, traffic from the node itself
	chainPublish     = "publish"     // DNAT per published port and family
	chainPostrouting = "postrouting" // masquerade: outbound, hairpin, localhost
)

var loopback4 = netip.MustParsePrefix("127.0.0.0/8")

// applyRules replaces the rules of the node's chains with those built
// from st, in one netlink transaction: the kernel switches from the old
// rules to the new ones at once, with no moment without NAT, and
// connections already translated keep their conntrack entries. The table
// and the chains are created when missing; the service chains
// (services.go) share the table and are left alone.
func (n *Node) applyRules(st *state) error {
	conn, err := n.nftConn()
	if err != nil {
		return err
	}
	t := nexusTable()
	conn.AddTable(t)
	for _, r := range n.ruleset(st) {
		// Adding an existing chain changes nothing, so the flush succeeds
		// whether or not it existed.
		c := conn.AddChain(&nftables.Chain{
			Name: r.chain.name, Table: t, Type: r.chain.typ,
			Hooknum: r.chain.hook, Priority: r.chain.priority,
		})
		conn.FlushChain(c)
		for _, rule := range r.rules {
			addRule(conn, c, rule)
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("replace the node's rules in nftables table inet %s: %w", TableName, err)
	}
	return nil
}

// nftConn is a netlink connection to nftables in the node's namespace.
func (n *Node) nftConn() (*nftables.Conn, error) {
	conn, err := nftables.New(nftables.WithNetNSFd(int(n.ns)))
	if err != nil {
		return nil, fmt.Errorf("nftables in the node's network namespace: %w", err)
	}
	return conn, nil
}

func nexusTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
}

type chainSpec struct {
	name     string
	typ      nftables.ChainType
	hook     *nftables.ChainHook
	priority *nftables.ChainPriority
}

type ruleSpec struct {
	comment string
	exprs   []expr.Any
}

// addRule appends r to chain c, its comment as the rule's (nft list
// shows it).
func addRule(conn *nftables.Conn, c *nftables.Chain, r ruleSpec) {
	conn.AddRule(&nftables.Rule{Table: c.Table, Chain: c, Exprs: r.exprs, UserData: userdata.AppendString(nil, userdata.TypeComment, r.comment)})
}

type chainRules struct {
	chain chainSpec
	rules []ruleSpec
}

// published is one DNAT target.
type published struct {
	id   string
	port Port
	v6   netip.Addr
	v4   netip.Addr
}

// ruleset is the node's table for st, chain by chain, in a fixed order
// (containers by host port) so the same state gives the same table.
func (n *Node) ruleset(st *state) []chainRules {
	bridge := n.cfg.Bridge
	node, cluster := n.cfg.Prefixes, n.cfg.Cluster
	local := []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		&expr.Verdict{Kind: expr.VerdictJump, Chain: chainPublish},
	}
	var pubs []published
	for id, c := range st.Containers {
		for _, p := range c.Ports {
			pubs = append(pubs, published{id, p, c.IPv6, c.IPv4})
		}
	}
	sort.Slice(pubs, func(i, j int) bool {
		if pubs[i].port.HostPort != pubs[j].port.HostPort {
			return pubs[i].port.HostPort < pubs[j].port.HostPort
		}
		return pubs[i].port.Protocol < pubs[j].port.Protocol
	})
	var publish []ruleSpec
	for _, p := range pubs {
		for _, to := range []netip.Addr{p.v4, p.v6} {
			publish = append(publish, ruleSpec{
				comment: fmt.Sprintf("container %s %s", p.id, p.port),
				exprs: slices.Concat(
					matchFamily(to),
					matchL4(p.port.Protocol, p.port.HostPort),
					dnat(to, p.port.Port),
				),
			})
		}
	}
	masq := []expr.Any{&expr.Masq{}}
	// The chain that others jump to comes first: a jump to a chain the
	// transaction has not created yet is refused.
	return []chainRules{
		{chainSpec{name: chainPublish}, publish},
		{chainSpec{chainGuard, nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityRaw}, []ruleSpec{{
			comment: "route_localnet is on for the bridge: containers may not reach the node's 127.0.0.0/8",
			exprs:   slices.Concat(matchIface(expr.MetaKeyIIFNAME, bridge), matchAddr(true, loopback4, expr.CmpOpEq), []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}),
		}}},
		{chainSpec{chainPrerouting, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest}, []ruleSpec{
			{comment: "published ports on the node's addresses", exprs: local},
		}},
		{chainSpec{chainOutput, nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest}, []ruleSpec{
			{comment: "published ports, from the node itself", exprs: local},
		}},
		{chainSpec{chainPostrouting, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource}, []ruleSpec{
			{comment: "containers to outside the cluster (IPv4)", exprs: slices.Concat(
				matchAddr(false, node.IPv4, expr.CmpOpEq), matchAddr(true, cluster.IPv4, expr.CmpOpNeq), masq)},
			{comment: "containers to outside the cluster (IPv6: a unique local prefix is not routed outside)", exprs: slices.Concat(
				matchAddr(false, node.IPv6, expr.CmpOpEq), matchAddr(true, cluster.IPv6, expr.CmpOpNeq), masq)},
			{comment: "a container to a port published on the node (hairpin, IPv4)", exprs: slices.Concat(
				matchIface(expr.MetaKeyOIFNAME, bridge), matchDNAT(), matchAddr(false, node.IPv4, expr.CmpOpEq), masq)},
			{comment: "a container to a port published on the node (hairpin, IPv6)", exprs: slices.Concat(
				matchIface(expr.MetaKeyOIFNAME, bridge), matchDNAT(), matchAddr(false, node.IPv6, expr.CmpOpEq), masq)},
			{comment: "the node's 127.0.0.1 to a published port", exprs: slices.Concat(
				matchIface(expr.MetaKeyOIFNAME, bridge), matchDNAT(), matchAddr(false, loopback4, expr.CmpOpEq), masq)},
		}},
	}
}

func nfproto(a netip.Addr) byte {
	if a.Is4() {
		return unix.NFPROTO_IPV4
	}
	return unix.NFPROTO_IPV6
}

func matchFamily(a netip.Addr) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto(a)}},
	}
}

// matchAddr matches the source (or, with dst, the destination) address of
// packets of p's family against p with op (equal: inside p).
func matchAddr(dst bool, p netip.Prefix, op expr.CmpOp) []expr.Any {
	var off, size uint32 = 12, 4 // IPv4 source
	if p.Addr().Is6() {
		off, size = 8, 16
	}
	if dst {
		off += size
	}
	mask := net4or6Mask(p)
	return append(matchFamily(p.Addr()),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: mask, Xor: make([]byte, size)},
		&expr.Cmp{Op: op, Register: 1, Data: p.Masked().Addr().AsSlice()},
	)
}

func net4or6Mask(p netip.Prefix) []byte {
	m := make([]byte, p.Addr().BitLen()/8)
	for i := range p.Bits() {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

func matchIface(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}
}

func matchL4(proto Protocol, port int) []expr.Any {
	p := byte(unix.IPPROTO_TCP)
	if proto == UDP {
		p = unix.IPPROTO_UDP
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, uint16(port))},
	}
}

// matchDNAT matches connections whose destination a DNAT rule changed.
func matchDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// ipsDstNAT is the kernel's IPS_DST_NAT conntrack status bit.
const ipsDstNAT = 1 << 5

func dnat(to netip.Addr, port int) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: to.AsSlice()},
		&expr.Immediate{Register: 2, Data: binary.BigEndian.AppendUint16(nil, uint16(port))},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(nfproto(to)), RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
}
