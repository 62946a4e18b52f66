package networking

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/networking/lb"
)

// Objects of the service data path in the node's table. Every name starts
// with svcPrefix, which is how Close and a restarted agent find them all
// and how they stay apart from the node's own chains (nft.go).
const (
	svcPrefix        = "svc-"
	chainSvcPre      = "svc-prerouting"  // nat prerouting: containers' and outside clients' new connections
	chainSvcOut      = "svc-output"      // nat output: the node's own processes' new connections
	chainSvcPost     = "svc-postrouting" // masquerade node-port traffic to other nodes' backends
	mapSvcFrontends  = "svc-frontends"   // + 4/6: every frontend -> goto its chain (local clients)
	mapSvcNodePorts  = "svc-nodeports"   // + 4/6: node-port frontends -> goto their chain (outside clients)
	setSvcMasquerade = "svc-masquerade"  // + 4/6: node-port backends on other nodes
	svcAffinitySufx  = "-affinity"       // a backend chain's name + this: the clients it has (ClientIP affinity)
)

// affinityClients bounds a backend's affinity set. A client that finds
// it full is still sent to the backend, only not remembered.
const affinityClients = 65536

// Registers, in the kernel's 32-bit numbering (NFT_REG32_00 = 8 is the
// start of the 16-byte register 1). A concatenation takes one 32-bit word
// per field of 1 to 4 bytes, so a lookup key of l4proto . address . port
// is built at regKey, and a backend (address . port) picked from a map
// lands at regBackend, past the longest key (an IPv6 address at regKey+1
// to regKey+4, a port at regKey+5).
const (
	regKey     = 8
	regBackend = 14
)

// ServiceNAT is the nftables service data path of a node: the fallback
// where eBPF connect-time balancing cannot run, and, beside it, the
// translation of node-port packets that arrive from outside the node.
// See Node.ServiceNAT.
type ServiceNAT struct {
	n           *Node
	connectTime bool

	mu sync.Mutex
	// synced says the kernel holds exactly last. It is false before the
	// first Sync (objects a previous agent left are unknown) and after a
	// failed one; the next Sync then replaces every object at once.
	synced bool
	last   map[lb.Frontend]lb.Entry
}

var _ lb.DataPath = (*ServiceNAT)(nil)

// ServiceNAT returns the node's nftables service data path; it installs
// nothing until Sync. Its chains, maps and sets live in the node's table
// beside the node's own chains; Setup, Attach and Detach leave them alone.
//
// With connectTime false it balances everything (Mode "nftables"): a new
// connection from the node's containers (prerouting on the bridge) or the
// node's own processes (nat output) to any frontend, and one from outside
// to a node port, is DNATed to a random ready backend; a frontend without
// one refuses it (TCP reset, ICMP port unreachable). With connectTime
// true, eBPF rewrites the node's own clients at connect time, and only
// node-port packets that do not come from the node's bridge are
// translated here (Mode "nftables-nodeports").
//
// In both modes a node-port connection from outside to a backend on
// another node is masqueraded to the node's address, so that the reply
// comes back through this node and its conntrack entry, as kube-proxy
// does; to a backend on this node it keeps the client's address.
func (n *Node) ServiceNAT(connectTime bool) *ServiceNAT {
	return &ServiceNAT{n: n, connectTime: connectTime}
}

// Mode names the data path as the node reports it.
func (s *ServiceNAT) Mode() string {
	if s.connectTime {
		return "nftables-nodeports"
	}
	return "nftables"
}

