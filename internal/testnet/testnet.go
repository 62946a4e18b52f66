// Package testnet turns one machine into N network hosts for integration
// tests. Each host is a network namespace with loopback and one veth, eth0,
// whose peer is a port of a bridge that lives in a further namespace the
// harness owns, so nothing is added to the root namespace and traffic never
// leaves the namespaces a test created. Hosts get an IPv6 ULA and an IPv4
// address, can run processes (Host.Command) and Go code (Host.Do), and can be
// partitioned and healed to test how Nexus behaves when the network splits.
//
// Everything is removed when the test ends. Namespaces are named
// "nxt-<pid>-<id>-<role>"; New removes those left by earlier runs whose
// creating process is gone, and leaves those of live test binaries alone.
package testnet

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/testutil"
)

const (
	// nsPrefix marks namespaces made by this package; stale cleanup relies on it.
	nsPrefix = "nxt-"
	// netnsDir is where `ip netns` keeps the bind mounts that name namespaces.
	netnsDir = "/run/netns"
	// bridgeName names the bridge inside the bridge namespace.
	bridgeName = "br0"
	// hostIface names each host's only non-loopback interface.
	hostIface = "eth0"
	// nftTable holds the pair-partition rules inside a host namespace.
	nftTable = "nxt_partition"
	// cmdTimeout bounds each ip/nft invocation so a wedged tool cannot hang a test.
	cmdTimeout = 10 * time.Second
	// exitTimeout bounds how long Close waits for killed processes to exit.
	exitTimeout = 5 * time.Second
	// maxHosts keeps host numbers inside one /24 and out of its broadcast address.
	maxHosts = 250
)

var (
	ipv4Prefix = netip.MustParsePrefix("10.77.0.0/24")
	ipv6Prefix = netip.MustParsePrefix("fd6e:7874:6e00::/64")
)

// Options configures a Network.
type Options struct {
	// Hosts is the number of hosts, 1 to 250.
	Hosts int
}

// Network is a set of hosts joined by one bridge.
type Network struct {
	// Hosts are the hosts in creation order. Host i has the addresses
	// 10.77.0.<i+1>/24 and fd6e:7874:6e00::<i+1>/64.
	Hosts []*Host

	t        testing.TB
	id       string // "<pid>-<random>", shared by all namespaces of this network
	bridgeNS string

	mu          sync.Mutex
	isolated    map[*Host]bool
	pairs       map[[2]*Host]bool // key ordered by host index
	cmds        []*exec.Cmd
	closed      bool
	closeErr    error
	nsToDelete  []string // namespaces created so far, bridge first
	linksToDrop []string // bridge-namespace links created so far
}

// Host is one network namespace on the bridge.
type Host struct {
	// Name is short and unique within the network: "h0", "h1", ...
	Name string
	// NetNS is the path of the namespace's bind mount, usable with
	// setns(2), nsenter --net= or `ip netns exec` (by its base name).
	NetNS string
	// IPv4 and IPv6 are the addresses of eth0.
	IPv4 netip.Addr
	IPv6 netip.Addr

	net    *Network
	index  int
	nsName string
	port   string // the bridge port that is eth0's peer
}

// New creates a network of opts.Hosts hosts and registers its removal with
// t.Cleanup. It skips the test when it is not root or ip/nft are missing, and
// fails it when the network cannot be built.
func New(t testing.TB, opts Options) *Network {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireProgram(t, "ip", "iproute2")
	testutil.RequireProgram(t, "nft", "nftables")
	if opts.Hosts < 1 || opts.Hosts > maxHosts {
		t.Fatalf("testnet: Options.Hosts is %d, want 1 to %d", opts.Hosts, maxHosts)
	}
	if err := RemoveStale(); err != nil {
		t.Fatalf("testnet: %v", err)
	}
	n := &Network{
		t:        t,
		id:       strconv.Itoa(os.Getpid()) + "-" + randomHex(3),
		isolated: map[*Host]bool{},
		pairs:    map[[2]*Host]bool{},
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("testnet: %v", err)
		}
	})
	if err := n.build(opts.Hosts); err != nil {
		t.Fatalf("testnet: %v", err)
	}
	return n
}

