package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"nexus.dev/nexus/internal/testrootfs"
	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/runtime/spec"
)

// builtProgram is a program built once per test process into a
// temporary directory, for runs without make build.
type builtProgram struct {
	pkg, name string
	once      sync.Once
	path, out string
	err       error
}

func (b *builtProgram) get(t testing.TB) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", b.name+"-bin")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, b.name)
		build := exec.Command("go", "build", "-o", b.path, b.pkg)
		build.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as make build makes it
		out, err := build.CombinedOutput()
		b.err, b.out = err, string(out)
	})
	if b.err != nil {
		t.Fatalf("build %s: %v\n%s", b.name, b.err, b.out)
	}
	return b.path
}

var (
	builtNexus   = &builtProgram{pkg: ".", name: "nexus"}
	builtRuntime = &builtProgram{pkg: "../nexus-runtime", name: "nexus-runtime"}
)

// nexusBinary returns the nexus binary under test: $NEXUS_BIN (make test
// sets it), or one built into a temporary directory.
func nexusBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("NEXUS_BIN"); p != "" {
		return p
	}
	return builtNexus.get(t)
}

// runtimeProgram returns the lean nexus-runtime program under test: the one
// make build writes beside $NEXUS_BIN, or one built into a temporary
// directory.
func runtimeProgram(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("NEXUS_BIN"); p != "" {
		lean := filepath.Join(filepath.Dir(p), "nexus-runtime")
		if fi, err := os.Lstat(lean); err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("%s is not the nexus-runtime program (make build writes it beside %s): %v", lean, p, err)
		}
		return lean
	}
	return builtRuntime.get(t)
}

// runtimeLink returns a nexus-runtime symlink to the nexus binary: the
// layout make build used to create, which must keep working.
func runtimeLink(t *testing.T) string {
	t.Helper()
	link := filepath.Join(t.TempDir(), "nexus-runtime")
	if err := os.Symlink(nexusBinary(t), link); err != nil {
		t.Fatal(err)
	}
	return link
}

func writeBundle(t *testing.T, args ...string) string {
	t.Helper()
	s := spec.Default()
	s.Process.Args = args
	return testrootfs.Bundle(t, s, nil)
}

func TestRuntimeCLIRunReportsExitStatus(t *testing.T) {
	testutil.RequireRoot(t)
	bin := nexusBinary(t)
	root := t.TempDir()
	bundle := writeBundle(t, "sh", "-c", "echo out-$(hostname); exit 4")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "runtime", "--root", root, "run", "--bundle", bundle, "cli-run")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 4 {
		t.Fatalf("want exit status 4, got %v: %s", err, out)
	}
	if !strings.Contains(string(out), "out-nexus") {
		t.Fatalf("output %q", out)
	}
	// Only the cache of the init program (.init) may remain, no container.
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("run left state behind: %v", entries)
		}
	}
}

func TestRuntimeCLILifecycleAsNexusRuntime(t *testing.T) {
	testutil.RequireRoot(t)
	link := runtimeProgram(t)
	root := t.TempDir()
	bundle := writeBundle(t, "sleep", "100")
	// The container inherits the runtime's stdio, so a pipe would stay open
	// as long as the container runs: give every call files instead.
	rt := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := os.CreateTemp(t.TempDir(), "out")
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		cmd := exec.CommandContext(ctx, link, append([]string{"--root", root}, args...)...)
		cmd.Stdout, cmd.Stderr = out, out
		err = cmd.Run()
		data, _ := os.ReadFile(out.Name())
		if err != nil {
			t.Fatalf("nexus-runtime %v: %v: %s", args, err, data)
		}
		return string(data)
	}
	t.Cleanup(func() { _ = exec.Command(link, "--root", root, "delete", "--force", "lc").Run() })
	pidFile := filepath.Join(t.TempDir(), "pid")
	rt("create", "--bundle", bundle, "--pid-file", pidFile, "lc")
	var st specs.State
	if err := json.Unmarshal([]byte(rt("state", "lc")), &st); err != nil || st.Status != specs.StateCreated {
		t.Fatalf("state after create: %+v %v", st, err)
	}
	pid, _ := os.ReadFile(pidFile)
	if strings.TrimSpace(string(pid)) == "" || strings.TrimSpace(string(pid)) != itoa(st.Pid) {
		t.Fatalf("pid file %q, state pid %d", pid, st.Pid)
	}
	rt("start", "lc")
	if err := json.Unmarshal([]byte(rt("state", "lc")), &st); err != nil || st.Status != specs.StateRunning {
		t.Fatalf("state after start: %+v %v", st, err)
	}
	if ps := rt("ps", "--format", "json", "lc"); !strings.Contains(ps, itoa(st.Pid)) {
		t.Fatalf("ps %s lacks pid %d", ps, st.Pid)
	}
	rt("kill", "lc", "KILL")
	waitStopped(t, func() specs.ContainerState {
		_ = json.Unmarshal([]byte(rt("state", "lc")), &st)
		return st.Status
	})
	rt("delete", "lc")
	if _, err := exec.Command(link, "--root", root, "state", "lc").CombinedOutput(); err == nil {
		t.Fatal("state of a deleted container should fail")
	}
	var f map[string]any
	if err := json.Unmarshal([]byte(rt("features")), &f); err != nil || f["ociVersionMax"] == nil {
		t.Fatalf("features: %v %v", f, err)
	}
}