// Sync makes the kernel serve exactly t, in one nftables transaction.
// Only frontends that changed are touched: a new one gets its chain, a
// gone one loses it, and a changed one has its chain flushed and refilled.
// That is safe for established connections: NAT chains see only a
// connection's first packet, conntrack translates the rest, so a
// connection keeps its backend even when the backend leaves the table
// (UDP flows to a backend that left are the exception: forgetFlows).
//
// The first Sync removes whatever service objects the table holds (a
// previous agent's) and installs the whole table, in the same
// transaction; so does a Sync that finds the objects gone (someone
// deleted the table) or whose changes the kernel refuses (someone changed
// them).
func (s *ServiceNAT) Sync(t lb.Table) error {
	want, err := s.normalize(t)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	conn, err := s.n.nftConn()
	if err != nil {
		return err
	}
	have := s.last
	if s.synced {
		if _, err := conn.ListChain(nexusTable(), chainSvcPre); err != nil {
			s.synced = false
		}
	}
	wasSynced := s.synced
	if err = s.apply(want); err != nil && wasSynced {
		err = s.apply(want) // the failure cleared synced: this one installs everything
	}
	if err != nil {
		return err
	}
	if !wasSynced {
		have = nil
	}
	return s.forgetFlows(staleFlows{udp: staleUDPFlows(have, want), untranslated: newFrontends(have, want)})
}

// apply changes the kernel from s.last to want (or, when not synced, from
// whatever it holds) in one transaction.
func (s *ServiceNAT) apply(want map[lb.Frontend]lb.Entry) error {
	conn, err := s.n.nftConn()
	if err != nil {
		return err
	}
	have := s.last
	if !s.synced {
		if err := s.queueRemoveAll(conn); err != nil {
			return err
		}
		conn.AddTable(nexusTable())
		if err := s.queueBase(conn); err != nil {
			return err
		}
		have = nil
	}
	if err := s.queueChanges(conn, have, want); err != nil {
		return err
	}
	if err := conn.Flush(); err != nil {
		s.last, s.synced = nil, false
		return fmt.Errorf("program services in nftables table inet %s: %w", TableName, err)
	}
	s.last, s.synced = want, true
	return nil
}

// flowKey is a frontend and a backend of a UDP flow the data path
// translated.
type flowKey struct{ frontend, backend netip.AddrPort }

// staleUDPFlows returns the UDP frontend-backend pairs of have that want
// no longer has.
func staleUDPFlows(have, want map[lb.Frontend]lb.Entry) staleUDP {
	stale := staleUDP{}
	for fe, e := range have {
		if fe.Proto != lb.UDP {
			continue
		}
		for _, b := range e.Backends {
			if !slices.Contains(want[fe].Backends, b) {
				stale[flowKey{fe.Addr, b}] = true
			}
		}
	}
	return stale
}

// staleUDP holds the UDP frontend-backend pairs whose flows are stale.
type staleUDP map[flowKey]bool

// newFrontends returns the frontends of want that have lacks.
func newFrontends(have, want map[lb.Frontend]lb.Entry) map[lb.Frontend]bool {
	out := map[lb.Frontend]bool{}
	for fe := range want {
		if _, ok := have[fe]; !ok {
			out[fe] = true
		}
	}
	return out
}

// staleFlows matches the conntrack entries Sync deletes:
//   - UDP flows to a frontend that were translated to a backend that left
//     it (udp). A UDP client that keeps its socket (a resolver, a QUIC
//     connection) would otherwise keep reaching the old backend, each
//     datagram renewing the entry, for as long as it sends; deleted, its
//     next datagram is a new flow and gets a ready backend. TCP
//     connections are left alone: they live on, as Sync promises.
//   - flows to a new frontend that nothing translated (untranslated): a
//     client tried the virtual IP before its rules existed (an agent
//     restarting, a Service being created). A later connection that
//     happens to reuse such an entry's addresses and ports would be taken
//     for part of it, skip the DNAT and go to the virtual IP itself ("no
//     route to host"), for as long as the entry lives (two minutes for an
//     unanswered SYN).
type staleFlows struct {
	udp          staleUDP
	untranslated map[lb.Frontend]bool
}

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (m staleFlows) MatchConntrackFlow(f *netlink.ConntrackFlow) bool {
	dst, ok := netip.AddrFromSlice(f.Forward.DstIP)
	src, ok2 := netip.AddrFromSlice(f.Reverse.SrcIP)
	if !ok || !ok2 {
		return false
	}
	fe := netip.AddrPortFrom(dst.Unmap(), f.Forward.DstPort)
	be := netip.AddrPortFrom(src.Unmap(), f.Reverse.SrcPort)
	if m.untranslated[lb.Frontend{Addr: fe, Proto: lb.Protocol(f.Forward.Protocol)}] && be == fe {
		return true
	}
	return f.Forward.Protocol == unix.IPPROTO_UDP && m.udp[flowKey{fe, be}]
}

