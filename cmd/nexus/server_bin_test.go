package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"nexus.dev/nexus/internal/testutil"
)

// TestServerEndToEnd drives `nexus server` as a user would: start it on an
// empty data dir, use the admin.conf it writes (apply, then a watch over
// HTTP/3 sees a change made over HTTP/2), add a user who can do nothing
// until bound, rotate the secrets key, stop it with SIGTERM, and verify
// its audit log.
func TestServerEndToEnd(t *testing.T) {
	testutil.RequireRoot(t)
	bin := nexusBinary(t)
	dir := t.TempDir()
	api := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
	peer := fmt.Sprintf("[::1]:%d", testutil.FreePort(t, "udp"))
	home := t.TempDir() // where ~/.nexus/config goes
	srv := exec.Command(bin, "--data-dir", dir, "server", "--name", "s1", "--cluster", "e2e", "--api-addr", api, "--store-peer-addr", peer)
	srv.Env = append(os.Environ(), "HOME="+home)
	out, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logFile, _ := os.Create(filepath.Join(t.TempDir(), "server.log"))
	srv.Stderr = logFile
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "admin client configuration: ") {
				ready <- strings.TrimPrefix(sc.Text(), "admin client configuration: ")
			}
		}
	}()
	var conf string
	select {
	case conf = <-ready:
	case <-time.After(60 * time.Second):
		log, _ := os.ReadFile(logFile.Name())
		t.Fatalf("nexus server did not report its admin configuration within 60 s:\n%s", log)
	}
	if conf != filepath.Join(dir, "admin.conf") {
		t.Fatalf("admin configuration at %q", conf)
	}
	if _, err := os.Stat(filepath.Join(home, ".nexus", "config")); err != nil {
		t.Fatalf("~/.nexus/config was not written: %v", err)
	}
	run := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), env...)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	ok := func(args ...string) string {
		t.Helper()
		out, err := run(nil, append([]string{"--config", conf}, args...)...)
		if err != nil {
			t.Fatalf("nexus %v: %v\n%s", args, err, out)
		}
		return out
	}
	manifest := filepath.Join(t.TempDir(), "web.yaml")
	if err := os.WriteFile(manifest, []byte("kind: Workload\nmetadata: {name: web}\nspec:\n  replicas: 2\n  template: {image: nexus.local/hello}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := ok("apply", "-f", manifest); !strings.Contains(out, "workload/web created") {
		t.Fatalf("apply: %s", out)
	}
	// A watch over HTTP/3 sees a change made over HTTP/2.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	watch := exec.CommandContext(ctx, bin, "--config", conf, "get", "wl", "-w", "--output-watch-events", "--http3")
	wout, _ := watch.StdoutPipe()
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	expect := lineExpecter(ctx, t, wout, nil)
	expect(`^ADDED +web `)
	if err := os.WriteFile(manifest, []byte("kind: Workload\nmetadata: {name: web}\nspec:\n  replicas: 5\n  template: {image: nexus.local/hello}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := ok("apply", "-f", manifest); !strings.Contains(out, "workload/web configured") {
		t.Fatalf("second apply: %s", out)
	}
	expect(`^MODIFIED +web +service +0/5 `)
	_ = watch.Process.Signal(syscall.SIGINT)
	_ = watch.Wait()

	// A new user gets a working configuration, and no rights until bound.
	alice := filepath.Join(t.TempDir(), "alice.conf")
	if out, err := run(nil, "--data-dir", dir, "user", "add", "alice", "--group", "dev", "-o", alice); err != nil {
		t.Fatalf("user add: %v\n%s", err, out)
	}
	if out, err := run(nil, "--config", alice, "get", "wl"); err == nil || !strings.Contains(out, "may not list workloads") {
		t.Fatalf("alice before any binding: %v\n%s", err, out)
	}
	binding := filepath.Join(t.TempDir(), "dev.yaml")
	_ = os.WriteFile(binding, []byte("kind: RoleBinding\nmetadata: {name: dev-view, namespace: default}\nsubjects: [{kind: Group, name: dev}]\nroleRef: {kind: ClusterRole, name: view}\n"), 0o644)
	ok("apply", "-f", binding)
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := run(nil, "--config", alice, "get", "wl")
		if err == nil && strings.Contains(out, "web") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice after the binding: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Secrets: one stored, the key rotated, still readable.
	secret := filepath.Join(t.TempDir(), "s.yaml")
	_ = os.WriteFile(secret, []byte("kind: Secret\nmetadata: {name: db}\nstringData: {password: hunter2}\n"), 0o644)
	ok("apply", "-f", secret)
	if out, err := run(nil, "--data-dir", dir, "secrets", "rotate-key"); err != nil || !strings.Contains(out, "resealed 1 secrets") {
		t.Fatalf("rotate-key: %v\n%s", err, out)
	}
	if out := ok("get", "secret", "db", "-o", "json"); !strings.Contains(out, "aHVudGVyMg==") {
		t.Fatalf("the secret after rotation: %s", out)
	}

	// SIGTERM: a clean, prompt stop, and the port is free again.
	start := time.Now()
	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := srv.Wait(); err != nil {
		log, _ := os.ReadFile(logFile.Name())
		t.Fatalf("nexus server after SIGTERM: %v\n%s", err, log)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("stopping took %s", d)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "audit", "*.log"))
	if out, err := run(nil, append([]string{"audit", "verify"}, files...)...); err != nil || !strings.Contains(out, "ok") {
		t.Fatalf("audit verify of the server's log: %v\n%s", err, out)
	}
}
