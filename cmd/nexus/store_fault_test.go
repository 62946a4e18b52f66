package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/internal/testnet"
	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/store/storetest"
)

// faultCluster is three `nexus store` processes, each in its own harness
// host, and a fourth host for clients.
type faultCluster struct {
	t       *testing.T
	bin     string
	nw      *testnet.Network
	dirs    []string
	args    [][]string
	procs   []*exec.Cmd
	clients []string
}

func startFaultCluster(t *testing.T) *faultCluster {
	t.Helper()
	testutil.RequireRoot(t)
	bin := nexusBinary(t)
	nw := testnet.New(t, testnet.Options{Hosts: 4})
	base := t.TempDir()
	c := &faultCluster{t: t, bin: bin, nw: nw, procs: make([]*exec.Cmd, 3)}
	var peers []string
	for i := range 3 {
		peers = append(peers, fmt.Sprintf("[%s]:2380", nw.Hosts[i].IPv6))
		c.clients = append(c.clients, fmt.Sprintf("http://%s:2379", nw.Hosts[i].IPv4))
		c.dirs = append(c.dirs, filepath.Join(base, fmt.Sprintf("m%d", i)))
	}
	c.args = storeMemberArgs(t, bin, base, peers, c.clients)
	t.Cleanup(func() {
		for i := range c.procs {
			c.kill(i)
		}
	})
	for i := range 3 {
		c.start(i)
	}
	return c
}