// forgetFlows deletes the conntrack entries stale matches.
func (s *ServiceNAT) forgetFlows(stale staleFlows) error {
	if len(stale.udp) == 0 && len(stale.untranslated) == 0 {
		return nil
	}
	var errs []error
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		if _, err := s.n.nl.ConntrackDeleteFilters(netlink.ConntrackTable, fam, stale); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("services are programmed, but stale flows (UDP to backends that left, or to new frontends from before their rules) may stay until they go idle: delete their conntrack entries: %w", err)
	}
	return nil
}

// Close removes every chain, map and set of the service data path, and
// nothing else of the table. Connections already translated go on
// (conntrack keeps them); new ones to a frontend are no longer balanced.
func (s *ServiceNAT) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	conn, err := s.n.nftConn()
	if err != nil {
		return err
	}
	if err := s.queueRemoveAll(conn); err != nil {
		return err
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("remove services from nftables table inet %s: %w", TableName, err)
	}
	s.last, s.synced = nil, false
	return nil
}

// normalize validates t and returns the entries this data path serves,
// by frontend, with IPv4-mapped addresses unmapped and backends sorted.
// With connectTime only node ports are kept: eBPF serves the rest.
func (s *ServiceNAT) normalize(t lb.Table) (map[lb.Frontend]lb.Entry, error) {
	t = t.Sorted()
	for i := range t {
		e := &t[i]
		e.Frontend.Addr = netip.AddrPortFrom(e.Frontend.Addr.Addr().Unmap(), e.Frontend.Addr.Port())
		for j, b := range e.Backends {
			e.Backends[j] = netip.AddrPortFrom(b.Addr().Unmap(), b.Port())
		}
	}
	// After unmapping, so that 10.0.0.1 and ::ffff:10.0.0.1 count as one frontend.
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("service table: %w", err)
	}
	out := make(map[lb.Frontend]lb.Entry, len(t))
	for _, e := range t {
		if s.connectTime && !e.NodePort {
			continue
		}
		out[e.Frontend] = e
	}
	return out, nil
}

// family is what differs between IPv4 and IPv6 in the rules.
type family bool

const (
	ipv4 family = true
	ipv6 family = false
)

func familyOf(a netip.Addr) family { return family(a.Is4()) }

func (f family) suffix() string {
	if f == ipv4 {
		return "4"
	}
	return "6"
}

func (f family) addrLen() uint32 {
	if f == ipv4 {
		return 4
	}
	return 16
}

func (f family) addrType() nftables.SetDatatype {
	if f == ipv4 {
		return nftables.TypeIPAddr
	}
	return nftables.TypeIP6Addr
}

// tupleType is the key of the dispatch maps and the masquerade set.
func (f family) tupleType() nftables.SetDatatype {
	return nftables.MustConcatSetType(nftables.TypeInetProto, f.addrType(), nftables.TypeInetService)
}

// backendType is an address and a port: a backend.
func (f family) backendType() nftables.SetDatatype {
	return nftables.MustConcatSetType(f.addrType(), nftables.TypeInetService)
}

