package proc

import (
	"os"
	"os/exec"
	"syscall"
	"testing"

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
