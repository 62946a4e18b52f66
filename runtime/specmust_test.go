package runtime_test

// Tests for what the OCI runtime spec requires of a runtime and third-party
// bundles rely on (issue #12): each case failed on the runtime before the
// fix it names.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/runtime"
)

// createErr runs Create on a bundle that should be refused and returns the
// error, checking that nothing was left behind.
func (h *harness) createErr(edit func(s *specs.Spec, rootfs string)) error {
	h.t.Helper()
	id := h.id()
	err := h.rt.Create(context.Background(), id, runtime.CreateOptions{Bundle: h.bundle(edit)})
	if err == nil {
		_ = h.rt.Delete(context.Background(), id, true)
		h.t.Fatal("create succeeded, want an error")
	}
	assertNothingLeft(h.t, h.rt, id)
	return err
}

// An ambient capability that is not also permitted and inheritable cannot
// be raised; `runc spec` and `crun spec` write such sets, and runc and crun
// leave those capabilities out rather than refuse the bundle.
func TestAmbientCapabilitiesTheKernelWillNotRaiseAreLeftOut(t *testing.T) {
	h := newHarness(t)
	r := h.run(func(s *specs.Spec, _ string) {
		caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
		s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps,
			Inheritable: []string{"CAP_KILL"}, Ambient: caps}
		s.Process.User = specs.User{UID: 1000, GID: 1000}
		s.Process.Args = []string{"grep", "^Cap", "/proc/self/status"}
	})
	// Only KILL (bit 5) is both permitted and inheritable: it stays ambient,
	// and as ambient it is what a non-root process keeps across exec.
	for k, v := range map[string]string{"CapAmb": "0000000000000020", "CapEff": "0000000000000020", "CapBnd": "0000000020000420"} {
		if !strings.Contains(r.out, k+":\t"+v) {
			t.Errorf("%s: want %s in\n%s", k, v, r.out)
		}
	}
}

// shellSyscalls is about what busybox sh needs to run a few commands: a
// deny-by-default profile allowing only these has no close_range, capset,
// prctl, setresuid, accept4 or futex, which the runtime's own steps use.
var shellSyscalls = []string{
	"execve", "brk", "arch_prctl", "set_tid_address", "set_robust_list", "rseq", "mmap", "munmap", "mprotect",
	"read", "write", "writev", "readv", "close", "exit_group", "exit", "rt_sigaction", "rt_sigprocmask",
	"rt_sigreturn", "getpid", "getppid", "getuid", "geteuid", "getgid", "getegid", "gettid", "ioctl", "fcntl",
	"open", "openat", "newfstatat", "fstat", "stat", "lstat", "statx", "lseek", "getcwd", "wait4", "clone",
	"clone3", "fork", "vfork", "dup", "dup2", "dup3", "pipe", "pipe2", "uname", "getrlimit", "setpgid",
	"getpgid", "getpgrp", "readlink", "readlinkat", "access", "faccessat", "faccessat2", "getdents64", "chdir",
	"kill", "umask", "poll", "ppoll", "nanosleep", "clock_nanosleep", "clock_gettime", "gettimeofday",
}

