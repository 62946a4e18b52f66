package networking

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/testnet"
)

// peerNode is one node of a two-node rig: a testnet host playing the
// machine, its Node, and one container with a server in it.
type peerNode struct {
	host *testnet.Host
	cfg  Config
	n    *Node
	c    string // the container's namespace
	a    Attachment
}

// newPeerRig makes two nodes on one network, in the given modes, each with
// one attached container serving as serve does, and no peers programmed.
func newPeerRig(t *testing.T, modes ...Mode) []*peerNode {
	t.Helper()
	tn := testnet.New(t, testnet.Options{Hosts: len(modes)})
	var nodes []*peerNode
	for i, mode := range modes {
		pn := &peerNode{host: tn.Hosts[i]}
		pn.cfg = Config{Prefixes: testCluster.node(i + 1), Cluster: testCluster, DataDir: t.TempDir(),
			NetNSPath: pn.host.NetNS, Mode: mode}
		pn.open(t)
		if err := pn.n.Setup(context.Background()); err != nil {
			t.Fatalf("Setup of node %d: %v", i, err)
		}
		name := fmt.Sprintf("c%d", i)
		pn.c = tn.Namespace(name)
		serve(t, pn.c, name, 8080)
		pn.a = pn.n.mustAttach(t, name, pn.c)
		nodes = append(nodes, pn)
	}
	return nodes
}