func (n *Network) build(hosts int) error {
	n.bridgeNS = nsPrefix + n.id + "-br"
	if err := n.addNS(n.bridgeNS); err != nil {
		return err
	}
	// The bridge namespace only switches frames; without IPv6 its ports
	// send no router solicitations or MLD reports into the test's traffic.
	if err := writeSysctls(filepath.Join(netnsDir, n.bridgeNS), map[string]string{
		"net/ipv6/conf/all/disable_ipv6":     "1",
		"net/ipv6/conf/default/disable_ipv6": "1",
	}); err != nil {
		return fmt.Errorf("configure bridge namespace %s: %w", n.bridgeNS, err)
	}
	// No STP, no forward delay: a port forwards as soon as it is up, so a
	// healed host is reachable at once. No multicast snooping: without a
	// querier it can drop the neighbour solicitations IPv6 needs.
	if err := n.ipIn(n.bridgeNS, "link", "add", bridgeName, "type", "bridge",
		"stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"); err != nil {
		return err
	}
	n.linksToDrop = append(n.linksToDrop, bridgeName)
	if err := n.ipIn(n.bridgeNS, "link", "set", bridgeName, "up"); err != nil {
		return err
	}
	for i := range hosts {
		h, err := n.addHost(i)
		if err != nil {
			return err
		}
		n.Hosts = append(n.Hosts, h)
	}
	return nil
}

func (n *Network) addHost(i int) (*Host, error) {
	h := &Host{
		Name:   "h" + strconv.Itoa(i),
		IPv4:   nthAddr(ipv4Prefix, i+1),
		IPv6:   nthAddr(ipv6Prefix, i+1),
		net:    n,
		index:  i,
		nsName: nsPrefix + n.id + "-h" + strconv.Itoa(i),
		port:   "h" + strconv.Itoa(i),
	}
	h.NetNS = filepath.Join(netnsDir, h.nsName)
	if err := n.addNS(h.nsName); err != nil {
		return nil, err
	}
	// Set before eth0 exists so it inherits the defaults: addresses
	// (link-local included) are usable at once instead of after DAD.
	if err := writeSysctls(h.NetNS, map[string]string{
		"net/ipv6/conf/all/accept_dad":     "0",
		"net/ipv6/conf/default/accept_dad": "0",
		"net/ipv6/conf/default/accept_ra":  "0",
	}); err != nil {
		return nil, fmt.Errorf("configure host %s: %w", h.Name, err)
	}
	steps := [][]string{
		{n.bridgeNS, "link", "add", h.port, "type", "veth", "peer", "name", hostIface, "netns", h.nsName},
		{n.bridgeNS, "link", "set", h.port, "master", bridgeName, "up"},
		{h.nsName, "link", "set", "lo", "up"},
		{h.nsName, "addr", "add", netip.PrefixFrom(h.IPv4, ipv4Prefix.Bits()).String(), "dev", hostIface},
		{h.nsName, "addr", "add", netip.PrefixFrom(h.IPv6, ipv6Prefix.Bits()).String(), "dev", hostIface, "nodad"},
		{h.nsName, "link", "set", hostIface, "up"},
	}
	for j, s := range steps {
		if err := n.ipIn(s[0], s[1:]...); err != nil {
			return nil, fmt.Errorf("set up host %s: %w", h.Name, err)
		}
		if j == 0 {
			n.linksToDrop = append(n.linksToDrop, h.port)
		}
	}
	return h, nil
}

// Namespace creates a bare network namespace, with only loopback (down),
// that belongs to the network: it is removed, and what runs in it killed,
// when the network closes. It is for tests that build links of their own,
// such as the container side of a container's network. role ends its name,
// e.g. "c0"; it must be unique in the network. It returns the namespace's
// path; DoIn runs code inside it. Call it from the test goroutine.
func (n *Network) Namespace(role string) string {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	name := nsPrefix + n.id + "-" + role
	if err := n.addNS(name); err != nil {
		n.t.Fatalf("testnet: %v", err)
	}
	return filepath.Join(netnsDir, name)
}

func (n *Network) addNS(name string) error {
	if err := runIP("netns", "add", name); err != nil {
		return err
	}
	n.nsToDelete = append(n.nsToDelete, name)
	return nil
}

func (n *Network) ipIn(ns string, args ...string) error {
	return runIP(append([]string{"-n", ns}, args...)...)
}

// Partition cuts h off from every other host by taking its bridge port down,
// as if its cable were pulled. Call it from the test goroutine.
func (n *Network) Partition(h *Host) {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.ipIn(n.bridgeNS, "link", "set", h.port, "down"); err != nil {
		n.t.Fatalf("testnet: partition %s: %v", h.Name, err)
	}
	n.isolated[h] = true
}

