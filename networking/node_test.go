package networking

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"nexus.dev/nexus/internal/testnet"
)

// dialTimeout bounds one connection attempt in these tests; a path that
// works answers in well under a millisecond.
const dialTimeout = 3 * time.Second

// refusedWithin is how long a connection the rules drop may try; a drop
// shows as a timeout, so this keeps such checks short.
const refusedWithin = 300 * time.Millisecond

var testCluster = ClusterPrefixes{
	IPv6:         netip.MustParsePrefix("fd00:6e78:7400::/48"),
	IPv4:         netip.MustParsePrefix("10.71.0.0/16"),
	NodeIPv4Bits: 24,
}

// rig is one node: testnet host h0 plays the node (its eth0 is the node's
// uplink), host h1 a machine outside the cluster on the same network, and
// bare namespaces the containers.
type rig struct {
	t       *testing.T
	net     *testnet.Network
	node    *testnet.Host
	outside *testnet.Host
	cfg     Config
	n       *Node
}

func newRig(t *testing.T) *rig {
	t.Helper()
	tn := testnet.New(t, testnet.Options{Hosts: 2})
	r := &rig{t: t, net: tn, node: tn.Hosts[0], outside: tn.Hosts[1]}
	r.cfg = Config{
		Prefixes:  testCluster.node(3),
		Cluster:   testCluster,
		DataDir:   t.TempDir(),
		NetNSPath: r.node.NetNS,
	}
	r.n = r.open()
	if err := r.n.Setup(context.Background()); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	return r
}

// open makes a Node over the rig's namespace and data directory, as an
// agent does when it starts.
func (r *rig) open() *Node {
	r.t.Helper()
	n, err := New(r.cfg)
	if err != nil {
		r.t.Fatalf("New: %v", err)
	}
	r.t.Cleanup(func() { n.Close() })
	return n
}

// container makes a namespace standing in for a container's and serves
// HTTP on port 8080 and UDP on port 9090 in it (see serve).
func (r *rig) container(name string) string {
	r.t.Helper()
	path := r.net.Namespace(name)
	serve(r.t, path, name, 8080)
	return path
}

// serve starts, in the namespace at path, an HTTP server on port that
// answers every request with "hello from <name>, you are <client address>"
// and a UDP server on port+1010 that answers datagrams the same way.
func serve(t *testing.T, path, name string, port int) {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	err := testnet.DoIn(path, func() error {
		var err error
		if ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port+1010))
		return err
	})
	if err != nil {
		t.Fatalf("serve in %s: %v", name, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		from, _ := netip.ParseAddrPort(req.RemoteAddr)
		fmt.Fprintf(w, "hello from %s, you are %s\n", name, from.Addr().Unmap())
	})}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		srv.Close()
		pc.Close()
		wg.Wait()
	})
	wg.Go(func() { _ = srv.Serve(ln) })
	wg.Go(func() {
		buf := make([]byte, 64)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			fmt.Fprintf(writerTo{pc, from}, "hello from %s, you are %s\n", name, from.(*net.UDPAddr).AddrPort().Addr().Unmap())
		}
	})
}

type writerTo struct {
	pc   net.PacketConn
	addr net.Addr
}

func (w writerTo) Write(b []byte) (int, error) { return w.pc.WriteTo(b, w.addr) }

// hello sends, from inside the namespace at path, an HTTP request ("tcp")
// or a datagram ("udp") to addr and returns the server's line.
func hello(path, network string, addr netip.AddrPort) (string, error) {
	return helloWithin(path, network, addr, dialTimeout)
}