func (f family) matchFamily() []expr.Any {
	p := byte(unix.NFPROTO_IPV6)
	if f == ipv4 {
		p = unix.NFPROTO_IPV4
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

// loadAddr loads the packet's source (or destination) address into reg.
func (f family) loadAddr(dst bool, reg uint32) *expr.Payload {
	off := uint32(12) // IPv4 source
	if f == ipv6 {
		off = 8
	}
	if dst {
		off += f.addrLen()
	}
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: f.addrLen()}
}

// lookupTuple looks the packet's protocol, destination address and
// destination port up in set (a verdict map when verdict).
func (f family) lookupTuple(set string, verdict bool) []expr.Any {
	return append(f.matchFamily(),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: regKey},
		f.loadAddr(true, regKey+1),
		&expr.Payload{DestRegister: regKey + 1 + f.addrLen()/4, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: regKey, SetName: set + f.suffix(), IsDestRegSet: verdict},
	)
}

// tupleKey is the key of a frontend (or backend) in the maps lookupTuple
// reads: protocol, address and port, each field padded to 4 bytes.
func tupleKey(proto lb.Protocol, a netip.AddrPort) []byte {
	k := append([]byte{byte(proto), 0, 0, 0}, a.Addr().AsSlice()...)
	return append(binary.BigEndian.AppendUint16(k, a.Port()), 0, 0)
}

// backendValue is a backend as the backend maps hold it.
func backendValue(a netip.AddrPort) []byte {
	return append(binary.BigEndian.AppendUint16(a.Addr().AsSlice(), a.Port()), 0, 0)
}

// frontendChain names the chain of a frontend, readably for nft list:
// "svc-tcp-10.96.0.10-80", "svc-udp-fd00.5e..a-53".
func frontendChain(fe lb.Frontend) string {
	return fmt.Sprintf("%s%s-%s-%d", svcPrefix, strings.ToLower(fe.Proto.String()),
		strings.ReplaceAll(fe.Addr.Addr().String(), ":", "."), fe.Addr.Port())
}

// backendChain names the chain that sends a frontend's connection to one
// of its backends when the frontend has ClientIP affinity:
// "svc-tcp-10.96.0.10-80-to-10.71.3.2-8080".
func backendChain(fe lb.Frontend, b netip.AddrPort) string {
	return fmt.Sprintf("%s-to-%s-%d", frontendChain(fe), strings.ReplaceAll(b.Addr().String(), ":", "."), b.Port())
}

// affinitySet is the set of client addresses a backend chain has had in
// the last Affinity (each connection renews its client's entry).
func affinitySet(fe lb.Frontend, b netip.AddrPort) *nftables.Set {
	return &nftables.Set{
		Table: nexusTable(), Name: backendChain(fe, b) + svcAffinitySufx,
		HasTimeout: true, Dynamic: true, Size: affinityClients,
		KeyType: familyOf(fe.Addr.Addr()).addrType(),
	}
}

func dispatchMap(name string, f family) *nftables.Set {
	return &nftables.Set{Table: nexusTable(), Name: name + f.suffix(), IsMap: true, Concatenation: true,
		KeyType: f.tupleType(), DataType: nftables.TypeVerdict}
}

func masqueradeSet(f family) *nftables.Set {
	return &nftables.Set{Table: nexusTable(), Name: setSvcMasquerade + f.suffix(), Concatenation: true, KeyType: f.tupleType()}
}

var families = []family{ipv4, ipv6}

