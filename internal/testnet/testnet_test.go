package testnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"nexus.dev/nexus/internal/testutil"
)

const (
	echoPort = 7000
	// cutTimeout is how long a dial across a partition may try before the
	// test calls the peer unreachable.
	cutTimeout = 500 * time.Millisecond
	// healTimeout is how long a healed path may take to carry traffic again.
	healTimeout = 5 * time.Second
)

// serveEcho starts a TCP echo server on every address of h, owned by t.
func serveEcho(t *testing.T, h *Host) {
	t.Helper()
	ServeTCP(t, h.NetNS, fmt.Sprintf(":%d", echoPort), func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(healTimeout))
		_, _ = io.Copy(c, c)
	})
}

// echo dials dst from inside from and checks that a line comes back.
func echo(from *Host, dst netip.Addr, timeout time.Duration) error {
	var c net.Conn
	err := from.Do(func() error {
		var err error
		d := net.Dialer{Timeout: timeout}
		c, err = d.Dial("tcp", netip.AddrPortFrom(dst, echoPort).String())
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	msg := fmt.Sprintf("from %s to %s\n", from, dst)
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if got != msg {
		return fmt.Errorf("echo returned %q, want %q", got, msg)
	}
	return nil
}

// eventuallyEcho retries echo until it succeeds or healTimeout passes; a
// healed link may need a fresh neighbour lookup first.
func eventuallyEcho(from *Host, dst netip.Addr) error {
	deadline := time.Now().Add(healTimeout)
	for {
		err := echo(from, dst, cutTimeout)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func addrs(h *Host) []netip.Addr { return []netip.Addr{h.IPv6, h.IPv4} }

func requireReach(t *testing.T, from, to *Host) {
	t.Helper()
	for _, a := range addrs(to) {
		if err := eventuallyEcho(from, a); err != nil {
			t.Errorf("%s cannot reach %s at %s: %v", from, to, a, err)
		}
	}
}

func requireCut(t *testing.T, from, to *Host) {
	t.Helper()
	for _, a := range addrs(to) {
		start := time.Now()
		err := echo(from, a, cutTimeout)
		if err == nil {
			t.Errorf("%s reached %s at %s across a partition", from, to, a)
		}
		if d := time.Since(start); d > 2*cutTimeout {
			t.Errorf("dial %s -> %s took %v, want at most %v", from, a, d, 2*cutTimeout)
		}
	}
}

func TestHostsReachEachOther(t *testing.T) {
	n := New(t, Options{Hosts: 3})
	for _, h := range n.Hosts {
		serveEcho(t, h)
	}
	for _, from := range n.Hosts {
		for _, to := range n.Hosts {
			if from != to {
				requireReach(t, from, to)
			}
		}
	}
}

func TestPartitionAndHeal(t *testing.T) {
	testutil.RequireRoot(t)
	tests := []struct {
		name      string
		partition func(n *Network, a, b, c *Host)
		heal      func(n *Network, a, b, c *Host)
		cut       [][2]int // host index pairs that must not talk
		reach     [][2]int // host index pairs that must still talk
	}{
		{
			name:      "host",
			partition: func(n *Network, a, _, _ *Host) { n.Partition(a) },
			heal:      func(n *Network, a, _, _ *Host) { n.Heal(a) },
			cut:       [][2]int{{0, 1}, {1, 0}, {0, 2}, {2, 0}},
			reach:     [][2]int{{1, 2}, {2, 1}},
		},
		{
			name:      "pair",
			partition: func(n *Network, a, b, _ *Host) { n.PartitionPair(a, b) },
			heal:      func(n *Network, a, b, _ *Host) { n.HealPair(a, b) },
			cut:       [][2]int{{0, 1}, {1, 0}},
			reach:     [][2]int{{0, 2}, {2, 0}, {1, 2}, {2, 1}},
		},
		{
			name:      "pair healed by Heal",
			partition: func(n *Network, a, b, _ *Host) { n.PartitionPair(a, b) },
			heal:      func(n *Network, _, b, _ *Host) { n.Heal(b) },
			cut:       [][2]int{{0, 1}, {1, 0}},
			reach:     [][2]int{{0, 2}, {1, 2}},
		},
		{
			name: "all healed by HealAll",
			partition: func(n *Network, a, b, c *Host) {
				n.Partition(c)
				n.PartitionPair(a, b)
			},
			heal:  func(n *Network, _, _, _ *Host) { n.HealAll() },
			cut:   [][2]int{{0, 1}, {1, 0}, {0, 2}, {2, 1}},
			reach: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := New(t, Options{Hosts: 3})
			hs := n.Hosts
			for _, h := range hs {
				serveEcho(t, h)
			}
			tt.partition(n, hs[0], hs[1], hs[2])
			// Each cut check waits out a dial timeout; run them together.
			var wg sync.WaitGroup
			for _, p := range tt.cut {
				wg.Go(func() { requireCut(t, hs[p[0]], hs[p[1]]) })
			}
			for _, p := range tt.reach {
				wg.Go(func() { requireReach(t, hs[p[0]], hs[p[1]]) })
			}
			wg.Wait()
			tt.heal(n, hs[0], hs[1], hs[2])
			for _, from := range hs {
				for _, to := range hs {
					if from != to {
						requireReach(t, from, to)
					}
				}
			}
		})
	}
}

func TestCommandSeesOnlyItsHost(t *testing.T) {
	n := New(t, Options{Hosts: 2})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, h := range n.Hosts {
		out, err := h.Command(ctx, "ip", "-o", "addr", "show").CombinedOutput()
		if err != nil {
			t.Fatalf("ip addr in %s: %v: %s", h, err, out)
		}
		s := string(out)
		for _, want := range []string{h.IPv6.String() + "/64", h.IPv4.String() + "/24", " lo "} {
			if !strings.Contains(s, want) {
				t.Errorf("%s sees addresses\n%s\nwant %s among them", h, s, want)
			}
		}
		for _, other := range n.Hosts {
			if other != h && (strings.Contains(s, other.IPv6.String()+"/") || strings.Contains(s, other.IPv4.String()+"/")) {
				t.Errorf("%s sees %s's addresses:\n%s", h, other, s)
			}
		}
		if strings.Contains(s, "tentative") {
			t.Errorf("%s has addresses still in DAD:\n%s", h, s)
		}
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireProgram(t, "ip", "iproute2")
	rootLinksBefore := rootLinks(t)
	n := New(t, Options{Hosts: 3})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	var cmds []*exec.Cmd
	for _, h := range n.Hosts {
		cmd := h.Command(ctx, "sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatalf("start sleep in %s: %v", h, err)
		}
		cmds = append(cmds, cmd)
	}
	// A grandchild the harness never saw must be killed too.
	sh := n.Hosts[0].Command(ctx, "sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!")
	out, err := sh.Output()
	if err != nil {
		t.Fatalf("start background sleep: %v", err)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("parse pid from %q: %v", out, err)
	}

	names := nsNames(t, n)
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	for _, cmd := range cmds {
		if running(cmd.Process.Pid) {
			t.Errorf("process %d still runs after Close", cmd.Process.Pid)
		}
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("process %d ended with %v, want killed by SIGKILL", cmd.Process.Pid, err)
		}
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid))); err == nil {
			t.Errorf("process %d still exists after Wait", cmd.Process.Pid)
		}
	}
	if running(orphan) {
		t.Errorf("background process %d still runs after Close", orphan)
	}

	listed := runOut(t, "ip", "netns", "list")
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if strings.Contains(listed, name) {
			t.Errorf("namespace %s still listed after Close:\n%s", name, listed)
		}
		if strings.Contains(string(mounts), name) {
			t.Errorf("namespace %s still mounted after Close", name)
		}
		if _, err := os.Stat(filepath.Join(netnsDir, name)); err == nil {
			t.Errorf("%s still exists after Close", filepath.Join(netnsDir, name))
		}
	}
	if after := rootLinks(t); after != rootLinksBefore {
		t.Errorf("root namespace links changed:\nbefore %s\nafter  %s", rootLinksBefore, after)
	}
}

