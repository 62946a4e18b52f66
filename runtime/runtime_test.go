package runtime_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/testrootfs"
	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/runtime"
	"nexus.dev/nexus/runtime/exitrec"
	"nexus.dev/nexus/runtime/spec"
)

func init() {
	if runtime.IsInit() {
		goruntime.LockOSThread()
	}
}

// TestMain lets the test binary act as the container init stage: the
// runtime re-executes its own binary, which here is this test binary.
func TestMain(m *testing.M) {
	if runtime.IsInit() {
		runtime.InitMain()
	}
	if spec := os.Getenv("NEXUS_TEST_START_AND_LEAVE"); spec != "" {
		startAndLeave(spec)
	}
	os.Exit(m.Run())
}

// startAndLeave plays an agent that creates and starts a container, then
// goes away (crashes, restarts) while the container runs.
func startAndLeave(arg string) {
	var a struct{ Root, RecDir, ID, Bundle string }
	if err := json.Unmarshal([]byte(arg), &a); err != nil {
		panic(err)
	}
	rec, err := exitrec.Open(a.RecDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rt := runtime.New(runtime.Config{Root: a.Root, Exits: rec})
	ctx := context.Background()
	if err := rt.Create(ctx, a.ID, runtime.CreateOptions{Bundle: a.Bundle}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := rt.Start(ctx, a.ID); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// harness is one runtime with its own state root, and the bundles it made.
type harness struct {
	t  *testing.T
	rt *runtime.Runtime
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	testutil.RequireRoot(t)
	return &harness{t: t, rt: runtime.New(runtime.Config{Root: t.TempDir()})}
}

var idSeq int

func (h *harness) id() string {
	idSeq++
	return fmt.Sprintf("t%d-%d", os.Getpid(), idSeq)
}

// bundle writes a busybox bundle whose spec is spec.Default changed by edit.
func (h *harness) bundle(edit func(s *specs.Spec, rootfs string)) string {
	h.t.Helper()
	s := spec.Default()
	s.Process.Args = []string{"true"}
	return testrootfs.Bundle(h.t, s, func(rootfs string) {
		if edit != nil {
			edit(s, rootfs)
		}
	})
}

// result is what a finished container left.
type result struct {
	out    string
	status runtime.ExitStatus
	paths  []string // its cgroup directories, to check they are gone
}

// create creates a container with stdout+stderr to a file, and registers a
// forced delete for cleanup.
func (h *harness) create(bundle string) (id string, out *os.File) {
	h.t.Helper()
	id = h.id()
	out, err := os.CreateTemp(h.t.TempDir(), "out")
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.rt.Create(ctx, id, runtime.CreateOptions{Bundle: bundle, Stdout: out, Stderr: out}); err != nil {
		h.t.Fatalf("create: %v", err)
	}
	h.t.Cleanup(func() { _ = h.rt.Delete(context.Background(), id, true) })
	return id, out
}

// run creates, starts and waits for a container, then deletes it.
func (h *harness) run(edit func(s *specs.Spec, rootfs string)) result {
	h.t.Helper()
	id, out := h.create(h.bundle(edit))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	paths := cgroupDirs(h.t, h.rt, id)
	if err := h.rt.Start(ctx, id); err != nil {
		h.t.Fatalf("start: %v", err)
	}
	status, err := h.rt.Wait(ctx, id)
	if err != nil {
		h.t.Fatalf("wait: %v", err)
	}
	if err := h.rt.Delete(ctx, id, false); err != nil {
		h.t.Fatalf("delete: %v", err)
	}
	data, _ := os.ReadFile(out.Name())
	return result{out: string(data), status: status, paths: paths}
}

// cgroupDirs lists the container's cgroup directories on the host.
func cgroupDirs(t *testing.T, rt *runtime.Runtime, id string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(rt.Root(), id, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Cgroup struct{ Paths map[string]string } `json:"cgroup"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, p := range st.Cgroup.Paths {
		dirs = append(dirs, p)
	}
	if len(dirs) == 0 {
		t.Fatal("state records no cgroup directories")
	}
	return dirs
}

func shell(script string) func(s *specs.Spec, _ string) {
	return func(s *specs.Spec, _ string) { s.Process.Args = []string{"sh", "-c", script} }
}

func TestProcessIsPid1WithHostname(t *testing.T) {
	h := newHarness(t)
	r := h.run(func(s *specs.Spec, _ string) {
		s.Hostname = "box-one"
		s.Process.Args = []string{"sh", "-c", "echo pid=$$ host=$(hostname)"}
	})
	if got := strings.TrimSpace(r.out); got != "pid=1 host=box-one" {
		t.Fatalf("output %q, want pid=1 host=box-one", got)
	}
	if r.status.Code != 0 || !r.status.Known {
		t.Fatalf("status %+v", r.status)
	}
}

func TestExitCodesAndSignals(t *testing.T) {
	h := newHarness(t)
	if r := h.run(shell("exit 7")); r.status.Code != 7 || r.status.Signal != 0 {
		t.Fatalf("exit 7 reported as %+v", r.status)
	}

	id, _ := h.create(h.bundle(shell("exec sleep 100")))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.rt.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	st, err := h.rt.State(id)
	if err != nil || st.Status != specs.StateRunning || st.Pid <= 0 {
		t.Fatalf("state after start: %+v, %v", st, err)
	}
	if err := h.rt.Kill(id, unix.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	status, err := h.rt.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if status.Signal != unix.SIGKILL || status.Code != 128+9 {
		t.Fatalf("SIGKILL reported as %+v", status)
	}
	if st, _ := h.rt.State(id); st.Status != specs.StateStopped {
		t.Fatalf("state after kill: %s, want stopped", st.Status)
	}
}

func TestMaskedAndReadonlyPaths(t *testing.T) {
	h := newHarness(t)
	r := h.run(func(s *specs.Spec, rootfs string) {
		for _, d := range []string{"secret-dir", "ro-dir"} {
			if err := os.Mkdir(filepath.Join(rootfs, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		must(t, os.WriteFile(filepath.Join(rootfs, "secret-dir/key"), []byte("hunter2"), 0o644))
		must(t, os.WriteFile(filepath.Join(rootfs, "secret-file"), []byte("hunter2"), 0o644))
		s.Linux.MaskedPaths = append(s.Linux.MaskedPaths, "/secret-dir", "/secret-file")
		s.Linux.ReadonlyPaths = append(s.Linux.ReadonlyPaths, "/ro-dir")
		s.Process.Args = []string{"sh", "-c", `
			echo "file:[$(cat /secret-file)]"
			echo "dir:[$(ls /secret-dir)]"
			echo "timer_list:[$(head -c 20 /proc/timer_list)]"
			touch /ro-dir/x 2>/dev/null && echo ro-dir:writable || echo ro-dir:readonly
			echo 1 2>/dev/null > /proc/sys/kernel/domainname && echo procsys:writable || echo procsys:readonly
			touch /tmp/x && echo rootfs:writable`}
	})
	for _, want := range []string{"file:[]", "dir:[]", "timer_list:[]", "ro-dir:readonly", "procsys:readonly", "rootfs:writable"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("output lacks %q:\n%s", want, r.out)
		}
	}
	if strings.Contains(r.out, "hunter2") {
		t.Errorf("masked content leaked:\n%s", r.out)
	}
}

func TestReadonlyRoot(t *testing.T) {
	h := newHarness(t)
	r := h.run(func(s *specs.Spec, _ string) {
		s.Root.Readonly = true
		s.Process.Args = []string{"sh", "-c", "touch /x 2>&1; touch /dev/shm/y && echo shm:ok"}
	})
	if !strings.Contains(r.out, "Read-only file system") || !strings.Contains(r.out, "shm:ok") {
		t.Fatalf("want / read-only and /dev/shm writable, got:\n%s", r.out)
	}
}

func TestCapabilitiesAreExactlyTheSpecs(t *testing.T) {
	h := newHarness(t)
	r := h.run(func(s *specs.Spec, _ string) {
		caps := []string{"CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
		s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps,
			Inheritable: []string{"CAP_KILL"}, Ambient: []string{"CAP_KILL"}}
		s.Process.Args = []string{"grep", "^Cap", "/proc/self/status"}
	})
	// CHOWN=0, KILL=5, NET_BIND_SERVICE=10. grep's own capabilities after
	// exec as root: permitted/effective keep the bounding set.
	want := map[string]string{"CapInh": "0000000000000020", "CapPrm": "0000000000000421",
		"CapEff": "0000000000000421", "CapBnd": "0000000000000421", "CapAmb": "0000000000000020"}
	for k, v := range want {
		if !strings.Contains(r.out, k+":\t"+v) {
			t.Errorf("%s: want %s in\n%s", k, v, r.out)
		}
	}
}

func TestNonRootUserAndGroups(t *testing.T) {
	h := newHarness(t)
	r := h.run(func(s *specs.Spec, _ string) {
		s.Process.User = specs.User{UID: 1000, GID: 1001, AdditionalGids: []uint32{2000}}
		s.Process.Args = []string{"sh", "-c", "id; grep ^CapEff /proc/self/status"}
	})
	if !strings.Contains(r.out, "uid=1000 gid=1001 groups=2000") {
		t.Fatalf("id output: %s", r.out)
	}
	// A non-root user loses effective capabilities on exec unless ambient.
	if !strings.Contains(r.out, "CapEff:\t0000000000000000") {
		t.Fatalf("non-root process kept effective capabilities: %s", r.out)
	}
}

func TestSeccompDeniesWithConfiguredErrno(t *testing.T) {
	h := newHarness(t)
	errno := uint(42) // ENOMSG: "No message of desired type"
	r := h.run(func(s *specs.Spec, _ string) {
		s.Linux.Seccomp = &specs.LinuxSeccomp{
			DefaultAction: specs.ActAllow,
			Syscalls:      []specs.LinuxSyscall{{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: &errno}},
		}
		s.Process.Args = []string{"sh", "-c", "mkdir /tmp/denied; echo rc=$?; touch /tmp/allowed && echo touch:ok"}
	})
	if !strings.Contains(r.out, "No message of desired type") || !strings.Contains(r.out, "rc=1") {
		t.Fatalf("mkdir should fail with ENOMSG, got:\n%s", r.out)
	}
	if !strings.Contains(r.out, "touch:ok") {
		t.Fatalf("syscalls outside the rule must work:\n%s", r.out)
	}
}

func TestDefaultSeccompProfileBlocksNamespaceCreation(t *testing.T) {
	h := newHarness(t)
	r := h.run(shell("unshare -U true 2>&1; echo rc=$?"))
	// EPERM is the default profile's answer; any other failure (a missing
	// applet, say) would not show that seccomp did it.
	if !strings.Contains(r.out, "Operation not permitted") || !strings.Contains(r.out, "rc=1") {
		t.Fatalf("unshare of a user namespace should be denied by the default profile:\n%s", r.out)
	}
}

func TestMemoryLimitOOMKillIsReported(t *testing.T) {
	h := newHarness(t)
	limit := int64(32 << 20)
	r := h.run(func(s *specs.Spec, _ string) {
		s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &limit, Swap: &limit}
		// tail buffers a line that never ends: it grows until killed.
		s.Process.Args = []string{"tail", "/dev/zero"}
	})
	if !r.status.OOMKilled || r.status.Signal != unix.SIGKILL {
		t.Fatalf("want an OOM kill reported, got %+v (%s)", r.status, r.out)
	}
}

// TestInitIsInEveryCgroupOfTheContainer: the parent does not move the
// init (cgroups.Join): it is forked into the cgroup2 directory and its
// thread joins the v1 hierarchies itself. From create on, and after start,
// the container must be in its cgroup in every hierarchy.
func TestInitIsInEveryCgroupOfTheContainer(t *testing.T) {
	h := newHarness(t)
	id, _ := h.create(h.bundle(shell("sleep 30")))
	st, err := h.rt.State(id)
	must(t, err)
	inAll := func(when string) {
		t.Helper()
		for _, dir := range cgroupDirs(t, h.rt, id) {
			data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
			must(t, err)
			if !slices.Contains(strings.Fields(string(data)), strconv.Itoa(st.Pid)) {
				t.Errorf("%s: process %d is not in %s (cgroup.procs: %q)", when, st.Pid, dir, data)
			}
		}
	}
	inAll("after create")
	must(t, h.rt.Start(context.Background(), id))
	inAll("after start")
}

// TestPidsLimitBelowTheInitsThreads: the pids limit applies once the init
// is ready, since the Go runtime of an init born in a cgroup2 directory
// starts its threads there.
func TestPidsLimitBelowTheInitsThreads(t *testing.T) {
	h := newHarness(t)
	limit := int64(1)
	r := h.run(func(s *specs.Spec, _ string) {
		s.Linux.Resources.Pids = &specs.LinuxPids{Limit: &limit}
		s.Process.Args = []string{"echo", "one process"}
	})
	if got := strings.TrimSpace(r.out); got != "one process" || r.status.Code != 0 {
		t.Fatalf("got %q, %+v; want \"one process\" and exit code 0", got, r.status)
	}
}

func TestPidsLimitStopsForkBomb(t *testing.T) {
	h := newHarness(t)
	limit := int64(16)
	id, out := h.create(h.bundle(func(s *specs.Spec, _ string) {
		s.Linux.Resources.Pids = &specs.LinuxPids{Limit: &limit}
		// The inner shell forks until the kernel refuses; the outer one
		// survives to report it and keeps the container running.
		s.Process.Args = []string{"sh", "-c", "sh -c 'i=0; while [ $i -lt 64 ]; do sleep 60 & i=$((i+1)); done'; echo bomb-stopped; sleep 60"}
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	must(t, h.rt.Start(ctx, id))
	waitFor(t, "the fork bomb to be stopped", func() bool {
		data, _ := os.ReadFile(out.Name())
		return strings.Contains(string(data), "bomb-stopped")
	})
	stats, err := h.rt.Stats(id)
	must(t, err)
	if stats.Pids.Current > uint64(limit) || stats.Pids.Current < uint64(limit)-2 {
		t.Fatalf("pids.current = %d, want close to the limit %d", stats.Pids.Current, limit)
	}
	data, _ := os.ReadFile(out.Name())
	if !strings.Contains(string(data), "can't fork") {
		t.Fatalf("the shell should report failed forks:\n%s", data)
	}
	pids, err := h.rt.Processes(id)
	must(t, err)
	if len(pids) > int(limit) {
		t.Fatalf("%d processes in the container, limit %d", len(pids), limit)
	}
	must(t, h.rt.Kill(id, unix.SIGKILL, true))
	if _, err := h.rt.Wait(ctx, id); err != nil {
		t.Fatal(err)
	}
}

func TestSymlinkEscapesAreRejected(t *testing.T) {
	hostDir := t.TempDir()
	tests := []struct {
		name string
		edit func(s *specs.Spec, rootfs string)
	}{
		{"cwd through a relative symlink", func(s *specs.Spec, rootfs string) {
			must(t, os.Symlink("../../../../../../../../.."+hostDir, filepath.Join(rootfs, "evil")))
			s.Process.Cwd = "/evil"
		}},
		{"mount destination through a symlink", func(s *specs.Spec, rootfs string) {
			must(t, os.Symlink("/../../../../../../.."+hostDir, filepath.Join(rootfs, "evil")))
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/evil/x", Type: "tmpfs", Source: "tmpfs"})
		}},
		{"bind mount destination through a nested symlink", func(s *specs.Spec, rootfs string) {
			must(t, os.MkdirAll(filepath.Join(rootfs, "a/b"), 0o755))
			must(t, os.Symlink("../../../..", filepath.Join(rootfs, "a/b/up")))
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/a/b/up" + hostDir, Type: "bind", Source: "/etc", Options: []string{"rbind"}})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			bundle := h.bundle(tt.edit)
			id := h.id()
			err := h.rt.Create(context.Background(), id, runtime.CreateOptions{Bundle: bundle})
			var esc *runtime.EscapeError
			if !errors.As(err, &esc) && (err == nil || !strings.Contains(err.Error(), "escapes the root filesystem")) {
				t.Fatalf("want an escape error, got %v", err)
			}
			assertNothingLeft(t, h.rt, id)
			if entries, _ := os.ReadDir(hostDir); len(entries) != 0 {
				t.Fatalf("the host directory was touched: %v", entries)
			}
		})
	}
}

func TestSymlinksInsideTheRootStillWork(t *testing.T) {
	h := newHarness(t)
	r := h.run(func(s *specs.Spec, rootfs string) {
		must(t, os.MkdirAll(filepath.Join(rootfs, "data/real"), 0o755))
		must(t, os.Symlink("/data/real", filepath.Join(rootfs, "work")))
		must(t, os.Symlink("real", filepath.Join(rootfs, "data/rel")))
		s.Process.Cwd = "/work"
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data/rel/mnt", Type: "tmpfs", Source: "tmpfs"})
		s.Process.Args = []string{"sh", "-c", "pwd; grep -c ' /data/real/mnt ' /proc/self/mountinfo"}
	})
	if !strings.Contains(r.out, "/work\n1") && !strings.Contains(r.out, "/data/real\n1") {
		t.Fatalf("in-root symlinks should resolve inside the root:\n%s", r.out)
	}
}

func TestNoInheritedDescriptors(t *testing.T) {
	h := newHarness(t)
	// A descriptor this process leaks on purpose (no O_CLOEXEC).
	fd, err := syscall.Open("/etc/hostname", syscall.O_RDONLY, 0)
	must(t, err)
	defer syscall.Close(fd)
	// ls lists the shell's table while the shell waits for it. (A pipeline
	// or a glob would show descriptors the shell opens for itself.)
	r := h.run(shell("ls /proc/$$/fd; echo; ls -l /proc/$$/fd"))
	if got := strings.Join(strings.Fields(strings.SplitN(r.out, "\n\n", 2)[0]), " "); got != "0 1 2" {
		t.Fatalf("container's descriptors: %q, want \"0 1 2\"; in detail:\n%s", got, r.out)
	}
}

func TestNothingLeftAfterKillAndDelete(t *testing.T) {
	h := newHarness(t)
	id, _ := h.create(h.bundle(shell("sleep 100 & sleep 100")))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	must(t, h.rt.Start(ctx, id))
	dirs := cgroupDirs(t, h.rt, id)
	st, err := h.rt.State(id)
	must(t, err)
	if err := h.rt.Delete(ctx, id, false); err == nil || !strings.Contains(err.Error(), "running") {
		t.Fatalf("delete of a running container without force: %v", err)
	}
	must(t, h.rt.Kill(id, unix.SIGKILL, true))
	if _, err := h.rt.Wait(ctx, id); err != nil {
		t.Fatal(err)
	}
	must(t, h.rt.Delete(ctx, id, false))
	assertNothingLeft(t, h.rt, id)
	for _, d := range dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s remains", d)
		}
	}
	if err := syscall.Kill(st.Pid, 0); err == nil {
		t.Errorf("container init %d still exists", st.Pid)
	}
}

func TestExecJoinsTheContainer(t *testing.T) {
	h := newHarness(t)
	id, _ := h.create(h.bundle(func(s *specs.Spec, _ string) {
		s.Hostname = "exec-host"
		s.Process.Args = []string{"sleep", "100"}
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	must(t, h.rt.Start(ctx, id))
	out, err := os.CreateTemp(t.TempDir(), "exec")
	must(t, err)
	spec, err := h.rt.Spec(id)
	must(t, err)
	proc := *spec.Process
	proc.Args = []string{"sh", "-c", "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; echo fds:; ls /proc/$$/fd; exit 5"}
	p, err := h.rt.Exec(ctx, id, &proc, runtime.ExecOptions{Stdout: out, Stderr: out})
	must(t, err)
	status, err := p.Wait(ctx)
	must(t, err)
	data, _ := os.ReadFile(out.Name())
	if status.Code != 5 {
		t.Fatalf("exec exit status %+v, output %s", status, data)
	}
	for _, want := range []string{"exec-host", "sleep 100", "fds:\n0\n1\n2\n"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("exec output lacks %q:\n%s", want, data)
		}
	}
}

// TestExecDetachLeavesTheExitToTheInheritor: with Detach, a process that
// exits at once stays unreaped, so whoever inherits it (conmon, as
// subreaper, once `nexus runtime exec --detach` exits) can read its status.
// The runtime used to reap it in the background; podman exec then saw
// exit code -1 about once in 40 runs.
func TestExecDetachLeavesTheExitToTheInheritor(t *testing.T) {
	h := newHarness(t)
	id, _ := h.create(h.bundle(func(s *specs.Spec, _ string) {
		s.Process.Args = []string{"sleep", "100"}
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	must(t, h.rt.Start(ctx, id))
	spec, err := h.rt.Spec(id)
	must(t, err)
	proc := *spec.Process
	proc.Args = []string{"sh", "-c", "exit 7"}
	p, err := h.rt.Exec(ctx, id, &proc, runtime.ExecOptions{Detach: true})
	must(t, err)
	time.Sleep(300 * time.Millisecond) // long enough for a background reaper
	var ws unix.WaitStatus
	pid, err := unix.Wait4(p.Pid, &ws, unix.WNOHANG, nil)
	if err != nil || pid != p.Pid {
		t.Fatalf("the detached process %d was not left to its inheritor: wait4 = %d, %v", p.Pid, pid, err)
	}
	if !ws.Exited() || ws.ExitStatus() != 7 {
		t.Fatalf("the detached process ended with %v, want exit 7", ws)
	}
}

func TestHooksRunInOrder(t *testing.T) {
	h := newHarness(t)
	log := filepath.Join(t.TempDir(), "hooks.log")
	hook := func(name string) specs.Hook {
		return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "read state; echo " + name + " >> " + log}}
	}
	r := h.run(func(s *specs.Spec, rootfs string) {
		s.Hooks = &specs.Hooks{
			//lint:ignore SA1019 the deprecated hook must still run
			Prestart:      []specs.Hook{hook("prestart")},
			CreateRuntime: []specs.Hook{hook("createRuntime")},
			// createContainer runs in the container's mount namespace before
			// pivot_root, so the host path still resolves.
			CreateContainer: []specs.Hook{hook("createContainer")},
			StartContainer:  []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "echo startContainer > /tmp/started"}}},
			Poststart:       []specs.Hook{hook("poststart")},
			Poststop:        []specs.Hook{hook("poststop")},
		}
		s.Process.Args = []string{"sh", "-c", "sleep 0.2; cat /tmp/started"}
	})
	data, err := os.ReadFile(log)
	must(t, err)
	if got := strings.Fields(string(data)); strings.Join(got, ",") != "prestart,createRuntime,createContainer,poststart,poststop" {
		t.Fatalf("hooks ran as %v", got)
	}
	if !strings.Contains(r.out, "startContainer") {
		t.Fatalf("startContainer hook did not run in the container: %q", r.out)
	}
}

func TestUserNamespaceMapsRoot(t *testing.T) {
	h := newHarness(t)
	r := h.run(func(s *specs.Spec, rootfs string) {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
		s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
		s.Process.Args = []string{"sh", "-c", "id -u; cat /proc/self/uid_map"}
		must(t, filepath.Walk(rootfs, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, 100000, 100000)
		}))
	})
	fields := strings.Fields(r.out)
	if len(fields) < 4 || fields[0] != "0" || fields[2] != "100000" {
		t.Fatalf("want uid 0 mapped to host 100000, got:\n%s", r.out)
	}
}

// TestInitBinaryCannotBeOverwritten is the CVE-2019-5736 scenario: a process
// in the container holds the runtime's /proc/<pid>/exe while the init runs,
// and tries to reopen it for writing once the init has exec'd.
func TestInitBinaryCannotBeOverwritten(t *testing.T) {
	h := newHarness(t)
	id, _ := h.create(h.bundle(shell("sleep 100")))
	st, err := h.rt.State(id)
	must(t, err)
	exe, err := os.Open(fmt.Sprintf("/proc/%d/exe", st.Pid))
	must(t, err)
	defer exe.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	must(t, h.rt.Start(ctx, id))
	f, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", exe.Fd()), os.O_WRONLY, 0)
	if err == nil {
		f.Close()
		t.Fatal("the init's binary could be opened for writing after it exec'd")
	}
	if !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.ETXTBSY) && !errors.Is(err, syscall.EPERM) {
		t.Fatalf("unexpected error %v", err)
	}
}

func TestCreateRefusesBadInputAndLeavesNothing(t *testing.T) {
	seven := uint(1)
	tests := []struct {
		name   string
		config func(s *specs.Spec, rootfs string) // nil: raw JSON below
		raw    string
		want   string
	}{
		{name: "bad JSON", raw: `{"ociVersion": "1.0.2", "process": `, want: "not valid JSON"},
		{name: "wrong type", raw: `{"ociVersion": "1.0.2", "process": {"args": "sh"}}`, want: "process.args"},
		{name: "unknown namespace", config: func(s *specs.Spec, _ string) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: "bogus"})
		}, want: `linux.namespaces[6].type: unknown namespace type "bogus"`},
		{name: "relative mount destination", config: func(s *specs.Spec, _ string) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "data", Type: "tmpfs", Source: "tmpfs"})
		}, want: "mounts[7].destination"},
		{name: "escaping mount destination", config: func(s *specs.Spec, _ string) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/../../etc", Type: "tmpfs", Source: "tmpfs"})
		}, want: "climbs out of the root filesystem"},
		{name: "missing rootfs", config: func(s *specs.Spec, _ string) { s.Root.Path = "nope" }, want: "root.path"},
		{name: "invalid rlimit", config: func(s *specs.Spec, _ string) {
			s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_BOGUS", Soft: 1, Hard: 1}}
		}, want: `process.rlimits[0].type: unknown rlimit "RLIMIT_BOGUS"`},
		{name: "soft above hard", config: func(s *specs.Spec, _ string) {
			s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 10, Hard: 5}}
		}, want: "soft limit 10 is above hard limit 5"},
		{name: "rlimit above what the host allows", config: func(s *specs.Spec, _ string) {
			s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 1 << 40, Hard: 1 << 40}}
		}, want: "RLIMIT_NOFILE"},
		{name: "unknown syscall", config: func(s *specs.Spec, _ string) {
			s.Linux.Seccomp.Syscalls = append(s.Linux.Seccomp.Syscalls, specs.LinuxSyscall{Names: []string{"no_such_call"}, Action: specs.ActErrno, ErrnoRet: &seven})
		}, want: `unknown syscall "no_such_call"`},
		{name: "unknown capability", config: func(s *specs.Spec, _ string) {
			s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_TIME_TRAVEL")
		}, want: `process.capabilities.bounding[13]: unknown capability "CAP_TIME_TRAVEL"`},
		{name: "bad memory limit", config: func(s *specs.Spec, _ string) {
			bad := int64(-5)
			s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &bad}
		}, want: "memory.limit"},
		{name: "missing program", config: func(s *specs.Spec, _ string) { s.Process.Args = []string{"/no/such/program"} },
			want: "process.args[0] /no/such/program"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			bundle := h.bundle(tt.config)
			if tt.config == nil {
				must(t, os.WriteFile(filepath.Join(bundle, "config.json"), []byte(tt.raw), 0o644))
			}
			id := h.id()
			err := h.rt.Create(context.Background(), id, runtime.CreateOptions{Bundle: bundle})
			if err == nil {
				_ = h.rt.Delete(context.Background(), id, true)
				t.Fatalf("create accepted a bad config")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not name %q", err, tt.want)
			}
			assertNothingLeft(t, h.rt, id)
		})
	}
}

// assertNothingLeft checks a failed or deleted container left no state
// directory, cgroup or process behind.
func assertNothingLeft(t *testing.T, rt *runtime.Runtime, id string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(rt.Root(), id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state directory of %s remains", id)
	}
	for _, mnt := range []string{"/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(mnt, "nexus", id)); err == nil {
			t.Errorf("cgroup %s/nexus/%s remains", mnt, id)
		}
	}
	out, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(out), id) {
		t.Errorf("a mount mentioning %s remains", id)
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(cmdline), "nexus-init\x00"+id+"\x00") {
			t.Errorf("init process %d of %s remains", pid, id)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestExitStatusSurvivesARestartedAgent: the process that created the
// container is gone when the container exits; a new Runtime still learns
// the exit code (through the kernel-side exit recorder).
func TestExitStatusSurvivesARestartedAgent(t *testing.T) {
	h := newHarness(t)
	testutil.RequirePath(t, "/sys/kernel/btf/vmlinux", "kernel BTF for the exit recorder")
	recDir := filepath.Join("/sys/fs/bpf/nexus-test", "rt-"+filepath.Base(t.TempDir()))
	t.Cleanup(func() {
		for _, n := range []string{"link", "watch", "exits", ""} {
			syscall.Unlink(filepath.Join(recDir, n))
		}
		syscall.Rmdir(recDir)
		syscall.Rmdir(filepath.Dir(recDir))
	})
	// The container exits 7 once the test creates /sig/go.
	sig := t.TempDir()
	bundle := h.bundle(func(s *specs.Spec, _ string) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/sig", Type: "bind", Source: sig, Options: []string{"rbind"}})
		s.Process.Args = []string{"sh", "-c", "while [ ! -e /sig/go ]; do sleep 0.02; done; exit 7"}
	})
	id := h.id()
	arg, _ := json.Marshal(map[string]string{"Root": h.rt.Root(), "RecDir": recDir, "ID": id, "Bundle": bundle})
	startAndLeaveIn(t, string(arg))
	t.Cleanup(func() { _ = h.rt.Delete(context.Background(), id, true) })
	if st, err := h.rt.State(id); err != nil || st.Status != specs.StateRunning {
		t.Fatalf("the container should still run after its agent left: %+v %v", st, err)
	}

	must(t, os.WriteFile(filepath.Join(sig, "go"), nil, 0o644))
	rec, err := exitrec.Open(recDir)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	restarted := runtime.New(runtime.Config{Root: h.rt.Root(), Exits: rec})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	status, err := restarted.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !status.Known || status.Code != 7 {
		t.Fatalf("restarted agent sees %+v, want exit code 7", status)
	}
	if err := restarted.Delete(ctx, id, false); err != nil {
		t.Fatal(err)
	}

	// Without the recorder the status is honestly unknown, not 0.
	bundle = h.bundle(shell("exit 7"))
	id2 := h.id()
	arg, _ = json.Marshal(map[string]string{"Root": h.rt.Root(), "RecDir": recDir, "ID": id2, "Bundle": bundle})
	startAndLeaveIn(t, string(arg))
	t.Cleanup(func() { _ = h.rt.Delete(context.Background(), id2, true) })
	status, err = runtime.New(runtime.Config{Root: h.rt.Root()}).Wait(ctx, id2)
	if err != nil || status.Known {
		t.Fatalf("without a recorder: %+v, %v; want an unknown status", status, err)
	}
}

// startAndLeaveIn runs startAndLeave in a child process. Its output goes to
// a file: the container inherits it, and a pipe would make this wait for
// the container.
func startAndLeaveIn(t *testing.T, arg string) {
	t.Helper()
	out, err := os.CreateTemp(t.TempDir(), "agent")
	must(t, err)
	defer out.Close()
	agent := exec.Command(os.Args[0], "-test.run=^$")
	agent.Env = append(os.Environ(), "NEXUS_TEST_START_AND_LEAVE="+arg)
	agent.Stdout, agent.Stderr = out, out
	if err := agent.Run(); err != nil {
		data, _ := os.ReadFile(out.Name())
		t.Fatalf("first agent: %v: %s", err, data)
	}
}

// TestStartReportsLateErrors: what fails after create (a startContainer
// hook here) is reported by Start, naming the hook.
// TestStartReportsLateErrors: the Runtime that created a container starts
// it over the init's sync socket, any other (a start command) over its
// start socket; both report what failed after the start.
func TestStartReportsLateErrors(t *testing.T) {
	h := newHarness(t)
	for _, starter := range []struct {
		name string
		rt   *runtime.Runtime
	}{{"the creating runtime", h.rt}, {"another runtime", runtime.New(runtime.Config{Root: h.rt.Root()})}} {
		id, _ := h.create(h.bundle(func(s *specs.Spec, _ string) {
			s.Hooks = &specs.Hooks{StartContainer: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "echo no-database >&2; exit 3"}}}}
		}))
		err := starter.rt.Start(context.Background(), id)
		if err == nil || !strings.Contains(err.Error(), "hooks.startContainer[0]") || !strings.Contains(err.Error(), "no-database") {
			t.Fatalf("start by %s: error %v should name the failed hook and its output", starter.name, err)
		}
	}
}

// TestStartByAnotherRuntimeRunsTheContainer: a container created by one
// Runtime (which keeps the init's sync socket) and started by another (a
// start command: through the start socket) runs, and its creator still
// gets its exit status.
func TestStartByAnotherRuntimeRunsTheContainer(t *testing.T) {
	h := newHarness(t)
	id, out := h.create(h.bundle(shell("echo started; exit 4")))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	must(t, runtime.New(runtime.Config{Root: h.rt.Root()}).Start(ctx, id))
	status, err := h.rt.Wait(ctx, id)
	if err != nil || status.Code != 4 {
		t.Fatalf("wait: %+v, %v; want exit code 4", status, err)
	}
	must(t, h.rt.Delete(ctx, id, false))
	if data, _ := os.ReadFile(out.Name()); strings.TrimSpace(string(data)) != "started" {
		t.Fatalf("container printed %q, want started", data)
	}
	assertNothingLeft(t, h.rt, id)
}

// TestContainerCreatedAgainElsewhereIsNotOurs: a Runtime keeps the state
// and the init of the containers it created; when another process deletes
// such a container and creates a new one of the same id, the first
// Runtime must act on the new one, not on what it kept.
func TestContainerCreatedAgainElsewhereIsNotOurs(t *testing.T) {
	h := newHarness(t)
	other := runtime.New(runtime.Config{Root: h.rt.Root()})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	id, _ := h.create(h.bundle(shell("echo first")))
	must(t, other.Delete(ctx, id, true))
	out, err := os.CreateTemp(t.TempDir(), "out")
	must(t, err)
	sig := t.TempDir()
	bundle := h.bundle(func(s *specs.Spec, _ string) {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/sig", Type: "bind", Source: sig, Options: []string{"rbind"}})
		s.Process.Args = []string{"sh", "-c", "echo second; while [ ! -e /sig/go ]; do sleep 0.02; done"}
	})
	must(t, other.Create(ctx, id, runtime.CreateOptions{Bundle: bundle, Stdout: out, Stderr: out}))

	must(t, h.rt.Start(ctx, id))
	if st, err := h.rt.State(id); err != nil || st.Status != specs.StateRunning {
		t.Fatalf("after start: %+v, %v; want the second container running", st, err)
	}
	waited := make(chan error, 1)
	go func() {
		_, err := h.rt.Wait(ctx, id)
		waited <- err
	}()
	select {
	case err := <-waited:
		t.Fatalf("wait returned (%v) while the second container still runs", err)
	case <-time.After(200 * time.Millisecond):
	}
	must(t, os.WriteFile(filepath.Join(sig, "go"), nil, 0o644))
	must(t, <-waited)
	must(t, h.rt.Delete(ctx, id, false))
	if data, _ := os.ReadFile(out.Name()); strings.TrimSpace(string(data)) != "second" {
		t.Fatalf("second container printed %q", data)
	}
	assertNothingLeft(t, h.rt, id)
}

func TestProcessSettings(t *testing.T) {
	h := newHarness(t)
	adj := 500
	r := h.run(func(s *specs.Spec, _ string) {
		s.Process.OOMScoreAdj = &adj
		s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 512, Hard: 768}}
		s.Linux.Sysctl = map[string]string{"net.ipv4.ip_unprivileged_port_start": "100", "kernel.shmmni": "1234"}
		s.Process.Env = append(s.Process.Env, "GREETING=hello")
		s.Domainname = "example.test"
		s.Process.Args = []string{"sh", "-c", `echo adj=$(cat /proc/self/oom_score_adj) soft=$(ulimit -n) hard=$(ulimit -Hn) ` +
			`port=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start) shm=$(cat /proc/sys/kernel/shmmni) ` +
			`env=$GREETING domain=$(cat /proc/sys/kernel/domainname) lo=$(cat /sys/class/net/lo/operstate)`}
	})
	want := "adj=500 soft=512 hard=768 port=100 shm=1234 env=hello domain=example.test lo=unknown"
	if got := strings.TrimSpace(r.out); got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	if host, _ := os.ReadFile("/proc/sys/kernel/shmmni"); strings.TrimSpace(string(host)) == "1234" {
		t.Fatal("the container's sysctl changed the host")
	}
}

func TestTimeNamespaceOffsets(t *testing.T) {
	testutil.RequirePath(t, "/proc/self/ns/time", "time namespaces")
	h := newHarness(t)
	r := h.run(func(s *specs.Spec, _ string) {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.TimeNamespace})
		s.Linux.TimeOffsets = map[string]specs.LinuxTimeOffset{"boottime": {Secs: 86400 * 365}}
		s.Process.Args = []string{"cut", "-d.", "-f1", "/proc/uptime"}
	})
	up, err := strconv.Atoi(strings.TrimSpace(r.out))
	if err != nil || up < 86400*365 {
		t.Fatalf("uptime inside %q, want at least a year (offset applied)", r.out)
	}
}

func TestJoinNetworkNamespaceByPath(t *testing.T) {
	h := newHarness(t)
	testutil.RequireProgram(t, "ip", "iproute2")
	name := fmt.Sprintf("nxrt-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "add", "marker0", "type", "veth", "peer", "name", "marker1").CombinedOutput(); err != nil {
		t.Fatalf("add a veth pair: %v: %s", err, out)
	}
	r := h.run(func(s *specs.Spec, _ string) {
		for i, ns := range s.Linux.Namespaces {
			if ns.Type == specs.NetworkNamespace {
				s.Linux.Namespaces[i].Path = "/run/netns/" + name
			}
		}
		s.Process.Args = []string{"ls", "/sys/class/net"}
	})
	if !strings.Contains(r.out, "marker0") {
		t.Fatalf("the container should see the joined namespace's links, got %q", r.out)
	}
}

func TestUpdateChangesLimits(t *testing.T) {
	h := newHarness(t)
	id, _ := h.create(h.bundle(shell("sleep 100")))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	must(t, h.rt.Start(ctx, id))
	limit := int64(7)
	must(t, h.rt.Update(id, &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &limit}}))
	stats, err := h.rt.Stats(id)
	must(t, err)
	if stats.Pids.Limit != 7 {
		t.Fatalf("pids limit after update = %d, want 7", stats.Pids.Limit)
	}
}

// TestTerminalGoesToTheConsoleSocket: with process.terminal the container's
// stdio is a pty whose master arrives on --console-socket, as OCI clients
// (podman -t) expect.
func TestTerminalGoesToTheConsoleSocket(t *testing.T) {
	h := newHarness(t)
	sock := filepath.Join(t.TempDir(), "console.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	must(t, err)
	defer ln.Close()
	masterc := make(chan *os.File, 1)
	go func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			masterc <- nil
			return
		}
		defer c.Close()
		buf, oob := make([]byte, 64), make([]byte, 64)
		_, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil {
			masterc <- nil
			return
		}
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		fds, _ := unix.ParseUnixRights(&msgs[0])
		masterc <- os.NewFile(uintptr(fds[0]), "pty-master")
	}()
	bundle := h.bundle(func(s *specs.Spec, _ string) {
		s.Process.Terminal = true
		s.Process.Args = []string{"sh", "-c", "tty; [ -t 0 ] && echo stdin-is-a-tty"}
	})
	id := h.id()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	must(t, h.rt.Create(ctx, id, runtime.CreateOptions{Bundle: bundle, ConsoleSocket: sock}))
	t.Cleanup(func() { _ = h.rt.Delete(context.Background(), id, true) })
	master := <-masterc
	if master == nil {
		t.Fatal("no pty master arrived on the console socket")
	}
	defer master.Close()
	must(t, h.rt.Start(ctx, id))
	if _, err := h.rt.Wait(ctx, id); err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 4096)
	n, _ := master.Read(out)
	if got := string(out[:n]); !strings.Contains(got, "/dev/pts/0") || !strings.Contains(got, "stdin-is-a-tty") {
		t.Fatalf("terminal output %q", got)
	}
}

func TestPersonalityLinux32(t *testing.T) {
	h := newHarness(t)
	r := h.run(func(s *specs.Spec, _ string) {
		s.Linux.Personality = &specs.LinuxPersonality{Domain: specs.PerLinux32}
		s.Process.Args = []string{"uname", "-m"}
	})
	if got := strings.TrimSpace(r.out); got != "i686" {
		t.Fatalf("uname -m under LINUX32 = %q, want i686", got)
	}
}

func TestWarmCreate(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	t.Cleanup(func() { h.rt.Close() })
	must(t, h.rt.Prewarm(ctx, 2))

	// A spec the warm inits do not fit leaves the pool alone.
	userns := h.bundle(func(s *specs.Spec, _ string) {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		s.Linux.UIDMappings = []specs.LinuxIDMapping{{HostID: 100000, Size: 65536}}
		s.Linux.GIDMappings = []specs.LinuxIDMapping{{HostID: 100000, Size: 65536}}
	})
	if _, err := h.rt.CreateWarm(ctx, runtime.CreateOptions{Bundle: userns}); !errors.Is(err, runtime.ErrNoWarmSlot) {
		t.Fatalf("user-namespace spec: %v, want ErrNoWarmSlot", err)
	}

	limit := int64(9)
	bundle := h.bundle(func(s *specs.Spec, _ string) {
		s.Hostname = "warm-host"
		s.Linux.Resources.Pids = &specs.LinuxPids{Limit: &limit}
		s.Process.Args = []string{"sh", "-c", "echo pid=$$ host=$(hostname) max=$(cat /sys/fs/cgroup/pids/pids.max); ls /proc/$$/fd"}
	})
	out, err := os.CreateTemp(t.TempDir(), "out")
	must(t, err)
	id, err := h.rt.CreateWarm(ctx, runtime.CreateOptions{Bundle: bundle, Stdout: out, Stderr: out})
	must(t, err)
	t.Cleanup(func() { _ = h.rt.Delete(context.Background(), id, true) })
	dirs := cgroupDirs(t, h.rt, id)
	must(t, h.rt.Start(ctx, id))
	status, err := h.rt.Wait(ctx, id)
	must(t, err)
	data, _ := os.ReadFile(out.Name())
	if status.Code != 0 || !strings.HasPrefix(string(data), "pid=1 host=warm-host max=9\n0\n1\n2\n") {
		t.Fatalf("warm container: %+v, output:\n%s", status, data)
	}
	must(t, h.rt.Delete(ctx, id, false))
	assertNothingLeft(t, h.rt, id)
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("cgroup %s remains", d)
		}
	}

	// Close destroys the slot that is left: its init and cgroups go.
	entries, _ := os.ReadDir(filepath.Join(h.rt.Root(), ".warm"))
	if len(entries) != 1 {
		t.Fatalf("%d warm slots left, want 1", len(entries))
	}
	left := entries[0].Name()
	must(t, h.rt.Close())
	assertNothingLeft(t, h.rt, left)
	if _, err := os.Stat(filepath.Join(h.rt.Root(), ".warm", left)); err == nil {
		t.Fatal("Close left the warm slot's directory")
	}
}

// BenchmarkRun times create + start + wait + delete of /bin/true through
// the Go API: cold, and warm (a slot made by Prewarm outside the timer). It
// also reports the median time to running (create + start: the user's
// process has been exec'd).
func BenchmarkRun(b *testing.B) {
	testutil.RequireRoot(b)
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	s := spec.Default()
	s.Process.Args = []string{"/bin/true"}
	dir := testrootfs.Bundle(b, s, nil)
	null, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	defer null.Close()
	opts := runtime.CreateOptions{Bundle: dir, Stdin: null, Stdout: null, Stderr: null}
	ctx := context.Background()
	bench := func(b *testing.B, rt *runtime.Runtime, create func(i int) string, prepare func()) {
		toRunning := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			if prepare != nil {
				b.StopTimer()
				prepare()
				b.StartTimer()
			}
			t0 := time.Now()
			id := create(i)
			must(rt.Start(ctx, id))
			toRunning = append(toRunning, time.Since(t0))
			if st, err := rt.Wait(ctx, id); err != nil || st.Code != 0 {
				b.Fatalf("wait: %+v %v", st, err)
			}
			must(rt.Delete(ctx, id, false))
		}
		slices.Sort(toRunning)
		b.ReportMetric(float64(toRunning[len(toRunning)/2].Microseconds())/1000, "ms-to-running(median)")
	}
	b.Run("cold", func(b *testing.B) {
		rt := runtime.New(runtime.Config{Root: b.TempDir()})
		bench(b, rt, func(i int) string {
			id := fmt.Sprintf("bench-%d", i)
			must(rt.Create(ctx, id, opts))
			return id
		}, nil)
	})
	b.Run("warm", func(b *testing.B) {
		rt := runtime.New(runtime.Config{Root: b.TempDir()})
		defer rt.Close()
		bench(b, rt, func(int) string {
			id, err := rt.CreateWarm(ctx, opts)
			must(err)
			return id
		}, func() { must(rt.Prewarm(ctx, 1)) })
	})
}
