package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/internal/term"
	"nexus.dev/nexus/internal/testrootfs"
	"nexus.dev/nexus/internal/testutil"
)

// openPTY returns the two ends of a new pseudo-terminal, closed when the
// test ends.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, slave, err := term.OpenPTY()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close(); slave.Close() })
	return master, slave
}

// A bundle made by `runc spec` or `crun spec`, config.json untouched
// (process.terminal true, args ["sh"]), runs in the foreground of
// `nexus-runtime run` with no --console-socket, as it does under runc and
// crun: the runtime is the other end of the container's terminal, so what
// is typed on its stdin reaches the shell and the shell's output comes out
// of its stdout; it exits with the shell's status.
func TestRunRelaysTheTerminalOfRuncAndCrunSpecBundles(t *testing.T) {
	testutil.RequireRoot(t)
	prog := runtimeProgram(t)
	for _, tool := range []string{"runc", "crun"} {
		t.Run(tool, func(t *testing.T) {
			path := testutil.RequireProgram(t, tool, tool)
			bundle := t.TempDir()
			if err := os.Chmod(bundle, 0o755); err != nil {
				t.Fatal(err)
			}
			gen := exec.Command(path, "spec")
			gen.Dir = bundle
			if out, err := gen.CombinedOutput(); err != nil {
				t.Fatalf("%s spec: %v: %s", tool, err, out)
			}
			config, err := os.ReadFile(filepath.Join(bundle, "config.json"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(config, []byte(`"terminal": true`)) {
				t.Fatalf("%s spec no longer sets process.terminal, which this test is about:\n%s", tool, config)
			}
			if err := os.Mkdir(filepath.Join(bundle, "rootfs"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := testrootfs.Build(filepath.Join(bundle, "rootfs")); err != nil {
				t.Fatal(err)
			}

			master, slave := openPTY(t)
			root := t.TempDir()
			id := fmt.Sprintf("%s-tty-%d", tool, os.Getpid())
			t.Cleanup(func() { _ = exec.Command(prog, "--root", root, "delete", "--force", id).Run() })
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, prog, "--root", root, "run", "--bundle", bundle, id)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			screen := make(chan string, 1)
			go func() {
				var b bytes.Buffer
				buf := make([]byte, 4096)
				for {
					n, err := master.Read(buf)
					b.Write(buf[:n])
					if err != nil || strings.Contains(b.String(), "bye") {
						break
					}
				}
				screen <- b.String()
			}()
			if _, err := master.Write([]byte("echo hello-$((6*7)) $(hostname); echo b''ye; exit 3\n")); err != nil {
				t.Fatal(err)
			}
			err = cmd.Wait()
			// With the runtime gone, closing this end too makes the master
			// read EIO once the output is read.
			slave.Close()
			var shown string
			select {
			case shown = <-screen:
			case <-time.After(10 * time.Second):
				t.Fatal("no output came through the terminal")
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 3 {
				t.Fatalf("run: %v, want exit status 3; the terminal showed %q", err, shown)
			}
			if !strings.Contains(shown, "hello-42 "+tool) {
				t.Fatalf("the terminal showed %q, want the shell's output hello-42 %s", shown, tool)
			}
		})
	}
}

// config.json and `exec --process FILE` are read up to a bound: a file
// larger than that is refused by name instead of being read whole.
func TestRuntimeBoundsWhatItReadsFromSpecFiles(t *testing.T) {
	testutil.RequireRoot(t)
	prog := runtimeProgram(t)
	huge := func(t *testing.T, path string) {
		t.Helper()
		// Sparse: 64 MiB of apparent size, no disk.
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(64 << 20); err != nil {
			t.Fatal(err)
		}
	}
	bundle := t.TempDir()
	config := filepath.Join(bundle, "config.json")
	huge(t, config)
	process := filepath.Join(t.TempDir(), "process.json")
	huge(t, process)
	for _, tt := range []struct {
		name string
		args []string
		file string
	}{
		{"config.json", []string{"run", "--bundle", bundle, "big"}, config},
		{"exec --process", []string{"exec", "--process", process, "big"}, process},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, prog, append([]string{"--root", t.TempDir()}, tt.args...)...).CombinedOutput()
			if err == nil || !strings.Contains(string(out), tt.file) || !strings.Contains(string(out), "too large") {
				t.Fatalf("%v: %v: %s\nwant a refusal naming %s as too large", tt.args, err, out, tt.file)
			}
		})
	}
}
