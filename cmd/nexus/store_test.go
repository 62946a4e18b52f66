package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/internal/testutil"
)

func freeLoopbackPort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "[::1]:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// storeMemberArgs makes a CA with `nexus cert init` (as member m0's) and
// server certificates for the other members with `nexus cert issue`, as
// `nexus store --help` describes, and returns each member's command line.
// peers and clients are the members' peer addresses (host:port) and client
// URLs.
func storeMemberArgs(t *testing.T, bin, base string, peers, clients []string) [][]string {
	t.Helper()
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("nexus %v: %v: %s", args, err, out)
		}
	}
	d0 := filepath.Join(base, "m0")
	run("--data-dir", d0, "cert", "init", "--cluster", "storetest", "--name", "m0")
	var members []string
	for i, p := range peers {
		members = append(members, fmt.Sprintf("m%d=quic://%s", i, p))
	}
	var all [][]string
	for i := range peers {
		name := fmt.Sprintf("m%d", i)
		args := []string{"--data-dir", filepath.Join(base, name), "--log-level", "warn", "store", "--name", name,
			"--listen-client-urls", clients[i], "--listen-peer-urls", "quic://" + peers[i],
			"--initial-cluster", strings.Join(members, ",")}
		if i > 0 {
			certs := filepath.Join(base, name+"-certs")
			run("--data-dir", d0, "cert", "issue", "--server", name, "--out", certs)
			args = append(args, "--peer-cert-file", filepath.Join(certs, name+".crt"),
				"--peer-key-file", filepath.Join(certs, name+".key"), "--peer-trusted-ca-file", filepath.Join(certs, "ca.pem"))
		}
		all = append(all, args)
	}
	return all
}

// startStoreCluster runs three `nexus store` processes on loopback and
// returns the client endpoints.
func startStoreCluster(t *testing.T) []string {
	t.Helper()
	clients, _ := startStoreProcs(t)
	return clients
}

// storeProc is one running `nexus store` process.
type storeProc struct {
	log    string
	exited chan struct{} // closed once the process has ended
	err    error         // its exit, once exited is closed
}

// startStoreProcs is startStoreCluster that also returns the processes.
func startStoreProcs(t *testing.T) ([]string, []*storeProc) {
	t.Helper()
	bin := nexusBinary(t)
	base := t.TempDir()
	var peers, clients []string
	for range 3 {
		peers = append(peers, fmt.Sprintf("[::1]:%d", freeLoopbackPort(t, "udp")))
		clients = append(clients, fmt.Sprintf("http://127.0.0.1:%d", freeLoopbackPort(t, "tcp")))
	}
	var procs []*storeProc
	for i, args := range storeMemberArgs(t, bin, base, peers, clients) {
		log, err := os.Create(filepath.Join(base, fmt.Sprintf("m%d.log", i)))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p := &storeProc{log: log.Name(), exited: make(chan struct{})}
		go func() {
			p.err = cmd.Wait()
			close(p.exited)
		}()
		procs = append(procs, p)
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-p.exited
			log.Close()
			if t.Failed() {
				data, _ := os.ReadFile(log.Name())
				t.Logf("m%d log:\n%s", i, data)
			}
		})
	}
	return clients, procs
}