func TestDenyByDefaultSeccompProfileThatAllowsOnlyAShell(t *testing.T) {
	for _, nnp := range []bool{false, true} {
		t.Run(fmt.Sprintf("noNewPrivileges=%v", nnp), func(t *testing.T) {
			h := newHarness(t)
			eperm := uint(1)
			id, out := h.create(h.bundle(func(s *specs.Spec, _ string) {
				s.Process.NoNewPrivileges = nnp
				s.Linux.Seccomp = &specs.LinuxSeccomp{
					DefaultAction: specs.ActErrno, DefaultErrnoRet: &eperm,
					Architectures: []specs.Arch{specs.ArchX86_64},
					Syscalls:      []specs.LinuxSyscall{{Names: shellSyscalls, Action: specs.ActAllow}},
				}
				s.Process.Args = []string{"sh", "-c", "echo started; mkdir /tmp/denied 2>&1; sleep 100"}
			}))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			must(t, h.rt.Start(ctx, id))
			var data []byte
			for deadline := time.Now().Add(10 * time.Second); !strings.Contains(string(data), "Operation not permitted"); {
				if time.Now().After(deadline) {
					st, _ := h.rt.State(id)
					t.Fatalf("the container wrote %q (state %s)", data, st.Status)
				}
				time.Sleep(10 * time.Millisecond)
				data, _ = os.ReadFile(out.Name())
			}
			if !strings.Contains(string(data), "started") {
				t.Fatalf("output %q", data)
			}
			// exec goes through the same init stage and loads the profile too.
			pout, err := os.CreateTemp(t.TempDir(), "exec")
			must(t, err)
			p, err := h.rt.Exec(ctx, id, &specs.Process{Args: []string{"sh", "-c", "echo exec-ran; mkdir /tmp/denied2 2>&1"}, Cwd: "/",
				Env: []string{"PATH=/bin:/usr/bin"}, NoNewPrivileges: nnp}, runtime.ExecOptions{Stdout: pout, Stderr: pout})
			must(t, err)
			if _, err := p.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			data, _ = os.ReadFile(pout.Name())
			if !strings.Contains(string(data), "exec-ran") || !strings.Contains(string(data), "Operation not permitted") {
				t.Fatalf("exec output %q", data)
			}
		})
	}
}

// linux.devices nodes are made before the device rules apply: with a
// deny-all rule the node exists and opening it is refused by the cgroup.
func TestDeviceNodesUnderDenyAllDeviceRules(t *testing.T) {
	h := newHarness(t)
	mode := os.FileMode(0o666)
	r := h.run(func(s *specs.Spec, _ string) {
		// 10:200 is /dev/net/tun: opening it needs no capability.
		s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/test1", Type: "c", Major: 10, Minor: 200, FileMode: &mode}}
		s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}
		s.Process.Args = []string{"sh", "-c", "ls -l /dev/test1; cat /dev/test1 2>&1; cat /dev/null && echo null:ok"}
	})
	for _, want := range []string{"crw-rw-rw-", "10, 200", "Operation not permitted", "null:ok"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("output lacks %q:\n%s", want, r.out)
		}
	}
}

// In a user namespace mknod is refused, so a linux.devices node is the
// host's, bind-mounted: it must be the device the spec lists, and a missing
// one is explained (it failed with "no such file or directory").
func TestDeviceNodesInAUserNamespaceAreTheHostsOwn(t *testing.T) {
	userNS := func(s *specs.Spec, rootfs string) {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
		s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
		must(t, filepath.Walk(rootfs, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, 100000, 100000)
		}))
	}
	withDevice := func(d specs.LinuxDevice, args ...string) func(s *specs.Spec, rootfs string) {
		return func(s *specs.Spec, rootfs string) {
			userNS(s, rootfs)
			s.Linux.Devices = []specs.LinuxDevice{d}
			s.Process.Args = args
		}
	}

	h := newHarness(t)
	r := h.run(withDevice(specs.LinuxDevice{Path: "/dev/full", Type: "c", Major: 1, Minor: 7},
		"sh", "-c", "ls -l /dev/full; echo x >/dev/full"))
	for _, want := range []string{"1,   7", "No space left on device"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("/dev/full: output lacks %q:\n%s", want, r.out)
		}
	}

	missing := fmt.Sprintf("/dev/nexus-test-%d", os.Getpid())
	err := h.createErr(withDevice(specs.LinuxDevice{Path: missing, Type: "c", Major: 10, Minor: 200}, "true"))
	for _, want := range []string{"the host's " + missing + " is bind-mounted", "mknod " + missing + " c 10 200", "leave out the user namespace"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing host node: error %q lacks %q", err, want)
		}
	}

	err = h.createErr(withDevice(specs.LinuxDevice{Path: "/dev/null", Type: "c", Major: 1, Minor: 5}, "true"))
	if want := "/dev/null is bind-mounted in place of the node, and it is c 1:3, not the c 1:5 the spec lists"; !strings.Contains(err.Error(), want) {
		t.Errorf("other device numbers: error %q lacks %q", err, want)
	}
}

