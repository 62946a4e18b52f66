package ebpf

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"nexus.dev/nexus/internal/netnsutil"
	"nexus.dev/nexus/internal/testnet"
	"nexus.dev/nexus/networking/lb"
)

// bigTable is n frontends of 10 backends each.
func bigTable(n int) lb.Table {
	t := make(lb.Table, n)
	for i := range t {
		t[i].Frontend = lb.Frontend{Addr: netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("fd00:5e::%x:%x", i>>16, i&0xffff)), 80), Proto: lb.TCP}
		t[i].Service = fmt.Sprintf("default/svc-%d", i)
		for j := range 10 {
			t[i].Backends = append(t[i].Backends, netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("fd00:1:%x::%x", i, j+1)), 8080))
		}
	}
	return t
}

// BenchmarkSync is the Go side of Sync (plan and map writes) for 10,000
// frontends of 10 backends.
func BenchmarkSync(b *testing.B) {
	dp := newDataPath(b)
	full := bigTable(10000)
	changed := make(lb.Table, len(full))
	copy(changed, full)
	changed[5000].Backends = append(changed[5000].Backends[1:], netip.MustParseAddrPort("[fd00:2::1]:8080"))

	b.Run("from-empty", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			syncTable(b, dp)
			b.StartTimer()
			syncTable(b, dp, full...)
		}
	})
	b.Run("one-backend-changed", func(b *testing.B) {
		syncTable(b, dp, full...)
		tables := []lb.Table{changed, full}
		i := 0
		for b.Loop() {
			syncTable(b, dp, tables[i%2]...)
			i++
		}
	})
	b.Run("unchanged", func(b *testing.B) {
		for b.Loop() {
			syncTable(b, dp, full...)
		}
	})
}

// BenchmarkConnect is a TCP connect(2) and close from one network
// namespace to a server in another: straight to the server without the
// programs, straight to it with the programs attached (the cost every
// connection on the host pays), and through a frontend.
func BenchmarkConnect(b *testing.B) {
	n := testnet.New(b, testnet.Options{Hosts: 2})
	client, server := n.Hosts[0], n.Hosts[1]
	serveTCP(b, server, "[::]", server.Name)
	backend := netip.AddrPortFrom(server.IPv6, tcpPort)
	// The first connection waits for neighbour discovery.
	if c, _, err := dial(client, backend); err != nil {
		b.Fatal(err)
	} else {
		c.Close()
	}
	connect := func(b *testing.B, addr netip.AddrPort) {
		err := netnsutil.Run(client.NetNS, func() error {
			for b.Loop() {
				c, err := net.Dial("tcp", addr.String())
				if err != nil {
					return err
				}
				c.Close()
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.Run("direct", func(b *testing.B) { connect(b, backend) })
	dp := newDataPath(b)
	allow(b, dp, client)
	fe := netip.AddrPortFrom(vip6, frontPort)
	syncTable(b, dp, lb.Entry{Frontend: lb.Frontend{Addr: fe, Proto: lb.TCP}, Backends: []netip.AddrPort{backend}})
	b.Run("direct-hooked", func(b *testing.B) { connect(b, backend) })
	b.Run("frontend", func(b *testing.B) { connect(b, fe) })
}
