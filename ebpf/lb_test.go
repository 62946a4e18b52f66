package ebpf

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/netnsutil"
	"nexus.dev/nexus/internal/testnet"
	"nexus.dev/nexus/networking/lb"
	"nexus.dev/nexus/runtime/cgroups"
)

// The services' virtual addresses. Nothing routes them: only the
// connect-time rewrite makes them reachable.
var (
	vip6 = netip.MustParseAddr("fd00:5e::10")
	vip4 = netip.MustParseAddr("10.96.0.10")
)

const (
	tcpPort     = 8080 // the backends' TCP server (hello, then echo)
	dnsPort     = 5353 // the backends' DNS server
	frontPort   = 80
	frontDNS    = 53
	connections = 3000
)

// world is a client host, h0, whose network namespace the data path
// balances, and backend hosts h1.. that each serve TCP and DNS.
type world struct {
	net      *testnet.Network
	client   *testnet.Host
	backends []*testnet.Host
	dp       *DataPath
}

func newWorld(t *testing.T, backends int) *world {
	t.Helper()
	n := testnet.New(t, testnet.Options{Hosts: backends + 2})
	w := &world{net: n, client: n.Hosts[0], backends: n.Hosts[1 : backends+1]}
	for _, h := range w.backends {
		serveTCP(t, h, "[::]", h.Name)
		serveDNS(t, h)
	}
	w.dp = newDataPath(t)
	allow(t, w.dp, w.client)
	return w
}

// outsider is a host whose namespace is not allowed.
func (w *world) outsider() *testnet.Host { return w.net.Hosts[len(w.net.Hosts)-1] }

func newDataPath(t testing.TB) *DataPath {
	t.Helper()
	dp, err := New(Config{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := dp.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return dp
}

func allow(t testing.TB, dp *DataPath, h *testnet.Host) uint64 {
	t.Helper()
	c, err := NetnsCookie(h.NetNS)
	if err != nil {
		t.Fatal(err)
	}
	if err := dp.AllowNetns(c); err != nil {
		t.Fatal(err)
	}
	return c
}

func (w *world) backendAddrs(family netip.Addr, port uint16, hosts ...*testnet.Host) []netip.AddrPort {
	var out []netip.AddrPort
	for _, h := range hosts {
		a := h.IPv6
		if family.Is4() {
			a = h.IPv4
		}
		out = append(out, netip.AddrPortFrom(a, port))
	}
	return out
}

func (w *world) tcpEntry(vip netip.Addr, hosts ...*testnet.Host) lb.Entry {
	return lb.Entry{Frontend: lb.Frontend{Addr: netip.AddrPortFrom(vip, frontPort), Proto: lb.TCP},
		Service: "default/web", Backends: w.backendAddrs(vip, tcpPort, hosts...)}
}

func (w *world) dnsEntry(vip netip.Addr, hosts ...*testnet.Host) lb.Entry {
	return lb.Entry{Frontend: lb.Frontend{Addr: netip.AddrPortFrom(vip, frontDNS), Proto: lb.UDP},
		Service: "default/dns", Backends: w.backendAddrs(vip, dnsPort, hosts...)}
}

func syncTable(t testing.TB, dp *DataPath, entries ...lb.Entry) {
	t.Helper()
	if err := dp.Sync(lb.Table(entries)); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

// serveTCP answers each connection with name, then echoes lines.
func serveTCP(t testing.TB, h *testnet.Host, addr, name string) {
	t.Helper()
	testnet.ServeTCP(t, h.NetNS, net.JoinHostPort(strings.Trim(addr, "[]"), fmt.Sprint(tcpPort)), func(c net.Conn) {
		fmt.Fprintln(c, name)
		testnet.EchoLines(c)
	})
}

// serveDNS answers A and AAAA questions with the host's own addresses, so
// the answer says which backend gave it.
func serveDNS(t testing.TB, h *testnet.Host) {
	t.Helper()
	var pc net.PacketConn
	if err := h.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", fmt.Sprintf("[::]:%d", dnsPort))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp, err := dnsAnswer(buf[:n], h); err == nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
}

func dnsAnswer(query []byte, h *testnet.Host) ([]byte, error) {
	var p dnsmessage.Parser
	hdr, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: hdr.ID, Response: true, Authoritative: true, RecursionDesired: hdr.RecursionDesired})
	b.EnableCompression()
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}
	switch q.Type {
	case dnsmessage.TypeA:
		b.AResource(rh, dnsmessage.AResource{A: h.IPv4.As4()})
	case dnsmessage.TypeAAAA:
		b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: h.IPv6.As16()})
	}
	return b.Finish()
}