// Without a mount namespace the container shares the runtime's (the spec
// says an unlisted namespace is inherited); its mounts go away with it.
func TestContainerWithoutMountNamespaceSharesTheHostsAndLeavesNoMounts(t *testing.T) {
	h := newHarness(t)
	hostMnt, err := os.Readlink("/proc/self/ns/mnt")
	must(t, err)
	bundle := h.bundle(func(s *specs.Spec, _ string) {
		var nss []specs.LinuxNamespace
		for _, ns := range s.Linux.Namespaces {
			if ns.Type != specs.MountNamespace {
				nss = append(nss, ns)
			}
		}
		s.Linux.Namespaces = nss
		s.Process.Args = []string{"sh", "-c", "readlink /proc/self/ns/mnt; ls /proc/1/cmdline && sleep 100"}
	})
	rootfs := filepath.Join(bundle, "rootfs")
	id, out := h.create(bundle)
	if !mountedUnder(t, rootfs) {
		t.Fatal("the container's mounts are not in the host's mount namespace")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	must(t, h.rt.Start(ctx, id))
	waitFor(t, "the container's output", func() bool {
		data, _ := os.ReadFile(out.Name())
		return strings.Contains(string(data), "/proc/1/cmdline")
	})
	data, _ := os.ReadFile(out.Name())
	if !strings.Contains(string(data), hostMnt) {
		t.Fatalf("container's mount namespace: %q, want the host's %s", data, hostMnt)
	}
	// exec enters the container's root, not the host's.
	pout, err := os.CreateTemp(t.TempDir(), "exec")
	must(t, err)
	p, err := h.rt.Exec(ctx, id, &specs.Process{Args: []string{"sh", "-c", "cat /etc/hostname; readlink /proc/self/ns/mnt"}, Cwd: "/",
		Env: []string{"PATH=/bin:/usr/bin"}}, runtime.ExecOptions{Stdout: pout, Stderr: pout})
	must(t, err)
	if _, err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(pout.Name())
	if got := strings.Fields(string(data)); len(got) != 2 || got[0] != "busybox" || got[1] != hostMnt {
		t.Fatalf("exec saw %q, want the rootfs's /etc/hostname (busybox) and %s", data, hostMnt)
	}
	must(t, h.rt.Delete(ctx, id, true))
	if mountedUnder(t, rootfs) {
		t.Fatal("delete left the container's mounts on the host")
	}
}

// A create that fails after the init built the root file system in the
// host's mount namespace takes the mounts down with it.
func TestFailedCreateWithoutMountNamespaceLeavesNoMounts(t *testing.T) {
	h := newHarness(t)
	var rootfs string
	err := h.createErr(func(s *specs.Spec, r string) {
		rootfs = r
		var nss []specs.LinuxNamespace
		for _, ns := range s.Linux.Namespaces {
			if ns.Type != specs.MountNamespace {
				nss = append(nss, ns)
			}
		}
		s.Linux.Namespaces = nss
		s.Process.Args = []string{"/no/such/program"}
	})
	if !strings.Contains(err.Error(), "/no/such/program") {
		t.Fatalf("error %v", err)
	}
	if mountedUnder(t, rootfs) {
		t.Fatal("the failed create left mounts on the host")
	}
}

// mountedUnder reports whether this mount namespace has a mount at or
// below dir.
func mountedUnder(t *testing.T, dir string) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	must(t, err)
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			return true
		}
	}
	return false
}

