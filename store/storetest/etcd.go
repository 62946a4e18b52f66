package storetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/internal/testutil"
)

// EtcdCluster is a real etcd cluster (Debian's etcd-server) on loopback,
// the reference the checks and benchmarks compare Nexus's store with.
type EtcdCluster struct {
	Bin     string
	Dir     string
	Names   []string
	Clients []string // client URLs, one per member
	peers   []string
	procs   []*exec.Cmd
	logs    []*os.File
	initial string
	args    []string // extra flags for every member
}

// StartEtcd starts an n-member etcd cluster under dir, each member with
// the extra flags given, and waits until it serves. It skips the test when
// etcd is not installed (fails it under CI=true).
func StartEtcd(t testing.TB, dir string, n int, flags ...string) *EtcdCluster {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		testutil.Missing(t, "needs etcd: apt-get install -y etcd-server (make deps installs it)")
	}
	c := &EtcdCluster{Bin: bin, Dir: dir, args: flags}
	var initial []string
	for i := 0; i < n; i++ {
		cp, err := testutil.PickPort("tcp")
		if err != nil {
			t.Fatal(err)
		}
		pp, err := testutil.PickPort("tcp")
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("e%d", i)
		c.Names = append(c.Names, name)
		c.Clients = append(c.Clients, fmt.Sprintf("http://127.0.0.1:%d", cp))
		c.peers = append(c.peers, fmt.Sprintf("http://127.0.0.1:%d", pp))
		initial = append(initial, name+"="+c.peers[i])
	}
	c.initial = strings.Join(initial, ",")
	c.procs = make([]*exec.Cmd, n)
	c.logs = make([]*os.File, n)
	t.Cleanup(c.Stop)
	for i := range c.Names {
		if err := c.Start(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitReady(context.Background(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return c
}

// Start (re)starts member i with its data directory.
func (c *EtcdCluster) Start(i int) error {
	log, err := os.OpenFile(filepath.Join(c.Dir, c.Names[i]+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.Bin,
		"--name", c.Names[i],
		"--data-dir", filepath.Join(c.Dir, c.Names[i]),
		"--listen-client-urls", c.Clients[i], "--advertise-client-urls", c.Clients[i],
		"--listen-peer-urls", c.peers[i], "--initial-advertise-peer-urls", c.peers[i],
		"--initial-cluster", c.initial, "--initial-cluster-state", "new",
		"--initial-cluster-token", "nexus-storetest")
	cmd.Args = append(cmd.Args, c.args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := testutil.StartTied(cmd); err != nil {
		log.Close()
		return fmt.Errorf("start etcd %s: %w", c.Names[i], err)
	}
	c.procs[i], c.logs[i] = cmd, log
	return nil
}

// Kill stops member i with SIGKILL, as a crash would.
func (c *EtcdCluster) Kill(i int) {
	if p := c.procs[i]; p != nil {
		_ = p.Process.Kill()
		_ = p.Wait()
		c.procs[i] = nil
		c.logs[i].Close()
	}
}

// Stop kills every member.
func (c *EtcdCluster) Stop() {
	for i := range c.procs {
		c.Kill(i)
	}
}

// WaitReady waits until a write through every member succeeds.
func (c *EtcdCluster) WaitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, ep := range c.Clients {
		for {
			err := func() error {
				cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: time.Second})
				if err != nil {
					return err
				}
				defer cli.Close()
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				defer cancel()
				_, err = cli.Put(cctx, "storetest/ready", "1")
				return err
			}()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("etcd member at %s not ready: %w", ep, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}
