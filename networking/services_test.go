package networking

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/testnet"
	"nexus.dev/nexus/networking/lb"
)

// Service addresses in the rigs' cluster's service ranges, which Setup
// routes to the bridge: the node reaches them without a default route.
var vip6, vip4 = func() (netip.Addr, netip.Addr) {
	v6, v4 := testCluster.ServiceRanges()
	return v6.Addr().Next().Next(), v4.Addr().Next().Next()
}()

// namePort is where nameServer listens in a backend.
const namePort = 7070

// nameServer serves, in the namespace at path, TCP on namePort: to each
// connection it writes "<name> <client address>\n" and then echoes the
// lines it reads, so a test learns which backend a connection reached, as
// whom, and can keep the connection open.
func nameServer(t *testing.T, path, name string) {
	t.Helper()
	testnet.ServeTCP(t, path, fmt.Sprintf(":%d", namePort), func(c net.Conn) {
		from, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		fmt.Fprintf(c, "%s %s\n", name, from.Addr().Unmap())
		testnet.EchoLines(c)
	})
}

// conn is an open connection to a nameServer.
type conn struct {
	net.Conn
	r       *bufio.Reader
	backend string // the backend's name
	client  string // the client address the backend saw
}

// dialName connects from the namespace at path to addr and reads the
// backend's greeting.
func dialName(path string, addr netip.AddrPort) (*conn, error) {
	var c net.Conn
	if err := testnet.DoIn(path, func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr.String(), dialTimeout)
		return err
	}); err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(dialTimeout))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("read the greeting from %s: %w", addr, err)
	}
	name, client, _ := strings.Cut(strings.TrimSpace(line), " ")
	_ = c.SetDeadline(time.Time{})
	return &conn{Conn: c, r: r, backend: name, client: client}, nil
}

// echo checks that the connection still carries data both ways.
func (c *conn) echo() error {
	_ = c.SetDeadline(time.Now().Add(dialTimeout))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	line, err := c.r.ReadString('\n')
	if err != nil || line != "ping\n" {
		return fmt.Errorf("echo: got %q, %v", line, err)
	}
	return nil
}

// spread opens n connections from path to addr, one after the other, and
// counts them by "<backend> <client address>".
func spread(t *testing.T, path string, addr netip.AddrPort, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		c, err := dialName(path, addr)
		if err != nil {
			t.Fatalf("connection %d to %s: %v (so far %v)", len(got), addr, err, got)
		}
		got[c.backend+" "+c.client]++
		c.Close()
	}
	return got
}

// wantEven checks that counts has exactly the keys want and that each is
// within 15 % of an even share.
func wantEven(t *testing.T, what string, counts map[string]int, want ...string) {
	t.Helper()
	total := 0
	for _, n := range counts {
		total += n
	}
	even := float64(total) / float64(len(want))
	for _, k := range want {
		if n := float64(counts[k]); n < 0.85*even || n > 1.15*even {
			t.Errorf("%s: %q got %v of %d connections, want %.0f ± 15 %% (all: %v)", what, k, n, total, even, counts)
		}
	}
	if len(counts) != len(want) {
		t.Errorf("%s: connections went to %v, want only %v", what, counts, want)
	}
}

// wantOnly checks that counts has exactly the keys want: every backend
// was reached, as whom the test expects, and nothing else was.
func wantOnly(t *testing.T, what string, counts map[string]int, want ...string) {
	t.Helper()
	if len(counts) != len(want) || slices.ContainsFunc(want, func(k string) bool { return counts[k] == 0 }) {
		t.Errorf("%s: connections went to %v, want all of and only %v", what, counts, want)
	}
}

// wantRefused checks that a connection from path to addr is refused
// (ECONNREFUSED) at once, TCP or UDP.
func wantRefused(t *testing.T, path, network string, addr netip.AddrPort) {
	t.Helper()
	start := time.Now()
	var err error
	if network == "tcp" {
		var c *conn
		if c, err = dialName(path, addr); err == nil {
			c.Close()
		}
	} else {
		_, err = helloWithin(path, network, addr, time.Second)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
		t.Fatalf("%s to %s: %v after %v, want ECONNREFUSED at once", network, addr, err, time.Since(start))
	}
}