// hostname and domainname in a uts namespace joined by path are set there.
func TestHostnameInAJoinedUTSNamespace(t *testing.T) {
	h := newHarness(t)
	unshare := testutil.RequireProgram(t, "unshare", "util-linux")
	holder := exec.Command(unshare, "--uts", "sleep", "100")
	must(t, holder.Start())
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	nsPath := fmt.Sprintf("/proc/%d/ns/uts", holder.Process.Pid)
	hostBefore, err := os.Hostname()
	must(t, err)
	r := h.run(func(s *specs.Spec, _ string) {
		for i, ns := range s.Linux.Namespaces {
			if ns.Type == specs.UTSNamespace {
				s.Linux.Namespaces[i].Path = nsPath
			}
		}
		s.Hostname, s.Domainname = "joined-host", "joined-domain"
		s.Process.Args = []string{"sh", "-c", "hostname; cat /proc/sys/kernel/domainname"}
	})
	if got := strings.Fields(r.out); len(got) != 2 || got[0] != "joined-host" || got[1] != "joined-domain" {
		t.Fatalf("container saw %q", r.out)
	}
	nsenter := testutil.RequireProgram(t, "nsenter", "util-linux")
	out, err := exec.Command(nsenter, "--uts="+nsPath, "hostname").Output()
	must(t, err)
	if strings.TrimSpace(string(out)) != "joined-host" {
		t.Fatalf("the joined namespace's hostname is %q", out)
	}
	if hostAfter, _ := os.Hostname(); hostAfter != hostBefore {
		t.Fatalf("the host was renamed from %q to %q", hostBefore, hostAfter)
	}
}

// Directories made above a container's cgroup go away with it.
func TestCgroupParentsTheRuntimeMadeAreRemoved(t *testing.T) {
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	tests := []struct {
		name, path string
		top        string // the topmost directory the runtime makes, relative to a hierarchy root
	}{
		{"relative", fmt.Sprintf("t%d-rel/middle/box", os.Getpid()), fmt.Sprintf("nexus/t%d-rel", os.Getpid())},
		{"absolute", fmt.Sprintf("/t%d-abs/middle/box", os.Getpid()), fmt.Sprintf("t%d-abs", os.Getpid())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			t.Cleanup(func() {
				for _, hier := range hierarchies {
					_ = os.Remove(filepath.Join(hier, tt.top, "middle", "box"))
					_ = os.Remove(filepath.Join(hier, tt.top, "middle"))
					_ = os.Remove(filepath.Join(hier, tt.top))
				}
			})
			r := h.run(func(s *specs.Spec, _ string) { s.Linux.CgroupsPath = tt.path })
			if len(r.paths) == 0 {
				t.Fatal("no cgroup paths recorded")
			}
			for _, hier := range hierarchies {
				if _, err := os.Stat(filepath.Join(hier, tt.top)); err == nil {
					t.Errorf("%s remains after delete", filepath.Join(hier, tt.top))
				}
			}
		})
	}
}

// A parent that existed before the container is not the runtime's to remove.
func TestCgroupParentThatExistedIsKept(t *testing.T) {
	h := newHarness(t)
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	parent := fmt.Sprintf("t%d-own", os.Getpid())
	var made []string
	for _, hier := range hierarchies {
		if err := os.Mkdir(filepath.Join(hier, parent), 0o755); err == nil {
			made = append(made, filepath.Join(hier, parent))
		}
	}
	t.Cleanup(func() {
		for _, d := range made {
			_ = os.Remove(d)
		}
	})
	h.run(func(s *specs.Spec, _ string) { s.Linux.CgroupsPath = "/" + parent + "/box" })
	for _, d := range made {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s, which existed before the container, was removed", d)
		}
	}
}

