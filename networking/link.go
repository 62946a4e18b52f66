package networking

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// dumpRetries bounds the retries of a netlink dump the kernel interrupted
// because the list changed while it was read (ErrDumpInterrupted).
const dumpRetries = 5

func retryDump[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range dumpRetries {
		if v, err = f(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// uplinkMTU is the MTU of the link of the node's default route, IPv4
// first; 1500 without one.
func (n *Node) uplinkMTU() int {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := retryDump(func() ([]netlink.Route, error) { return n.nl.RouteList(nil, fam) })
		if err != nil {
			continue
		}
		for _, r := range routes {
			if r.Dst != nil && !isDefault(r.Dst) || r.LinkIndex == 0 {
				continue
			}
			if l, err := n.nl.LinkByIndex(r.LinkIndex); err == nil && l.Attrs().MTU >= 1280 {
				return l.Attrs().MTU
			}
		}
	}
	return 1500
}

func isDefault(d *net.IPNet) bool {
	ones, _ := d.Mask.Size()
	return ones == 0
}

// bridgeMAC is fixed, so the bridge keeps its address when ports come and
// go (a bridge takes its lowest port's otherwise, and every container's
// neighbour entry for the gateway would go stale). It is locally
// administered and names the node's IPv4 prefix.
func (n *Node) bridgeMAC() net.HardwareAddr {
	b := n.cfg.Prefixes.IPv4.Addr().As4()
	return net.HardwareAddr{0x02, 0x6e, 0x78, b[1], b[2], b[3]}
}

// containerMAC is the MAC address of the container eth0 that holds v4:
// locally administered, ending in the address (as Docker's bridge driver
// does). Addresses are reused as soon as they are released, and with a
// random MAC per veth the next holder of an address was unreachable from
// the containers (and nodes) whose neighbour entry still named the last
// holder's MAC, until the entry went stale: 5 to 45 s of timeouts. It
// cannot equal bridgeMAC, which ends in the prefix's own address.
func containerMAC(v4 netip.Addr) net.HardwareAddr {
	b := v4.As4()
	return net.HardwareAddr{0x02, 0x6e, b[0], b[1], b[2], b[3]}
}

// ensureBridge creates the bridge if it is missing and makes its MTU,
// address, gateway addresses and state right.
func (n *Node) ensureBridge() (netlink.Link, error) {
	name := n.cfg.Bridge
	l, err := n.nl.LinkByName(name)
	switch {
	case isNotFound(err):
		noSnooping := false
		br := &netlink.Bridge{
			LinkAttrs: netlink.LinkAttrs{Name: name, MTU: n.mtu, HardwareAddr: n.bridgeMAC(), TxQLen: -1},
			// Without a querier, snooping can drop the neighbour
			// solicitations IPv6 needs.
			MulticastSnooping: &noSnooping,
		}
		if err := n.nl.LinkAdd(br); err != nil {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		if l, err = n.nl.LinkByName(name); err != nil {
			return nil, fmt.Errorf("find bridge %s after creating it: %w", name, err)
		}
	case err != nil:
		return nil, fmt.Errorf("find bridge %s: %w", name, err)
	case l.Type() != "bridge":
		return nil, fmt.Errorf("%s is a %s link, not a bridge: remove it or configure another bridge name", name, l.Type())
	}
	if l.Attrs().MTU != n.mtu {
		if err := n.nl.LinkSetMTU(l, n.mtu); err != nil {
			return nil, fmt.Errorf("set MTU of bridge %s: %w", name, err)
		}
	}
	if l.Attrs().HardwareAddr.String() != n.bridgeMAC().String() {
		if err := n.nl.LinkSetHardwareAddr(l, n.bridgeMAC()); err != nil {
			return nil, fmt.Errorf("set address of bridge %s: %w", name, err)
		}
	}
	g6, g4 := n.cfg.Prefixes.Gateways()
	want := []netip.Prefix{
		netip.PrefixFrom(g6, n.cfg.Prefixes.IPv6.Bits()),
		netip.PrefixFrom(g4, n.cfg.Prefixes.IPv4.Bits()),
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return n.nl.AddrList(l, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list addresses of bridge %s: %w", name, err)
	}
	have := map[netip.Prefix]bool{}
	for _, a := range addrs {
		p := ipNetPrefix(a.IPNet)
		if p.Addr().IsLinkLocalUnicast() {
			continue
		}
		if p != want[0] && p != want[1] {
			// An address of earlier prefixes would route containers'
			// traffic the wrong way.
			if err := n.nl.AddrDel(l, &a); err != nil {
				return nil, fmt.Errorf("remove stale address %s of bridge %s: %w", p, name, err)
			}
			continue
		}
		have[p] = true
	}
	for _, p := range want {
		if have[p] {
			continue
		}
		// No duplicate address detection: the address is the node's by
		// allocation, and DAD would keep it unusable for a second.
		if err := n.nl.AddrAdd(l, &netlink.Addr{IPNet: prefixIPNet(p), Flags: unix.IFA_F_NODAD}); err != nil {
			return nil, fmt.Errorf("add gateway address %s to bridge %s: %w", p, name, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := n.nl.LinkSetUp(l); err != nil {
			return nil, fmt.Errorf("set bridge %s up: %w", name, err)
		}
	}
	return l, nil
}

// checkOverlap refuses node prefixes that routes of the node's other links
// already cover: containers would be unreachable from there, or make the
// node's own network unreachable.
func (n *Node) checkOverlap(bridgeIndex int) error {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := retryDump(func() ([]netlink.Route, error) { return n.nl.RouteList(nil, fam) })
		if err != nil {
			return fmt.Errorf("list the node's routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst == nil || isDefault(r.Dst) || r.LinkIndex == bridgeIndex {
				continue
			}
			dst := ipNetPrefix(r.Dst)
			for _, p := range []netip.Prefix{n.cfg.Prefixes.IPv6, n.cfg.Prefixes.IPv4} {
				if dst.Overlaps(p) && !dst.Addr().IsLinkLocalUnicast() {
					dev := strconv.Itoa(r.LinkIndex)
					if l, err := n.nl.LinkByIndex(r.LinkIndex); err == nil {
						dev = l.Attrs().Name
					}
					return fmt.Errorf("%w: the node's container prefix %s overlaps the route to %s on %s: configure cluster prefixes that this machine's networks do not use", ErrBadPrefix, p, dst, dev)
				}
			}
		}
	}
	return nil
}

// ensureLink makes a's veth pair exist and be configured: the node end a
// port of the bridge and up, eth0 inside cns with a's addresses and default
// routes, and cns's loopback up.
func (n *Node) ensureLink(a Attachment, cns netns.NsHandle) error {
	br, err := n.nl.LinkByName(n.cfg.Bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s (Setup creates it): %w", n.cfg.Bridge, err)
	}
	host, err := n.nl.LinkByName(a.HostVeth)
	if isNotFound(err) {
		veth := &netlink.Veth{
			LinkAttrs: netlink.LinkAttrs{
				Name: a.HostVeth, MTU: n.mtu, MasterIndex: br.Attrs().Index, TxQLen: -1,
			},
			PeerName:         ContainerIface,
			PeerNamespace:    netlink.NsFd(int(cns)),
			PeerTxQLen:       -1,
			PeerHardwareAddr: containerMAC(a.IPv4),
		}
		if err := n.nl.LinkAdd(veth); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("create veth %s with %s in the container: the container already has a link named %s or the name %s is taken: %w", a.HostVeth, ContainerIface, ContainerIface, a.HostVeth, err)
			}
			return fmt.Errorf("create veth %s: %w", a.HostVeth, err)
		}
		if host, err = n.nl.LinkByName(a.HostVeth); err != nil {
			return fmt.Errorf("find veth %s after creating it: %w", a.HostVeth, err)
		}
	} else if err != nil {
		return fmt.Errorf("find veth %s: %w", a.HostVeth, err)
	}
	if err := n.configureContainer(a, cns); err != nil {
		return err
	}
	if host.Attrs().MasterIndex != br.Attrs().Index {
		if err := n.nl.LinkSetMaster(host, br); err != nil {
			return fmt.Errorf("add veth %s to bridge %s: %w", a.HostVeth, n.cfg.Bridge, err)
		}
	}
	// Hairpin mode: where br_netfilter is on (bridge-nf-call-iptables,
	// as on hosts that run Docker), a container's connection to a service
	// whose chosen backend is the container itself is DNATed at the
	// bridge and sent back out of the port it came in on, which the
	// bridge does only for a port in hairpin mode (kubelet's hairpin-veth
	// does the same).
	if err := n.nl.LinkSetHairpin(host, true); err != nil {
		return fmt.Errorf("set hairpin mode on veth %s: %w", a.HostVeth, err)
	}
	if host.Attrs().Flags&net.FlagUp == 0 {
		if err := n.nl.LinkSetUp(host); err != nil {
			return fmt.Errorf("set veth %s up: %w", a.HostVeth, err)
		}
	}
	// The kernel turns the carrier on, and the bridge starts forwarding
	// on the port, from a work queue after the link goes up; until then
	// frames are dropped and a first connection to the container waits
	// for an ARP retry, a second (measured: 1.01 s without this wait, 1 ms
	// with it).
	if err := waitOperUp(n.nl, a.HostVeth); err != nil {
		return err
	}
	// The kernel drops a link's IPv6 routes while it has no carrier: a
	// bridge without ports lost the service ranges' route Setup made.
	return n.routeServiceRanges(br)
}

// linkUpTimeout bounds the wait for a veth's carrier; it takes well under
// a millisecond on an idle machine.
const linkUpTimeout = 5 * time.Second

// waitOperUp waits until the link name reports operational state up.
func waitOperUp(h *netlink.Handle, name string) error {
	deadline := time.Now().Add(linkUpTimeout)
	for delay := 100 * time.Microsecond; ; delay = min(2*delay, 10*time.Millisecond) {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s: %w", name, err)
		}
		if l.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is not up %v after it was set up (operational state %s)", name, linkUpTimeout, l.Attrs().OperState)
		}
		time.Sleep(delay)
	}
}

// configureContainer sets up loopback and eth0 inside the container's
// namespace. Every step replaces rather than adds, so it can run again.
func (n *Node) configureContainer(a Attachment, cns netns.NsHandle) error {
	h, err := netlink.NewHandleAt(cns, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink in the container's network namespace: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find the container's loopback: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set the container's loopback up: %w", err)
	}
	eth, err := h.LinkByName(ContainerIface)
	if err != nil {
		return fmt.Errorf("find %s in the container (its veth peer is %s): %w", ContainerIface, a.HostVeth, err)
	}
	for _, p := range []netip.Prefix{
		netip.PrefixFrom(a.IPv6, n.cfg.Prefixes.IPv6.Bits()),
		netip.PrefixFrom(a.IPv4, n.cfg.Prefixes.IPv4.Bits()),
	} {
		// No duplicate address detection: the address is the container's
		// by allocation, and DAD would delay its first packets by a second.
		if err := h.AddrReplace(eth, &netlink.Addr{IPNet: prefixIPNet(p), Flags: unix.IFA_F_NODAD}); err != nil {
			return fmt.Errorf("add address %s to the container's %s: %w", p, ContainerIface, err)
		}
	}
	if err := h.LinkSetUp(eth); err != nil {
		return fmt.Errorf("set the container's %s up: %w", ContainerIface, err)
	}
	for _, gw := range []netip.Addr{a.Gateway6, a.Gateway4} {
		r := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: net.IP(gw.AsSlice()), Scope: netlink.SCOPE_UNIVERSE}
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("add the container's default route via %s: %w", gw, err)
		}
	}
	return nil
}