// open makes the node's Node, as an agent that starts does.
func (pn *peerNode) open(t *testing.T) {
	t.Helper()
	n, err := New(pn.cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	pn.n = n
}

// asPeer is the node as the others see it: through its Node object's
// strings, as the agent hands them over.
func (pn *peerNode) asPeer(t *testing.T) Peer {
	t.Helper()
	p, err := ParsePeer(pn.host.Name, []string{pn.host.IPv6.String(), pn.host.IPv4.String()}, pn.cfg.Prefixes.Strings())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// connect programs every node with all the others as peers.
func connect(t *testing.T, nodes []*peerNode) {
	t.Helper()
	for i, pn := range nodes {
		var peers []Peer
		for j, o := range nodes {
			if j != i {
				peers = append(peers, o.asPeer(t))
			}
		}
		if err := pn.n.SetPeers(context.Background(), peers); err != nil {
			t.Fatalf("SetPeers on node %d: %v", i, err)
		}
	}
}

// wantCrossTraffic checks that container 0 reaches container 1 over TCP
// and UDP on both families, and that container 1 sees container 0's own
// address (no NAT inside the cluster).
func wantCrossTraffic(t *testing.T, nodes []*peerNode) {
	t.Helper()
	from, to := nodes[0], nodes[1]
	for _, c := range []struct {
		network string
		dst     netip.AddrPort
		src     netip.Addr
	}{
		{"tcp", ap(to.a.IPv6, 8080), from.a.IPv6},
		{"tcp", ap(to.a.IPv4, 8080), from.a.IPv4},
		{"udp", ap(to.a.IPv6, 9090), from.a.IPv6},
		{"udp", ap(to.a.IPv4, 9090), from.a.IPv4},
	} {
		got, err := hello(from.c, c.network, c.dst)
		want := fmt.Sprintf("hello from c1, you are %s", c.src)
		if err != nil || got != want {
			t.Fatalf("%s from container 0 to %s: got %q, %v; want %q", c.network, c.dst, got, err, want)
		}
	}
}

// peerRoutes lists the node's routes to peers (those SetPeers made).
func peerRoutes(t *testing.T, n *Node) map[netip.Prefix]netlink.Route {
	t.Helper()
	out := map[netip.Prefix]netlink.Route{}
	for _, fam := range []int{netlink.FAMILY_V6, netlink.FAMILY_V4} {
		rs, err := n.nl.RouteListFiltered(fam, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			out[ipNetPrefix(r.Dst)] = r
		}
	}
	return out
}

func linkName(t *testing.T, n *Node, index int) string {
	t.Helper()
	l, err := n.nl.LinkByIndex(index)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Name
}

// wantNothingLeft checks that a node has no route, tunnel or entry of a
// peer left.
func wantNothingLeft(t *testing.T, n *Node) {
	t.Helper()
	if rs := peerRoutes(t, n); len(rs) != 0 {
		t.Fatalf("routes to peers left: %v", rs)
	}
	for _, name := range []string{vxlanName6, vxlanName4} {
		if _, err := n.nl.LinkByName(name); !isNotFound(err) {
			t.Fatalf("tunnel %s left (lookup: %v)", name, err)
		}
	}
}

func TestPeersRouted(t *testing.T) {
	// auto picks direct routes for a peer on the same network, as routed does.
	nodes := newPeerRig(t, ModeAuto, ModeRouted)
	// Without routes, a container cannot reach the other node's.
	if got, err := helloWithin(nodes[0].c, "tcp", ap(nodes[1].a.IPv6, 8080), refusedWithin); err == nil {
		t.Fatalf("reached the other node's container without routes: %q", got)
	}
	connect(t, nodes)
	for i, pn := range nodes {
		other := nodes[1-i]
		rs := peerRoutes(t, pn.n)
		r6, r4 := rs[other.cfg.Prefixes.IPv6], rs[other.cfg.Prefixes.IPv4]
		gw6, _ := netip.AddrFromSlice(r6.Gw)
		gw4, _ := netip.AddrFromSlice(r4.Gw)
		if len(rs) != 2 || gw6 != other.host.IPv6 || gw4.Unmap() != other.host.IPv4 || linkName(t, pn.n, r6.LinkIndex) != "eth0" {
			t.Fatalf("node %d routes to peers: %+v; want %s via %s and %s via %s on eth0", i, rs,
				other.cfg.Prefixes.IPv6, other.host.IPv6, other.cfg.Prefixes.IPv4, other.host.IPv4)
		}
		if _, err := pn.n.nl.LinkByName(vxlanName6); !isNotFound(err) {
			t.Fatalf("node %d made a tunnel for a peer on its network", i)
		}
	}
	wantCrossTraffic(t, nodes)
	wantBulk(t, nodes)

	// A route someone deleted is made again; an agent that restarts
	// (a new Node over the same namespace) finds everything in place.
	h0 := strings.TrimPrefix(nodes[0].host.NetNS, "/run/netns/")
	if out, err := exec.Command("ip", "-n", h0, "-6", "route", "del", nodes[1].cfg.Prefixes.IPv6.String()).CombinedOutput(); err != nil {
		t.Fatalf("delete a route: %v: %s", err, out)
	}
	if _, err := helloWithin(nodes[0].c, "tcp", ap(nodes[1].a.IPv6, 8080), refusedWithin); err == nil {
		t.Fatal("reached the peer's container without the route; the test breaks nothing")
	}
	nodes[0].n.Close()
	nodes[0].open(t)
	connect(t, nodes)
	wantCrossTraffic(t, nodes)

	// A peer that leaves takes its routes with it.
	if err := nodes[0].n.SetPeers(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	wantNothingLeft(t, nodes[0].n)
	if got, err := helloWithin(nodes[0].c, "tcp", ap(nodes[1].a.IPv4, 8080), refusedWithin); err == nil {
		t.Fatalf("reached the peer's container after it left: %q", got)
	}
}

func TestPeersVXLAN(t *testing.T) {
	nodes := newPeerRig(t, ModeVXLAN, ModeVXLAN)
	connect(t, nodes)
	for i, pn := range nodes {
		other := nodes[1-i]
		l, err := pn.n.nl.LinkByName(vxlanName6)
		if err != nil {
			t.Fatalf("node %d has no IPv6 tunnel: %v", i, err)
		}
		vx := l.(*netlink.Vxlan)
		// Containers' MTU leaves room for the tunnel's headers.
		if vx.MTU != 1500-vxlanOverhead6 || vx.VxlanId != vxlanVNI || vx.Learning || pn.n.mtu > vx.MTU {
			t.Fatalf("node %d tunnel: MTU %d, VNI %d, learning %v, containers' MTU %d; want MTU %d, VNI %d, no learning, containers' MTU at most the tunnel's",
				i, vx.MTU, vx.VxlanId, vx.Learning, pn.n.mtu, 1500-vxlanOverhead6, vxlanVNI)
		}
		rs := peerRoutes(t, pn.n)
		for _, p := range []netip.Prefix{other.cfg.Prefixes.IPv6, other.cfg.Prefixes.IPv4} {
			if r, ok := rs[p]; !ok || r.LinkIndex != vx.Index {
				t.Fatalf("node %d routes %+v: want %s through %s", i, rs, p, vxlanName6)
			}
		}
		fdb, err := pn.n.nl.NeighList(vx.Index, unix.AF_BRIDGE)
		if err != nil {
			t.Fatal(err)
		}
		if len(fdb) != 1 || !fdb[0].IP.Equal(net.IP(other.host.IPv6.AsSlice())) || fdb[0].HardwareAddr.String() != vxlanMAC(other.cfg.Prefixes).String() {
			t.Fatalf("node %d forwarding entries %+v: want %s -> %s", i, fdb, vxlanMAC(other.cfg.Prefixes), other.host.IPv6)
		}
	}
	wantCrossTraffic(t, nodes)
	wantBulk(t, nodes)

	// Programming the same peers again changes nothing.
	before := peerRoutes(t, nodes[0].n)
	connect(t, nodes)
	if after := peerRoutes(t, nodes[0].n); fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("routes changed on a repeated SetPeers:\n%v\n%v", before, after)
	}

	// Peers that publish only IPv4 addresses are reached through an IPv4
	// tunnel, and the IPv6 one, unused now, goes.
	for i, pn := range nodes {
		other := nodes[1-i]
		p, err := ParsePeer(other.host.Name, []string{other.host.IPv4.String()}, other.cfg.Prefixes.Strings())
		if err != nil {
			t.Fatal(err)
		}
		if err := pn.n.SetPeers(context.Background(), []Peer{p}); err != nil {
			t.Fatal(err)
		}
		l, err := pn.n.nl.LinkByName(vxlanName4)
		if err != nil || l.Attrs().MTU != 1500-vxlanOverhead4 {
			t.Fatalf("node %d IPv4 tunnel: %+v, %v; want one with MTU %d", i, l, err, 1500-vxlanOverhead4)
		}
		if _, err := pn.n.nl.LinkByName(vxlanName6); !isNotFound(err) {
			t.Fatalf("node %d kept the unused IPv6 tunnel (lookup: %v)", i, err)
		}
	}
	wantCrossTraffic(t, nodes)

	for _, pn := range nodes {
		if err := pn.n.SetPeers(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		wantNothingLeft(t, pn.n)
	}
	if got, err := helloWithin(nodes[0].c, "tcp", ap(nodes[1].a.IPv6, 8080), refusedWithin); err == nil {
		t.Fatalf("reached the peer's container after the tunnel went: %q", got)
	}
}

// wantBulk sends 4 MiB over TCP from container 1 to container 0 on each
// family: full-sized segments cross the nodes' path (and, with VXLAN, fit
// the tunnel).
func wantBulk(t *testing.T, nodes []*peerNode) {
	t.Helper()
	const size = 4 << 20
	var ln net.Listener
	if err := testnet.DoIn(nodes[1].c, func() error {
		var err error
		ln, err = net.Listen("tcp", ":7100")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Write(make([]byte, size))
			}()
		}
	}()
	for _, dst := range []netip.Addr{nodes[1].a.IPv6, nodes[1].a.IPv4} {
		var c net.Conn
		if err := testnet.DoIn(nodes[0].c, func() error {
			var err error
			c, err = net.DialTimeout("tcp", ap(dst, 7100).String(), dialTimeout)
			return err
		}); err != nil {
			t.Fatalf("dial %s: %v", dst, err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		n, err := io.Copy(io.Discard, c)
		c.Close()
		if err != nil || n != size {
			t.Fatalf("bulk transfer from %s: %d bytes, %v; want %d", dst, n, err, size)
		}
	}
}

func TestChoosePath(t *testing.T) {
	peer := Peer{Name: "b", Prefixes: testCluster.node(2), Addresses: []netip.Addr{
		netip.MustParseAddr("fd01::2"), netip.MustParseAddr("192.0.2.2"),
	}}
	src6, src4 := netip.MustParseAddr("fd01::1"), netip.MustParseAddr("192.0.2.1")
	onLink := func(a netip.Addr) (hop, error) {
		if a.Is6() {
			return hop{link: 2, onLink: true, src: src6}, nil
		}
		return hop{link: 3, onLink: true, src: src4}, nil
	}
	viaRouter := func(a netip.Addr) (hop, error) {
		h, _ := onLink(a)
		h.onLink = false
		return h, nil
	}
	onlyV4 := func(a netip.Addr) (hop, error) {
		if a.Is6() {
			return hop{}, errors.New("unreachable")
		}
		return onLink(a)
	}
	unreachable := func(netip.Addr) (hop, error) { return hop{}, errors.New("unreachable") }
	for _, tc := range []struct {
		name    string
		mode    Mode
		peer    Peer
		lookup  func(netip.Addr) (hop, error)
		want    string
		wantErr string
	}{
		{"auto on-link", ModeAuto, peer, onLink, "routed via fd01::2 and 192.0.2.2", ""},
		{"routed on-link", ModeRouted, peer, onLink, "routed via fd01::2 and 192.0.2.2", ""},
		{"vxlan forced", ModeVXLAN, peer, onLink, "vxlan to fd01::2", ""},
		{"auto behind a router", ModeAuto, peer, viaRouter, "vxlan to fd01::2", ""},
		{"routed behind a router", ModeRouted, peer, viaRouter, "", "--network-mode auto or vxlan"},
		{"auto, IPv6 unreachable", ModeAuto, peer, onlyV4, "vxlan to 192.0.2.2", ""},
		{"unreachable", ModeAuto, peer, unreachable, "", "no route to any of its addresses (fd01::2, 192.0.2.2)"},
		{"no addresses", ModeVXLAN, Peer{Name: "b", Prefixes: peer.Prefixes}, onLink, "", "(none published)"},
		{"container addresses are not the peer's", ModeAuto, Peer{Name: "b", Prefixes: peer.Prefixes, Addresses: []netip.Addr{
			testCluster.node(2).IPv6.Addr().Next(), netip.MustParseAddr("10.71.2.1"), netip.MustParseAddr("fe80::1"), netip.MustParseAddr("192.0.2.2"),
		}}, onLink, "vxlan to 192.0.2.2", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := choosePath(tc.mode, testCluster, tc.peer, tc.lookup)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("choosePath: %v, %v; want an error containing %q", p, err, tc.wantErr)
				}
				return
			}
			if err != nil || p.String() != tc.want {
				t.Fatalf("choosePath: %v, %v; want %s", p, err, tc.want)
			}
			if p.vxlan && p.hop.src != src6 && p.hop.src != src4 {
				t.Fatalf("tunnel source %s, want this node's address toward the peer", p.hop.src)
			}
		})
	}
}

func TestCheckPeers(t *testing.T) {
	self := testCluster.node(1)
	peer := func(name string, i int) Peer { return Peer{Name: name, Prefixes: testCluster.node(i)} }
	outside := Peer{Name: "x", Prefixes: NodePrefixes{IPv6: netip.MustParsePrefix("fd99::/64"), IPv4: netip.MustParsePrefix("10.99.0.0/24")}}
	ok, errs := checkPeers(self, testCluster, []Peer{peer("d", 4), peer("b", 2), peer("me", 1), outside, peer("c", 3), peer("e", 3)})
	var names []string
	for _, p := range ok {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != "b,d" {
		t.Fatalf("kept peers %v, want b,d (sorted; without the one claiming this node's prefixes, the one outside the cluster and the two that share one)", names)
	}
	msg := errors.Join(errs...).Error()
	for _, want := range []string{"peer me:", "peer x:", "peers c and e:"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("errors %q do not name %q", msg, want)
		}
	}
}

func TestParseNodeSpec(t *testing.T) {
	p, c, err := ParseNodeSpec(testCluster.node(5).Strings(), testCluster.Strings())
	if err != nil || p != testCluster.node(5) || c != testCluster {
		t.Fatalf("ParseNodeSpec of a node's own strings: %v %v %v, want %v %v", p, c, err, testCluster.node(5), testCluster)
	}
	if _, _, err := ParseNodeSpec(nil, testCluster.Strings()); !errors.Is(err, ErrNoPrefixes) {
		t.Fatalf("no prefixes: %v, want ErrNoPrefixes", err)
	}
	for _, tc := range []struct {
		node, cluster []string
		want          string
	}{
		{[]string{"fd00:6e78:7400:5::/64"}, testCluster.Strings(), "spec.containerPrefixes has 1 entries"},
		{[]string{"10.71.5.0/24", "fd00:6e78:7400:5::/64"}, testCluster.Strings(), "want an IPv6 prefix, then an IPv4 prefix"},
		{[]string{"fd00:6e78:7400:5::/64", "10.71.5.1/24"}, testCluster.Strings(), "spec.containerPrefixes[1]"},
		{[]string{"fd00:6e78:7400:500::/56", "10.71.5.0/24"}, testCluster.Strings(), "want a /64"},
		{[]string{"fd00:6e78:7400:5::/64", "nonsense"}, testCluster.Strings(), "spec.containerPrefixes[1] \"nonsense\""},
		{testCluster.node(5).Strings(), []string{"fd00:6e78:7400::/48"}, "spec.clusterPrefixes has 1 entries"},
		{testCluster.node(5).Strings(), []string{"fd00:1::/48", "10.71.0.0/16"}, "not inside spec.clusterPrefixes"},
		{testCluster.node(5).Strings(), []string{"fd00:6e78:7400::/48", "10.71.5.0/24"}, "spec.clusterPrefixes"},
	} {
		if _, _, err := ParseNodeSpec(tc.node, tc.cluster); !errors.Is(err, ErrBadPrefix) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseNodeSpec(%q, %q): %v, want ErrBadPrefix containing %q", tc.node, tc.cluster, err, tc.want)
		}
	}
}

