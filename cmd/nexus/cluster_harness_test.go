package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"nexus.dev/nexus/internal/testnet"
	"nexus.dev/nexus/internal/testutil"
)

// clusterNet runs real nexus processes (servers and agents) on the hosts
// of a netns harness, the way a user runs them on separate machines, and
// the CLI beside them.
type clusterNet struct {
	t   testing.TB
	bin string
	nw  *testnet.Network
	ctx context.Context
}

func newClusterNet(t testing.TB, hosts int, timeout time.Duration) *clusterNet {
	testutil.RequireRoot(t)
	c := &clusterNet{t: t, bin: nexusBinary(t), nw: testnet.New(t, testnet.Options{Hosts: hosts})}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	c.ctx = ctx
	return c
}

// clusterProc is one nexus process (server or agent) on a harness host.
type clusterProc struct {
	c          *clusterNet
	name, dir  string
	host       *testnet.Host
	args       []string // after --data-dir DIR
	readyLine  string   // a line of its standard output that says it serves
	viaNsenter bool     // started with nsenter --net (keeps the host's /sys and cgroups)
	log        string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan error
}

// server starts `nexus server` called name on host i, with the API and
// the store's peer (and join) port on the host's IPv6 address. dir ""
// makes a new data directory.
func (c *clusterNet) server(i int, name string, extra ...string) *clusterProc {
	c.t.Helper()
	ip := c.nw.Hosts[i].IPv6.String()
	args := append([]string{"server", "--name", name, "--api-addr", net.JoinHostPort(ip, "7443"),
		"--store-peer-addr", net.JoinHostPort(ip, "7380"), "--advertise", ip}, extra...)
	p := &clusterProc{c: c, name: name, dir: c.t.TempDir(), host: c.nw.Hosts[i], args: args, readyLine: ": API on https://"}
	p.start()
	return p
}

// agent starts `nexus agent` called name on host i. It runs through
// nsenter, not ip netns exec (which remounts /sys and with it hides the
// cgroup hierarchies the runtime needs), with its own exit recorder pins.
func (c *clusterNet) agent(i int, name string, extra ...string) *clusterProc {
	c.t.Helper()
	dir := c.t.TempDir()
	pins := filepath.Join("/sys/fs/bpf", "nexus-test-"+filepath.Base(dir))
	args := append([]string{"agent", "--name", name, "--exit-recorder-dir", pins}, extra...)
	p := &clusterProc{c: c, name: name, dir: dir, host: c.nw.Hosts[i], args: args, readyLine: "nexus agent: node " + name + " running", viaNsenter: true}
	// Run after the agent is killed (cleanups run last first).
	c.t.Cleanup(func() { _ = os.RemoveAll(pins) })
	c.t.Cleanup(func() { cleanupNodeDir(c.t, c.bin, p.dir) })
	p.start()
	return p
}

// start runs the process and waits until it says it serves.
func (p *clusterProc) start() {
	t := p.c.t
	t.Helper()
	p.log = filepath.Join(p.dir, "nexus.log")
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--data-dir", p.dir}, p.args...)
	var cmd *exec.Cmd
	if p.viaNsenter {
		cmd = exec.CommandContext(p.c.ctx, "nsenter", append([]string{"--net=" + p.host.NetNS, p.c.bin}, args...)...)
	} else {
		cmd = p.host.Command(p.c.ctx, p.c.bin, args...)
	}
	cmd.Env = append(os.Environ(), "HOME="+p.dir, "NEXUS_CONFIG=")
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := testutil.StartTied(cmd); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()
	up := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		once := sync.Once{}
		for sc.Scan() {
			if strings.Contains(sc.Text(), p.readyLine) {
				once.Do(func() { close(up) })
			}
		}
		exited <- cmd.Wait()
		logf.Close()
	}()
	t.Cleanup(func() {
		p.kill9()
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", p.name, p.tail())
		}
	})
	select {
	case <-up:
	case err := <-exited:
		exited <- err
		t.Fatalf("%s exited before serving: %v\n%s", p.name, err, p.tail())
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not serve within 60 s\n%s", p.name, p.tail())
	}
}

// kill9 kills the process with SIGKILL, as a crash does, and waits for it.
func (p *clusterProc) kill9() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	err := <-exited
	exited <- err
}

// wait waits up to d for the process to exit on its own.
func (p *clusterProc) wait(d time.Duration) (error, bool) {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	select {
	case err := <-exited:
		exited <- err
		p.mu.Lock()
		p.cmd = nil
		p.mu.Unlock()
		return err, true
	case <-time.After(d):
		return nil, false
	}
}

// running says whether the process was started and has not been killed
// or exited.
func (p *clusterProc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case err := <-p.exited:
		p.exited <- err
		return false
	default:
		return true
	}
}

// tail is the end of the process's log.
func (p *clusterProc) tail() string {
	data, _ := os.ReadFile(p.log)
	if len(data) > 16<<10 {
		data = data[len(data)-16<<10:]
	}
	return string(data)
}

// conf is the admin configuration a server wrote.
func (p *clusterProc) conf() string { return filepath.Join(p.dir, "admin.conf") }

// nexus runs the CLI on host h (nil: the test's own namespace).
func (c *clusterNet) nexus(h *testnet.Host, args ...string) (string, error) {
	var cmd *exec.Cmd
	if h == nil {
		cmd = exec.CommandContext(c.ctx, c.bin, args...)
	} else {
		cmd = exec.CommandContext(c.ctx, "nsenter", append([]string{"--net=" + h.NetNS, c.bin}, args...)...)
	}
	cmd.Env = append(os.Environ(), "NEXUS_CONFIG=")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// ok runs the CLI and fails the test when it fails.
func (c *clusterNet) ok(h *testnet.Host, args ...string) string {
	c.t.Helper()
	out, err := c.nexus(h, args...)
	if err != nil {
		c.t.Fatalf("nexus %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// token creates a join token on server s for role.
func (c *clusterNet) token(s *clusterProc, role string, uses int) tokenCreated {
	c.t.Helper()
	out := c.ok(nil, "--data-dir", s.dir, "token", "create", "--role", role, "--uses", strconv.Itoa(uses), "-o", "json")
	var tok tokenCreated
	if err := json.Unmarshal([]byte(out), &tok); err != nil {
		c.t.Fatalf("token create output: %v\n%s", err, out)
	}
	return tok
}