// deleteLink deletes the node end of a veth pair (the kernel deletes the
// container end with it); a missing link is not an error.
func (n *Node) deleteLink(name string) error {
	l, err := n.nl.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find veth %s: %w", name, err)
	}
	if err := n.nl.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete veth %s: %w", name, err)
	}
	return nil
}

// removeStrayVeths deletes veths with this package's name prefix that are
// ports of the bridge (or of no bridge) and belong to no container in keep.
func (n *Node) removeStrayVeths(keep map[string]bool) error {
	want := map[string]bool{}
	for id := range keep {
		want[vethName(id)] = true
	}
	br, err := n.nl.LinkByName(n.cfg.Bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", n.cfg.Bridge, err)
	}
	links, err := retryDump(n.nl.LinkList)
	if err != nil {
		return fmt.Errorf("list the node's links: %w", err)
	}
	var errs []error
	for _, l := range links {
		a := l.Attrs()
		if l.Type() != "veth" || !strings.HasPrefix(a.Name, vethPrefix) || want[a.Name] ||
			(a.MasterIndex != 0 && a.MasterIndex != br.Attrs().Index) {
			continue
		}
		if err := n.deleteLink(a.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		n.log.Info("networking: deleted a veth of no container", "veth", a.Name)
	}
	return errors.Join(errs...)
}

type sysctl struct{ key, value string }

// setSysctls writes /proc/sys/<key> inside the namespace ns, skipping keys
// that already have the value (turning forwarding on again resets per
// interface settings). /proc/sys/net shows the namespace of the thread
// that opens it, so the writes run on a thread that joined ns.
func setSysctls(ns netns.NsHandle, kv []sysctl) error {
	errc := make(chan error, 1)
	go func() {
		// The goroutine exits without UnlockOSThread, so the runtime
		// discards the thread rather than reuse it in the wrong namespace.
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter the node's network namespace: %w", err)
			return
		}
		for _, s := range kv {
			path := filepath.Join("/proc/sys", s.key)
			if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) == s.value {
				continue
			}
			if err := os.WriteFile(path, []byte(s.value), 0o644); err != nil {
				errc <- fmt.Errorf("set sysctl %s=%s: %w", strings.ReplaceAll(s.key, "/", "."), s.value, err)
				return
			}
		}
		errc <- nil
	}()
	return <-errc
}

func ipNetPrefix(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
