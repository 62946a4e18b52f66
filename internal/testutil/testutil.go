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
	"os"
	"os/exec"
	"strconv"
	"testing"
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