func dnsQuery(id uint16, name string, typ dnsmessage.Type) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET})
	msg, err := b.Finish()
	if err != nil {
		panic(err)
	}
	return msg
}

// dnsAnswerAddr is the address in a response to dnsQuery(id, …).
func dnsAnswerAddr(resp []byte, id uint16) (netip.Addr, error) {
	var p dnsmessage.Parser
	hdr, err := p.Start(resp)
	if err != nil {
		return netip.Addr{}, err
	}
	if hdr.ID != id || !hdr.Response {
		return netip.Addr{}, fmt.Errorf("response id %d, want %d", hdr.ID, id)
	}
	p.SkipAllQuestions()
	rh, err := p.AnswerHeader()
	if err != nil {
		return netip.Addr{}, err
	}
	switch rh.Type {
	case dnsmessage.TypeA:
		r, err := p.AResource()
		return netip.AddrFrom4(r.A), err
	case dnsmessage.TypeAAAA:
		r, err := p.AAAAResource()
		return netip.AddrFrom16(r.AAAA), err
	}
	return netip.Addr{}, fmt.Errorf("answer of type %v", rh.Type)
}

// dial connects from h and returns the connection and the first line
// the server sent (its name).
func dial(h *testnet.Host, addr netip.AddrPort) (net.Conn, string, error) {
	c, err := netnsutil.Dial(context.Background(), h.NetNS, "tcp", addr.String())
	if err != nil {
		return nil, "", err
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	name, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		return nil, "", fmt.Errorf("read the server's name through %s: %w", addr, err)
	}
	return c, strings.TrimSpace(name), nil
}