func TestParsePeer(t *testing.T) {
	p, err := ParsePeer("b", []string{"fd01::2", "::ffff:192.0.2.2"}, testCluster.node(2).Strings())
	if err != nil || p.Prefixes != testCluster.node(2) || len(p.Addresses) != 2 || p.Addresses[1] != netip.MustParseAddr("192.0.2.2") {
		t.Fatalf("ParsePeer: %+v, %v", p, err)
	}
	if _, err := ParsePeer("b", nil, nil); !errors.Is(err, ErrNoPrefixes) {
		t.Fatalf("a peer without prefixes: %v, want ErrNoPrefixes", err)
	}
	for _, tc := range []struct {
		name     string
		addrs    []string
		prefixes []string
		want     string
	}{
		{"", nil, testCluster.node(2).Strings(), "without a name"},
		{"b", []string{"fd01::2", "host.example"}, testCluster.node(2).Strings(), `peer b: address 1 "host.example"`},
		{"b", nil, []string{"10.71.2.0/24", "10.71.3.0/24"}, "peer b: "},
	} {
		if _, err := ParsePeer(tc.name, tc.addrs, tc.prefixes); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePeer(%q, %q, %q): %v, want an error containing %q", tc.name, tc.addrs, tc.prefixes, err, tc.want)
		}
	}
}

