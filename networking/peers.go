package networking

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Mode is how a node carries its containers' traffic to other nodes'
// containers.
type Mode string

const (
	// ModeAuto routes directly to each peer that shares a network with
	// this node and tunnels to the others with VXLAN.
	ModeAuto Mode = "auto"
	// ModeRouted only routes directly: a peer that shares no network with
	// this node is not reached.
	ModeRouted Mode = "routed"
	// ModeVXLAN tunnels to every peer, for networks that drop packets to
	// addresses they do not know (clouds' anti-spoofing, most switches'
	// port security).
	ModeVXLAN Mode = "vxlan"
)

// ParseMode parses --network-mode; "" is ModeAuto.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case "":
		return ModeAuto, nil
	case ModeAuto, ModeRouted, ModeVXLAN:
		return m, nil
	}
	return "", fmt.Errorf("network mode %q: want auto (routes where nodes share a network, VXLAN elsewhere), routed or vxlan", s)
}

// VXLAN parameters. Every node uses the same, so none is configured: the
// VNI only has to differ from other VXLAN users on the same port, and 4789
// is the IANA port that middleboxes know.
const (
	vxlanVNI  = 0x6e78 // "nx"
	vxlanPort = 4789
	// vxlanName6 and vxlanName4 are the tunnel devices over an IPv6 and
	// an IPv4 underlay; each exists only while a peer uses it.
	vxlanName6 = "nexus-vx6"
	vxlanName4 = "nexus-vx4"
	// The encapsulation adds an outer Ethernet (14), IP (20 or 40), UDP
	// (8) and VXLAN (8) header.
	vxlanOverhead4 = 50
	vxlanOverhead6 = 70
)

// routeProtocol marks the routes SetPeers makes (the rtm_protocol field,
// `proto 110` in `ip route`), so that it removes only its own. 110 is not
// one of the numbers the kernel or the routing daemons claim.
const routeProtocol = 110

// Peer is another node whose containers this node routes to.
type Peer struct {
	// Name is the peer's Node name, for messages.
	Name string
	// Addresses are the peer's own addresses (its Node's InternalIP
	// addresses): where direct routes and tunnels go.
	Addresses []netip.Addr
	// Prefixes are the peer's container prefixes.
	Prefixes NodePrefixes
}

// ParsePeer parses another node as its Node object shows it: its name, its
// InternalIP addresses (status.addresses) and spec.containerPrefixes. A
// Node without prefixes yet is ErrNoPrefixes.
func ParsePeer(name string, addresses, containerPrefixes []string) (Peer, error) {
	if name == "" {
		return Peer{}, errors.New("peer without a name")
	}
	if len(containerPrefixes) == 0 {
		return Peer{}, fmt.Errorf("peer %s: %w", name, ErrNoPrefixes)
	}
	p, err := parseNodePrefixes("spec.containerPrefixes", containerPrefixes)
	if err != nil {
		return Peer{}, fmt.Errorf("peer %s: %w", name, err)
	}
	peer := Peer{Name: name, Prefixes: p}
	for i, s := range addresses {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return Peer{}, fmt.Errorf("peer %s: address %d %q is not an IP address", name, i, s)
		}
		peer.Addresses = append(peer.Addresses, a.Unmap())
	}
	return peer, nil
}

// hop is how the node's routing table reaches one address.
type hop struct {
	link   int        // the link the kernel sends to it on
	onLink bool       // no gateway: a network this node is connected to
	src    netip.Addr // this node's source address toward it
}

// path is how the node reaches one peer's containers: routes via the
// peer's addresses on a shared network, or a tunnel to one of its addresses.
type path struct {
	peer Peer
	// Routed: the peer's addresses on shared networks, and their links.
	via6, via4   netip.Addr
	link6, link4 int
	// Tunnelled: the peer's address the tunnel goes to, and this node's
	// way there.
	vxlan    bool
	underlay netip.Addr
	hop      hop
}

