package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/security/pki"
)

// binResult is one run of the real nexus binary.
type binResult struct {
	stdout, stderr string
	exit           int
	maxRSSKiB      int64
}

// runBin runs the nexus binary in dir (a fresh temporary directory when
// empty) with args, the way a user runs it from a shell.
func runBin(t *testing.T, dir string, args ...string) binResult {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nexusBinary(t), args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run nexus %v: %v", args, err)
	}
	r := binResult{stdout: stdout.String(), stderr: stderr.String(), exit: cmd.ProcessState.ExitCode()}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.maxRSSKiB = ru.Maxrss
	}
	return r
}

// binCA makes a CA with the binary and returns its data dir.
func binCA(t *testing.T) string {
	t.Helper()
	dataDir := t.TempDir()
	if r := runBin(t, "", "--data-dir", dataDir, "cert", "init", "--cluster", "prod", "--name", "s1"); r.exit != 0 {
		t.Fatalf("cert init: exit %d\n%s%s", r.exit, r.stdout, r.stderr)
	}
	return dataDir
}

// readOnlyView bind-mounts dir read-only at a new path, unmounted when the
// test ends.
func readOnlyView(t *testing.T, dir string) string {
	t.Helper()
	testutil.RequireRoot(t)
	view := t.TempDir()
	if err := unix.Mount(dir, view, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(view, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", view, err)
		}
	})
	if err := unix.Mount("", view, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount %s read-only: %v", view, err)
	}
	return view
}

// `cert renew` that cannot save the renewed certificate fails with the
// reason, instead of printing success while the old one stays on disk.
func TestCertRenewReadOnlyDataDirFails(t *testing.T) {
	dataDir := binCA(t)
	before, err := os.ReadFile(filepath.Join(dataDir, "pki", pki.NodeCertFile))
	if err != nil {
		t.Fatal(err)
	}
	ro := readOnlyView(t, dataDir)
	r := runBin(t, "", "--data-dir", ro, "cert", "renew")
	if r.exit != 1 || !strings.Contains(r.stderr, "not saved") || !strings.Contains(r.stderr, "read-only file system") || !strings.Contains(r.stderr, "writable") {
		t.Fatalf("cert renew on a read-only data dir: exit %d, want 1 with the reason\nstdout: %s\nstderr: %s", r.exit, r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout, "Renewed") {
		t.Fatalf("cert renew printed success although nothing was saved:\n%s", r.stdout)
	}
	if after, _ := os.ReadFile(filepath.Join(dataDir, "pki", pki.NodeCertFile)); !bytes.Equal(after, before) {
		t.Fatal("node.crt changed")
	}
}

// A file argument that never ends or is huge is refused quickly with the
// file and the limit named, without reading it into memory.
func TestFileArgumentsAreReadBounded(t *testing.T) {
	dataDir := binCA(t)
	huge := filepath.Join(t.TempDir(), "huge.pem")
	if err := os.WriteFile(huge, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(huge, 10<<30); err != nil { // sparse: 10 GiB that take no disk
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"cert", "show", "/dev/zero"}, []string{"/dev/zero", "more than 1 MiB"}},
		{[]string{"cert", "show", huge}, []string{huge, "more than 1 MiB"}},
		{[]string{"cert", "rotate-intermediate", "--passphrase-file", "/dev/zero"}, []string{"/dev/zero", "more than 4 KiB"}},
		{[]string{"cert", "init", "--cluster", "c", "--name", "n", "--passphrase-file", huge}, []string{huge, "more than 4 KiB"}},
	}
	for _, tt := range tests {
		r := runBin(t, "", append([]string{"--data-dir", dataDir}, tt.args...)...)
		if r.exit != 1 {
			t.Errorf("%v: exit %d, want 1\n%s%s", tt.args, r.exit, r.stdout, r.stderr)
		}
		for _, w := range tt.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%v: stderr lacks %q:\n%s", tt.args, w, r.stderr)
			}
		}
		// The binary itself takes about 20 MiB; reading a 10 GiB or endless
		// file took gigabytes.
		if r.maxRSSKiB > 100<<10 {
			t.Errorf("%v: peak RSS %d MiB, want it bounded (< 100 MiB)", tt.args, r.maxRSSKiB>>10)
		}
	}
}