// queueBase adds the base chains and the maps they dispatch through.
func (s *ServiceNAT) queueBase(conn *nftables.Conn) error {
	dispatch := []string{mapSvcNodePorts}
	if !s.connectTime {
		dispatch = append(dispatch, mapSvcFrontends)
	}
	for _, f := range families {
		for _, m := range dispatch {
			if err := conn.AddSet(dispatchMap(m, f), nil); err != nil {
				return fmt.Errorf("service map %s%s: %w", m, f.suffix(), err)
			}
		}
		if err := conn.AddSet(masqueradeSet(f), nil); err != nil {
			return fmt.Errorf("service set %s%s: %w", setSvcMasquerade, f.suffix(), err)
		}
	}
	bridge := s.n.cfg.Bridge
	var pre, out, post []ruleSpec
	for _, f := range families {
		if !s.connectTime {
			pre = append(pre, ruleSpec{"the node's containers to a service", slices.Concat(
				matchIface(expr.MetaKeyIIFNAME, bridge), f.lookupTuple(mapSvcFrontends, true))})
			out = append(out, ruleSpec{"the node's processes to a service", f.lookupTuple(mapSvcFrontends, true)})
		}
		pre = append(pre, ruleSpec{"outside clients to a node port", slices.Concat(
			notIface(expr.MetaKeyIIFNAME, bridge), f.lookupTuple(mapSvcNodePorts, true))})
		post = append(post, ruleSpec{"a node port's connection to another node's backend: replies must come back here",
			slices.Concat(matchDNAT(), notIface(expr.MetaKeyIIFNAME, bridge), f.lookupTuple(setSvcMasquerade, false), []expr.Any{&expr.Masq{}})})
	}
	t := nexusTable()
	add := func(c chainSpec, rules []ruleSpec) {
		ch := conn.AddChain(&nftables.Chain{Name: c.name, Table: t, Type: c.typ, Hooknum: c.hook, Priority: c.priority})
		for _, r := range rules {
			addRule(conn, ch, r)
		}
	}
	add(chainSpec{chainSvcPre, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest}, pre)
	if !s.connectTime {
		add(chainSpec{chainSvcOut, nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest}, out)
	}
	add(chainSpec{chainSvcPost, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource}, post)
	return nil
}

func notIface(key expr.MetaKey, name string) []expr.Any {
	m := matchIface(key, name)
	m[1].(*expr.Cmp).Op = expr.CmpOpNeq
	return m
}

// queueChanges adds what turns the kernel's have into want.
func (s *ServiceNAT) queueChanges(conn *nftables.Conn, have, want map[lb.Frontend]lb.Entry) error {
	for _, fe := range sortedFrontends(have) {
		if _, ok := want[fe]; !ok {
			if err := s.queueRemove(conn, have[fe]); err != nil {
				return err
			}
		}
	}
	for _, fe := range sortedFrontends(want) {
		e := want[fe]
		old, ok := have[fe]
		var err error
		switch {
		case !ok:
			err = s.queueAdd(conn, e)
		case !sameEntry(old, e):
			err = s.queueReplace(conn, old, e)
		}
		if err != nil {
			return err
		}
	}
	// The masquerade set, as a set difference.
	before, after := s.masqueraded(have), s.masqueraded(want)
	for _, f := range families {
		var gone, added []nftables.SetElement
		for k, kf := range before {
			if _, ok := after[k]; !ok && kf == f {
				gone = append(gone, nftables.SetElement{Key: []byte(k)})
			}
		}
		for k, kf := range after {
			if _, ok := before[k]; !ok && kf == f {
				added = append(added, nftables.SetElement{Key: []byte(k)})
			}
		}
		if len(gone) > 0 {
			if err := conn.SetDeleteElements(masqueradeSet(f), gone); err != nil {
				return fmt.Errorf("service set %s%s: %w", setSvcMasquerade, f.suffix(), err)
			}
		}
		if len(added) > 0 {
			if err := conn.SetAddElements(masqueradeSet(f), added); err != nil {
				return fmt.Errorf("service set %s%s: %w", setSvcMasquerade, f.suffix(), err)
			}
		}
	}
	return nil
}

func sortedFrontends(m map[lb.Frontend]lb.Entry) []lb.Frontend {
	return slices.SortedFunc(maps.Keys(m), func(a, b lb.Frontend) int {
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c
		}
		return int(a.Proto) - int(b.Proto)
	})
}

func sameEntry(a, b lb.Entry) bool {
	return a.Service == b.Service && a.Affinity == b.Affinity && a.NodePort == b.NodePort && slices.Equal(a.Backends, b.Backends)
}