// TestEtcdctlAgainstNexusStore runs Debian's etcdctl, unchanged, against a
// three-member Nexus store.
func TestEtcdctlAgainstNexusStore(t *testing.T) {
	etcdctl := testutil.RequireProgram(t, "etcdctl", "etcd-client")
	eps := strings.Join(startStoreCluster(t), ",")
	ctl := func(stdin string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, etcdctl, append([]string{"--endpoints", eps, "--command-timeout", "5s"}, args...)...)
		cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("etcdctl %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	// The cluster is up once a write goes through.
	deadline := time.Now().Add(20 * time.Second)
	for {
		cmd := exec.Command(etcdctl, "--endpoints", eps, "--command-timeout", "2s", "put", "ready", "1")
		cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
		if err := cmd.Run(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the store did not accept a write within 20s")
		}
		time.Sleep(200 * time.Millisecond)
	}

	if out := ctl("", "put", "app/a", "1"); strings.TrimSpace(out) != "OK" {
		t.Fatalf("put: %q", out)
	}
	ctl("", "put", "app/b", "2")
	if out := ctl("", "get", "--prefix", "app/"); out != "app/a\n1\napp/b\n2\n" {
		t.Fatalf("get --prefix: %q", out)
	}
	if out := ctl("", "del", "app/b"); strings.TrimSpace(out) != "1" {
		t.Fatalf("del: %q", out)
	}
	txn := "value(\"app/a\") = \"1\"\n\nput app/a 10\n\nput app/a failed\n\n"
	if out := ctl(txn, "txn"); !strings.HasPrefix(out, "SUCCESS") {
		t.Fatalf("txn: %q", out)
	}
	if out := ctl("", "get", "app/a", "--print-value-only"); strings.TrimSpace(out) != "10" {
		t.Fatalf("after txn: %q", out)
	}

	// watch replays history from a revision (and would then follow).
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	w := exec.CommandContext(ctx, etcdctl, "--endpoints", eps, "watch", "--prefix", "app/", "--rev", "1")
	w.Env = append(os.Environ(), "ETCDCTL_API=3")
	wout, _ := w.CombinedOutput() // ends when the context kills it
	if !strings.Contains(string(wout), "PUT\napp/a\n1") || !strings.Contains(string(wout), "DELETE\napp/b") {
		t.Fatalf("watch output: %q", wout)
	}

	grant := ctl("", "lease", "grant", "60")
	m := regexp.MustCompile(`lease ([0-9a-f]+) granted with TTL\(60s\)`).FindStringSubmatch(grant)
	if m == nil {
		t.Fatalf("lease grant: %q", grant)
	}
	ctl("", "put", "--lease", m[1], "app/leased", "x")
	if out := ctl("", "lease", "keep-alive", "--once", m[1]); !strings.Contains(out, "keepalived with TTL(60)") {
		t.Fatalf("lease keep-alive: %q", out)
	}
	if out := ctl("", "lease", "timetolive", "--keys", m[1]); !strings.Contains(out, "app/leased") {
		t.Fatalf("lease timetolive: %q", out)
	}

	if out := ctl("", "member", "list"); strings.Count(out, "started") != 3 {
		t.Fatalf("member list: %q", out)
	}
	status := ctl("", "endpoint", "status")
	if strings.Count(status, "3.5.0") != 3 || !strings.Contains(status, "true") {
		t.Fatalf("endpoint status: %q", status)
	}
}

// TestRemovedMemberExits removes a member with etcdctl: its process ends
// with an error that says so and what to do, like etcd's, and the other
// two go on taking writes.
func TestRemovedMemberExits(t *testing.T) {
	etcdctl := testutil.RequireProgram(t, "etcdctl", "etcd-client")
	clients, procs := startStoreProcs(t)
	eps := strings.Join(clients, ",")
	ctl := func(endpoints string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, etcdctl, append([]string{"--endpoints", endpoints, "--command-timeout", "5s"}, args...)...)
		cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := ctl(eps, "put", "ready", "1"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the store did not accept a write within 20s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	list, err := ctl(eps, "member", "list")
	if err != nil {
		t.Fatalf("member list: %v: %s", err, list)
	}
	var id string
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Split(line, ", "); len(f) > 2 && f[2] == "m2" {
			id = f[0]
		}
	}
	if id == "" {
		t.Fatalf("m2 not in the member list: %q", list)
	}
	// Ask m2 itself to remove itself: the hardest case, it has to hear
	// that its own removal committed.
	if out, err := ctl(clients[2], "member", "remove", id); err != nil || !strings.Contains(out, "removed from cluster") {
		t.Fatalf("member remove %s: %v: %s", id, err, out)
	}
	select {
	case <-procs[2].exited:
		if procs[2].err == nil {
			t.Fatal("the removed member exited with status 0")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the removed member still runs 15 s after its removal")
	}
	log, _ := os.ReadFile(procs[2].log)
	for _, want := range []string{"removed from the cluster", "remove its store data"} {
		if !strings.Contains(string(log), want) {
			t.Fatalf("the removed member's output does not say %q:\n%s", want, log)
		}
	}
	// A put forwarded to the removed leader just before it stopped is lost
	// and times out (etcd's too); the next one finds the new leader.
	rest := strings.Join(clients[:2], ",")
	deadline = time.Now().Add(20 * time.Second)
	for {
		out, err := ctl(rest, "put", "after", "1")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the remaining two take no write: %v: %s", err, out)
		}
	}
	if out, _ := ctl(rest, "member", "list"); strings.Count(out, "started") != 2 {
		t.Fatalf("member list after the removal: %q", out)
	}
}

func TestStoreCommandRejectsBadFlags(t *testing.T) {
	dir := t.TempDir()
	if _, err := run(t, "--data-dir", dir, "cert", "init", "--cluster", "flags", "--name", "m0"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"store", "--name", "other"}, `not server "other"`},
		{[]string{"store", "--name", "m0", "--initial-cluster", "m0"}, "is not name=quic://host:port"},
		{[]string{"store", "--name", "m0", "--initial-cluster", "m0=quic://nohostport"}, "needs a port"},
		{[]string{"store", "--name", "m0", "--initial-cluster-state", "sideways"}, "use new or existing"},
		{[]string{"store", "--name", "m0", "--listen-peer-urls", "::1"}, "--listen-peer-urls"},
		{[]string{"store", "--name", "m0", "--peer-cert-file", filepath.Join(dir, "missing.crt")}, "nexus cert issue --server m0"},
		{[]string{"store", "--name", "m0", "--listen-client-urls", "https://127.0.0.1:0"}, "https needs --cert-file and --key-file"},
		{[]string{"store", "--name", "m0", "--listen-metrics-urls", "127.0.0.1:0"}, "--listen-metrics-urls"},
		{[]string{"store", "--name", "m0", "--listen-metrics-urls", "http://127.0.0.1:0", "--listen-metrics-urls", "ftp://127.0.0.1:0"}, "use http:// or https://"},
	}
	for _, tt := range tests {
		_, err := run(t, append([]string{"--data-dir", dir}, tt.args...)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want %q", tt.args, err, tt.want)
		}
	}
	// Refused before anything started: no store data was written.
	if _, err := os.Stat(filepath.Join(dir, "store")); !os.IsNotExist(err) {
		t.Errorf("a refused command left store data in %s (stat: %v)", dir, err)
	}
	empty := t.TempDir()
	if _, err := run(t, "--data-dir", empty, "store"); err == nil || !strings.Contains(err.Error(), "nexus cert init") {
		t.Errorf("no certificates: %v", err)
	}
}