// udpFrom sends a datagram from path to addr on an unconnected socket
// and returns the reply and the address it came from.
func udpFrom(path string, addr netip.AddrPort) (string, netip.AddrPort, error) {
	var pc net.PacketConn
	if err := testnet.DoIn(path, func() error {
		var err error
		pc, err = net.ListenPacket("udp", ":0")
		return err
	}); err != nil {
		return "", netip.AddrPort{}, err
	}
	defer pc.Close()
	_ = pc.SetDeadline(time.Now().Add(dialTimeout))
	if _, err := pc.WriteTo([]byte("hi"), net.UDPAddrFromAddrPort(addr)); err != nil {
		return "", netip.AddrPort{}, err
	}
	buf := make([]byte, 128)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		return "", netip.AddrPort{}, err
	}
	fa := from.(*net.UDPAddr).AddrPort()
	return strings.TrimSpace(string(buf[:n])), netip.AddrPortFrom(fa.Addr().Unmap(), fa.Port()), nil
}

// udpClient is one UDP socket in a namespace, kept across requests.
type udpClient struct{ pc net.PacketConn }

func newUDPClient(t *testing.T, path string) *udpClient {
	t.Helper()
	var pc net.PacketConn
	if err := testnet.DoIn(path, func() error {
		var err error
		pc, err = net.ListenPacket("udp", ":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return &udpClient{pc}
}

// ask sends a datagram to a serve UDP server behind addr and returns the
// name of the server that answered, checking that the answer came from
// addr.
func (u *udpClient) ask(t *testing.T, addr netip.AddrPort) string {
	t.Helper()
	_ = u.pc.SetDeadline(time.Now().Add(dialTimeout))
	if _, err := u.pc.WriteTo([]byte("hi"), net.UDPAddrFromAddrPort(addr)); err != nil {
		t.Fatalf("UDP to %s: %v", addr, err)
	}
	buf := make([]byte, 128)
	n, from, err := u.pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("UDP to %s: %v", addr, err)
	}
	fa := from.(*net.UDPAddr).AddrPort()
	if got := netip.AddrPortFrom(fa.Addr().Unmap(), fa.Port()); got != addr {
		t.Fatalf("UDP to %s: the answer came from %s", addr, got)
	}
	name, _, _ := strings.Cut(strings.TrimPrefix(string(buf[:n]), "hello from "), ",")
	return name
}

// svcObjects reads back, with the nftables library, the names of the
// table's chains and sets that belong to the service data path, and
// whether the node's own chains are there.
func svcObjects(t *testing.T, n *Node) (svc []string, nodeChains int) {
	t.Helper()
	c, err := n.nftConn()
	if err != nil {
		t.Fatal(err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range chains {
		switch {
		case ch.Table.Name != TableName:
		case strings.HasPrefix(ch.Name, svcPrefix):
			svc = append(svc, "chain "+ch.Name)
		default:
			nodeChains++
		}
	}
	sets, err := c.GetSets(nexusTable())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sets {
		if strings.HasPrefix(s.Name, svcPrefix) {
			svc = append(svc, "set "+s.Name)
		}
	}
	slices.Sort(svc)
	return svc, nodeChains
}

// ruleHandles returns the handles of the rules of a frontend's chain:
// they change when the chain is refilled.
func ruleHandles(t *testing.T, n *Node, fe lb.Frontend) []uint64 {
	t.Helper()
	c, err := n.nftConn()
	if err != nil {
		t.Fatal(err)
	}
	rules, err := c.GetRules(nexusTable(), &nftables.Chain{Name: frontendChain(fe), Table: nexusTable()})
	if err != nil {
		t.Fatalf("rules of %s: %v", frontendChain(fe), err)
	}
	var out []uint64
	for _, r := range rules {
		out = append(out, r.Handle)
	}
	return out
}

// backend is a container that serves as a service backend.
type backend struct {
	name string
	path string
	a    Attachment
}

func (b backend) at(fam family, port int) netip.AddrPort {
	if fam == ipv4 {
		return ap(b.a.IPv4, port)
	}
	return ap(b.a.IPv6, port)
}

// backends makes containers on r's node that run nameServer and serve.
func (r *rig) backends(names ...string) []backend {
	r.t.Helper()
	var out []backend
	for _, name := range names {
		path := r.container(name)
		nameServer(r.t, path, name)
		out = append(out, backend{name, path, r.attach(name, path)})
	}
	return out
}

func entry(svc string, proto lb.Protocol, fe netip.AddrPort, fam family, port int, bs ...backend) lb.Entry {
	e := lb.Entry{Service: svc, Frontend: lb.Frontend{Addr: fe, Proto: proto}}
	for _, b := range bs {
		e.Backends = append(e.Backends, b.at(fam, port))
	}
	return e
}

func (r *rig) serviceNAT(connectTime bool) *ServiceNAT {
	s := r.n.ServiceNAT(connectTime)
	r.t.Cleanup(func() {
		if err := s.Close(); err != nil {
			r.t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestServiceNATBalances(t *testing.T) {
	r := newRig(t)
	bs := r.backends("b1", "b2", "b3")
	client := r.container("client")
	ca := r.attach("client", client)
	// The node reaches the service addresses without a default route:
	// Setup routes the service ranges to the bridge.

	web4, web6 := ap(vip4, 80), ap(vip6, 80)
	dns4, dns6 := ap(vip4, 53), ap(vip6, 53)
	empty4, empty6, emptyUDP := ap(vip4, 81), ap(vip6, 81), ap(vip4, 54)
	self4 := ap(vip4, 82)
	table := lb.Table{
		entry("default/web", lb.TCP, web4, ipv4, namePort, bs...),
		entry("default/web", lb.TCP, web6, ipv6, namePort, bs...),
		entry("default/dns", lb.UDP, dns4, ipv4, 9090, bs...),
		entry("default/dns", lb.UDP, dns6, ipv6, 9090, bs...),
		entry("default/none", lb.TCP, empty4, ipv4, 1),
		entry("default/none", lb.TCP, empty6, ipv6, 1),
		entry("default/none", lb.UDP, emptyUDP, ipv4, 1),
		entry("default/self", lb.TCP, self4, ipv4, 8080, bs[0]),
	}
	s := r.serviceNAT(false)
	if s.Mode() != "nftables" {
		t.Fatalf("Mode() = %q, want nftables", s.Mode())
	}
	if err := s.Sync(table); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if out := r.nft(); !strings.Contains(out, frontendChain(table[1].Frontend)) {
		t.Fatalf("nft list table: %s", out)
	}

	// New connections spread evenly over the backends, on both families.
	// The backends are on the client's bridge, so they see the bridge's
	// address: without the masquerade they would answer the client
	// directly, from their own address, not the service's.
	const n = 3000
	wantEven(t, "TCP to "+web6.String(), spread(t, client, web6, n),
		"b1 "+ca.Gateway6.String(), "b2 "+ca.Gateway6.String(), "b3 "+ca.Gateway6.String())
	wantEven(t, "TCP to "+web4.String(), spread(t, client, web4, n),
		"b1 "+ca.Gateway4.String(), "b2 "+ca.Gateway4.String(), "b3 "+ca.Gateway4.String())
	// The node's own processes reach the service too (nat output).
	for _, fe := range []netip.AddrPort{web4, web6} {
		c, err := dialName(r.node.NetNS, fe)
		if err != nil {
			t.Fatalf("from the node to %s: %v", fe, err)
		}
		c.Close()
	}
	// UDP: the reply comes from the service address, as resolvers demand.
	for _, fe := range []netip.AddrPort{dns4, dns6} {
		got, from, err := udpFrom(client, fe)
		if err != nil || from != fe || !strings.HasPrefix(got, "hello from b") {
			t.Fatalf("UDP to %s: %q from %s, %v; want a backend's answer from %s", fe, got, from, err, fe)
		}
	}
	// No ready backend: refused at once, never a hang.
	wantRefused(t, client, "tcp", empty4)
	wantRefused(t, client, "tcp", empty6)
	wantRefused(t, client, "udp", emptyUDP)
	wantRefused(t, r.node.NetNS, "tcp", empty4)
	// A backend that reaches its own service gets to itself (hairpin,
	// masqueraded to the bridge's address so the reply goes back through
	// the node).
	r.wantHello(bs[0].path, "tcp", self4, "b1", bs[0].a.Gateway4)

	// A backend leaves: new connections stop reaching it, an established
	// one goes on, and the other frontends' chains are left as they are.
	held, err := dialName(client, web4)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	var gone backend
	var rest []backend
	for _, b := range bs {
		if b.name == held.backend {
			gone = b
		} else {
			rest = append(rest, b)
		}
	}
	// A UDP client that keeps its socket, as a resolver does, talks to
	// the same backend while the flow lives...
	udp := newUDPClient(t, client)
	first := udp.ask(t, dns4)
	for range 3 {
		if again := udp.ask(t, dns4); again != first {
			t.Fatalf("one UDP flow reached %s, then %s", first, again)
		}
	}
	web6Rules := ruleHandles(t, r.n, table[1].Frontend)
	table[0] = entry("default/web", lb.TCP, web4, ipv4, namePort, rest...)
	var udpRest []backend
	for _, b := range bs {
		if b.name != first {
			udpRest = append(udpRest, b)
		}
	}
	table[2] = entry("default/dns", lb.UDP, dns4, ipv4, 9090, udpRest...)
	if err := s.Sync(table); err != nil {
		t.Fatalf("Sync without %s: %v", gone.name, err)
	}
	// ... and once its backend leaves, the flow moves to another one.
	if now := udp.ask(t, dns4); now == first {
		t.Fatalf("the UDP flow still reaches %s after it left the service", first)
	}
	got := spread(t, client, web4, 300)
	for k := range got {
		if strings.HasPrefix(k, gone.name+" ") {
			t.Fatalf("%d new connections reached %s after it left the table: %v", got[k], gone.name, got)
		}
	}
	if err := held.echo(); err != nil {
		t.Fatalf("the connection to %s established before it left: %v", gone.name, err)
	}
	if after := ruleHandles(t, r.n, table[1].Frontend); !slices.Equal(after, web6Rules) {
		t.Fatalf("Sync changed the rules of %s, which did not change: %v, then %v", web6, web6Rules, after)
	}
	// A Sync with the same table is a no-op, and so is the node's own
	// rule update (published ports share the table).
	objs, _ := svcObjects(t, r.n)
	if err := s.Sync(table); err != nil {
		t.Fatalf("Sync again: %v", err)
	}
	other := r.container("other")
	r.attach("other", other, Port{Port: 8080, HostPort: 18080})
	if again, _ := svcObjects(t, r.n); !slices.Equal(again, objs) {
		t.Fatalf("objects after a second Sync and an Attach: %v, want %v", again, objs)
	}
	spread(t, client, web6, 10)

	// An agent that restarts takes over what the last one left.
	s2 := r.n.ServiceNAT(false)
	if err := s2.Sync(table); err != nil {
		t.Fatalf("Sync of a new ServiceNAT over the old one's objects: %v", err)
	}
	if again, _ := svcObjects(t, r.n); !slices.Equal(again, objs) {
		t.Fatalf("objects after a restart: %v, want %v", again, objs)
	}
	spread(t, client, web4, 10)

	// Someone deletes the table; the node's Setup brings its own chains
	// back, and the next Sync the services.
	if out, err := exec.Command("ip", "netns", "exec", strings.TrimPrefix(r.node.NetNS, "/run/netns/"), "nft", "delete", "table", "inet", TableName).CombinedOutput(); err != nil {
		t.Fatalf("delete table: %v: %s", err, out)
	}
	if err := r.n.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s2.Sync(table); err != nil {
		t.Fatalf("Sync after the table was deleted: %v", err)
	}
	if again, _ := svcObjects(t, r.n); !slices.Equal(again, objs) {
		t.Fatalf("objects after the table was deleted and synced again: %v, want %v", again, objs)
	}
	spread(t, client, web4, 10)

	// Close removes every object of the data path and nothing else.
	_, before := svcObjects(t, r.n)
	if err := s2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if left, nodeChains := svcObjects(t, r.n); len(left) != 0 || nodeChains != before {
		t.Fatalf("after Close: service objects %v, %d of the node's %d chains", left, nodeChains, before)
	}
	if err := testnet.DoIn(client, func() error {
		c, err := net.DialTimeout("tcp", web4.String(), refusedWithin)
		if err == nil {
			c.Close()
			return fmt.Errorf("%s still answers after Close", web4)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r.wantHello(r.outside.NetNS, "tcp", ap(r.node.IPv4, 18080), "other", r.outside.IPv4)
}

func TestServiceNATAffinity(t *testing.T) {
	r := newRig(t)
	bs := r.backends("b1", "b2", "b3")
	client := r.container("client")
	r.attach("client", client)
	fe := ap(vip6, 80)
	e := entry("default/sticky", lb.TCP, fe, ipv6, namePort, bs...)
	e.Affinity = time.Hour
	s := r.serviceNAT(false)
	if err := s.Sync(lb.Table{e}); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	// nft can read the table back (nft 1.0.6 aborted on an earlier
	// design's rules, and so would every `nft list ruleset` on the node).
	if out := r.nft(); !strings.Contains(out, backendChain(e.Frontend, e.Backends[0])+svcAffinitySufx) {
		t.Fatalf("nft list table: %s", out)
	}
	got := spread(t, client, fe, 50)
	if len(got) != 1 {
		t.Fatalf("with ClientIP affinity, one client reached %v, want one backend", got)
	}
	var first string
	for k := range got {
		first, _, _ = strings.Cut(k, " ")
	}
	// A backend joins: the client keeps its own.
	bs = append(bs, r.backends("b4")...)
	e = entry("default/sticky", lb.TCP, fe, ipv6, namePort, bs...)
	e.Affinity = time.Hour
	if err := s.Sync(lb.Table{e}); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if got := spread(t, client, fe, 20); len(got) != 1 || !strings.HasPrefix(slices.Collect(maps.Keys(got))[0], first+" ") {
		t.Fatalf("after b4 joined, the client reached %v, want only %s", got, first)
	}
	// Its backend leaves: the client gets another one, and keeps it.
	var rest []backend
	for _, b := range bs {
		if b.name != first {
			rest = append(rest, b)
		}
	}
	e = entry("default/sticky", lb.TCP, fe, ipv6, namePort, rest...)
	e.Affinity = time.Hour
	if err := s.Sync(lb.Table{e}); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	got = spread(t, client, fe, 50)
	if len(got) != 1 {
		t.Fatalf("after %s left, one client reached %v, want one backend", first, got)
	}
	for k := range got {
		if strings.HasPrefix(k, first+" ") {
			t.Fatalf("the client still reaches %s, which left", first)
		}
	}
	// Without affinity, the same client is spread again.
	e.Affinity = 0
	if err := s.Sync(lb.Table{e}); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if got := spread(t, client, fe, 60); len(got) != len(rest) {
		t.Fatalf("without affinity, 60 connections reached %v, want all %d backends", got, len(rest))
	}
	if objs, _ := svcObjects(t, r.n); slices.ContainsFunc(objs, func(o string) bool { return strings.HasSuffix(o, svcAffinitySufx) }) {
		t.Fatalf("the affinity map outlived the affinity: %v", objs)
	}
}

func TestServiceNATRejectsBadTables(t *testing.T) {
	r := newRig(t)
	s := r.serviceNAT(false)
	fe := lb.Frontend{Addr: ap(vip4, 80), Proto: lb.TCP}
	for name, tc := range map[string]struct {
		t    lb.Table
		want string
	}{
		"family":    {lb.Table{{Service: "a/b", Frontend: fe, Backends: []netip.AddrPort{ap(vip6, 1)}}}, "other address family"},
		"duplicate": {lb.Table{{Service: "a/b", Frontend: fe}, {Service: "a/c", Frontend: lb.Frontend{Addr: netip.AddrPortFrom(netip.AddrFrom16(vip4.As16()), 80), Proto: lb.TCP}}}, "also service"},
		"protocol":  {lb.Table{{Service: "a/b", Frontend: lb.Frontend{Addr: fe.Addr, Proto: 1}}}, "TCP or UDP"},
	} {
		if err := s.Sync(tc.t); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Sync: %v, want an error containing %q", name, err, tc.want)
		}
	}
	if objs, _ := svcObjects(t, r.n); len(objs) != 0 {
		t.Fatalf("rejected tables installed %v", objs)
	}
}

// TestServiceNATNodePorts reaches a node port from a machine outside the
// cluster, with one backend on the node and one on another node, in both
// modes: the outside path is the same.
func TestServiceNATNodePorts(t *testing.T) {
	for _, connectTime := range []bool{false, true} {
		t.Run(fmt.Sprintf("connectTime=%v", connectTime), func(t *testing.T) {
			tn := testnet.New(t, testnet.Options{Hosts: 3})
			nodes := make([]*peerNode, 2)
			for i := range nodes {
				pn := &peerNode{host: tn.Hosts[i]}
				pn.cfg = Config{Prefixes: testCluster.node(i + 1), Cluster: testCluster, DataDir: t.TempDir(),
					NetNSPath: pn.host.NetNS, Mode: ModeRouted}
				pn.open(t)
				if err := pn.n.Setup(context.Background()); err != nil {
					t.Fatalf("Setup of node %d: %v", i, err)
				}
				name := fmt.Sprintf("c%d", i)
				pn.c = tn.Namespace(name)
				serve(t, pn.c, name, 8080)
				nameServer(t, pn.c, name)
				pn.a = pn.n.mustAttach(t, name, pn.c)
				nodes[i] = pn
			}
			connect(t, nodes)
			a, b, outside := nodes[0], nodes[1], tn.Hosts[2]
			local := backend{"c0", a.c, a.a}
			remote := backend{"c1", b.c, b.a}

			np4, np6, npUDP, npEmpty := ap(a.host.IPv4, 30080), ap(a.host.IPv6, 30080), ap(a.host.IPv4, 30053), ap(a.host.IPv4, 30081)
			table := lb.Table{
				entry("default/web", lb.TCP, np4, ipv4, namePort, local, remote),
				entry("default/web", lb.TCP, np6, ipv6, namePort, local, remote),
				entry("default/dns", lb.UDP, npUDP, ipv4, 9090, local, remote),
				entry("default/none", lb.TCP, npEmpty, ipv4, 1),
				entry("default/web", lb.TCP, ap(vip4, 80), ipv4, namePort, local, remote),
			}
			for i := range 4 {
				table[i].NodePort = true
			}
			s := a.n.ServiceNAT(connectTime)
			t.Cleanup(func() { _ = s.Close() })
			if err := s.Sync(table); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			// The local backend sees the client; the remote one sees the
			// node, whose conntrack entry then translates the reply.
			const n = 100
			wantOnly(t, "TCP to "+np4.String(), spread(t, outside.NetNS, np4, n),
				"c0 "+outside.IPv4.String(), "c1 "+a.host.IPv4.String())
			wantOnly(t, "TCP to "+np6.String(), spread(t, outside.NetNS, np6, n),
				"c0 "+outside.IPv6.String(), "c1 "+a.host.IPv6.String())
			got, from, err := udpFrom(outside.NetNS, npUDP)
			if err != nil || from != npUDP || !strings.HasPrefix(got, "hello from c") {
				t.Fatalf("UDP to %s: %q from %s, %v; want a backend's answer from %s", npUDP, got, from, err, npUDP)
			}
			wantRefused(t, outside.NetNS, "tcp", npEmpty)

			objs, _ := svcObjects(t, a.n)
			hasLocal := slices.Contains(objs, "chain "+chainSvcOut)
			if connectTime {
				// Only what outside clients need: no nat output, no
				// service addresses, no maps for the node's own clients.
				if hasLocal || slices.Contains(objs, "chain "+frontendChain(table[4].Frontend)) || slices.Contains(objs, "set "+mapSvcFrontends+"4") {
					t.Fatalf("with connect-time balancing, the table has what local clients use: %v", objs)
				}
				if s.Mode() != "nftables-nodeports" {
					t.Fatalf("Mode() = %q", s.Mode())
				}
				return
			}
			if !hasLocal {
				t.Fatalf("objects %v: no %s", objs, chainSvcOut)
			}
			// A container on the node reaches the node port and the
			// service address; the remote backend sees its own address (no
			// NAT inside the cluster).
			wantOnly(t, "TCP from a container to "+vip4.String(), spread(t, a.c, ap(vip4, 80), 100),
				"c0 "+a.a.Gateway4.String(), "c1 "+a.a.IPv4.String())
			c, err := dialName(a.c, np4)
			if err != nil {
				t.Fatalf("from a container to %s: %v", np4, err)
			}
			c.Close()
		})
	}
}

// TestServiceNATForgetsFlowsFromBeforeTheRules: a client that tried a
// virtual IP before its Service's rules existed left an untranslated
// conntrack entry; Sync deletes it, so a later connection that reuses the
// entry's source port is balanced instead of going to the virtual IP
// itself.
func TestServiceNATForgetsFlowsFromBeforeTheRules(t *testing.T) {
	r := newRig(t)
	bs := r.backends("b1")
	client := r.container("client")
	r.attach("client", client)
	fe := ap(vip4, 80)
	const port = 40404
	dialFrom := func(timeout time.Duration) error {
		return testnet.DoIn(client, func() error {
			d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{Port: port},
				Control: func(_, _ string, c syscall.RawConn) error {
					var serr error
					err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
					return errors.Join(err, serr)
				}}
			c, err := d.Dial("tcp4", fe.String())
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(dialTimeout))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err == nil && !strings.HasPrefix(line, "b1 ") {
				err = fmt.Errorf("greeting %q, want b1's", line)
			}
			return err
		})
	}
	// Before the rules: the SYN goes unanswered and its entry stays.
	if err := dialFrom(300 * time.Millisecond); err == nil {
		t.Fatal("a connection to the virtual IP succeeded before its rules existed")
	}
	s := r.serviceNAT(false)
	if err := s.Sync(lb.Table{entry("default/web", lb.TCP, fe, ipv4, namePort, bs...)}); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := dialFrom(dialTimeout); err != nil {
		t.Fatalf("from the port that tried before the rules, once they exist: %v", err)
	}
}