func (p path) String() string {
	if p.vxlan {
		return "vxlan to " + p.underlay.String()
	}
	return "routed via " + p.via6.String() + " and " + p.via4.String()
}

// choosePath decides how to reach peer in mode, with lookup answering how
// the node's routing table reaches an address (an error: it does not).
// The peer's addresses are tried in their order; an address inside the
// cluster's prefixes (a container network) is never one.
func choosePath(mode Mode, cluster ClusterPrefixes, peer Peer, lookup func(netip.Addr) (hop, error)) (path, error) {
	pt := path{peer: peer}
	var tunnel6, tunnel4 netip.Addr
	var hop6, hop4 hop
	for _, a := range peer.Addresses {
		if !a.IsGlobalUnicast() || cluster.IPv6.Contains(a) || cluster.IPv4.Contains(a) {
			continue
		}
		h, err := lookup(a)
		if err != nil {
			continue
		}
		if a.Is6() {
			if h.onLink && !pt.via6.IsValid() {
				pt.via6, pt.link6 = a, h.link
			}
			if !tunnel6.IsValid() {
				tunnel6, hop6 = a, h
			}
		} else {
			if h.onLink && !pt.via4.IsValid() {
				pt.via4, pt.link4 = a, h.link
			}
			if !tunnel4.IsValid() {
				tunnel4, hop4 = a, h
			}
		}
	}
	routed := pt.via6.IsValid() && pt.via4.IsValid()
	switch {
	case mode == ModeRouted && !routed:
		return path{}, fmt.Errorf("peer %s: no IPv6 and IPv4 address of it (%s) is on a network this node is connected to, so its containers cannot be routed to directly: run the agents with --network-mode auto or vxlan", peer.Name, addrList(peer.Addresses))
	case mode != ModeVXLAN && routed:
		return pt, nil
	}
	pt = path{peer: peer, vxlan: true}
	switch {
	case tunnel6.IsValid():
		pt.underlay, pt.hop = tunnel6, hop6
	case tunnel4.IsValid():
		pt.underlay, pt.hop = tunnel4, hop4
	default:
		return path{}, fmt.Errorf("peer %s: this node has no route to any of its addresses (%s): check that the node publishes an address the other nodes reach", peer.Name, addrList(peer.Addresses))
	}
	if !pt.hop.src.IsValid() {
		return path{}, fmt.Errorf("peer %s: no source address toward %s for the tunnel", peer.Name, pt.underlay)
	}
	return pt, nil
}

