package cgroups

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/testutil"
)

var testSeq atomic.Int64

// hostLayoutT skips (fails under CI=true) unless the test may create
// cgroups here.
func hostLayoutT(t testing.TB) *layout {
	t.Helper()
	testutil.RequireRoot(t)
	l, err := hostLayout()
	if err != nil {
		testutil.Missing(t, "no cgroups: %v", err)
	}
	return l
}

// testPath is an absolute cgroup path unique to this test run.
func testPath(t testing.TB) string {
	name := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	return fmt.Sprintf("/nexus-test-%s-%d-%d", name, os.Getpid(), testSeq.Add(1))
}

// createT creates a manager's cgroups and always destroys them, checking
// that no directory is left in any hierarchy.
func createT(t testing.TB, l *layout, res *specs.LinuxResources) *manager {
	t.Helper()
	m, err := newManager(Config{Path: testPath(t), Resources: res}, l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Destroy(); err != nil {
			t.Errorf("Destroy: %v", err)
		}
		for _, dir := range m.allDirs() {
			if _, err := os.Stat(dir); err == nil {
				t.Errorf("%s still exists after Destroy", dir)
			}
		}
	})
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	return m
}

type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *os.File
	done           chan error
}

// Output is what the script wrote so far. Files, not pipes, so that
// background children holding them open do not delay Wait.
func (p *proc) Stdout() string { b, _ := os.ReadFile(p.stdout.Name()); return string(b) }
func (p *proc) Stderr() string { b, _ := os.ReadFile(p.stderr.Name()); return string(b) }

// startIn runs script under /bin/sh inside m's cgroup: the shell waits on
// stdin until Add has moved it, so nothing runs outside the cgroup.
func startIn(t testing.TB, m Manager, script string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command("/bin/sh", "-c", "read _ignored; "+script), done: make(chan error, 1)}
	dir := t.TempDir()
	var err error
	for _, f := range []**os.File{&p.stdout, &p.stderr} {
		if *f, err = os.CreateTemp(dir, "out"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { (*f).Close() })
	}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			t.Errorf("pid %d did not exit", p.cmd.Process.Pid)
		}
	})
	if err := m.Add(p.cmd.Process.Pid); err != nil {
		stdin.Close()
		t.Fatal(err)
	}
	_, _ = io.WriteString(stdin, "go\n")
	stdin.Close()
	return p
}

func (p *proc) wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(timeout):
		t.Fatalf("process did not finish in %v; stdout %q stderr %q", timeout, p.Stdout(), p.Stderr())
		return nil
	}
}

func TestHostPidsLimit(t *testing.T) {
	l := hostLayoutT(t)
	m := createT(t, l, &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: i64(10)}})
	p := startIn(t, m, `i=0; while [ $i -lt 50 ]; do sleep 30 & i=$((i+1)); done; echo all-forked`)
	err := p.wait(t, 10*time.Second)
	if err == nil || strings.Contains(p.Stdout(), "all-forked") {
		t.Fatalf("50 forks succeeded under pids limit 10 (err %v, stdout %q)", err, p.Stdout())
	}
	if !strings.Contains(strings.ToLower(p.Stderr()), "fork") {
		t.Errorf("stderr %q does not mention the failed fork", p.Stderr())
	}
	s, err := m.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.Pids.Limit != 10 || s.Pids.Current == 0 || s.Pids.Current > 10 {
		t.Errorf("pids stats = %+v, want limit 10 and 1..10 current", s.Pids)
	}
}

func TestHostMemoryOOMKill(t *testing.T) {
	l := hostLayoutT(t)
	testutil.RequirePath(t, "/usr/bin/busybox", "memory hog")
	const limit = 32 << 20
	m := createT(t, l, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(limit), Swap: i64(limit)}})
	if n, err := m.OOMKillCount(); err != nil || n != 0 {
		t.Fatalf("fresh cgroup OOMKillCount = %d, %v", n, err)
	}
	p := startIn(t, m, `/usr/bin/busybox head -c 200m /dev/zero | /usr/bin/busybox tail >/dev/null`)
	if err := p.wait(t, 30*time.Second); err == nil {
		t.Fatalf("200 MiB allocation succeeded under a 32 MiB limit")
	}
	n, err := m.OOMKillCount()
	if err != nil || n == 0 {
		t.Fatalf("OOMKillCount = %d, %v; want > 0", n, err)
	}
	s, err := m.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.Memory.Limit != limit || s.Memory.OOMKills != n || s.Memory.MaxUsage == 0 || s.Memory.MaxUsage > limit {
		t.Errorf("memory stats = %+v, want limit %d, max usage within it, %d OOM kills", s.Memory, limit, n)
	}
}