func waitStopped(t *testing.T, status func() specs.ContainerState) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if status() == specs.StateStopped {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("container did not stop")
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestPodmanDrivesNexusRuntime runs a real OCI client against the runtime.
func TestPodmanDrivesNexusRuntime(t *testing.T) {
	testutil.RequireRoot(t)
	podman := testutil.RequireProgram(t, "podman", "podman")
	link := runtimeProgram(t)
	rootfs := t.TempDir()
	if err := os.Chmod(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := testrootfs.Build(rootfs); err != nil {
		testutil.Missing(t, "%v", err)
	}
	// podman refuses a runroot longer than 50 characters: t.TempDir is longer.
	store, err := os.MkdirTemp("", "pm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// podman leaves its storage's overlay mount behind.
		data, _ := os.ReadFile("/proc/self/mountinfo")
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], store+"/") {
				_ = syscall.Unmount(f[4], syscall.MNT_DETACH)
			}
		}
		os.RemoveAll(store)
	})
	base := []string{"--runtime", link, "--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "run"),
		"--cgroup-manager", "cgroupfs", "--events-backend", "none"}
	// These machines refuse to raise an rlimit above the current hard
	// limit, so podman's defaults fail with every runtime; pin them.
	runFlags := []string{"--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--rootfs", rootfs}
	pm := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, podman, append(append([]string{}, base...), args...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	t.Cleanup(func() { _, _ = pm("rm", "--all", "--force") })

	out, err := pm(append(append([]string{"run", "--rm"}, runFlags...), "/bin/echo", "hi")...)
	if err != nil || out != "hi" {
		t.Fatalf("podman run --rm: %v: %q", err, out)
	}

	id, err := pm(append(append([]string{"run", "-d"}, runFlags...), "sleep", "100")...)
	if err != nil {
		t.Fatalf("podman run -d: %v: %s", err, id)
	}
	if out, err := pm("exec", id, "sh", "-c", "echo exec-$((6*7))"); err != nil || out != "exec-42" {
		t.Fatalf("podman exec: %v: %q", err, out)
	}
	if out, err := pm("stop", "-t", "1", id); err != nil {
		t.Fatalf("podman stop: %v: %s", err, out)
	}
	if out, err := pm("ps", "-a", "--format", "{{.Status}}"); err != nil || !strings.HasPrefix(out, "Exited") {
		t.Fatalf("after stop: %v: %q", err, out)
	}
	if out, err := pm("rm", id); err != nil {
		t.Fatalf("podman rm: %v: %s", err, out)
	}
	if out, _ := pm("ps", "-a", "-q"); out != "" {
		t.Fatalf("containers left after rm: %q", out)
	}

	// A spec asking for more than the host allows fails clearly.
	out, err = pm("run", "--rm", "--network", "none", "--ulimit", "nofile=1099511627776:1099511627776", "--rootfs", rootfs, "true")
	if err == nil || !strings.Contains(out, "RLIMIT_NOFILE") {
		t.Fatalf("an rlimit above the host's hard limit should fail naming it: %v: %s", err, out)
	}
}
