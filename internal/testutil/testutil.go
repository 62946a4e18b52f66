// Package testutil holds the few checks that tests across Nexus share: whether
// the test may use root, a kernel feature or an installed program, skipping
// with a reason when it may not.
package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// RequireRoot skips the test unless it runs as root. CI runs as root, so
// there every such test runs.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, mounts, cgroups): run `make test` as root")
	}
}

// RequireProgram skips the test unless name is on PATH, and returns its path.
// pkg is the Debian package that provides it, named in the skip message.
func RequireProgram(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("needs %s: apt-get install -y %s (.ci/run installs it)", name, pkg)
	}
	return p
}

// RequirePath skips the test unless path exists; why says what it is for.
func RequirePath(t testing.TB, path, why string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("needs %s (%s): %v", path, why, err)
	}
}