// TestHostMemoryWorkingSet: a file written from inside the cgroup is
// charged to it as page cache, on the inactive list the kernel reclaims
// first, so the working set (usage minus inactive file) leaves it out.
func TestHostMemoryWorkingSet(t *testing.T) {
	l := hostLayoutT(t)
	m := createT(t, l, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(256 << 20)}})
	file := filepath.Join(diskDir(t), "cache")
	p := startIn(t, m, "head -c 32m /dev/zero >"+file)
	if err := p.wait(t, 30*time.Second); err != nil {
		t.Fatalf("write 32 MiB: %v (stderr %q)", err, p.Stderr())
	}
	s, err := m.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.Memory.Usage < 16<<20 || s.Memory.InactiveFile < 16<<20 || s.Memory.InactiveFile > s.Memory.Usage {
		t.Errorf("after writing 32 MiB to a file: usage %d, inactive file %d; want both >= 16 MiB, inactive <= usage",
			s.Memory.Usage, s.Memory.InactiveFile)
	}
}

// diskDir is a temporary directory whose files are page cache: the test's
// own, or under /var/tmp when TMPDIR is a tmpfs (whose pages are shared
// memory instead).
func diskDir(t *testing.T) string {
	onTmpfs := func(dir string) bool {
		var fs unix.Statfs_t
		return unix.Statfs(dir, &fs) == nil && fs.Type == unix.TMPFS_MAGIC
	}
	dir := t.TempDir()
	if !onTmpfs(dir) {
		return dir
	}
	dir, err := os.MkdirTemp("/var/tmp", "nexus-cgroups-test-")
	if err != nil {
		testutil.Missing(t, "TMPDIR is on tmpfs and /var/tmp has no room for a test directory (%v): set TMPDIR to a disk", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if onTmpfs(dir) {
		testutil.Missing(t, "TMPDIR and /var/tmp are on tmpfs: set TMPDIR to a disk")
	}
	return dir
}

func TestHostCPUQuota(t *testing.T) {
	l := hostLayoutT(t)
	m := createT(t, l, &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(512), Quota: i64(25000), Period: u64(50000)}})
	check := func(wantQuota string) {
		t.Helper()
		var got string
		if ctrl, _ := m.place.where("cpu", "cpu"); ctrl == unifiedKey {
			got, _ = readString(m.v2, "cpu.max")
			wantQuota += " 50000"
		} else {
			got, _ = readString(m.v1["cpu"], "cpu.cfs_quota_us")
		}
		if got != wantQuota {
			t.Errorf("quota file = %q, want %q", got, wantQuota)
		}
	}
	check("25000")
	if err := m.Update(&specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(40000), Period: u64(50000)}}); err != nil {
		t.Fatal(err)
	}
	check("40000")
	p := startIn(t, m, `i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done`)
	if err := p.wait(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	s, err := m.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.CPU.UsageNanos == 0 {
		t.Errorf("cpu usage = 0 after a busy loop: %+v", s.CPU)
	}
}

// nullScript tries /dev/zero and /dev/null from inside the cgroup.
const nullScript = `head -c1 /dev/zero >/dev/zero && echo zero-ok; echo x >/dev/null && echo null-ok`

var denyNull = []specs.LinuxDeviceCgroup{dev(true, "a", -1, -1, "rwm"), dev(false, "c", 1, 3, "rwm")}

func checkNullDenied(t *testing.T, m Manager) {
	t.Helper()
	p := startIn(t, m, nullScript)
	_ = p.wait(t, 10*time.Second)
	out, errOut := p.Stdout(), p.Stderr()
	if !strings.Contains(out, "zero-ok") || strings.Contains(out, "null-ok") || !strings.Contains(errOut, "not permitted") {
		t.Errorf("want /dev/zero allowed and /dev/null EPERM; stdout %q stderr %q", out, errOut)
	}
}