// masqueraded returns the keys (tupleKey) of node-port backends on other
// nodes: connections translated to them are masqueraded.
func (s *ServiceNAT) masqueraded(entries map[lb.Frontend]lb.Entry) map[string]family {
	out := map[string]family{}
	for _, e := range entries {
		if !e.NodePort {
			continue
		}
		for _, b := range e.Backends {
			if !s.n.cfg.Prefixes.IPv4.Contains(b.Addr()) && !s.n.cfg.Prefixes.IPv6.Contains(b.Addr()) {
				out[string(tupleKey(e.Frontend.Proto, b))] = familyOf(b.Addr())
			}
		}
	}
	return out
}

// dispatchElements returns the maps that send e's frontend to its chain
// and the element that does.
func (s *ServiceNAT) dispatchElements(e lb.Entry) ([]*nftables.Set, []nftables.SetElement) {
	f := familyOf(e.Frontend.Addr.Addr())
	var sets []*nftables.Set
	if !s.connectTime {
		sets = append(sets, dispatchMap(mapSvcFrontends, f))
	}
	if e.NodePort {
		sets = append(sets, dispatchMap(mapSvcNodePorts, f))
	}
	return sets, []nftables.SetElement{{
		Key:         tupleKey(e.Frontend.Proto, e.Frontend.Addr),
		VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: frontendChain(e.Frontend)},
	}}
}

func (s *ServiceNAT) queueAdd(conn *nftables.Conn, e lb.Entry) error {
	if err := s.queueBackendChains(conn, lb.Entry{}, e); err != nil {
		return err
	}
	c := conn.AddChain(&nftables.Chain{Name: frontendChain(e.Frontend), Table: nexusTable()})
	if err := s.queueFrontendRules(conn, c, e); err != nil {
		return err
	}
	sets, elems := s.dispatchElements(e)
	for _, set := range sets {
		if err := conn.SetAddElements(set, elems); err != nil {
			return fmt.Errorf("service %s: frontend %s: map %s: %w", e.Service, e.Frontend, set.Name, err)
		}
	}
	return nil
}

// queueRemove takes e's frontend out of the maps before deleting its
// chain, and deletes that before its backend chains: the kernel refuses
// to delete a chain that is still a goto target.
func (s *ServiceNAT) queueRemove(conn *nftables.Conn, e lb.Entry) error {
	sets, elems := s.dispatchElements(e)
	for _, set := range sets {
		if err := conn.SetDeleteElements(set, elems); err != nil {
			return fmt.Errorf("service %s: frontend %s: map %s: %w", e.Service, e.Frontend, set.Name, err)
		}
	}
	conn.DelChain(&nftables.Chain{Name: frontendChain(e.Frontend), Table: nexusTable()})
	s.queueRemoveBackendChains(conn, e, lb.Entry{})
	return nil
}

// queueReplace refills the chain of a frontend whose backends, affinity
// or node port changed. With affinity, a backend that stays keeps its
// chain and its clients; a backend that left takes its clients' entries
// with it, so they are balanced anew.
func (s *ServiceNAT) queueReplace(conn *nftables.Conn, old, e lb.Entry) error {
	if err := s.queueBackendChains(conn, old, e); err != nil {
		return err
	}
	c := &nftables.Chain{Name: frontendChain(e.Frontend), Table: nexusTable()}
	conn.FlushChain(c)
	if err := s.queueFrontendRules(conn, c, e); err != nil {
		return err
	}
	s.queueRemoveBackendChains(conn, old, e)
	if old.NodePort != e.NodePort {
		_, elems := s.dispatchElements(e)
		np := dispatchMap(mapSvcNodePorts, familyOf(e.Frontend.Addr.Addr()))
		var err error
		if e.NodePort {
			err = conn.SetAddElements(np, elems)
		} else {
			err = conn.SetDeleteElements(np, elems)
		}
		if err != nil {
			return fmt.Errorf("service %s: frontend %s: map %s: %w", e.Service, e.Frontend, np.Name, err)
		}
	}
	return nil
}