func helloWithin(path, network string, addr netip.AddrPort, timeout time.Duration) (string, error) {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := testnet.DoIn(path, func() error {
			var err error
			c, err = (&net.Dialer{Timeout: timeout}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	if network == "tcp" {
		client := &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
		resp, err := client.Get("http://" + addr.String() + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return strings.TrimSpace(string(body)), err
	}
	c, err := dial(context.Background(), network, addr.String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("hi")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// wantHello checks that a connection from path to addr reaches server
// name and that the server sees the connection come from "from".
func (r *rig) wantHello(path, network string, addr netip.AddrPort, name string, from netip.Addr) {
	r.t.Helper()
	got, err := hello(path, network, addr)
	want := fmt.Sprintf("hello from %s, you are %s", name, from)
	if err != nil || got != want {
		r.t.Fatalf("%s to %s from %s: got %q, %v; want %q", network, addr, path, got, err, want)
	}
}

func (r *rig) attach(id, path string, ports ...Port) Attachment {
	r.t.Helper()
	a, err := r.n.Attach(context.Background(), ContainerRef{ID: id, NetNSPath: path, Ports: ports})
	if err != nil {
		r.t.Fatalf("Attach %s: %v", id, err)
	}
	return a
}

// nodeListen serves on port in the node's namespace (all its addresses).
func (r *rig) nodeListen(port int) {
	r.t.Helper()
	serve(r.t, r.node.NetNS, "node", port)
}

func ap(a netip.Addr, port int) netip.AddrPort { return netip.AddrPortFrom(a, uint16(port)) }

// nft lists the node's table.
func (r *rig) nft() string {
	r.t.Helper()
	out, err := exec.Command("ip", "netns", "exec", strings.TrimPrefix(r.node.NetNS, "/run/netns/"), "nft", "list", "table", "inet", TableName).CombinedOutput()
	if err != nil {
		return "error: " + string(out)
	}
	return string(out)
}

func (r *rig) ipNode(args ...string) {
	r.t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", strings.TrimPrefix(r.node.NetNS, "/run/netns/")}, args...)...).CombinedOutput(); err != nil {
		r.t.Fatalf("ip %v: %v: %s", args, err, out)
	}
}

func (r *rig) linkExists(name string) bool {
	r.t.Helper()
	_, err := r.n.nl.LinkByName(name)
	if err != nil && !isNotFound(err) {
		r.t.Fatalf("look up link %s: %v", name, err)
	}
	return err == nil
}

func TestContainersReachEachOtherTheNodeAndOutside(t *testing.T) {
	r := newRig(t)
	c1, c2 := r.container("c1"), r.container("c2")
	a1 := r.attach("c1", c1)
	a2 := r.attach("c2", c2)
	g6, g4 := r.cfg.Prefixes.Gateways()
	if a1.IPv4 == a2.IPv4 || a1.IPv6 == a2.IPv6 || !r.cfg.Prefixes.IPv4.Contains(a1.IPv4) || !r.cfg.Prefixes.IPv6.Contains(a1.IPv6) {
		t.Fatalf("addresses %v and %v: want distinct ones inside %s and %s", a1.Addresses(), a2.Addresses(), r.cfg.Prefixes.IPv6, r.cfg.Prefixes.IPv4)
	}
	if got := a1.Addresses(); len(got) != 2 || got[0] != a1.IPv6.String() || got[1] != a1.IPv4.String() {
		t.Fatalf("Addresses() = %v, want the IPv6 then the IPv4 address", got)
	}
	if a1.Gateway4 != g4 || a1.Gateway6 != g6 {
		t.Fatalf("gateways %s %s, want %s %s", a1.Gateway4, a1.Gateway6, g4, g6)
	}
	// Attach returns once the veth carries traffic: a first connection
	// does not wait a second for an ARP retry.
	if l, err := r.n.nl.LinkByName(a2.HostVeth); err != nil || l.Attrs().OperState != netlink.OperUp || l.Attrs().MasterIndex == 0 {
		t.Fatalf("veth %s right after Attach: %+v, %v; want it up on the bridge", a2.HostVeth, l, err)
	}

	// The container reaches the node on the gateway addresses.
	r.nodeListen(7000)
	r.wantHello(c1, "tcp", ap(g4, 7000), "node", a1.IPv4)
	r.wantHello(c1, "tcp", ap(g6, 7000), "node", a1.IPv6)
	// The node reaches the container on both its addresses.
	r.wantHello(r.node.NetNS, "tcp", ap(a1.IPv4, 8080), "c1", g4)
	r.wantHello(r.node.NetNS, "tcp", ap(a1.IPv6, 8080), "c1", g6)
	// Containers reach each other directly: no NAT inside the cluster.
	r.wantHello(c2, "tcp", ap(a1.IPv4, 8080), "c1", a2.IPv4)
	r.wantHello(c2, "tcp", ap(a1.IPv6, 8080), "c1", a2.IPv6)
	r.wantHello(c1, "udp", ap(a2.IPv6, 9090), "c2", a1.IPv6)
	// Outside the cluster, traffic leaves with the node's address.
	serve(t, r.outside.NetNS, "outside", 7000)
	r.wantHello(c1, "tcp", ap(r.outside.IPv4, 7000), "outside", r.node.IPv4)
	r.wantHello(c1, "tcp", ap(r.outside.IPv6, 7000), "outside", r.node.IPv6)
	r.wantHello(c2, "udp", ap(r.outside.IPv4, 8010), "outside", r.node.IPv4)
}

func TestPublishedPorts(t *testing.T) {
	r := newRig(t)
	c1, c2 := r.container("c1"), r.container("c2")
	a1 := r.attach("c1", c1, Port{Port: 8080, HostPort: 18080}, Port{Port: 9090, HostPort: 19090, Protocol: UDP})
	a2 := r.attach("c2", c2)
	g6, g4 := r.cfg.Prefixes.Gateways()
	n4, n6 := r.node.IPv4, r.node.IPv6

	// From outside, on the node's uplink addresses; the container sees the
	// client's own address.
	r.wantHello(r.outside.NetNS, "tcp", ap(n4, 18080), "c1", r.outside.IPv4)
	r.wantHello(r.outside.NetNS, "tcp", ap(n6, 18080), "c1", r.outside.IPv6)
	r.wantHello(r.outside.NetNS, "udp", ap(n4, 19090), "c1", r.outside.IPv4)
	r.wantHello(r.outside.NetNS, "udp", ap(n6, 19090), "c1", r.outside.IPv6)
	// From the node itself, on its addresses and on 127.0.0.1.
	r.wantHello(r.node.NetNS, "tcp", ap(n4, 18080), "c1", n4)
	r.wantHello(r.node.NetNS, "tcp", ap(n6, 18080), "c1", n6)
	r.wantHello(r.node.NetNS, "tcp", ap(netip.MustParseAddr("127.0.0.1"), 18080), "c1", g4)
	r.wantHello(r.node.NetNS, "udp", ap(n4, 19090), "c1", n4)
	// From another container, through the node's address (hairpin).
	r.wantHello(c2, "tcp", ap(n4, 18080), "c1", g4)
	r.wantHello(c2, "tcp", ap(n6, 18080), "c1", g6)
	// route_localnet is on for the bridge, but a container that sends to
	// 127.0.0.1 through it (as CVE-2020-8558 did to kube-proxy's nodes)
	// does not reach the node's loopback services (127.0.0.2: 127.0.0.1 stays
	// local in the container whatever its routes).
	r.nodeListen(7000)
	cname := strings.TrimPrefix(c2, "/run/netns/")
	for _, args := range [][]string{
		{"ip", "-n", cname, "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local"},
		{"ip", "-n", cname, "route", "add", "127.0.0.2/32", "via", a2.Gateway4.String(), "dev", ContainerIface, "src", a2.IPv4.String()},
		{"ip", "netns", "exec", cname, "sysctl", "-qw", "net.ipv4.conf." + ContainerIface + ".route_localnet=1"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	if got, err := helloWithin(c2, "tcp", ap(netip.MustParseAddr("127.0.0.2"), 7000), refusedWithin); err == nil {
		t.Fatalf("a container reached the node's 127.0.0.2:7000: %q", got)
	}

	// A host port another container publishes is refused, naming it.
	c3 := r.container("c3")
	_, err := r.n.Attach(context.Background(), ContainerRef{ID: "c3", NetNSPath: c3, Ports: []Port{{Port: 80, HostPort: 18080}}})
	var pe *PortInUseError
	if !errors.As(err, &pe) || pe.Holder != "container c1" || !strings.Contains(err.Error(), "18080/TCP") {
		t.Fatalf("Attach with c1's host port: %v, want a PortInUseError naming container c1 and 18080/TCP", err)
	}
	// The same number over the other protocol is free.
	r.attach("c3", c3, Port{Port: 8080, HostPort: 18080, Protocol: UDP})
	// A host port a process of the node listens on is refused, naming it.
	var ln net.Listener
	if err := r.node.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:18081")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c4 := r.container("c4")
	_, err = r.n.Attach(context.Background(), ContainerRef{ID: "c4", NetNSPath: c4, Ports: []Port{{Port: 8080, HostPort: 18081}}})
	wantHolder := fmt.Sprintf("process %d (", os.Getpid())
	if !errors.As(err, &pe) || !strings.HasPrefix(pe.Holder, wantHolder) || !errors.Is(err, ErrPortInUse) {
		t.Fatalf("Attach with a listening process's port: %v, want a PortInUseError naming %s...)", err, wantHolder)
	}
	if r.linkExists(vethName("c4")) {
		t.Fatal("a refused Attach left a veth behind")
	}
	if _, ok := r.n.Attachments()["c4"]; ok {
		t.Fatal("a refused Attach left the container in the state")
	}

	// Detach removes the rule: the port no longer answers.
	if err := r.n.Detach(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(r.nft(), "18080") && strings.Contains(r.nft(), "container c1") {
		t.Fatalf("c1's rules outlived Detach:\n%s", r.nft())
	}
	if _, err := hello(r.outside.NetNS, "tcp", ap(n4, 18080)); err == nil {
		t.Fatal("host port 18080 still answers after Detach")
	}
	_ = a1
}

func TestDetachReleasesEverything(t *testing.T) {
	r := newRig(t)
	c1 := r.container("c1")
	a1 := r.attach("c1", c1, Port{Port: 8080, HostPort: 18080})
	if !r.linkExists(a1.HostVeth) || !strings.Contains(r.nft(), "container c1") {
		t.Fatalf("after Attach: veth %s exists %v, rules:\n%s", a1.HostVeth, r.linkExists(a1.HostVeth), r.nft())
	}
	// Traffic gives the node and another container neighbour entries for
	// c1's addresses.
	c3 := r.container("c3")
	a3 := r.attach("c3", c3)
	r.wantHello(r.node.NetNS, "tcp", ap(a1.IPv4, 8080), "c1", a1.Gateway4)
	r.wantHello(r.node.NetNS, "tcp", ap(a1.IPv6, 8080), "c1", a1.Gateway6)
	r.wantHello(c3, "tcp", ap(a1.IPv4, 8080), "c1", a3.IPv4)
	r.wantHello(c3, "tcp", ap(a1.IPv6, 8080), "c1", a3.IPv6)
	if err := r.n.Detach(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	if r.linkExists(a1.HostVeth) {
		t.Fatalf("veth %s outlived Detach", a1.HostVeth)
	}
	if _, err := eth0(t, c1); err == nil {
		t.Fatal("the container's eth0 outlived Detach")
	}
	if strings.Contains(r.nft(), "container c1") {
		t.Fatalf("c1's rules outlived Detach:\n%s", r.nft())
	}
	if err := r.n.Detach(context.Background(), "c1"); err != nil {
		t.Fatalf("a second Detach: %v, want nil", err)
	}
	// The address goes to the next container, and from a restarted node.
	c2 := r.container("c2")
	a2 := r.open().mustAttach(t, "c2", c2)
	if a2.IPv4 != a1.IPv4 || a2.IPv6 != a1.IPv6 {
		t.Fatalf("the next container got %v, want c1's released %v", a2.Addresses(), a1.Addresses())
	}
	r.wantHello(r.node.NetNS, "tcp", ap(a2.IPv4, 8080), "c2", a2.Gateway4)
	// The neighbour entries c1 left (reachable for up to 45 s more) are
	// right for c2, which has c1's MAC with its addresses: c3 reaches
	// it at once rather than after them going stale.
	l, err := eth0(t, c2)
	if err != nil {
		t.Fatal(err)
	}
	if mac := l.Attrs().HardwareAddr; mac.String() != containerMAC(a2.IPv4).String() {
		t.Fatalf("c2's eth0 has MAC %s, want %s (made from its address %s)", mac, containerMAC(a2.IPv4), a2.IPv4)
	}
	r.wantHello(c3, "tcp", ap(a2.IPv4, 8080), "c2", a3.IPv4)
	r.wantHello(c3, "tcp", ap(a2.IPv6, 8080), "c2", a3.IPv6)
}

// eth0 looks up eth0 in the namespace at path.
func eth0(t *testing.T, path string) (netlink.Link, error) {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	return h.LinkByName(ContainerIface)
}

func (n *Node) mustAttach(t *testing.T, id, path string, ports ...Port) Attachment {
	t.Helper()
	a, err := n.Attach(context.Background(), ContainerRef{ID: id, NetNSPath: path, Ports: ports})
	if err != nil {
		t.Fatalf("Attach %s: %v", id, err)
	}
	return a
}

func TestRepairAfterRestart(t *testing.T) {
	r := newRig(t)
	c1, c2 := r.container("c1"), r.container("c2")
	a1 := r.attach("c1", c1, Port{Port: 8080, HostPort: 18080})
	a2 := r.attach("c2", c2)
	r.n.Close()

	// While the agent is down, someone deletes the bridge and the table,
	// and c2 goes away.
	r.ipNode("link", "del", DefaultBridge)
	if out, err := exec.Command("ip", "netns", "exec", strings.TrimPrefix(r.node.NetNS, "/run/netns/"), "nft", "delete", "table", "inet", TableName).CombinedOutput(); err != nil {
		t.Fatalf("delete table: %v: %s", err, out)
	}
	if _, err := hello(r.node.NetNS, "tcp", ap(a1.IPv4, 8080)); err == nil {
		t.Fatal("c1 is reachable without the bridge; the test breaks nothing")
	}

	n := r.open()
	got, err := n.Repair(context.Background(), []ContainerRef{{ID: "c1", NetNSPath: c1, Ports: []Port{{Port: 8080, HostPort: 18080}}}})
	if err != nil {
		t.Fatalf("Repair: %v", err)
	}
	if len(got) != 1 || got[0].IPv4 != a1.IPv4 || got[0].IPv6 != a1.IPv6 {
		t.Fatalf("Repair returned %+v, want c1 with its addresses %v", got, a1.Addresses())
	}
	r.wantHello(r.node.NetNS, "tcp", ap(a1.IPv4, 8080), "c1", a1.Gateway4)
	r.wantHello(r.node.NetNS, "tcp", ap(a1.IPv6, 8080), "c1", a1.Gateway6)
	r.wantHello(r.outside.NetNS, "tcp", ap(r.node.IPv4, 18080), "c1", r.outside.IPv4)
	if r.linkExists(a2.HostVeth) {
		t.Fatal("Repair kept the veth of c2, which the agent no longer has")
	}
	if _, ok := n.Attachments()["c2"]; ok {
		t.Fatal("Repair kept c2's addresses")
	}
	// A veth whose pair the kernel lost is made again.
	r.ipNode("link", "del", a1.HostVeth)
	if _, err := n.Repair(context.Background(), []ContainerRef{{ID: "c1", NetNSPath: c1, Ports: []Port{{Port: 8080, HostPort: 18080}}}}); err != nil {
		t.Fatalf("Repair: %v", err)
	}
	r.wantHello(r.node.NetNS, "tcp", ap(a1.IPv6, 8080), "c1", a1.Gateway6)
}

func TestSetupRefusesOverlappingPrefixes(t *testing.T) {
	r := newRig(t)
	// A route of the node's uplink that covers the next node's prefix.
	other := testCluster.node(4)
	r.ipNode("route", "add", other.IPv4.String(), "dev", "eth0")
	cfg := r.cfg
	cfg.Prefixes = other
	cfg.Bridge = "nexus1"
	cfg.DataDir = t.TempDir()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	err = n.Setup(context.Background())
	if !errors.Is(err, ErrBadPrefix) || !strings.Contains(err.Error(), other.IPv4.String()) || !strings.Contains(err.Error(), "eth0") {
		t.Fatalf("Setup with a prefix the uplink routes: %v, want ErrBadPrefix naming %s and eth0", err, other.IPv4)
	}
}

func TestAttachRejectsBadInput(t *testing.T) {
	r := newRig(t)
	c := r.container("c1")
	for _, tc := range []struct {
		name string
		ref  ContainerRef
		want string
	}{
		{"empty id", ContainerRef{NetNSPath: c}, "container id"},
		{"id with space", ContainerRef{ID: "a b", NetNSPath: c}, "container id"},
		{"relative netns", ContainerRef{ID: "x", NetNSPath: "proc/1/ns/net"}, "absolute path"},
		{"missing netns", ContainerRef{ID: "x", NetNSPath: "/proc/0/ns/net"}, "open its network namespace"},
		{"port 0", ContainerRef{ID: "x", NetNSPath: c, Ports: []Port{{Port: 0, HostPort: 80}}}, "ports[0]: port 0"},
		{"host port too large", ContainerRef{ID: "x", NetNSPath: c, Ports: []Port{{Port: 80, HostPort: 70000}}}, "host port 70000"},
		{"bad protocol", ContainerRef{ID: "x", NetNSPath: c, Ports: []Port{{Port: 80, HostPort: 80, Protocol: "SCTP"}}}, "protocol \"SCTP\""},
		{"host port twice", ContainerRef{ID: "x", NetNSPath: c, Ports: []Port{{Port: 80, HostPort: 80}, {Port: 81, HostPort: 80, Protocol: TCP}}}, "ports[0] and ports[1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.n.Attach(context.Background(), tc.ref)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Attach(%+v): %v, want an error containing %q", tc.ref, err, tc.want)
			}
		})
	}
	if len(r.n.Attachments()) != 0 {
		t.Fatalf("rejected attaches left state: %v", r.n.Attachments())
	}
}

// TestConcurrentAttachAndDetach attaches and detaches containers from
// several goroutines at once, as an agent starting many instances does.
func TestConcurrentAttachAndDetach(t *testing.T) {
	r := newRig(t)
	const n = 8
	paths := make([]string, n)
	for i := range n {
		paths[i] = r.container(fmt.Sprintf("c%d", i))
	}
	got := make([]Attachment, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			got[i], errs[i] = r.n.Attach(context.Background(), ContainerRef{
				ID: fmt.Sprintf("c%d", i), NetNSPath: paths[i], Ports: []Port{{Port: 8080, HostPort: 20000 + i}},
			})
		})
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i, a := range got {
		if errs[i] != nil {
			t.Fatalf("Attach c%d: %v", i, errs[i])
		}
		if j, dup := seen[a.IPv4]; dup {
			t.Fatalf("c%d and c%d both got %s", j, i, a.IPv4)
		}
		seen[a.IPv4] = i
		r.wantHello(r.outside.NetNS, "tcp", ap(r.node.IPv6, 20000+i), fmt.Sprintf("c%d", i), r.outside.IPv6)
	}
	// A restarted node reads back every assignment.
	if back := r.open().Attachments(); len(back) != n || back["c3"].IPv4 != got[3].IPv4 {
		t.Fatalf("state after the attaches: %v", back)
	}
	for i := range n {
		wg.Go(func() { errs[i] = r.n.Detach(context.Background(), fmt.Sprintf("c%d", i)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Detach c%d: %v", i, err)
		}
		if r.linkExists(got[i].HostVeth) {
			t.Fatalf("veth of c%d outlived Detach", i)
		}
	}
	if left := r.n.Attachments(); len(left) != 0 || strings.Contains(r.nft(), "dnat ip to") || strings.Contains(r.nft(), "dnat ip6 to") {
		t.Fatalf("after detaching all: state %v, rules:\n%s", left, r.nft())
	}
}