func addrList(as []netip.Addr) string {
	if len(as) == 0 {
		return "none published"
	}
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// checkPeers returns the peers that can be routed to, sorted by name, and
// an error for each that cannot: a peer whose prefixes are not the
// cluster's, or that overlap this node's or another peer's, is left out
// (both peers of an overlap are: which one is right is not known here).
func checkPeers(self NodePrefixes, cluster ClusterPrefixes, peers []Peer) ([]Peer, []error) {
	var errs []error
	var ok []Peer
	for _, p := range peers {
		switch {
		case p.Prefixes.validate() != nil:
			errs = append(errs, fmt.Errorf("peer %s: %w", p.Name, p.Prefixes.validate()))
		case !cluster.IPv6.Contains(p.Prefixes.IPv6.Addr()) || !cluster.IPv4.Contains(p.Prefixes.IPv4.Addr()) || p.Prefixes.IPv4.Bits() != cluster.NodeIPv4Bits:
			errs = append(errs, fmt.Errorf("peer %s: %w: its prefixes %s and %s are not node prefixes of the cluster's %s and %s", p.Name, ErrBadPrefix, p.Prefixes.IPv6, p.Prefixes.IPv4, cluster.IPv6, cluster.IPv4))
		case p.Prefixes.IPv6 == self.IPv6 || p.Prefixes.IPv4 == self.IPv4:
			errs = append(errs, fmt.Errorf("peer %s: %w: it claims this node's prefix %s or %s", p.Name, ErrBadPrefix, self.IPv6, self.IPv4))
		default:
			ok = append(ok, p)
		}
	}
	slices.SortFunc(ok, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
	bad := map[int]bool{}
	for i := range ok {
		for j := i + 1; j < len(ok); j++ {
			a, b := ok[i], ok[j]
			if a.Name == b.Name || a.Prefixes.IPv6 == b.Prefixes.IPv6 || a.Prefixes.IPv4 == b.Prefixes.IPv4 {
				errs = append(errs, fmt.Errorf("peers %s and %s: %w: both have %s or %s; neither is routed to until one is corrected", a.Name, b.Name, ErrBadPrefix, a.Prefixes.IPv6, a.Prefixes.IPv4))
				bad[i], bad[j] = true, true
			}
		}
	}
	out := ok[:0]
	for i, p := range ok {
		if !bad[i] {
			out = append(out, p)
		}
	}
	return out, errs
}

// vxlanMAC is the address of a node's tunnel devices, derived from its
// IPv4 prefix as the bridge's is (bridgeMAC), so that every peer knows it
// without asking.
func vxlanMAC(p NodePrefixes) net.HardwareAddr {
	b := p.IPv4.Addr().As4()
	return net.HardwareAddr{0x02, 0x76, 0x78, b[1], b[2], b[3]}
}

// peerRoute is one route to a peer's container prefix.
type peerRoute struct {
	dst    netip.Prefix
	via    netip.Addr
	link   int    // the uplink, for a direct route
	tunnel string // the tunnel device's name, for a tunnelled route
}

// tunnel is what one tunnel device carries.
type tunnel struct {
	name     string
	local    netip.Addr // this node's underlay address
	overhead int
	mtuLink  int                             // the underlay link, for the MTU
	fdb      map[string]netip.Addr           // peer MAC -> peer underlay address
	neigh    map[netip.Addr]net.HardwareAddr // peer gateway -> peer MAC
}

// plan turns paths into routes and tunnel contents.
func plan(paths []path) ([]peerRoute, map[string]*tunnel) {
	var routes []peerRoute
	tunnels := map[string]*tunnel{}
	for _, p := range paths {
		pp := p.peer.Prefixes
		if !p.vxlan {
			routes = append(routes,
				peerRoute{dst: pp.IPv6, via: p.via6, link: p.link6},
				peerRoute{dst: pp.IPv4, via: p.via4, link: p.link4})
			continue
		}
		name, overhead := vxlanName6, vxlanOverhead6
		if p.underlay.Is4() {
			name, overhead = vxlanName4, vxlanOverhead4
		}
		t := tunnels[name]
		if t == nil {
			t = &tunnel{name: name, local: p.hop.src, overhead: overhead, mtuLink: p.hop.link,
				fdb: map[string]netip.Addr{}, neigh: map[netip.Addr]net.HardwareAddr{}}
			tunnels[name] = t
		}
		mac := vxlanMAC(pp)
		t.fdb[mac.String()] = p.underlay
		// The routes go via the peer's gateway addresses, which the
		// permanent neighbour entries resolve to the peer's tunnel
		// device: no ARP or neighbour discovery crosses the tunnel.
		g6, g4 := pp.Gateways()
		t.neigh[g6], t.neigh[g4] = mac, mac
		routes = append(routes,
			peerRoute{dst: pp.IPv6, via: g6, tunnel: name},
			peerRoute{dst: pp.IPv4, via: g4, tunnel: name})
	}
	return routes, tunnels
}

// SetPeers makes the node's routes to other nodes' containers match
// peers, the cluster's other nodes: in ModeRouted (and ModeAuto for a
// peer with an IPv6 and an IPv4 address on a network this node shares) a
// route to each of the peer's prefixes via the peer's address; otherwise
// through a VXLAN device (one per underlay family, IPv6 first) with a
// forwarding entry per peer and routes via it. Routes, entries and devices
// of peers that are no longer listed are removed, so SetPeers(ctx, nil)
// leaves nothing of them.
//
// It only changes what differs, so calling it again with the same peers
// is cheap, and it repairs what was lost (after a restart, or a route
// someone deleted). A peer that cannot be reached, or whose prefixes are
// wrong, is left out and its error joined into the returned one; the
// others are programmed all the same.
func (n *Node) SetPeers(ctx context.Context, peers []Peer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	ok, errs := checkPeers(n.cfg.Prefixes, n.cfg.Cluster, peers)
	var paths []path
	for _, p := range ok {
		pt, err := choosePath(n.cfg.Mode, n.cfg.Cluster, p, n.lookup)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		paths = append(paths, pt)
		if was, ok := n.paths[p.Name]; !ok || was != pt.String() {
			n.log.Info("networking: peer", "peer", p.Name, "ipv6", p.Prefixes.IPv6.String(), "ipv4", p.Prefixes.IPv4.String(), "path", pt.String())
		}
	}
	routes, tunnels := plan(paths)
	if err := n.applyPeers(routes, tunnels); err != nil {
		errs = append(errs, err)
	}
	was := n.paths
	n.paths = map[string]string{}
	for _, pt := range paths {
		n.paths[pt.peer.Name] = pt.String()
	}
	for name := range was {
		if _, ok := n.paths[name]; !ok {
			n.log.Info("networking: no longer routing to a peer", "peer", name)
		}
	}
	return errors.Join(errs...)
}

// lookup asks the node's routing table how it reaches a.
func (n *Node) lookup(a netip.Addr) (hop, error) {
	rs, err := n.nl.RouteGet(net.IP(a.AsSlice()))
	if err != nil {
		return hop{}, err
	}
	if len(rs) == 0 {
		return hop{}, fmt.Errorf("no route to %s", a)
	}
	r := rs[0]
	if r.Type == unix.RTN_LOCAL {
		return hop{}, fmt.Errorf("%s is this node's own address", a)
	}
	if r.Type != unix.RTN_UNICAST || r.LinkIndex == 0 {
		return hop{}, fmt.Errorf("no unicast route to %s", a)
	}
	l, err := n.nl.LinkByIndex(r.LinkIndex)
	if err != nil {
		return hop{}, fmt.Errorf("find the link toward %s: %w", a, err)
	}
	if name := l.Attrs().Name; name == n.cfg.Bridge || name == vxlanName6 || name == vxlanName4 {
		return hop{}, fmt.Errorf("%s is reached through the container network (%s)", a, name)
	}
	h := hop{link: r.LinkIndex, onLink: r.Gw == nil && r.Via == nil}
	if src, ok := netip.AddrFromSlice(r.Src); ok {
		h.src = src.Unmap()
	}
	return h, nil
}

// applyPeers makes the tunnel devices, their entries and the peer routes
// what routes and tunnels say: tunnels first (their routes need them),
// then the routes, then removal of what is no longer wanted.
func (n *Node) applyPeers(routes []peerRoute, tunnels map[string]*tunnel) error {
	var errs []error
	index := map[string]int{}
	for _, name := range []string{vxlanName6, vxlanName4} {
		t := tunnels[name]
		if t == nil {
			if err := n.deleteLink(name); err != nil {
				errs = append(errs, fmt.Errorf("remove the unused tunnel: %w", err))
			}
			continue
		}
		i, err := n.ensureTunnel(t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		index[name] = i
	}
	want := map[netip.Prefix]*netlink.Route{}
	for _, pr := range routes {
		r := &netlink.Route{Dst: prefixIPNet(pr.dst), Gw: net.IP(pr.via.AsSlice()), LinkIndex: pr.link,
			Protocol: routeProtocol, Scope: netlink.SCOPE_UNIVERSE}
		if pr.tunnel != "" {
			i, ok := index[pr.tunnel]
			if !ok {
				continue // its error is above
			}
			r.LinkIndex, r.Flags = i, int(netlink.FLAG_ONLINK)
		}
		want[pr.dst] = r
	}
	have := map[netip.Prefix]bool{}
	for _, fam := range []int{netlink.FAMILY_V6, netlink.FAMILY_V4} {
		cur, err := retryDump(func() ([]netlink.Route, error) {
			return n.nl.RouteListFiltered(fam, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("list the routes to peers: %w", err))
			continue
		}
		for _, r := range cur {
			if r.Dst == nil {
				continue
			}
			dst := ipNetPrefix(r.Dst)
			if w, ok := want[dst]; ok && sameRoute(r, w) {
				have[dst] = true
				continue
			}
			if _, ok := want[dst]; ok {
				continue // replaced below
			}
			if err := n.nl.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("remove the route to %s of a peer that left: %w", dst, err))
			}
		}
	}
	for dst, r := range want {
		if have[dst] {
			continue
		}
		if err := n.nl.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s: %w", dst, r.Gw, err))
		}
	}
	return errors.Join(errs...)
}

func sameRoute(have netlink.Route, want *netlink.Route) bool {
	gw, _ := netip.AddrFromSlice(have.Gw)
	wgw, _ := netip.AddrFromSlice(want.Gw)
	return gw.Unmap() == wgw.Unmap() && have.LinkIndex == want.LinkIndex &&
		have.Flags&int(netlink.FLAG_ONLINK) == want.Flags&int(netlink.FLAG_ONLINK)
}

// ensureTunnel makes t's VXLAN device exist with the right VNI, port,
// local address, address and MTU, up, with exactly t's forwarding and
// neighbour entries. It returns the device's index.
func (n *Node) ensureTunnel(t *tunnel) (int, error) {
	mtu := 1500
	if l, err := n.nl.LinkByIndex(t.mtuLink); err == nil && l.Attrs().MTU >= 1280+t.overhead {
		mtu = l.Attrs().MTU
	}
	mtu -= t.overhead
	mac := vxlanMAC(n.cfg.Prefixes)
	l, err := n.nl.LinkByName(t.name)
	if err == nil {
		vx, ok := l.(*netlink.Vxlan)
		if !ok || vx.VxlanId != vxlanVNI || vx.Port != vxlanPort || vx.Learning || !vx.SrcAddr.Equal(net.IP(t.local.AsSlice())) {
			// What cannot be changed in place: make it again (its
			// routes and entries go with it and are made below).
			if err := n.deleteLink(t.name); err != nil {
				return 0, fmt.Errorf("replace tunnel %s: %w", t.name, err)
			}
			err = netlink.LinkNotFoundError{}
		}
	}
	switch {
	case isNotFound(err):
		vx := &netlink.Vxlan{
			LinkAttrs: netlink.LinkAttrs{Name: t.name, MTU: mtu, HardwareAddr: mac, TxQLen: -1},
			VxlanId:   vxlanVNI, Port: vxlanPort, SrcAddr: net.IP(t.local.AsSlice()),
			// Peers are known from the API; nothing is learnt from
			// what arrives, so a forged packet cannot redirect traffic.
			Learning: false,
		}
		if err := n.nl.LinkAdd(vx); err != nil {
			return 0, fmt.Errorf("create tunnel %s (VXLAN %d, UDP port %d, from %s): %w", t.name, vxlanVNI, vxlanPort, t.local, err)
		}
		if l, err = n.nl.LinkByName(t.name); err != nil {
			return 0, fmt.Errorf("find tunnel %s after creating it: %w", t.name, err)
		}
	case err != nil:
		return 0, fmt.Errorf("find tunnel %s: %w", t.name, err)
	}
	if l.Attrs().MTU != mtu {
		if err := n.nl.LinkSetMTU(l, mtu); err != nil {
			return 0, fmt.Errorf("set MTU of tunnel %s: %w", t.name, err)
		}
	}
	if l.Attrs().HardwareAddr.String() != mac.String() {
		if err := n.nl.LinkSetHardwareAddr(l, mac); err != nil {
			return 0, fmt.Errorf("set address of tunnel %s: %w", t.name, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := n.nl.LinkSetUp(l); err != nil {
			return 0, fmt.Errorf("set tunnel %s up: %w", t.name, err)
		}
	}
	idx := l.Attrs().Index
	if err := n.syncFDB(t, idx); err != nil {
		return 0, err
	}
	return idx, n.syncNeighbours(t, idx)
}

// syncFDB makes the tunnel's forwarding entries (peer MAC -> peer address)
// exactly t.fdb.
func (n *Node) syncFDB(t *tunnel, idx int) error {
	cur, err := retryDump(func() ([]netlink.Neigh, error) { return n.nl.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return fmt.Errorf("list the forwarding entries of tunnel %s: %w", t.name, err)
	}
	have := map[string]bool{}
	for _, e := range cur {
		if e.LinkIndex != idx {
			continue
		}
		ip, _ := netip.AddrFromSlice(e.IP)
		if want, ok := t.fdb[e.HardwareAddr.String()]; ok && want == ip.Unmap() && e.State&unix.NUD_PERMANENT != 0 {
			have[e.HardwareAddr.String()] = true
			continue
		}
		if err := n.nl.NeighDel(&e); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove forwarding entry %s -> %s of tunnel %s: %w", e.HardwareAddr, ip, t.name, err)
		}
	}
	for mac, dst := range t.fdb {
		if have[mac] {
			continue
		}
		hw, _ := net.ParseMAC(mac)
		e := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			State: netlink.NUD_PERMANENT, HardwareAddr: hw, IP: net.IP(dst.AsSlice())}
		if err := n.nl.NeighAppend(e); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add forwarding entry %s -> %s to tunnel %s: %w", mac, dst, t.name, err)
		}
	}
	return nil
}

// syncNeighbours makes the tunnel's neighbour entries (peer gateway ->
// peer MAC) exactly t.neigh, all permanent.
func (n *Node) syncNeighbours(t *tunnel, idx int) error {
	have := map[netip.Addr]bool{}
	for _, fam := range []int{netlink.FAMILY_V6, netlink.FAMILY_V4} {
		cur, err := retryDump(func() ([]netlink.Neigh, error) { return n.nl.NeighList(idx, fam) })
		if err != nil {
			return fmt.Errorf("list the neighbours of tunnel %s: %w", t.name, err)
		}
		for _, e := range cur {
			a, _ := netip.AddrFromSlice(e.IP)
			a = a.Unmap()
			if want, ok := t.neigh[a]; ok && want.String() == e.HardwareAddr.String() && e.State&unix.NUD_PERMANENT != 0 {
				have[a] = true
				continue
			}
			if _, ok := t.neigh[a]; ok {
				continue // replaced below
			}
			if err := n.nl.NeighDel(&e); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("remove neighbour %s of tunnel %s: %w", a, t.name, err)
			}
		}
	}
	for a, mac := range t.neigh {
		if have[a] {
			continue
		}
		fam := netlink.FAMILY_V6
		if a.Is4() {
			fam = netlink.FAMILY_V4
		}
		e := &netlink.Neigh{LinkIndex: idx, Family: fam, State: netlink.NUD_PERMANENT, IP: net.IP(a.AsSlice()), HardwareAddr: mac}
		if err := n.nl.NeighSet(e); err != nil {
			return fmt.Errorf("set neighbour %s (%s) on tunnel %s: %w", a, mac, t.name, err)
		}
	}
	return nil
}