func TestHostDevicesV1(t *testing.T) {
	l := hostLayoutT(t)
	m := createT(t, l, &specs.LinuxResources{Devices: denyNull})
	if m.v1["devices"] == "" {
		t.Skip("no v1 devices controller; TestHostDevicesV2 covers eBPF")
	}
	checkNullDenied(t, m)
}

// TestHostDevicesV2 uses only the cgroup2 hierarchy, so on hybrid hosts it
// checks the eBPF device program and placement in cgroup2.
func TestHostDevicesV2(t *testing.T) {
	l := hostLayoutT(t)
	if l.v2 == "" {
		t.Skip("no cgroup2 hierarchy")
	}
	v2only := &layout{v2: l.v2, v2Controllers: l.v2Controllers}
	m := createT(t, v2only, &specs.LinuxResources{Devices: denyNull})
	if m.V2Path() == "" || len(m.dirs) != 0 {
		t.Fatalf("v2-only manager has v1 dirs %v", m.dirs)
	}
	checkNullDenied(t, m)

	sleeper := startIn(t, m, "exec sleep 30")
	deadline := time.Now().Add(2 * time.Second)
	for {
		pids, err := m.Processes()
		if err != nil {
			t.Fatal(err)
		}
		if len(pids) == 1 && pids[0] == sleeper.cmd.Process.Pid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Processes = %v, want [%d]", pids, sleeper.cmd.Process.Pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", sleeper.cmd.Process.Pid))
	if rel := strings.TrimPrefix(m.V2Path(), l.v2); !strings.Contains(string(cg), "0::"+rel+"\n") {
		t.Errorf("/proc/pid/cgroup = %q, want 0::%s", cg, rel)
	}

	// Update replaces the program rather than stacking a second one.
	if err := m.Update(&specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{dev(true, "a", -1, -1, "rwm")}}); err != nil {
		t.Fatal(err)
	}
	p := startIn(t, m, nullScript)
	_ = p.wait(t, 10*time.Second)
	if !strings.Contains(p.Stdout(), "null-ok") {
		t.Errorf("after allowing all devices: stdout %q stderr %q", p.Stdout(), p.Stderr())
	}
}

func TestHostKillAllForkingTree(t *testing.T) {
	l := hostLayoutT(t)
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			m := createT(t, l, &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: i64(512)}})
			p := startIn(t, m, `sh -c 'while :; do sleep 5 & sleep 0.01; done' &
while :; do (sleep 0.2; true) & sleep 0.002; done`)
			waitFor(t, "10 processes", func() bool { pids, _ := m.Processes(); return len(pids) >= 10 })
			if err := m.KillAll(sig); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "an empty cgroup", func() bool { pids, _ := m.Processes(); return len(pids) == 0 })
			time.Sleep(50 * time.Millisecond)
			if pids, _ := m.Processes(); len(pids) != 0 {
				t.Fatalf("processes came back after KillAll: %v", pids)
			}
			_ = p.wait(t, 5*time.Second)
		})
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHostFreezeThaw(t *testing.T) {
	l := hostLayoutT(t)
	m := createT(t, l, nil)
	startIn(t, m, "exec sleep 30")
	if err := m.Freeze(); err != nil {
		t.Fatal(err)
	}
	if err := m.Thaw(); err != nil {
		t.Fatal(err)
	}
}

// TestHostLoadAndDestroy rebuilds a manager from saved paths, as a later
// `nexus runtime delete` does, and destroys through it.
func TestHostLoadAndDestroy(t *testing.T) {
	l := hostLayoutT(t)
	m := createT(t, l, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(64 << 20)}, CPU: &specs.LinuxCPU{Cpus: "0"}})
	if l.mode() == ModeHybrid && m.V2Path() == "" {
		t.Fatal("hybrid host but no cgroup2 directory")
	}
	startIn(t, m, "exec sleep 30")
	saved, err := json.Marshal(m.Saved())
	if err != nil {
		t.Fatal(err)
	}
	var s Saved
	if err := json.Unmarshal(saved, &s); err != nil {
		t.Fatal(err)
	}
	paths := s.Paths
	loaded, err := Load(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := loaded.Destroy(); err != nil {
		t.Fatal(err)
	}
	for ctrl, dir := range paths {
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%s cgroup %s survived Destroy", ctrl, dir)
		}
	}
	if err := loaded.Destroy(); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
}

