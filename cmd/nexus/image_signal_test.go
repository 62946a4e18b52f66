package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// feedUntilSpooled writes chunks to w until the import has copied at least
// min bytes into ingest/, then stops writing and leaves w open: a producer
// that has gone quiet, as a slow download piped into the import.
func feedUntilSpooled(t *testing.T, w io.Writer, ingest string, min int64) {
	t.Helper()
	chunk := bytes.Repeat([]byte("nexus import test "), 1<<16) // ~1.1 MiB
	deadline := time.Now().Add(30 * time.Second)
	for spooled(t, ingest) < min {
		if time.Now().After(deadline) {
			t.Fatalf("the import copied only %d bytes into %s", spooled(t, ingest), ingest)
		}
		if _, err := w.Write(chunk); err != nil {
			t.Fatalf("feed the import: %v", err)
		}
	}
}

// spooled is the bytes in the files of dir.
func spooled(t *testing.T, dir string) int64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var n int64
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// TestInterruptedImportLeavesNothing interrupts `nexus image import` while
// it copies a stream that has stopped sending (a FIFO, standard input from a
// pipe): it must exit saying it was interrupted, with ingest/ empty (the
// temporary copy used to stay behind, gigabytes of it for a real archive).
func TestInterruptedImportLeavesNothing(t *testing.T) {
	bin := nexusBinary(t)
	for _, tc := range []struct {
		name  string
		fifo  bool
		sig   syscall.Signal
		wants string
	}{
		{"FIFO path, SIGINT", true, syscall.SIGINT, "import interrupted (interrupt signal received)"},
		{"standard input from a pipe, SIGTERM", false, syscall.SIGTERM, "import interrupted (terminated signal received)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			ingest := filepath.Join(dataDir, "images", "ingest")
			var stderr bytes.Buffer
			var w io.WriteCloser
			var cmd *exec.Cmd
			if tc.fifo {
				fifo := filepath.Join(t.TempDir(), "archive.tar")
				if err := unix.Mkfifo(fifo, 0o600); err != nil {
					t.Fatal(err)
				}
				cmd = exec.Command(bin, "--data-dir", dataDir, "image", "import", "--name", "example.com/big:1", fifo)
				cmd.Stderr = &stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				f, err := os.OpenFile(fifo, os.O_WRONLY, 0) // waits for the import to open it
				if err != nil {
					t.Fatal(err)
				}
				w = f
			} else {
				cmd = exec.Command(bin, "--data-dir", dataDir, "image", "import", "--name", "example.com/big:1", "-")
				cmd.Stderr = &stderr
				var err error
				if w, err = cmd.StdinPipe(); err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
			}
			t.Cleanup(func() { cmd.Process.Kill(); w.Close() })
			feedUntilSpooled(t, w, ingest, 32<<20)

			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("the import did not stop within 30 s of %v; stderr:\n%s", tc.sig, stderr.String())
			}
			w.Close()
			if code := cmd.ProcessState.ExitCode(); err == nil || code != 1 {
				t.Errorf("exit: %v (code %d), want status 1", err, code)
			}
			if !strings.Contains(stderr.String(), tc.wants) || !strings.Contains(stderr.String(), "the partial copy was removed") {
				t.Errorf("stderr %q, want it to say %q and that the partial copy was removed", stderr.String(), tc.wants)
			}
			if left, _ := os.ReadDir(ingest); len(left) != 0 {
				t.Errorf("ingest/ holds %d entries after the interrupted import (%d bytes)", len(left), spooled(t, ingest))
			}
		})
	}
}

// TestPruneReportsLeftovers kills an import (SIGKILL: nothing can clean up)
// and checks that `nexus image prune` says what it removed and how much
// space that freed; it used to report "0 B" while removing the partial copy.
func TestPruneReportsLeftovers(t *testing.T) {
	bin := nexusBinary(t)
	dataDir := t.TempDir()
	ingest := filepath.Join(dataDir, "images", "ingest")
	cmd := exec.Command(bin, "--data-dir", dataDir, "image", "import", "--name", "example.com/big:1", "-")
	w, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	feedUntilSpooled(t, w, ingest, 16<<20)
	cmd.Process.Kill()
	cmd.Wait()
	w.Close()
	left := spooled(t, ingest)
	if left < 16<<20 {
		t.Fatalf("the killed import left %d bytes, want its partial copy", left)
	}
	out, err := exec.Command(bin, "--data-dir", dataDir, "image", "prune").CombinedOutput()
	if err != nil {
		t.Fatalf("prune: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "1 partial download or import") || strings.Contains(string(out), "reclaimed 0 B") {
		t.Errorf("prune said %q, want it to report the partial import and the space it took (%d bytes)", out, left)
	}
	if n := spooled(t, ingest); n != 0 {
		t.Errorf("ingest/ still holds %d bytes", n)
	}
}