// TestStoreMetricsURL: --listen-metrics-urls serves etcd's /health once the
// member has a leader, and /debug/pprof/ only with --enable-pprof.
func TestStoreMetricsURL(t *testing.T) {
	bin := nexusBinary(t)
	for _, pprofOn := range []bool{false, true} {
		dir := t.TempDir()
		if out, err := exec.Command(bin, "--data-dir", dir, "cert", "init", "--cluster", "metrics", "--name", "m0").CombinedOutput(); err != nil {
			t.Fatalf("cert init: %v: %s", err, out)
		}
		metrics := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t, "tcp"))
		args := []string{"--data-dir", dir, "--log-level", "warn", "store", "--name", "m0",
			"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", freeLoopbackPort(t, "tcp")),
			"--listen-peer-urls", fmt.Sprintf("quic://[::1]:%d", freeLoopbackPort(t, "udp")),
			"--listen-metrics-urls", "http://" + metrics}
		if pprofOn {
			args = append(args, "--enable-pprof")
		}
		cmd := exec.Command(bin, args...)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		var body string
		deadline := time.Now().Add(20 * time.Second)
		for {
			resp, err := http.Get("http://" + metrics + "/health")
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				body = string(b)
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("/health not healthy within 20s (last body %q, err %v); log:\n%s", body, err, out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(body, `"health":"true"`) {
			t.Errorf("/health = %q, want etcd's {\"health\":\"true\"}", body)
		}
		resp, err := http.Get("http://" + metrics + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{false: http.StatusNotFound, true: http.StatusOK}[pprofOn]; resp.StatusCode != want {
			t.Errorf("--enable-pprof=%v: /debug/pprof/ answered %d, want %d", pprofOn, resp.StatusCode, want)
		}
	}
}