// IDs up to the file name limit work, whatever the socket path limit; the
// limit is stated when an ID is too long.
func TestLongContainerIDs(t *testing.T) {
	h := newHarness(t)
	bundle := h.bundle(shell("echo ran"))
	for _, n := range []int{83, 200, runtime.MaxIDLength} {
		id := fmt.Sprintf("t%d-%s", os.Getpid(), strings.Repeat("x", n))[:n]
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := os.CreateTemp(t.TempDir(), "out")
		must(t, err)
		if err := h.rt.Create(ctx, id, runtime.CreateOptions{Bundle: bundle, Stdout: out, Stderr: out}); err != nil {
			cancel()
			t.Fatalf("id of %d characters: %v", n, err)
		}
		must(t, h.rt.Start(ctx, id))
		if _, err := h.rt.Wait(ctx, id); err != nil {
			t.Fatal(err)
		}
		must(t, h.rt.Delete(ctx, id, false))
		cancel()
		if data, _ := os.ReadFile(out.Name()); !strings.Contains(string(data), "ran") {
			t.Fatalf("id of %d characters: output %q", n, data)
		}
	}
	err := h.rt.Create(context.Background(), strings.Repeat("y", runtime.MaxIDLength+1), runtime.CreateOptions{Bundle: bundle})
	if err == nil || !strings.Contains(err.Error(), "1-255 characters") || strings.Contains(err.Error(), "cgroupsPath") {
		t.Fatalf("id of 256 characters: %v", err)
	}
}

// A memory limit below what the runtime's own setup needs is reported as
// such, not as a broken socket.
func TestMemoryLimitTooLowForSetupIsExplained(t *testing.T) {
	for _, limit := range []int64{1, 4096} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			h := newHarness(t)
			err := h.createErr(func(s *specs.Spec, _ string) {
				s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &limit}
			})
			for _, want := range []string{"killed for lack of memory during setup", fmt.Sprintf("memory.limit (%d bytes) is too low", limit)} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}
}

