package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"nexus.dev/nexus/internal/testnet"
	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/store/storetest"
)

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
		peers = append(peers, fmt.Sprintf("[::1]:%d", testutil.FreePort(t, "udp")))
		clients = append(clients, fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t, "tcp")))
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
		{[]string{"store", "--name", "other"}, `is for server "m0", not "other": start this member with --name m0`},
		{[]string{"store"}, "start this member with --name m0"}, // the default name is etcd's, "default"
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
}

// TestStoreCreatesNoPKIWhereItMustNot: a store creates its own CA only as
// a new single-member store with nothing in its data dir. With part of a
// PKI, store data but no PKI, other members, or certificate flags it
// refuses, says what to do, and writes nothing.
func TestStoreCreatesNoPKIWhereItMustNot(t *testing.T) {
	partial := func(t *testing.T, gone string) string {
		dir := t.TempDir()
		if _, err := run(t, "--data-dir", dir, "cert", "init", "--cluster", "c", "--name", "default"); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(dir, "pki", gone)); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	tests := []struct {
		name  string
		setup func(t *testing.T) string
		args  []string
		want  []string
	}{
		{"pki without node.crt", func(t *testing.T) string { return partial(t, "node.crt") }, nil,
			[]string{"incomplete PKI", "but not node.crt", "restore the missing files"}},
		{"pki without bundle.pem", func(t *testing.T) string { return partial(t, "bundle.pem") }, nil,
			[]string{"incomplete PKI", "but not bundle.pem"}},
		{"store data without pki", func(t *testing.T) string {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "store", "raft"), 0o700); err != nil {
				t.Fatal(err)
			}
			return dir
		}, nil, []string{"node.crt", "nexus cert init"}},
		{"other members", func(t *testing.T) string { return t.TempDir() },
			[]string{"--initial-cluster", "default=quic://[::1]:2380,m1=quic://[::1]:2381"}, []string{"nexus cert init"}},
		{"joining", func(t *testing.T) string { return t.TempDir() },
			[]string{"--initial-cluster-state", "existing"}, []string{"nexus cert init"}},
		{"certificate flags", func(t *testing.T) string { return t.TempDir() },
			[]string{"--peer-trusted-ca-file", "/nonexistent/ca.pem"}, []string{"nexus cert init"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.setup(t)
			before := treeOf(t, dir)
			_, err := run(t, append([]string{"--data-dir", dir, "store"}, tt.args...)...)
			for _, want := range tt.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("err = %v, want it to say %q", err, want)
				}
			}
			if after := treeOf(t, dir); after != before {
				t.Errorf("the data dir changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// treeOf lists the files under dir with a digest of their contents.
func treeOf(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			fmt.Fprintf(&b, "%s/\n", rel)
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %x\n", rel, sha256.Sum256(data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
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
		metrics := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
		args := []string{"--data-dir", dir, "--log-level", "warn", "store", "--name", "m0",
			"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t, "tcp")),
			"--listen-peer-urls", fmt.Sprintf("quic://[::1]:%d", testutil.FreePort(t, "udp")),
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

// TestStoreRunsWithNoSetup: `nexus --data-dir DIR store` with no other
// flag and an empty data dir serves etcdctl, without flags either, at
// etcd's default address, as etcd does. It created its own CA and says
// where, and how to add members; a restart uses the same CA and data.
func TestStoreRunsWithNoSetup(t *testing.T) {
	testutil.RequireRoot(t)
	etcdctl := testutil.RequireProgram(t, "etcdctl", "etcd-client")
	bin := nexusBinary(t)
	// A network namespace of its own: etcd's default ports (2379, 2380)
	// are free there whatever else runs on this machine.
	host := testnet.New(t, testnet.Options{Hosts: 1}).Hosts[0]
	dir := t.TempDir()
	logPath := filepath.Join(t.TempDir(), "store.log")
	start := func() *exec.Cmd {
		t.Helper()
		log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer log.Close()
		cmd := host.Command(context.Background(), bin, "--data-dir", dir, "store")
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	ctl := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := host.Command(ctx, etcdctl, args...)
		cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	logged := func() string {
		b, _ := os.ReadFile(logPath)
		return string(b)
	}
	waitPut := func(key, value string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, err := ctl("put", key, value)
			if err == nil && strings.TrimSpace(out) == "OK" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("etcdctl put: %v: %s\nstore log:\n%s", err, out, logged())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	first := start()
	waitPut("greeting", "hello")
	if out, err := ctl("get", "greeting"); err != nil || out != "greeting\nhello\n" {
		t.Fatalf("etcdctl get: %v: %q", err, out)
	}
	pkiDir := filepath.Join(dir, "pki")
	for _, want := range []string{"created a cluster CA", "pki=" + pkiDir, "cert issue --server NAME", "etcdctl member add NAME", "member promote"} {
		if !strings.Contains(logged(), want) {
			t.Errorf("the store's log does not say %q:\n%s", want, logged())
		}
	}
	if _, err := os.Stat(filepath.Join(pkiDir, "root.crt")); err != nil {
		t.Fatalf("no CA in %s: %v", pkiDir, err)
	}
	root, err := os.ReadFile(filepath.Join(pkiDir, "root.crt"))
	if err != nil {
		t.Fatal(err)
	}

	// A restart keeps the CA and the data.
	if err := first.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := first.Wait(); err != nil {
		t.Fatalf("the store did not stop cleanly on SIGTERM: %v\n%s", err, logged())
	}
	start()
	waitPut("second", "run")
	if out, err := ctl("get", "greeting"); err != nil || out != "greeting\nhello\n" {
		t.Fatalf("after a restart, etcdctl get: %v: %q", err, out)
	}
	if n := strings.Count(logged(), "created a cluster CA"); n != 1 {
		t.Errorf("the CA was created %d times", n)
	}
	if again, _ := os.ReadFile(filepath.Join(pkiDir, "root.crt")); !bytes.Equal(again, root) {
		t.Error("the restart replaced the CA")
	}
}

// TestEtcdctlAnswersLikeEtcd runs one etcdctl session against etcd and
// against `nexus store`, both with the same --quota-backend-bytes, and
// compares what etcdctl prints: the time-to-live of a revoked lease, the
// refusal of a put of 133 KiB once the quota is reached, the alarm list,
// what the alarm stops and what not, and the disarm, which lists what it
// disarmed.
func TestEtcdctlAnswersLikeEtcd(t *testing.T) {
	etcdctl := testutil.RequireProgram(t, "etcdctl", "etcd-client")
	const quota = "2097152"
	// One commit per write, as Nexus: by default etcd checks a burst of
	// writes against the size of its last commit, 100 ms old.
	etcd := storetest.StartEtcd(t, t.TempDir(), 1, "--quota-backend-bytes="+quota, "--backend-batch-limit=1")

	bin := nexusBinary(t)
	client := fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t, "tcp"))
	cmd := exec.Command(bin, "--data-dir", t.TempDir(), "--log-level", "warn", "store", "--quota-backend-bytes", quota,
		"--listen-client-urls", client, "--listen-peer-urls", fmt.Sprintf("quic://[::1]:%d", testutil.FreePort(t, "udp")))
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("nexus store log:\n%s", log.String())
		}
	})

	ids := regexp.MustCompile(`memberID:[0-9]+|\b[0-9a-f]{16}\b`)
	value := strings.Repeat("v", 133<<10) // longer than a command-line argument may be: from stdin
	session := func(endpoint string) []string {
		ctl := func(stdin string, args ...string) string {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c := exec.CommandContext(ctx, etcdctl, append([]string{"--endpoints", endpoint, "--command-timeout", "5s"}, args...)...)
			c.Env = append(os.Environ(), "ETCDCTL_API=3")
			c.Stdin = strings.NewReader(stdin)
			out, _ := c.CombinedOutput()
			var lines []string
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if !strings.HasPrefix(line, "{") { // the client's retry warnings
					lines = append(lines, line)
				}
			}
			return strings.Join(lines, " | ")
		}
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(ctl("", "endpoint", "health"), "is healthy") {
			if time.Now().After(deadline) {
				t.Fatalf("%s is not healthy within 20s", endpoint)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if endpoint != etcd.Clients[0] {
			// The same history on both: StartEtcd made this write.
			if out := ctl("", "put", "storetest/ready", "1"); out != "OK" {
				t.Fatalf("put: %s", out)
			}
		}
		var said []string
		say := func(what, out string) { said = append(said, what+": "+ids.ReplaceAllString(out, "ID")) }
		grant := ctl("", "lease", "grant", "60")
		id := regexp.MustCompile(`lease ([0-9a-f]+) granted`).FindStringSubmatch(grant)
		if id == nil {
			t.Fatalf("lease grant at %s: %q", endpoint, grant)
		}
		say("lease revoke", ctl("", "lease", "revoke", id[1]))
		say("lease timetolive", ctl("", "lease", "timetolive", id[1]))
		// Which put is refused depends on how each file grew, which varies
		// from run to run in etcd (TestSpaceQuotaLikeEtcd checks the rule):
		// only the refusal is compared.
		for i := range 20 {
			if out := ctl(value, "put", fmt.Sprintf("big/%02d", i)); out != "OK" {
				say("puts until one is refused", out)
				t.Logf("%s refused put %d", endpoint, i+1)
				break
			}
		}
		say("alarm list", ctl("", "alarm", "list"))
		say("lease grant", ctl("", "lease", "grant", "60"))
		say("del", ctl("", "del", "big/00"))
		say("alarm disarm", ctl("", "alarm", "disarm"))
		say("alarm list", ctl("", "alarm", "list"))
		return said
	}
	want, got := session(etcd.Clients[0]), session(client)
	t.Logf("etcdctl against etcd:\n  %s", strings.Join(want, "\n  "))
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("etcdctl against nexus store:\n  %s", strings.Join(got, "\n  "))
	}
}
