package testrootfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuildMakesAWorkingShell(t *testing.T) {
	dir := New(t)
	for _, p := range []string{"bin/sh", "bin/ls", "bin/true", "etc/passwd", "proc", "dev", "tmp"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); err != nil {
			t.Errorf("rootfs lacks %s: %v", p, err)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "tmp"))
	if err != nil || fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("/tmp should be sticky and world-writable, got %v (%v)", fi.Mode(), err)
	}
	// Links are relative, so they resolve inside the rootfs once it is /.
	target, err := os.Readlink(filepath.Join(dir, "bin/sh"))
	if err != nil || filepath.IsAbs(target) {
		t.Errorf("bin/sh should be a relative link, got %q (%v)", target, err)
	}
	out, err := exec.Command(filepath.Join(dir, "bin/sh"), "-c", "echo hello from $0").CombinedOutput()
	if err != nil {
		t.Fatalf("run rootfs shell: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "hello from") {
		t.Fatalf("unexpected shell output %q", out)
	}
}

func TestMissingBusyboxIsExplained(t *testing.T) {
	t.Setenv("NEXUS_BUSYBOX", "")
	saved := busyboxCandidates
	busyboxCandidates = []string{"/nonexistent/busybox"}
	defer func() { busyboxCandidates = saved }()
	if err := Build(t.TempDir()); err != ErrNoBusybox {
		t.Fatalf("err = %v, want ErrNoBusybox", err)
	}
	if !strings.Contains(ErrNoBusybox.Error(), "apt-get install -y busybox-static") {
		t.Fatal("the error should say how to install busybox")
	}
}