func TestHostDestroyRemovesSubCgroups(t *testing.T) {
	l := hostLayoutT(t)
	m := createT(t, l, nil)
	for _, dir := range m.allDirs() {
		if err := os.MkdirAll(filepath.Join(dir, "inner", "deeper"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Destroy(); err != nil {
		t.Fatal(err)
	}
}

func TestHostRelativePathGoesUnderParent(t *testing.T) {
	l := hostLayoutT(t)
	name := strings.TrimPrefix(testPath(t), "/")
	m, err := newManager(Config{Path: name}, l)
	if err != nil {
		t.Fatal(err)
	}
	for ctrl, dir := range m.Paths() {
		if filepath.Base(filepath.Dir(dir)) != DefaultParent || filepath.Base(dir) != name {
			t.Errorf("%s: %s is not <root>/%s/%s", ctrl, dir, DefaultParent, name)
		}
	}
}

// BenchmarkCreateDestroy times one container's cgroup life: Create with a
// typical resource set, then Destroy. The Create sub-benchmark times Create
// alone, the part on the container start path.
func BenchmarkCreateDestroy(b *testing.B) {
	b.Run("CreateDestroy", func(b *testing.B) { benchCreate(b, false) })
	b.Run("Create", func(b *testing.B) { benchCreate(b, true) })
}

func benchCreate(b *testing.B, createOnly bool) {
	l := hostLayoutT(b)
	res := &specs.LinuxResources{
		Memory:  &specs.LinuxMemory{Limit: i64(256 << 20), Swap: i64(256 << 20)},
		CPU:     &specs.LinuxCPU{Shares: u64(1024), Quota: i64(100000), Period: u64(100000)},
		Pids:    &specs.LinuxPids{Limit: i64(1024)},
		Devices: []specs.LinuxDeviceCgroup{dev(false, "a", -1, -1, "rwm"), dev(true, "c", 1, 3, "rwm"), dev(true, "c", 1, 5, "rwm"), dev(true, "c", 1, 8, "rwm"), dev(true, "c", 1, 9, "rwm"), dev(true, "c", 5, 0, "rwm"), dev(true, "c", 136, -1, "rwm")},
	}
	base := testPath(b)
	for i := 0; b.Loop(); i++ {
		m, err := newManager(Config{Path: base + "-" + strconv.Itoa(i), Resources: res}, l)
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Create(); err != nil {
			_ = m.Destroy()
			b.Fatal(err)
		}
		if createOnly {
			b.StopTimer()
		}
		if err := m.Destroy(); err != nil {
			b.Fatal(err)
		}
		if createOnly {
			b.StartTimer()
		}
	}
}

// cgroup v1 refuses a memory limit below what the cgroup already uses; the
// error says so (a warm container's limits are applied to a cgroup its init
// already lives in).
func TestHostMemoryLimitBelowUsageIsExplained(t *testing.T) {
	l := hostLayoutT(t)
	m := createT(t, l, nil)
	if m.v1["memory"] == "" {
		t.Skip("the memory controller is not a v1 hierarchy here: cgroup2 OOM-kills instead of refusing")
	}
	p := startIn(t, m, `exec awk 'BEGIN { s = "x"; for (i = 0; i < 23; i++) s = s s; print "filled"; fflush(); system("sleep 30") }'`)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(p.Stdout(), "filled"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the process did not fill its memory: %q", p.Stderr())
		}
	}
	err := m.Update(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(4096)}})
	if err == nil || !strings.Contains(err.Error(), "already uses more memory than that") {
		t.Fatalf("Update to 4096 bytes: %v", err)
	}
}

// A program the kernel refuses is reported with the verifier's reason.
func TestHostLoadDeviceProgramReportsTheVerifier(t *testing.T) {
	testutil.RequireRoot(t)
	// Exits without setting R0, which the verifier rejects.
	_, err := loadDeviceProgram([]bpfInsn{bpfExit()})
	if err == nil || !strings.Contains(err.Error(), "verifier: ") || !strings.Contains(err.Error(), "R0") {
		t.Fatalf("loading a program that leaves R0 unset: %v, want the verifier's complaint about R0", err)
	}
}