// Limits apply to the container's program, not to the runtime's setup
// before it: a Go init under a 1 GiB RLIMIT_AS (the conformance suite's)
// could not allocate its heap.
func TestRlimitsApplyToTheProgramOnly(t *testing.T) {
	h := newHarness(t)
	const gib = 1 << 30
	r := h.run(func(s *specs.Spec, _ string) {
		// The conformance suite's process_rlimits set.
		s.Process.Rlimits = []specs.POSIXRlimit{
			{Type: "RLIMIT_AS", Soft: 1 * gib, Hard: 2 * gib}, {Type: "RLIMIT_CORE", Soft: 3 * gib, Hard: 4 * gib},
			{Type: "RLIMIT_DATA", Soft: 5 * gib, Hard: 6 * gib}, {Type: "RLIMIT_FSIZE", Soft: 7 * gib, Hard: 8 * gib},
			{Type: "RLIMIT_STACK", Soft: 9 * gib, Hard: 10 * gib}, {Type: "RLIMIT_CPU", Soft: 60, Hard: 120},
			{Type: "RLIMIT_NOFILE", Soft: 3000, Hard: 4000},
		}
		s.Process.Args = []string{"sh", "-c", "echo as=$(ulimit -Sv)/$(ulimit -Hv) nofile=$(ulimit -Sn)/$(ulimit -Hn) cpu=$(ulimit -St)/$(ulimit -Ht)"}
	})
	if got, want := strings.TrimSpace(r.out), "as=1048576/2097152 nofile=3000/4000 cpu=60/120"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// A spec asking for a terminal runs without --console-socket when the
// caller takes the terminal itself, as `runc run` does in the foreground.
func TestTerminalRelayedWithoutAConsoleSocket(t *testing.T) {
	h := newHarness(t)
	bundle := h.bundle(func(s *specs.Spec, _ string) {
		s.Process.Terminal = true
		s.Process.Args = []string{"sh"}
	})
	in, feed, err := os.Pipe()
	must(t, err)
	defer in.Close()
	defer feed.Close()
	out, err := os.CreateTemp(t.TempDir(), "screen")
	must(t, err)
	var stop func()
	id := h.id()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	must(t, h.rt.Create(ctx, id, runtime.CreateOptions{Bundle: bundle,
		Console: func(master *os.File) { stop = runtime.RelayConsole(master, in, out) }}))
	t.Cleanup(func() { _ = h.rt.Delete(context.Background(), id, true) })
	if stop == nil {
		t.Fatal("Create did not pass the terminal")
	}
	_, err = feed.Write([]byte("tty; echo relay-$((2+3)); exit 4\n"))
	must(t, err)
	must(t, h.rt.Start(ctx, id))
	status, err := h.rt.Wait(ctx, id)
	must(t, err)
	stop()
	screen, _ := os.ReadFile(out.Name())
	if status.Code != 4 || !strings.Contains(string(screen), "relay-5") || !strings.Contains(string(screen), "/dev/pts/0") {
		t.Fatalf("exit %+v, screen %q", status, screen)
	}
	if err := h.rt.Create(ctx, h.id(), runtime.CreateOptions{Bundle: bundle}); err == nil || !strings.Contains(err.Error(), "--console-socket") {
		t.Fatalf("without Console or a console socket: %v", err)
	}
}

// rootfsPropagation "unbindable" makes the container's / unbindable; it
// used to be applied to / before the rootfs was bound onto itself, which an
// unbindable parent refuses.
func TestUnbindableRootfsPropagation(t *testing.T) {
	for _, mode := range []string{"unbindable", "runbindable"} {
		t.Run(mode, func(t *testing.T) {
			h := newHarness(t)
			r := h.run(func(s *specs.Spec, _ string) {
				s.Linux.RootfsPropagation = mode
				s.Process.Args = []string{"awk", `$5 == "/"`, "/proc/self/mountinfo"}
			})
			if !strings.Contains(r.out, "unbindable") {
				t.Fatalf("/ in the container: %q", r.out)
			}
		})
	}
}

// A spec without a process creates a container; start is what fails (the
// runtime spec: start MUST generate an error if process was not set).
func TestCreateWithoutProcessFailsAtStart(t *testing.T) {
	h := newHarness(t)
	id, _ := h.create(h.bundle(func(s *specs.Spec, _ string) { s.Process = nil }))
	st, err := h.rt.State(id)
	must(t, err)
	if st.Status != specs.StateCreated {
		t.Fatalf("state %s, want created", st.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.rt.Start(ctx, id); err == nil || !strings.Contains(err.Error(), "process: not set") {
		t.Fatalf("start: %v", err)
	}
	must(t, h.rt.Delete(ctx, id, true))
	assertNothingLeft(t, h.rt, id)
}

// poststart hooks are told the container runs, with its pid, even when the
// program has already exited by the time they start.
func TestPoststartHookSeesARunningContainer(t *testing.T) {
	h := newHarness(t)
	saved := filepath.Join(t.TempDir(), "state.json")
	h.run(func(s *specs.Spec, _ string) {
		s.Hooks = &specs.Hooks{Poststart: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "cat > " + saved}}}}
		s.Process.Args = []string{"true"}
	})
	data, err := os.ReadFile(saved)
	must(t, err)
	var st specs.State
	must(t, json.Unmarshal(data, &st))
	if st.Status != specs.StateRunning || st.Pid <= 0 {
		t.Fatalf("poststart hook got %s", data)
	}
}

