// Package testutil holds the few checks that tests across Nexus share: whether
// the test may use root, a kernel feature, an installed program or the built
// binary, skipping with a reason when it may not.
//
// Under CI=true a missing prerequisite fails the test instead: CI runs as root
// on a machine where `make test` installed every package the tests need, so
// a skip there would only hide a test that silently stopped running.
package testutil

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// InCI reports whether the tests run in CI (CI=true, as CI services and
// .ci/run set it).
func InCI() bool {
	ci, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && ci
}

// Missing skips the test because something it needs is not there, or fails
// it under CI=true. reason says what is missing and how to get it.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	reason := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("%s (CI=true: a missing prerequisite fails instead of skipping)", reason)
		return
	}
	t.Skip(reason)
}

// RequireRoot skips the test unless it runs as root. CI runs as root, so
// there every such test runs.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root (namespaces, mounts, cgroups): run `make test` as root")
	}
}

// RequireProgram skips the test unless name is on PATH, and returns its path.
// pkg is the Debian package that provides it, named in the skip message.
func RequireProgram(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "needs %s: apt-get install -y %s (make deps installs it)", name, pkg)
	}
	return p
}

// RequirePath skips the test unless path exists; why says what it is for.
func RequirePath(t testing.TB, path, why string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(t, "needs %s (%s): %v", path, why, err)
	}
}

// NexusBin returns $NEXUS_BIN, the static `make build` binary that end-to-end
// tests run (make test sets it), and skips the test when it is not set.
func NexusBin(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("NEXUS_BIN")
	if bin == "" {
		Missing(t, "needs NEXUS_BIN, the path of a static `make build` binary (make test sets it)")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("NEXUS_BIN: %v", err)
	}
	return bin
}

// Nobody is the uid and gid of the unprivileged user tests act as.
const Nobody = 65534

// CommandAsNobody returns a command that runs this test binary again as
// uid/gid Nobody, running only the test named test, with a TMPDIR of its own
// and env added to the environment. It is for the
// part of a test that must run unprivileged while the test itself runs as
// root, as in CI. The binary is copied into a directory every user may
// traverse first: go test builds it into a private one.
func CommandAsNobody(t testing.TB, test string, env ...string) *exec.Cmd {
	t.Helper()
	RequireRoot(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: its parent is private too.
	dir, err := os.MkdirTemp("", "nexus-as-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for d := filepath.Dir(dir); d != "/"; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm()&0o001 == 0 {
			t.Fatalf("%s is not traversable by other users, so uid %d cannot run the test binary from %s: set TMPDIR elsewhere", d, Nobody, dir)
		}
	}
	bin := filepath.Join(dir, filepath.Base(self))
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(tmp, Nobody, Nobody); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), "TMPDIR="+tmp), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: Nobody, Gid: Nobody}}
	return cmd
}

// FreePort returns a port that was free on loopback a moment ago: "tcp"
// on 127.0.0.1, and UDP there too (an API address serves HTTP/3 on the
// same port), "udp" on [::1] (where store peers listen). See PickPort.
func FreePort(t testing.TB, network string) int {
	t.Helper()
	port, err := PickPort(network)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// PickPort picks a port for a test server that binds it later, as
// FreePort describes. It draws from the 8,000 ports just below the
// kernel's ephemeral range (ip_local_port_range), never from that range:
// a port the kernel gave out for port 0 was free a moment ago, but the
// kernel hands it out again to the next socket bound to port 0 (every
// client connection and QUIC dialer of every test running alongside), and
// a store member then failed to start with "bind: address already in use".
// Below the range only another test's pick can take it, one in thousands.
func PickPort(network string) (int, error) {
	low := ephemeralLow()
	var err error
	for range 100 {
		port := low - 1 - rand.IntN(8000)
		if err = portFree(network, port); err == nil {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free loopback %s port below %d in 100 tries: %w", network, low, err)
}

// ephemeralLow is the lowest port of the kernel's ephemeral range, or
// 32768 (Linux's default) if it cannot be read or leaves too little room.
func ephemeralLow() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(data)); len(f) == 2 {
			if low, err := strconv.Atoi(f[0]); err == nil && low >= 10000 {
				return low
			}
		}
	}
	return 32768
}

// portFree binds port ("tcp": TCP and UDP on 127.0.0.1, "udp": UDP on
// [::1]) and lets it go.
func portFree(network string, port int) error {
	if network == "udp" {
		c, err := net.ListenPacket("udp", net.JoinHostPort("::1", strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return c.Close()
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer l.Close()
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// StartTied starts cmd so that it is killed (SIGKILL) when the test
// process dies, as a helper process of a test must not outlive it. The
// kernel ties that signal (Pdeathsig) to the thread that started the
// child, not to the process, and Go ends threads: one whose goroutine
// locked it and returned, as package networking does after writing a
// namespace's sysctls, and the runtime did after forking into a
// container's pid namespace (runtime.Exec). The API's test store, started
// with a plain Pdeathsig, was killed by SIGKILL mid-test in 4 of 16 runs
// of the agent's exec tests, and in none of 9 started by StartTied. (The
// trigger is a thread that started such a child while unlocked and later
// served a goroutine that returned locked; the runtime's
// TestCreateSurvivesEndedThreads reproduces it.) So the child is started
// from a thread kept locked until the child has exited (waited for without
// reaping it: cmd.Wait still does that).
func StartTied(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	started := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		err := cmd.Start()
		started <- err
		if err != nil {
			goruntime.UnlockOSThread()
			return
		}
		var info unix.Siginfo
		for {
			err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
			if err != unix.EINTR {
				break
			}
		}
		goruntime.UnlockOSThread()
	}()
	return <-started
}