func FuzzParseNodeSpec(f *testing.F) {
	f.Add("fd00:6e78:7400:5::/64", "10.71.5.0/24", "fd00:6e78:7400::/48", "10.71.0.0/16")
	f.Add("::/0", "0.0.0.0/0", "::/0", "0.0.0.0/0")
	f.Add("fd00::/64", "10.0.0.0/28", "fd00::/16", "10.0.0.0/8")
	f.Fuzz(func(t *testing.T, n6, n4, c6, c4 string) {
		p, c, err := ParseNodeSpec([]string{n6, n4}, []string{c6, c4})
		if err != nil {
			return
		}
		// What is accepted is a node that New takes, and reads back the
		// same from what it prints.
		if err := p.validate(); err != nil {
			t.Fatalf("accepted node prefixes %v: %v", p, err)
		}
		if err := c.complete(); err != nil || !c.IPv6.Contains(p.IPv6.Addr()) || !c.IPv4.Contains(p.IPv4.Addr()) {
			t.Fatalf("accepted cluster prefixes %v for %v: %v", c, p, err)
		}
		if p2, c2, err := ParseNodeSpec(p.Strings(), c.Strings()); err != nil || p2 != p || c2 != c {
			t.Fatalf("%v %v print as %v %v, which read back as %v %v, %v", p, c, p.Strings(), c.Strings(), p2, c2, err)
		}
		if _, err := ParsePeer("p", nil, []string{n6, n4}); err != nil {
			t.Fatalf("ParsePeer refuses node prefixes ParseNodeSpec accepts: %v", err)
		}
	})
}
