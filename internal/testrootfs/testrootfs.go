// Package testrootfs builds small root filesystems for tests from Debian's
// busybox-static: one static binary, a link per applet, and the directories
// a container expects. Tests that run containers use it instead of pulling
// images, so they need no network and start in milliseconds.
package testrootfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"nexus.dev/nexus/internal/testutil"
)

// busyboxCandidates are where Debian's busybox-static puts the binary.
var busyboxCandidates = []string{"/usr/bin/busybox", "/bin/busybox"}

// ErrNoBusybox is returned when no static busybox is installed.
var ErrNoBusybox = errors.New("busybox not found: install Debian's busybox-static (apt-get install -y busybox-static)")

// FindBusybox returns the path of a busybox binary, or ErrNoBusybox.
func FindBusybox() (string, error) {
	if p := os.Getenv("NEXUS_BUSYBOX"); p != "" {
		return p, nil
	}
	for _, p := range busyboxCandidates {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", ErrNoBusybox
}

// Build writes a busybox root filesystem into dir (which must exist) and
// returns dir. The result has /bin/sh, every applet busybox lists, /etc/passwd
// and /etc/group with root and nobody, and empty /proc, /sys, /dev and /tmp.
func Build(dir string) error {
	bb, err := FindBusybox()
	if err != nil {
		return err
	}
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "home", "var/run", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("build rootfs: %w", err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), os.ModeSticky|0o777); err != nil {
		return fmt.Errorf("build rootfs: %w", err)
	}
	if err := copyFile(bb, filepath.Join(dir, "bin/busybox"), 0o755); err != nil {
		return fmt.Errorf("build rootfs: copy busybox: %w", err)
	}
	out, err := exec.Command(bb, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("build rootfs: list busybox applets: %w", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "bin/busybox" || strings.Contains(applet, "..") {
			continue
		}
		link := filepath.Join(dir, applet)
		target, err := filepath.Rel(filepath.Dir(link), filepath.Join(dir, "bin/busybox"))
		if err != nil {
			return fmt.Errorf("build rootfs: %w", err)
		}
		if err := os.Symlink(target, link); err != nil && !os.IsExist(err) {
			return fmt.Errorf("build rootfs: link applet %s: %w", applet, err)
		}
	}
	files := map[string]string{
		"etc/passwd":   "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":    "root:x:0:\nnogroup:x:65534:\n",
		"etc/hostname": "busybox\n",
		"etc/hosts":    "127.0.0.1 localhost\n::1 localhost\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("build rootfs: %w", err)
		}
	}
	return nil
}

// New builds a busybox root filesystem in a fresh temporary directory that is
// removed when the test ends, and returns its path. It skips the test when
// busybox is not installed.
func New(t testing.TB) string {
	t.Helper()
	if _, err := FindBusybox(); err != nil {
		testutil.Missing(t, "%v", err)
	}
	dir := t.TempDir()
	// t.TempDir is 0700; containers running as another user need to traverse it.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Build(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := out.ReadFrom(in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Bundle writes an OCI bundle into a fresh temporary directory: a busybox
// root filesystem in rootfs/ and spec (any JSON-encodable runtime spec) as
// config.json. edit, if not nil, runs after the rootfs is built and before
// the spec is written, so a test can add files and change the spec. The
// directories are world-traversable so a container whose root is mapped to
// another host uid can reach its rootfs. It skips the test when busybox is
// not installed.
func Bundle(t testing.TB, spec any, edit func(rootfs string)) string {
	t.Helper()
	dir := t.TempDir()
	// Both levels of t.TempDir are 0700.
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Build(rootfs); err != nil {
		if errors.Is(err, ErrNoBusybox) {
			testutil.Missing(t, "%v", err)
		}
		t.Fatal(err)
	}
	if edit != nil {
		edit(rootfs)
	}
	data, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}
