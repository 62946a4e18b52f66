package initbin

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestWriteFile(t *testing.T) {
	if err := WriteFile(filepath.Join(t.TempDir(), "p"), nil, 0o755); !errors.Is(err, ErrNotEmbedded) {
		t.Fatalf("WriteFile without a program: %v, want ErrNotEmbedded", err)
	}

	program := []byte("\x7fELF program")
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "nexus-runtime")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	// Written fresh, and over a symlink (the old bin/nexus-runtime layout):
	// the link is replaced, the file it pointed to is not touched.
	for _, path := range []string{filepath.Join(dir, "fresh"), link} {
		if err := WriteFile(path, program, 0o755); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(path)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o755 {
			t.Fatalf("%s: %v %v, want a regular file with mode 0755", path, fi.Mode(), err)
		}
		if got, _ := os.ReadFile(path); string(got) != string(program) {
			t.Fatalf("%s holds %q", path, got)
		}
	}
	if got, _ := os.ReadFile(target); string(got) != "keep" {
		t.Fatalf("the symlink's old target was changed: %q", got)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("temporary file left behind: %s", e.Name())
		}
	}

	missing := filepath.Join(dir, "no", "such", "dir", "p")
	if err := WriteFile(missing, program, 0o755); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("WriteFile into a missing directory: %v, want an error naming %s", err, missing)
	}
}

// TestWriteFileThenExecWhileForking: a program written by WriteFile can be
// executed at once while other goroutines fork and exec all the time (as
// an agent creating several containers at once does). Without ForkLock
// held around the write, a child forked in that window holds the write
// descriptor and the exec fails with "text file busy" (ETXTBSY).
func TestWriteFileThenExecWhileForking(t *testing.T) {
	truePath, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	program, err := os.ReadFile(truePath)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	stop := make(chan struct{})
	var forks sync.WaitGroup
	for range 4 {
		forks.Add(1)
		go func() {
			defer forks.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = exec.Command(truePath).Run()
			}
		}()
	}
	defer func() {
		close(stop)
		forks.Wait()
	}()
	for i := range 300 {
		path := filepath.Join(dir, fmt.Sprintf("p%d", i))
		if err := WriteFile(path, program, 0o555); err != nil {
			t.Fatal(err)
		}
		if err := exec.Command(path).Run(); err != nil {
			t.Fatalf("exec of the program written %d: %v", i, err)
		}
	}
}