// PartitionPair stops a and b from talking to each other while both keep
// talking to every other host. It drops their traffic with nftables inside
// both namespaces. Call it from the test goroutine.
func (n *Network) PartitionPair(a, b *Host) {
	n.t.Helper()
	if a == b {
		n.t.Fatalf("testnet: partition pair %s with itself", a.Name)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.pairs[pairKey(a, b)] = true
	n.applyPairRules(a, b)
}

// HealPair undoes PartitionPair(a, b). Call it from the test goroutine.
func (n *Network) HealPair(a, b *Host) {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.pairs, pairKey(a, b))
	n.applyPairRules(a, b)
}

// Heal undoes Partition(h) and every PartitionPair that involves h. Call it
// from the test goroutine.
func (n *Network) Heal(h *Host) {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.heal(h)
}

// HealAll undoes every partition. Call it from the test goroutine.
func (n *Network) HealAll() {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, h := range n.Hosts {
		n.heal(h)
	}
}

func (n *Network) heal(h *Host) {
	n.t.Helper()
	if n.isolated[h] {
		if err := n.ipIn(n.bridgeNS, "link", "set", h.port, "up"); err != nil {
			n.t.Fatalf("testnet: heal %s: %v", h.Name, err)
		}
		delete(n.isolated, h)
	}
	touched := []*Host{h}
	for k := range n.pairs {
		if k[0] == h || k[1] == h {
			delete(n.pairs, k)
			touched = append(touched, k[0], k[1])
		}
	}
	if len(touched) > 1 {
		n.applyPairRules(touched...)
	}
}

// applyPairRules rewrites the nftables rules of hosts from n.pairs. Each host
// drops traffic to and from its partitioned peers, so either side alone
// would cut the pair; both do so the cut holds whichever side is asked.
func (n *Network) applyPairRules(hosts ...*Host) {
	n.t.Helper()
	seen := map[*Host]bool{}
	for _, h := range hosts {
		if seen[h] {
			continue
		}
		seen[h] = true
		var peers []*Host
		for k := range n.pairs {
			switch h {
			case k[0]:
				peers = append(peers, k[1])
			case k[1]:
				peers = append(peers, k[0])
			}
		}
		if err := runNft(h.nsName, pairRuleset(peers)); err != nil {
			n.t.Fatalf("testnet: set partition rules of %s: %v", h.Name, err)
		}
	}
}

// pairRuleset returns an nft script that atomically replaces the partition
// table with one dropping all traffic to and from peers (none if empty).
func pairRuleset(peers []*Host) string {
	var b strings.Builder
	// "add" then "delete" makes the delete succeed whether or not the table
	// exists; nft applies the whole script as one transaction.
	fmt.Fprintf(&b, "add table inet %s\ndelete table inet %s\n", nftTable, nftTable)
	if len(peers) == 0 {
		return b.String()
	}
	slices.SortFunc(peers, func(x, y *Host) int { return x.index - y.index })
	var v4, v6 []string
	for _, p := range peers {
		v4 = append(v4, p.IPv4.String())
		v6 = append(v6, p.IPv6.String())
	}
	s4, s6 := strings.Join(v4, ", "), strings.Join(v6, ", ")
	fmt.Fprintf(&b, "table inet %s {\n", nftTable)
	fmt.Fprintf(&b, "  chain input {\n    type filter hook input priority 0; policy accept;\n")
	fmt.Fprintf(&b, "    ip saddr { %s } drop\n    ip6 saddr { %s } drop\n  }\n", s4, s6)
	fmt.Fprintf(&b, "  chain output {\n    type filter hook output priority 0; policy accept;\n")
	fmt.Fprintf(&b, "    ip daddr { %s } drop\n    ip6 daddr { %s } drop\n  }\n", s4, s6)
	b.WriteString("}\n")
	return b.String()
}

func pairKey(a, b *Host) [2]*Host {
	if a.index > b.index {
		a, b = b, a
	}
	return [2]*Host{a, b}
}

// Command returns a command that runs name inside h's network namespace
// (through `ip netns exec`, which execs in place, so the PID is name's). The
// network kills it with SIGKILL when it closes; the test should still Wait
// for it if it starts it.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.nsName, name}, args...)...)
	h.net.mu.Lock()
	h.net.cmds = append(h.net.cmds, cmd)
	h.net.mu.Unlock()
	return cmd
}

// Do runs f on an OS thread that has joined h's network namespace and
// returns f's error. Sockets f creates stay in h's namespace after Do
// returns, so a listener made in Do serves h's addresses and a connection
// dialled in Do leaves from h. Goroutines f starts run outside the namespace.
func (h *Host) Do(f func() error) error {
	return doInNetNS(h.NetNS, f)
}

// DoIn runs f as Host.Do does, inside the network namespace at path (one
// that Network.Namespace made, say).
func DoIn(path string, f func() error) error {
	return doInNetNS(path, f)
}

