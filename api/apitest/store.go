// Package apitest starts the stores the API is tested against: the
// embedded `nexus store` (one member, a real process) and a real etcd
// (Debian's etcd-server), so every API test runs against both.
package apitest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/store/storetest"
)

// Backend is a running store an API can use.
type Backend struct {
	Name      string
	Endpoints []string
	// Process is the store's process when it is one (NexusStore), for
	// tests that stop it (SIGSTOP) to play an outage.
	Process *os.Process
}

// Client returns an etcd client of the backend, closed when the test ends.
func (b Backend) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: b.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("%s client: %v", b.Name, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Backends starts both stores.
func Backends(t testing.TB) []Backend {
	t.Helper()
	return []Backend{NexusStore(t), Etcd(t)}
}

// Etcd starts a one-member etcd.
func Etcd(t testing.TB) Backend {
	t.Helper()
	testutil.RequireProgram(t, "etcd", "etcd-server")
	c := storetest.StartEtcd(t, t.TempDir(), 1)
	return Backend{Name: "etcd", Endpoints: c.Clients}
}

// NexusStore starts a one-member `nexus store` ($NEXUS_BIN) with its own
// certificates and waits until it takes writes.
func NexusStore(t testing.TB) Backend {
	t.Helper()
	bin := testutil.NexusBin(t)
	dir := t.TempDir()
	if out, err := exec.Command(bin, "--data-dir", dir, "cert", "init", "--cluster", "apitest", "--name", "default").CombinedOutput(); err != nil {
		t.Fatalf("nexus cert init: %v: %s", err, out)
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t, "tcp"))
	peer := fmt.Sprintf("quic://[::1]:%d", testutil.FreePort(t, "udp"))
	log, err := os.Create(filepath.Join(dir, "store.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--data-dir", dir, "--log-level", "warn", "store",
		"--listen-client-urls", client, "--listen-peer-urls", peer, "--initial-cluster", "default="+peer)
	cmd.Stdout, cmd.Stderr = log, log
	if err := testutil.StartTied(cmd); err != nil {
		t.Fatalf("start nexus store: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		log.Close()
	})
	b := Backend{Name: "nexus", Endpoints: []string{client}, Process: cmd.Process}
	cli := b.Client(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Put(ctx, "/apitest/ready", "1")
		cancel()
		if err == nil {
			return b
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(log.Name())
			t.Fatalf("nexus store did not take a write within 30 s: %v\n%s", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