// Capabilities the runtime does not hold itself cannot be granted; the
// runtime spec asks for a warning, not a failure (this project's CI machine
// runs without CAP_SYS_RESOURCE, so "all capabilities" was refused).
func TestAllCapabilitiesGetWhatTheRuntimeHolds(t *testing.T) {
	h := newHarness(t)
	status, err := os.ReadFile("/proc/self/status")
	must(t, err)
	var own string
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "CapPrm:\t"); ok {
			own = v
		}
	}
	var all []string
	for i := 0; i <= 40; i++ {
		all = append(all, capName(i))
	}
	r := h.run(func(s *specs.Spec, _ string) {
		s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: all, Effective: all, Permitted: all, Inheritable: all, Ambient: all}
		s.Process.Args = []string{"grep", "^CapBnd", "/proc/self/status"}
	})
	if got := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(r.out), "CapBnd:")); got != own {
		t.Fatalf("container's bounding set %q, want the runtime's own %q", got, own)
	}
}

var capNames = []string{"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
	"LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE",
	"SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
	"SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
	"WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"}

func capName(i int) string { return "CAP_" + capNames[i] }

// Hooks that run during create see the state the runtime spec calls
// created: the runtime environment exists (step 2 of the lifecycle).
func TestCreateHooksSeeACreatedContainer(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	save := func(name string) specs.Hook {
		return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "cat > " + filepath.Join(dir, name)}}
	}
	h.run(func(s *specs.Spec, _ string) {
		//lint:ignore SA1019 the deprecated hook must still run
		s.Hooks = &specs.Hooks{Prestart: []specs.Hook{save("prestart")}, CreateRuntime: []specs.Hook{save("createRuntime")}}
	})
	for _, name := range []string{"prestart", "createRuntime"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		must(t, err)
		var st specs.State
		must(t, json.Unmarshal(data, &st))
		if st.Status != specs.StateCreated || st.Pid <= 0 {
			t.Errorf("%s hook got %s", name, data)
		}
	}
}

// A warm slot runs the same init stage: what a runc/crun-style bundle and a
// deny-by-default profile need holds there too, with device nodes under a
// deny-all rule and limits applied to a cgroup the init already lives in.
func TestWarmSlotHoldsTheSameFixes(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	t.Cleanup(func() { h.rt.Close() })
	must(t, h.rt.Prewarm(ctx, 1))
	eperm, mode := uint(1), os.FileMode(0o666)
	bundle := h.bundle(func(s *specs.Spec, _ string) {
		caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_RESOURCE"}
		s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps, Ambient: caps}
		s.Process.NoNewPrivileges = false
		s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, DefaultErrnoRet: &eperm,
			Architectures: []specs.Arch{specs.ArchX86_64}, Syscalls: []specs.LinuxSyscall{{Names: shellSyscalls, Action: specs.ActAllow}}}
		s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/test1", Type: "c", Major: 10, Minor: 200, FileMode: &mode}}
		s.Process.Args = []string{"sh", "-c", "ls -l /dev/test1; mkdir /tmp/x 2>&1; echo done"}
	})
	out, err := os.CreateTemp(t.TempDir(), "out")
	must(t, err)
	id, err := h.rt.CreateWarm(ctx, runtime.CreateOptions{Bundle: bundle, Stdout: out, Stderr: out})
	must(t, err)
	t.Cleanup(func() { _ = h.rt.Delete(context.Background(), id, true) })
	// The deny-all rule is on once create returns (on a v1 devices
	// hierarchy, as here; cgroup v2 has a program instead of a list).
	for _, dir := range cgroupDirs(t, h.rt, id) {
		if list, err := os.ReadFile(filepath.Join(dir, "devices.list")); err == nil && (strings.Contains(string(list), "a *:* rwm") || !strings.Contains(string(list), "c 1:3 rwm")) {
			t.Fatalf("the device rules were not applied: %s", list)
		}
	}
	must(t, h.rt.Start(ctx, id))
	status, err := h.rt.Wait(ctx, id)
	must(t, err)
	data, _ := os.ReadFile(out.Name())
	for _, want := range []string{"10, 200", "Operation not permitted", "done"} {
		if status.Code != 0 || !strings.Contains(string(data), want) {
			t.Fatalf("warm container: %+v, output lacks %q:\n%s", status, want, data)
		}
	}
}