func (h *Host) String() string { return h.Name }

// EchoLines writes back each line read from c until a read or write
// fails: a handler for ServeTCP.
func EchoLines(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := c.Write([]byte(line)); err != nil {
			return
		}
	}
}

// ServeTCP listens on addr (":7000", "[fd00::1]:80") inside the network
// namespace at path and runs handle for each connection, on a goroutine of
// its own, closing the connection when handle returns. When the test ends
// the listener is closed and ServeTCP waits for its goroutines (a handle
// must return once its connection is closed).
func ServeTCP(t testing.TB, path, addr string, handle func(net.Conn)) {
	t.Helper()
	var ln net.Listener
	if err := DoIn(path, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, path, err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
}

func doInNetNS(path string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The goroutine exits without UnlockOSThread, so the runtime
		// discards the thread rather than reuse it in the wrong namespace.
		runtime.LockOSThread()
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open network namespace %s: %w", path, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// writeSysctls writes /proc/sys/<key> inside the namespace at nsPath;
// /proc/sys/net shows the namespace of the thread that opens it.
func writeSysctls(nsPath string, kv map[string]string) error {
	return doInNetNS(nsPath, func() error {
		for k, v := range kv {
			if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
				return fmt.Errorf("set sysctl %s: %w", k, err)
			}
		}
		return nil
	})
}

// Close kills every process in the hosts with SIGKILL, waits until they have
// exited, and removes the links and namespaces. It is idempotent and runs
// from t.Cleanup; calling it earlier is for tests that check the cleanup.
// A process the test started but never waited for is left a zombie until
// the test waits for it; it holds no namespace.
func (n *Network) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return n.closeErr
	}
	n.closed = true
	var errs []error
	var pids []int
	for _, c := range n.cmds {
		if c.Process != nil {
			pids = append(pids, c.Process.Pid)
		}
	}
	for _, ns := range n.nsToDelete {
		p, err := nsPIDs(ns)
		if err != nil {
			errs = append(errs, err)
		}
		pids = append(pids, p...)
	}
	errs = append(errs, killAndWait(pids))
	// Deleting the veths first frees them and the bridge even if a socket
	// the test forgot to close pins a host namespace after its name is gone.
	for _, l := range slices.Backward(n.linksToDrop) {
		if err := n.ipIn(n.bridgeNS, "link", "del", l); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ns := range slices.Backward(n.nsToDelete) {
		if err := runIP("netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		n.closeErr = fmt.Errorf("close network %s: %w", n.id, err)
	}
	return n.closeErr
}

// RemoveStale deletes namespaces made by this package in processes that no
// longer run, killing what still runs inside them. New calls it; namespaces
// of live processes, including other test binaries running now, are kept.
func RemoveStale() error {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list network namespaces: %w", err)
	}
	var errs []error
	for _, e := range entries {
		pid, ok := creatorPID(e.Name())
		if !ok || processAlive(pid) {
			continue
		}
		pids, err := nsPIDs(e.Name())
		if err != nil {
			errs = append(errs, err)
		}
		if err := killAndWait(pids); err != nil {
			errs = append(errs, err)
		}
		if err := runIP("netns", "del", e.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove stale test namespaces: %w", err)
	}
	return nil
}

// creatorPID parses the PID out of "nxt-<pid>-...".
func creatorPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, nsPrefix)
	if !ok {
		return 0, false
	}
	s, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(s)
	return pid, err == nil && pid > 0
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// nsPIDs lists the processes whose network namespace is ns, never this one.
func nsPIDs(ns string) ([]int, error) {
	out, err := ipOutput("netns", "pids", ns)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// killAndWait sends SIGKILL to pids and waits until each has exited
// (is gone or a zombie).
func killAndWait(pids []int) error {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL) // it may have exited already
	}
	deadline := time.Now().Add(exitTimeout)
	for _, pid := range pids {
		for running(pid) {
			if time.Now().After(deadline) {
				return fmt.Errorf("process %d still runs %v after SIGKILL", pid, exitTimeout)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// running reports whether pid exists and has not exited.
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may
	// itself contain ") ".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	st := b[i+2]
	return st != 'Z' && st != 'X'
}

func runIP(args ...string) error {
	_, err := ipOutput(args...)
	return err
}

func ipOutput(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func runNft(ns, script string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f - in %s: %w: %s", ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// nthAddr returns the address n after the prefix's base address.
func nthAddr(p netip.Prefix, n int) netip.Addr {
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	return a
}

func randomHex(nbytes int) string {
	b := make([]byte, nbytes)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b)
}