func TestNewRemovesStaleNamespaces(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireProgram(t, "ip", "iproute2")
	dead := deadPID(t)
	stale := fmt.Sprintf("%s%d-dead00-h0", nsPrefix, dead)
	live := fmt.Sprintf("%s%d-live00-h0", nsPrefix, os.Getpid())
	for _, name := range []string{stale, live} {
		run(t, "ip", "netns", "add", name)
		t.Cleanup(func() { _ = runIP("netns", "del", name) })
	}

	New(t, Options{Hosts: 1})

	listed := runOut(t, "ip", "netns", "list")
	if strings.Contains(listed, stale) {
		t.Errorf("stale namespace %s (creator %d is dead) survived New:\n%s", stale, dead, listed)
	}
	if !strings.Contains(listed, live) {
		t.Errorf("namespace %s of a live process was removed by New:\n%s", live, listed)
	}
}

func TestNewRejectsBadHostCount(t *testing.T) {
	testutil.RequireRoot(t)
	for _, hosts := range []int{0, -1, maxHosts + 1} {
		ft := &fatalRecorder{TB: t}
		func() {
			defer func() { _ = recover() }()
			New(ft, Options{Hosts: hosts})
		}()
		if !ft.fataled {
			t.Errorf("New with %d hosts did not fail", hosts)
		}
	}
}

func TestCreatorPID(t *testing.T) {
	tests := []struct {
		name string
		pid  int
		ok   bool
	}{
		{"nxt-123-abcdef-h0", 123, true},
		{"nxt-123-abcdef-br", 123, true},
		{"nxt-0-abcdef-br", 0, false},
		{"nxt-x1-abcdef-br", 0, false},
		{"nxt-123", 0, false},
		{"other-123-abcdef-h0", 0, false},
	}
	for _, tt := range tests {
		pid, ok := creatorPID(tt.name)
		if pid != tt.pid || ok != tt.ok {
			t.Errorf("creatorPID(%q) = %d, %v, want %d, %v", tt.name, pid, ok, tt.pid, tt.ok)
		}
	}
}

// fatalRecorder notes Fatal calls and stops the caller like FailNow would,
// without failing the real test.
type fatalRecorder struct {
	testing.TB
	fataled bool
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.fataled = true
	panic("fatal")
}

// deadPID returns the PID of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatalf("run true: %v", err)
	}
	return cmd.Process.Pid
}

func nsNames(t *testing.T, n *Network) []string {
	t.Helper()
	names := []string{n.bridgeNS}
	for _, h := range n.Hosts {
		names = append(names, filepath.Base(h.NetNS))
	}
	return names
}

// rootLinks lists the root namespace's link names.
func rootLinks(t *testing.T) string {
	t.Helper()
	var names []string
	for _, line := range strings.Split(runOut(t, "ip", "-o", "link", "show"), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			names = append(names, f[1])
		}
	}
	return strings.Join(names, " ")
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	runOut(t, name, args...)
}

func runOut(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