// affinityBackends are the backends that have a chain and an affinity set
// of their own: e's, when it has affinity.
func affinityBackends(e lb.Entry) []netip.AddrPort {
	if e.Affinity == 0 {
		return nil
	}
	return e.Backends
}

// queueBackendChains makes the backend chains and affinity sets that e
// needs and old did not have, and refills those both have (the timeout
// may have changed): each renews its client's entry, then DNATs.
func (s *ServiceNAT) queueBackendChains(conn *nftables.Conn, old, e lb.Entry) error {
	had := affinityBackends(old)
	f := familyOf(e.Frontend.Addr.Addr())
	for _, b := range affinityBackends(e) {
		set := affinitySet(e.Frontend, b)
		c := &nftables.Chain{Name: backendChain(e.Frontend, b), Table: nexusTable()}
		if slices.Contains(had, b) {
			conn.FlushChain(c)
		} else {
			if err := conn.AddSet(set, nil); err != nil {
				return fmt.Errorf("service %s: frontend %s: affinity set of %s: %w", e.Service, e.Frontend, b, err)
			}
			conn.AddChain(c)
		}
		name := fmt.Sprintf("service %s %s to %s", e.Service, e.Frontend, b)
		// Apart from the DNAT: a full set fails the update, and the
		// connection must get its backend all the same.
		addRule(conn, c, ruleSpec{name + ": remember the client", []expr.Any{
			f.loadAddr(false, regKey),
			&expr.Dynset{SrcRegKey: regKey, SetName: set.Name, Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: e.Affinity},
		}})
		addRule(conn, c, ruleSpec{name, dnat(b.Addr(), int(b.Port()))})
	}
	return nil
}

// queueRemoveBackendChains deletes the backend chains and affinity sets
// that old had and e does not need; the frontend's chain that jumped to
// them must be flushed or deleted first.
func (s *ServiceNAT) queueRemoveBackendChains(conn *nftables.Conn, old, e lb.Entry) {
	keep := affinityBackends(e)
	for _, b := range affinityBackends(old) {
		if !slices.Contains(keep, b) {
			conn.DelChain(&nftables.Chain{Name: backendChain(old.Frontend, b), Table: nexusTable()})
			conn.DelSet(affinitySet(old.Frontend, b))
		}
	}
}

// dnatToPicked DNATs to the backend a map lookup left at regBackend.
func dnatToPicked(f family) *expr.NAT {
	nfproto := unix.NFPROTO_IPV6
	if f == ipv4 {
		nfproto = unix.NFPROTO_IPV4
	}
	return &expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(nfproto),
		RegAddrMin: regBackend, RegProtoMin: regBackend + f.addrLen()/4, Specified: true}
}