// spread makes n connections from h to addr and counts them per server.
func spread(t testing.TB, h *testnet.Host, addr netip.AddrPort, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	err := netnsutil.Run(h.NetNS, func() error {
		for range n {
			c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
			if err != nil {
				return err
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			name, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err != nil {
				return err
			}
			got[strings.TrimSpace(name)]++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("connect from %s to %s: %v", h, addr, err)
	}
	return got
}

func peerOf(t testing.TB, c syscall.Conn) netip.AddrPort {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var sa unix.Sockaddr
	var gerr error
	rc.Control(func(fd uintptr) { sa, gerr = unix.Getpeername(int(fd)) })
	if gerr != nil {
		t.Fatalf("getpeername: %v", gerr)
	}
	return sockaddrAddrPort(sa)
}

func sockaddrAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

func TestTCPSpreadsEvenlyOverBackends(t *testing.T) {
	w := newWorld(t, 3)
	syncTable(t, w.dp, w.tcpEntry(vip6, w.backends...), w.tcpEntry(vip4, w.backends...))
	for _, vip := range []netip.Addr{vip6, vip4} {
		t.Run(vip.String(), func(t *testing.T) {
			fe := netip.AddrPortFrom(vip, frontPort)
			got := spread(t, w.client, fe, connections)
			even := connections / len(w.backends)
			for _, h := range w.backends {
				if n := got[h.Name]; n < even*85/100 || n > even*115/100 {
					t.Errorf("backend %s got %d of %d connections, want %d ± 15 %% (all: %v)", h, n, connections, even, got)
				}
			}
			c, _, err := dial(w.client, fe)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if peer := peerOf(t, c.(*net.TCPConn)); peer != fe {
				t.Errorf("getpeername of a connection to %s = %s, want the frontend", fe, peer)
			}
		})
	}
}

// An AF_INET6 socket that connects to the v4-mapped frontend is balanced
// like an AF_INET one.
func TestTCPV4MappedFrontend(t *testing.T) {
	w := newWorld(t, 1)
	syncTable(t, w.dp, w.tcpEntry(vip4, w.backends...))
	err := netnsutil.Run(w.client.NetNS, func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrInet6{Addr: netip.AddrFrom16(vip4.As16()).As16(), Port: frontPort}
		if err := unix.Connect(fd, sa); err != nil {
			return fmt.Errorf("connect to [::ffff:%s]:%d: %w", vip4, frontPort, err)
		}
		buf := make([]byte, 16)
		n, err := unix.Read(fd, buf)
		if err != nil {
			return err
		}
		if got := strings.TrimSpace(string(buf[:n])); got != w.backends[0].Name {
			return fmt.Errorf("reached %q, want %s", got, w.backends[0])
		}
		peer, err := unix.Getpeername(fd)
		if err != nil {
			return err
		}
		if got := sockaddrAddrPort(peer); got != netip.AddrPortFrom(vip4, frontPort) {
			return fmt.Errorf("getpeername = %s, want the frontend", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRemovedBackendKeepsItsConnections(t *testing.T) {
	w := newWorld(t, 3)
	fe := netip.AddrPortFrom(vip6, frontPort)
	syncTable(t, w.dp, w.tcpEntry(vip6, w.backends...))
	leaving := w.backends[2]
	var kept net.Conn
	for i := 0; kept == nil && i < 200; i++ {
		c, name, err := dial(w.client, fe)
		if err != nil {
			t.Fatal(err)
		}
		if name == leaving.Name {
			kept = c
		} else {
			c.Close()
		}
	}
	if kept == nil {
		t.Fatalf("200 connections to %s never reached %s", fe, leaving)
	}
	defer kept.Close()

	syncTable(t, w.dp, w.tcpEntry(vip6, w.backends[:2]...))
	got := spread(t, w.client, fe, 300)
	if got[leaving.Name] != 0 || got[w.backends[0].Name] == 0 || got[w.backends[1].Name] == 0 {
		t.Errorf("after removing %s, 300 connections went %v", leaving, got)
	}
	r := bufio.NewReader(kept)
	if _, err := fmt.Fprintln(kept, "still there?"); err != nil {
		t.Fatalf("write on the connection to the removed backend: %v", err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "still there?\n" {
		t.Fatalf("the connection to the removed backend: read %q, %v", line, err)
	}

	// Adding it back makes it reachable again.
	syncTable(t, w.dp, w.tcpEntry(vip6, w.backends...))
	if got := spread(t, w.client, fe, 300); got[leaving.Name] == 0 {
		t.Errorf("after adding %s back, 300 connections went %v", leaving, got)
	}
}

func TestNoBackendRefusesAtOnce(t *testing.T) {
	w := newWorld(t, 1)
	for _, vip := range []netip.Addr{vip6, vip4} {
		t.Run(vip.String(), func(t *testing.T) {
			syncTable(t, w.dp, w.tcpEntry(vip), w.dnsEntry(vip))
			start := time.Now()
			_, _, err := dial(w.client, netip.AddrPortFrom(vip, frontPort))
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("TCP connect to a frontend without backends: %v, want ECONNREFUSED", err)
			}
			dns := netip.AddrPortFrom(vip, frontDNS)
			_, err = netnsutil.Dial(context.Background(), w.client.NetNS, "udp", dns.String())
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("UDP connect to a frontend without backends: %v, want ECONNREFUSED", err)
			}
			err = netnsutil.Run(w.client.NetNS, func() error {
				pc, err := net.ListenUDP("udp", nil)
				if err != nil {
					return err
				}
				defer pc.Close()
				_, err = pc.WriteToUDPAddrPort(dnsQuery(1, "web.", dnsmessage.TypeA), dns)
				return err
			})
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("UDP sendmsg to a frontend without backends: %v, want ECONNREFUSED", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("refusing took %v", d)
			}

			// Once a backend is ready, the same frontends work.
			syncTable(t, w.dp, w.tcpEntry(vip, w.backends...), w.dnsEntry(vip, w.backends...))
			c, _, err := dial(w.client, netip.AddrPortFrom(vip, frontPort))
			if err != nil {
				t.Fatalf("connect after a backend was added: %v", err)
			}
			c.Close()
		})
	}
}

func TestUDPDNSThroughFrontend(t *testing.T) {
	w := newWorld(t, 2)
	syncTable(t, w.dp, w.dnsEntry(vip6, w.backends...), w.dnsEntry(vip4, w.backends...))
	for _, vip := range []netip.Addr{vip6, vip4} {
		fe := netip.AddrPortFrom(vip, frontDNS)
		t.Run(vip.String()+"/resolver", func(t *testing.T) {
			// Go's own resolver, over a connected UDP socket.
			r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return netnsutil.Dial(ctx, w.client.NetNS, "udp", fe.String())
			}}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			addrs, err := r.LookupNetIP(ctx, "ip6", "web.default.svc.cluster.local")
			if err != nil {
				t.Fatalf("resolve through %s: %v", fe, err)
			}
			if len(addrs) != 1 || !slices.ContainsFunc(w.backends, func(h *testnet.Host) bool { return h.IPv6 == addrs[0] }) {
				t.Errorf("resolved %v, want one backend's address", addrs)
			}
		})
		t.Run(vip.String()+"/connected", func(t *testing.T) {
			c, err := netnsutil.Dial(context.Background(), w.client.NetNS, "udp", fe.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if peer := peerOf(t, c.(*net.UDPConn)); peer != fe {
				t.Errorf("getpeername of a UDP socket connected to %s = %s", fe, peer)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(dnsQuery(7, "web.", dnsmessage.TypeA)); err != nil {
				t.Fatal(err)
			}
			// recvfrom, as a resolver that checks the source does.
			rc, _ := c.(*net.UDPConn).SyscallConn()
			buf := make([]byte, 1500)
			var n int
			var from unix.Sockaddr
			var rerr error
			if err := rc.Read(func(fd uintptr) bool {
				n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
				return rerr != unix.EAGAIN
			}); err != nil || rerr != nil {
				t.Fatalf("recvfrom: %v %v", err, rerr)
			}
			if src := sockaddrAddrPort(from); src != fe {
				t.Errorf("the answer came from %s, want the frontend %s", src, fe)
			}
			if _, err := dnsAnswerAddr(buf[:n], 7); err != nil {
				t.Error(err)
			}
		})
		t.Run(vip.String()+"/unconnected", func(t *testing.T) {
			err := netnsutil.Run(w.client.NetNS, func() error {
				network := "udp6"
				if vip.Is4() {
					network = "udp4"
				}
				pc, err := net.ListenUDP(network, nil)
				if err != nil {
					return err
				}
				defer pc.Close()
				pc.SetDeadline(time.Now().Add(5 * time.Second))
				seen := map[netip.Addr]bool{}
				for id := range uint16(40) {
					if _, err := pc.WriteToUDPAddrPort(dnsQuery(id, "web.", dnsmessage.TypeAAAA), fe); err != nil {
						return err
					}
					buf := make([]byte, 1500)
					n, from, err := pc.ReadFromUDPAddrPort(buf)
					if err != nil {
						return err
					}
					if from = normal(from); from != fe {
						return fmt.Errorf("answer %d came from %s, want the frontend %s", id, from, fe)
					}
					a, err := dnsAnswerAddr(buf[:n], id)
					if err != nil {
						return err
					}
					seen[a] = true
				}
				if len(seen) != len(w.backends) {
					return fmt.Errorf("40 queries were answered by %v, want every backend", seen)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestOnlyAllowedNamespacesAreRewritten(t *testing.T) {
	w := newWorld(t, 1)
	out := w.outsider()
	// The outsider has the virtual address itself, with a server of its own.
	if b, err := out.Command(context.Background(), "ip", "addr", "add", vip4.String()+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v: %s", err, b)
	}
	serveTCP(t, out, vip4.String(), "outsider")
	entry := w.tcpEntry(vip4, w.backends...)
	// Both frontend and backend use tcpPort, so the outsider's own server
	// answers when nothing is rewritten.
	entry.Frontend.Addr = netip.AddrPortFrom(vip4, tcpPort)
	syncTable(t, w.dp, entry)
	fe := entry.Frontend.Addr

	reach := func() string {
		c, name, err := dial(out, fe)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		return name
	}
	if got := reach(); got != "outsider" {
		t.Fatalf("a namespace not allowed reached %s, want its own server", got)
	}
	cookie := allow(t, w.dp, out)
	if got := reach(); got != w.backends[0].Name {
		t.Fatalf("once allowed, it reached %s, want %s", got, w.backends[0])
	}
	if err := w.dp.ForgetNetns(cookie); err != nil {
		t.Fatal(err)
	}
	if got := reach(); got != "outsider" {
		t.Fatalf("once forgotten, it reached %s, want its own server", got)
	}
}

func TestSessionAffinity(t *testing.T) {
	w := newWorld(t, 3)
	fe := netip.AddrPortFrom(vip6, frontPort)
	sticky := w.tcpEntry(vip6, w.backends...)
	sticky.Affinity = time.Hour
	syncTable(t, w.dp, sticky)
	got := spread(t, w.client, fe, 50)
	if len(got) != 1 {
		t.Fatalf("50 connections with affinity went to %v, want one backend", got)
	}
	var first string
	for name := range got {
		first = name
	}
	// Without its backend, the client is given another, and keeps it.
	var rest []*testnet.Host
	for _, h := range w.backends {
		if h.Name != first {
			rest = append(rest, h)
		}
	}
	sticky.Backends = w.backendAddrs(vip6, tcpPort, rest...)
	syncTable(t, w.dp, sticky)
	if got := spread(t, w.client, fe, 50); len(got) != 1 || got[first] != 0 {
		t.Fatalf("after removing %s, 50 connections went to %v, want one other backend", first, got)
	}

	// An affinity ends when the client stays away longer than its timeout.
	sticky.Backends = w.backendAddrs(vip6, tcpPort, w.backends...)
	sticky.Affinity = 20 * time.Millisecond
	syncTable(t, w.dp, sticky)
	seen := map[string]bool{}
	for range 20 {
		for name := range spread(t, w.client, fe, 1) {
			seen[name] = true
		}
		time.Sleep(30 * time.Millisecond)
	}
	if len(seen) < 2 {
		t.Errorf("20 connections 30 ms apart with a 20 ms affinity all went to %v", seen)
	}
}

// mapIDs reads every key of the maps that hold frontend state, by the
// frontend id each belongs to.
func mapIDs(t testing.TB, dp *DataPath) (frontends []lbFrontend, ids map[string][]uint32) {
	t.Helper()
	ids = map[string][]uint32{}
	collect := func(m *ebpf.Map, name string, id func(k, v []byte) uint32) {
		k := make([]byte, m.KeySize())
		v := make([]byte, m.ValueSize())
		it := m.Iterate()
		for it.Next(&k, &v) {
			ids[name] = append(ids[name], id(k, v))
		}
		if err := it.Err(); err != nil {
			t.Fatalf("read map %s: %v", name, err)
		}
	}
	o := &dp.objs
	var fk lbFrontendKey
	var fv lbFrontend
	it := o.Frontends.Iterate()
	for it.Next(&fk, &fv) {
		frontends = append(frontends, fv)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	le := func(b []byte) uint32 { return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24 }
	collect(o.Slots, "slots", func(k, _ []byte) uint32 { return le(k) })
	collect(o.Members, "members", func(k, _ []byte) uint32 { return le(k) })
	collect(o.Affinities, "affinities", func(k, _ []byte) uint32 { return le(k[8:]) })
	collect(o.Origins, "origins", func(_, v []byte) uint32 { return le(v[20:]) })
	return frontends, ids
}

func TestRemovedFrontendLeavesNoMapEntry(t *testing.T) {
	w := newWorld(t, 2)
	web := w.tcpEntry(vip6, w.backends...)
	web.Affinity = time.Hour
	dns := w.dnsEntry(vip4, w.backends...)
	dns.Affinity = time.Hour
	syncTable(t, w.dp, web, dns)
	spread(t, w.client, web.Frontend.Addr, 3)
	err := netnsutil.Run(w.client.NetNS, func() error {
		pc, err := net.ListenUDP("udp4", nil)
		if err != nil {
			return err
		}
		defer pc.Close()
		_, err = pc.WriteToUDPAddrPort(dnsQuery(1, "web.", dnsmessage.TypeA), dns.Frontend.Addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	webID, dnsID := w.dp.frontends[web.Frontend].id, w.dp.frontends[dns.Frontend].id
	_, ids := mapIDs(t, w.dp)
	for _, m := range []string{"slots", "members", "affinities", "origins"} {
		if !slices.Contains(ids[m], webID) || !slices.Contains(ids[m], dnsID) {
			t.Fatalf("before the removal, map %s has ids %v, want both %d and %d", m, ids[m], webID, dnsID)
		}
	}

	syncTable(t, w.dp, dns)
	fes, ids := mapIDs(t, w.dp)
	if len(fes) != 1 || fes[0].Id != dnsID || fes[0].Count != 2 {
		t.Errorf("frontends after removing %s: %+v", web.Frontend, fes)
	}
	for m, got := range ids {
		if slices.Contains(got, webID) || !slices.Contains(got, dnsID) {
			t.Errorf("map %s after removing frontend %d: ids %v", m, webID, got)
		}
	}

	syncTable(t, w.dp)
	if fes, ids := mapIDs(t, w.dp); len(fes) != 0 || len(ids) != 0 {
		t.Errorf("after an empty Sync the maps still hold frontends %+v and entries %v", fes, ids)
	}
}

// A Sync that changes one backend leaves the slots of the others as they
// were.
func TestSyncKeepsStayingBackendsInPlace(t *testing.T) {
	dp := newDataPath(t)
	fe := lb.Frontend{Addr: netip.MustParseAddrPort("[fd00:5e::1]:80"), Proto: lb.TCP}
	b := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("fd00:1::%x", i)), 80)
	}
	syncTable(t, dp, lb.Entry{Frontend: fe, Backends: []netip.AddrPort{b(1), b(2), b(3), b(4)}})
	slotsOf := func() map[uint32]netip.AddrPort {
		out := map[uint32]netip.AddrPort{}
		var k lbSlotKey
		var v lbBackend
		it := dp.objs.Slots.Iterate()
		for it.Next(&k, &v) {
			out[k.Slot] = fromBackend(v)
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	before := slotsOf()
	syncTable(t, dp, lb.Entry{Frontend: fe, Backends: []netip.AddrPort{b(1), b(3), b(4), b(5)}})
	after := slotsOf()
	if len(after) != 4 {
		t.Fatalf("slots after the change: %v", after)
	}
	for slot, be := range before {
		if be != b(2) && after[slot] != be {
			t.Errorf("slot %d held %s, now %s", slot, be, after[slot])
		}
	}
	syncTable(t, dp, lb.Entry{Frontend: fe, Backends: []netip.AddrPort{b(4)}})
	if after := slotsOf(); len(after) != 1 || after[0] != b(4) {
		t.Errorf("slots after shrinking to one backend: %v", after)
	}
}

func fromBackend(v lbBackend) netip.AddrPort {
	var b [16]byte
	for i, w := range v.Addr {
		binary.NativeEndian.PutUint32(b[4*i:], w)
	}
	var p [2]byte
	binary.NativeEndian.PutUint16(p[:], v.Port)
	return netip.AddrPortFrom(netip.AddrFrom16(b).Unmap(), binary.BigEndian.Uint16(p[:]))
}

func TestCloseLeavesNothingAttached(t *testing.T) {
	dp, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() }) // on failure; the test closes it itself
	progs, err := dp.programIDs()
	if err != nil {
		t.Fatal(err)
	}
	var mapIDs []ebpf.MapID
	for _, m := range []*ebpf.Map{dp.objs.AllowedNetns, dp.objs.Frontends, dp.objs.Slots, dp.objs.Members, dp.objs.Affinities, dp.objs.Origins} {
		info, err := m.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		mapIDs = append(mapIDs, id)
	}
	root, err := cgroups.V2Root()
	if err != nil {
		t.Fatal(err)
	}
	attached := func() []ebpf.ProgramID {
		cg, err := os.Open(root)
		if err != nil {
			t.Fatal(err)
		}
		defer cg.Close()
		var ids []ebpf.ProgramID
		for _, h := range dp.objs.hooks() {
			res, err := link.QueryPrograms(link.QueryOptions{Target: int(cg.Fd()), Attach: h.at})
			if err != nil {
				t.Fatalf("query the programs on %s: %v", root, err)
			}
			for _, p := range res.Programs {
				if slices.Contains(progs, p.ID) {
					ids = append(ids, p.ID)
				}
			}
		}
		return ids
	}
	if got := attached(); len(got) != len(progs) {
		t.Fatalf("programs %v of ours attached to %s, want all of %v", got, root, progs)
	}
	if err := dp.Close(); err != nil {
		t.Fatal(err)
	}
	if got := attached(); len(got) != 0 {
		t.Errorf("after Close, programs %v are still attached to %s", got, root)
	}
	for _, id := range progs {
		if p, err := ebpf.NewProgramFromID(id); err == nil {
			p.Close()
			t.Errorf("after Close, program %d still exists", id)
		}
	}
	// Maps are freed once the programs using them are, after an RCU grace
	// period.
	deadline := time.Now().Add(5 * time.Second)
	for _, id := range mapIDs {
		for {
			m, err := ebpf.NewMapFromID(id)
			if err != nil {
				break
			}
			m.Close()
			if time.Now().After(deadline) {
				t.Errorf("5 s after Close, map %d still exists", id)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func TestNetnsCookie(t *testing.T) {
	n := testnet.New(t, testnet.Options{Hosts: 2})
	self, err := NetnsCookie("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	a, errA := NetnsCookie(n.Hosts[0].NetNS)
	a2, errA2 := NetnsCookie(n.Hosts[0].NetNS)
	b, errB := NetnsCookie(n.Hosts[1].NetNS)
	if err := errors.Join(errA, errA2, errB); err != nil {
		t.Fatal(err)
	}
	if a != a2 || a == b || a == self || b == self {
		t.Errorf("cookies: self %d, h0 %d and %d, h1 %d; want h0's twice the same and all others different", self, a, a2, b)
	}
	if _, err := NetnsCookie("/nonexistent"); err == nil || !strings.Contains(err.Error(), "/nonexistent") {
		t.Errorf("NetnsCookie of a missing path: %v", err)
	}
}

func TestSyncRejectsBadTables(t *testing.T) {
	dp := newDataPath(t)
	fe := lb.Frontend{Addr: netip.MustParseAddrPort("10.96.0.1:80"), Proto: lb.TCP}
	err := dp.Sync(lb.Table{{Frontend: fe, Service: "default/web", Backends: []netip.AddrPort{netip.MustParseAddrPort("[fd00::1]:80")}}})
	if err == nil || !strings.Contains(err.Error(), "other address family") {
		t.Errorf("Sync of a v6 backend behind a v4 frontend: %v", err)
	}
	if _, ids := mapIDs(t, dp); len(ids) != 0 {
		t.Errorf("a rejected table wrote %v", ids)
	}
	dp.Close()
	if err := dp.Sync(nil); !errors.Is(err, errClosed) {
		t.Errorf("Sync after Close: %v", err)
	}
}
