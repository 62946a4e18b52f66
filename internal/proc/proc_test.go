package proc

import (
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/testutil"
)

func TestSelfIsAliveAndAnExitedProcessIsNot(t *testing.T) {
	self, err := Self()
	if err != nil || !self.Alive() {
		t.Fatalf("Self() = %+v, %v; alive %v", self, err, self.Alive())
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []ID{{}, {PID: cmd.Process.Pid}, {PID: self.PID, Start: self.Start + 1}} {
		if id.Alive() {
			t.Errorf("%+v is alive", id)
		}
	}
}

func TestRootedAt(t *testing.T) {
	testutil.RequireRoot(t) // chroot
	dir := t.TempDir()
	if pid, err := RootedAt(dir); err != nil || pid != 0 {
		t.Fatalf("RootedAt of an unused directory: %d, %v", pid, err)
	}
	// A process whose root is dir: a static busybox, chrooted there.
	busybox := testutil.RequireProgram(t, "busybox", "busybox-static")
	exe, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/busybox", exe, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/busybox", "sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: dir}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	var pid int
	for range 200 {
		if pid, err = RootedAt(dir); pid != 0 || err != nil {
			break
		}
		exec.Command("sleep", "0.01").Run()
	}
	if err != nil || pid != cmd.Process.Pid {
		t.Fatalf("RootedAt = %d, %v; want %d", pid, err, cmd.Process.Pid)
	}
}

// TestReadStat: the parent, state and start time of a process whose name
// has spaces and parentheses in it, as /proc/<pid>/stat writes it.
func TestReadStat(t *testing.T) {
	sleep := testutil.RequireProgram(t, "sleep", "coreutils")
	link := filepath.Join(t.TempDir(), "a) (b c")
	if err := os.Symlink(sleep, link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(link, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	st, err := ReadStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	start, err := StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if st.Comm != "a) (b c" || st.PPID != os.Getpid() || st.StartTime != start || !strings.ContainsRune("RSD", rune(st.State)) {
		t.Fatalf("ReadStat(%d) = %+v; want comm %q, ppid %d, start time %d, a live state", cmd.Process.Pid, st, "a) (b c", os.Getpid(), start)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := ReadStat(cmd.Process.Pid); err == nil {
		t.Fatalf("ReadStat of a process that is gone: no error")
	}
}

// TestReadMemory: this process's resident memory, its parts and threads.
func TestReadMemory(t *testing.T) {
	buf := make([]byte, 64<<20)
	for i := range buf {
		buf[i] = 1 // resident now
	}
	m, err := ReadMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	if m.Anon < int64(len(buf)) || m.File <= 0 || m.RSS < m.Anon+m.File || m.PeakRSS < m.RSS || m.Threads < 1 || m.Threads > len(tasks)+8 {
		t.Fatalf("ReadMemory(self) = %+v with %d MiB just written and %d threads listed", m, len(buf)>>20, len(tasks))
	}
	if _, err := ReadMemory(1 << 30); err == nil {
		t.Fatal("ReadMemory of no process: no error")
	}
	goruntime.KeepAlive(buf)
}

// TestReadStatCPU: the CPU time of a process that has used some, as the
// kernel also reports it to the process itself.
func TestReadStatCPU(t *testing.T) {
	var ru unix.Rusage
	used := func() time.Duration {
		if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for x := 0; used() < 300*time.Millisecond; x++ {
		for i := range 1 << 20 {
			x ^= i
		}
	}
	before := used()
	st, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	after := used()
	if st.CPU < before-100*time.Millisecond || st.CPU > after+100*time.Millisecond {
		t.Fatalf("ReadStat(self).CPU = %s; getrusage says %s-%s", st.CPU, before, after)
	}
}

// TestReadSystemMemory: the machine's memory is read, in bytes, with what
// is available no more than the total.
func TestReadSystemMemory(t *testing.T) {
	m, err := ReadSystemMemory()
	if err != nil {
		t.Fatal(err)
	}
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		t.Fatal(err)
	}
	if want := int64(si.Totalram) * int64(si.Unit); m.Total < want*9/10 || m.Total > want*11/10 {
		t.Fatalf("total %d bytes, sysinfo says %d", m.Total, want)
	}
	if m.Available <= 0 || m.Available > m.Total {
		t.Fatalf("available %d of %d bytes", m.Available, m.Total)
	}
}