// queueFrontendRules fills c, the chain of e's frontend, which a packet
// reaches when it opens a connection to the frontend:
//
//   - no backend: refuse (TCP reset, ICMP port unreachable), so that the
//     client sees ECONNREFUSED at once;
//   - otherwise DNAT to a backend picked at random (numgen random mod N,
//     even over the backends);
//   - with affinity, first the backend whose affinity set has the
//     client's address, and otherwise one picked at random, through the
//     backend's chain, which adds the client to its set.
//
// numgen leaves a host-order number, so the anonymous maps' keys are in
// host order too; nft list, told they are big-endian, shows key 1 as
// 16777216 on little-endian machines.
func (s *ServiceNAT) queueFrontendRules(conn *nftables.Conn, c *nftables.Chain, e lb.Entry) error {
	f := familyOf(e.Frontend.Addr.Addr())
	name := fmt.Sprintf("service %s %s", e.Service, e.Frontend)
	if len(e.Backends) == 0 {
		refuse := &expr.Reject{Type: unix.NFT_REJECT_TCP_RST}
		if e.Frontend.Proto == lb.UDP {
			refuse = &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}
		}
		addRule(conn, c, ruleSpec{name + ": no ready backend, refuse", []expr.Any{refuse}})
		return nil
	}
	pick := &expr.Numgen{Register: regKey, Modulus: uint32(len(e.Backends)), Type: unix.NFT_NG_RANDOM}
	if e.Affinity == 0 {
		m := &nftables.Set{Table: c.Table, Anonymous: true, Constant: true, IsMap: true,
			KeyType: nftables.TypeInteger, DataType: f.backendType()}
		var elems []nftables.SetElement
		for i, b := range e.Backends {
			elems = append(elems, nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(uint32(i)), Val: backendValue(b)})
		}
		if err := conn.AddSet(m, elems); err != nil {
			return fmt.Errorf("%s: backend map: %w", name, err)
		}
		addRule(conn, c, ruleSpec{name + ": a random backend", []expr.Any{
			pick,
			&expr.Lookup{SourceRegister: regKey, DestRegister: regBackend, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
			dnatToPicked(f),
		}})
		return nil
	}
	for _, b := range e.Backends {
		addRule(conn, c, ruleSpec{name + ": the client's backend", []expr.Any{
			f.loadAddr(false, regKey),
			&expr.Lookup{SourceRegister: regKey, SetName: affinitySet(e.Frontend, b).Name},
			&expr.Verdict{Kind: expr.VerdictGoto, Chain: backendChain(e.Frontend, b)},
		}})
	}
	m := &nftables.Set{Table: c.Table, Anonymous: true, Constant: true, IsMap: true,
		KeyType: nftables.TypeInteger, DataType: nftables.TypeVerdict}
	var elems []nftables.SetElement
	for i, b := range e.Backends {
		elems = append(elems, nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(uint32(i)),
			VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: backendChain(e.Frontend, b)}})
	}
	if err := conn.AddSet(m, elems); err != nil {
		return fmt.Errorf("%s: backend map: %w", name, err)
	}
	addRule(conn, c, ruleSpec{name + ": a new client, a random backend", []expr.Any{
		pick,
		&expr.Lookup{SourceRegister: regKey, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
	}})
	return nil
}

// queueRemoveAll deletes every service object in the table, as the kernel
// has them, in an order the kernel accepts: base chains (which look up
// the maps), the maps (whose elements are goto targets), the frontends'
// and backends' chains (whose rules use the affinity sets), then those
// sets.
func (s *ServiceNAT) queueRemoveAll(conn *nftables.Conn) error {
	t := nexusTable()
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("list nftables chains: %w", err)
	}
	sets, err := conn.GetSets(t)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("list the sets of nftables table inet %s: %w", TableName, err)
	}
	var base, frontends []*nftables.Chain
	for _, c := range chains {
		if c.Table.Name != TableName || !strings.HasPrefix(c.Name, svcPrefix) {
			continue
		}
		if c.Hooknum != nil {
			base = append(base, c)
		} else {
			frontends = append(frontends, c)
		}
	}
	var dispatch, affinity []*nftables.Set
	for _, set := range sets {
		switch {
		case !strings.HasPrefix(set.Name, svcPrefix):
		case strings.HasSuffix(set.Name, svcAffinitySufx):
			affinity = append(affinity, set)
		default:
			dispatch = append(dispatch, set)
		}
	}
	for _, c := range base {
		conn.DelChain(&nftables.Chain{Name: c.Name, Table: t})
	}
	for _, set := range dispatch {
		conn.DelSet(&nftables.Set{Name: set.Name, Table: t})
	}
	// A frontend's name is a prefix of its backend chains': sorted, each
	// frontend chain goes before the chains it jumps to.
	slices.SortFunc(frontends, func(a, b *nftables.Chain) int { return strings.Compare(a.Name, b.Name) })
	for _, c := range frontends {
		conn.DelChain(&nftables.Chain{Name: c.Name, Table: t})
	}
	for _, set := range affinity {
		conn.DelSet(&nftables.Set{Name: set.Name, Table: t})
	}
	return nil
}