func (c *faultCluster) start(i int) {
	c.t.Helper()
	log, err := os.OpenFile(filepath.Join(c.dirs[i]+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	defer log.Close()
	cmd := c.nw.Hosts[i].Command(context.Background(), c.bin, c.args[i]...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.procs[i] = cmd
}

// kill stops member i with SIGKILL.
func (c *faultCluster) kill(i int) {
	if p := c.procs[i]; p != nil {
		_ = p.Process.Signal(syscall.SIGCONT)
		_ = p.Process.Kill()
		_ = p.Wait()
		c.procs[i] = nil
	}
}

// leader asks the members (from the client host) which one leads.
func (c *faultCluster) leader() int {
	c.t.Helper()
	etcdctl := testutil.RequireProgram(c.t, "etcdctl", "etcd-client")
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for i, ep := range c.clients {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			cmd := c.nw.Hosts[3].Command(ctx, etcdctl, "--endpoints", ep, "endpoint", "status", "-w", "json")
			cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
			out, err := cmd.Output()
			cancel()
			if err != nil {
				continue
			}
			var st []struct {
				Status struct {
					Header struct {
						MemberID uint64 `json:"member_id"`
					} `json:"header"`
					Leader uint64 `json:"leader"`
				} `json:"Status"`
			}
			if json.Unmarshal(out, &st) == nil && len(st) == 1 && st[0].Status.Leader != 0 && st[0].Status.Leader == st[0].Status.Header.MemberID {
				return i
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatal("no leader within 15s")
	return -1
}

// workload runs storetest.Run in the client host, in a child process (the
// etcd client dials from background goroutines, so it must live entirely
// inside that network namespace), and checks the history it returns.
func (c *faultCluster) workload(prefix string, ops int, fault func()) {
	c.t.Helper()
	out := filepath.Join(c.t.TempDir(), "history.json")
	spec, _ := json.Marshal(map[string]any{"Endpoints": c.clients, "Prefix": prefix, "Ops": ops, "Out": out})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := c.nw.Hosts[3].Command(ctx, os.Args[0], "-test.run=^TestStoreWorkloadProcess$")
	cmd.Env = append(os.Environ(), "NEXUS_STORE_WORKLOAD="+string(spec))
	logf, _ := os.Create(out + ".log")
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	fault()
	if err := cmd.Wait(); err != nil {
		data, _ := os.ReadFile(out + ".log")
		c.t.Fatalf("workload process: %v\n%s", err, data)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		c.t.Fatal(err)
	}
	var rs []storetest.Record
	if err := json.Unmarshal(data, &rs); err != nil {
		c.t.Fatal(err)
	}
	unknown := 0
	for _, r := range rs {
		if r.Output.Unknown {
			unknown++
		}
	}
	c.t.Logf("%d operations recorded, %d with unknown outcome", len(rs), unknown)
	if err := storetest.Check(storetest.History(rs), 2*time.Minute); err != nil {
		c.t.Fatal(err)
	}
}

// TestStoreWorkloadProcess is the client side of the fault tests, run in a
// child process; it does nothing in a normal run.
func TestStoreWorkloadProcess(t *testing.T) {
	raw := os.Getenv("NEXUS_STORE_WORKLOAD")
	if raw == "" {
		t.Skip("helper process for TestStoreLinearizableUnderFaults")
	}
	var spec struct {
		Mode      string // "" (linearizability workload), "write" or "verify"
		Endpoints []string
		Prefix    string
		Ops       int
		Out       string
	}
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		t.Fatal(err)
	}
	switch spec.Mode {
	case "write":
		writeAcked(t, spec.Endpoints, spec.Prefix, spec.Out)
		return
	case "verify":
		verifyAcked(t, spec.Endpoints, spec.Out)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	h, stats, err := storetest.Run(ctx, storetest.Workload{Endpoints: spec.Endpoints, Clients: 8,
		OpsPerClient: spec.Ops / 8, Keys: 16, Prefix: spec.Prefix, Seed: uint64(len(spec.Prefix)), OpTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", stats)
	data, _ := json.Marshal(storetest.Records(h))
	if err := os.WriteFile(spec.Out, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestStoreLinearizableUnderFaults: three store processes in three harness
// hosts, clients in a fourth; each scenario injects a fault while 8 clients
// run puts, gets, deletes and compare-and-swaps, and porcupine checks the
// history: 10,000 operations per scenario (the bar; under a minute
// for all four), 50,000 under NEXUS_SOAK.
func TestStoreLinearizableUnderFaults(t *testing.T) {
	c := startFaultCluster(t)
	c.leader()
	ops := 10000
	if os.Getenv("NEXUS_SOAK") != "" {
		ops = 50000
	}
	settle := func() { time.Sleep(1500 * time.Millisecond) }
	scenarios := []struct {
		name  string
		fault func()
	}{
		{"kill -9 the leader and restart it", func() {
			time.Sleep(300 * time.Millisecond)
			l := c.leader()
			c.kill(l)
			settle()
			c.start(l)
		}},
		{"partition the leader", func() {
			time.Sleep(300 * time.Millisecond)
			l := c.leader()
			c.nw.Partition(c.nw.Hosts[l])
			settle()
			c.nw.Heal(c.nw.Hosts[l])
		}},
		{"partition a minority (a follower)", func() {
			time.Sleep(300 * time.Millisecond)
			f := (c.leader() + 1) % 3
			c.nw.Partition(c.nw.Hosts[f])
			settle()
			c.nw.Heal(c.nw.Hosts[f])
		}},
		{"pause a member with SIGSTOP", func() {
			time.Sleep(300 * time.Millisecond)
			l := c.leader()
			_ = c.procs[l].Process.Signal(syscall.SIGSTOP)
			settle()
			_ = c.procs[l].Process.Signal(syscall.SIGCONT)
		}},
	}
	for i, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			c.t = t
			c.workload(fmt.Sprintf("f%d/", i), ops, sc.fault)
		})
	}
}

// writeAcked writes keys from 8 clients for two seconds (the members are
// killed meanwhile) and records every key whose write was acknowledged.
func writeAcked(t *testing.T, endpoints []string, prefix, out string) {
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var mu sync.Mutex
	// Write until the test has killed the members and says stop (a file next
	// to out), or 60 s at most: a fixed duration was too short on a loaded
	// machine, where this process took longer than it to start.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if _, err := os.Stat(out + ".stop"); err == nil {
				cancel()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	for c := range 8 {
		cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				k := fmt.Sprintf("%s%d/%d", prefix, c, i)
				octx, ocancel := context.WithTimeout(ctx, 500*time.Millisecond)
				_, err := cli.Put(octx, k, k)
				ocancel()
				if err == nil {
					mu.Lock()
					fmt.Fprintln(f, k)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
}

// verifyAcked checks that every recorded key is in the store.
func verifyAcked(t *testing.T, endpoints []string, keysFile string) {
	data, err := os.ReadFile(keysFile)
	if err != nil {
		t.Fatal(err)
	}
	keys := strings.Fields(string(data))
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, k := range keys {
		var resp *clientv3.GetResponse
		for {
			if resp, err = cli.Get(ctx, k); err == nil || ctx.Err() != nil {
				break
			}
			time.Sleep(100 * time.Millisecond) // the cluster is still electing
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != k {
			t.Fatalf("acknowledged write %s is missing after every member was killed", k)
		}
	}
	fmt.Printf("verified %d acknowledged writes\n", len(keys))
}

// runHelper runs TestStoreWorkloadProcess in the client host with spec.
func (c *faultCluster) runHelper(spec map[string]any) string {
	c.t.Helper()
	raw, _ := json.Marshal(spec)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := c.nw.Hosts[3].Command(ctx, os.Args[0], "-test.run=^TestStoreWorkloadProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "NEXUS_STORE_WORKLOAD="+string(raw))
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("helper %v: %v\n%s", spec["Mode"], err, out)
	}
	return string(out)
}

// TestStoreDurabilityAfterKillingEveryMember: kill -9 all three members at
// once while clients write, restart them, and find every acknowledged write.
func TestStoreDurabilityAfterKillingEveryMember(t *testing.T) {
	c := startFaultCluster(t)
	c.leader()
	keys := filepath.Join(t.TempDir(), "acked")
	done := make(chan string, 1)
	go func() {
		done <- c.runHelper(map[string]any{"Mode": "write", "Endpoints": c.clients, "Prefix": "dur/", "Out": keys})
	}()
	// Kill once the clients have had a good number of writes acknowledged,
	// however long their process took to start.
	deadline := time.Now().Add(60 * time.Second)
	for {
		data, _ := os.ReadFile(keys)
		if n := len(strings.Fields(string(data))); n >= 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 200 writes acknowledged within 60 s (%s)", keys)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range c.procs {
		_ = c.procs[i].Process.Kill() // all at once, mid-load
	}
	for i := range c.procs {
		c.kill(i)
	}
	if err := os.WriteFile(keys+".stop", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	<-done
	data, _ := os.ReadFile(keys)
	acked := len(strings.Fields(string(data)))
	for i := range c.procs {
		c.start(i)
	}
	c.leader()
	out := c.runHelper(map[string]any{"Mode": "verify", "Endpoints": c.clients, "Out": keys})
	if !strings.Contains(out, fmt.Sprintf("verified %d acknowledged writes", acked)) {
		t.Fatalf("verify output: %s", out)
	}
	t.Logf("%d acknowledged writes survived kill -9 of every member", acked)
}