// A CA directory whose intermediate was signed by another root (root.crt
// replaced) is refused by everything that loads the CA, naming the files;
// nothing is issued or written.
func TestBrokenCAChainIsRefused(t *testing.T) {
	dataDir, other := binCA(t), binCA(t)
	data, err := os.ReadFile(filepath.Join(other, "pki", pki.RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "pki", pki.RootCertFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "creds")
	for _, args := range [][]string{
		{"cert", "issue", "--user", "bob", "--out", out},
		{"cert", "renew"},
		{"cert", "revoke", "0abc"},
		{"token", "create", "--role", "agent"},
	} {
		r := runBin(t, "", append([]string{"--data-dir", dataDir}, args...)...)
		inter := filepath.Join(dataDir, "pki", pki.IntermediateCertFile)
		if r.exit != 1 || !strings.Contains(r.stderr, inter) || !strings.Contains(r.stderr, "does not verify against") {
			t.Errorf("%v with a replaced root.crt: exit %d, want 1 naming %s\nstdout: %s\nstderr: %s", args, r.exit, inter, r.stdout, r.stderr)
		}
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused cert issue created %s: %v", out, err)
	}
}

// An empty --data-dir is refused, not taken as the current directory.
func TestEmptyDataDirIsRefused(t *testing.T) {
	for _, dd := range []string{"", " "} {
		for _, args := range [][]string{
			{"cert", "init", "--cluster", "c", "--name", "n"},
			{"token", "create", "--role", "agent"},
			{"cert", "show"},
		} {
			cwd := t.TempDir()
			r := runBin(t, cwd, append([]string{"--data-dir", dd}, args...)...)
			if r.exit != 1 || !strings.Contains(r.stderr, "--data-dir") || !strings.Contains(r.stderr, "/var/lib/nexus") {
				t.Errorf("--data-dir %q %v: exit %d, want 1 saying what to give\n%s%s", dd, args, r.exit, r.stdout, r.stderr)
			}
			if entries, _ := os.ReadDir(cwd); len(entries) != 0 {
				t.Errorf("--data-dir %q %v wrote %v into the current directory", dd, args, entries)
			}
		}
	}
}

// Names up to the file system's limit work; longer ones are refused with
// the limit named, before anything is created.
func TestCertIssueNameLengths(t *testing.T) {
	dataDir := binCA(t)
	for _, tt := range []struct {
		n    int
		want string // "" means success
	}{
		{240, ""},
		{245, ""},
		{251, ""},
		{252, "at most 251"},
		{253, "at most 251"},
	} {
		out := filepath.Join(t.TempDir(), "new", "creds")
		name := strings.Repeat("a", tt.n)
		r := runBin(t, "", "--data-dir", dataDir, "cert", "issue", "--user", name, "--out", out)
		if tt.want == "" {
			if r.exit != 0 {
				t.Errorf("%d-byte name: exit %d\n%s", tt.n, r.exit, r.stderr)
				continue
			}
			if _, err := pki.ReadCertificatesFile(filepath.Join(out, name+".crt")); err != nil {
				t.Errorf("%d-byte name: %v", tt.n, err)
			}
			continue
		}
		if r.exit != 1 || !strings.Contains(r.stderr, tt.want) || !strings.Contains(r.stderr, "255 bytes") {
			t.Errorf("%d-byte name: exit %d, want 1 with %q\n%s", tt.n, r.exit, tt.want, r.stderr)
		}
		if _, err := os.Stat(filepath.Dir(out)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%d-byte name: a refused cert issue left %s: %v", tt.n, filepath.Dir(out), err)
		}
	}
}
