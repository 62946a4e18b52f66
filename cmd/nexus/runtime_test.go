package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"nexus.dev/nexus/internal/hello"
	"nexus.dev/nexus/internal/testrootfs"
	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/runtime/spec"
)

// runProgram runs a binary under test and returns its combined output.
func runProgram(t *testing.T, env []string, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// OCI tools call `<runtime> --version` (podman info, containerd), and runc
// and crun answer it; so must both entries.
func TestVersionFlag(t *testing.T) {
	nexus, lean, link := nexusBinary(t), runtimeProgram(t), runtimeLink(t)
	tests := []struct {
		name string
		bin  string
		flag string
		want []string
	}{
		{"nexus --version", nexus, "--version", []string{"nexus ", "commit: ", "go: go"}},
		{"nexus -v", nexus, "-v", []string{"nexus ", "commit: ", "go: go"}},
		{"nexus-runtime --version", lean, "--version", []string{"nexus-runtime version ", "commit: ", "spec: " + specs.Version, "go: go"}},
		{"nexus-runtime -v", lean, "-v", []string{"nexus-runtime version ", "spec: " + specs.Version}},
		{"nexus-runtime link to nexus --version", link, "--version", []string{"nexus-runtime version ", "spec: " + specs.Version}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runProgram(t, nil, tt.bin, tt.flag)
			if err != nil {
				t.Fatalf("%s: %v\n%s", tt.name, err, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("%s printed %q, lacks %q", tt.name, out, w)
				}
			}
		})
	}
}

// inittraceLine matches a GODEBUG=inittrace=1 line:
// init crypto/tls @1.2 ms, 0.041 ms clock, 4096 bytes, 12 allocs
var inittraceLine = regexp.MustCompile(`^init (\S+) @[0-9.]+ ms, [0-9.]+ ms clock, ([0-9]+) bytes, ([0-9]+) allocs`)

// ownInitAllocs is the most allocations a package of this module may make
// while it is initialised in nexus-runtime: work such as compiling regular
// expressions belongs in the first call that needs it, since every OCI call
// and every container's init stage pays for package initialisation.
const ownInitAllocs = 32

// leanOutsideStd are the packages outside the standard library that
// nexus-runtime may link: the OCI command line, the runtime and what the
// runtime needs. Anything else (the store, gRPC, protobuf, QUIC, the PKI,
// cilium/ebpf and the 39 packages it brings, which only the exit recorder
// needs) is initialised on every container operation for nothing.
var leanOutsideStd = []string{
	"main",
	"nexus.dev/nexus/cmd/internal/ocicli",
	"nexus.dev/nexus/internal/buildinfo",
	"nexus.dev/nexus/internal/logging",
	"nexus.dev/nexus/internal/mountinfo",
	"nexus.dev/nexus/runtime",
	"nexus.dev/nexus/runtime/cgroups",
	"nexus.dev/nexus/runtime/initbin",
	"nexus.dev/nexus/runtime/initstage",
	"nexus.dev/nexus/runtime/seccomp",
	"nexus.dev/nexus/runtime/spec",
	"github.com/spf13/cobra",
	"github.com/spf13/pflag",
	"github.com/opencontainers/runtime-spec/specs-go",
	"github.com/opencontainers/runtime-spec/specs-go/features",
	"golang.org/x/sys/unix",
}

// leanStdDenied are standard library packages nexus-runtime has no use
// for and that cost initialisation or size: TLS, X.509 and HTTP come with
// the control plane, never with the runtime; ELF, DWARF, Go source and
// compression parsing came with cilium/ebpf; the runtime hashes and draws
// nothing that needs cryptography (crypto/rand alone brought math/big, a
// DRBG and AES-GCM).
var leanStdDenied = []string{"crypto/tls", "crypto/x509", "net/http", "net/rpc", "html/template", "expvar", "database/sql",
	"debug", "go", "compress", "encoding/xml", "internal/zstd", "crypto", "math/big"}

func allowedInLean(pkg string) bool {
	if first, _, _ := strings.Cut(pkg, "/"); !strings.Contains(first, ".") && first != "main" {
		for _, d := range leanStdDenied {
			if pkg == d || strings.HasPrefix(pkg, d+"/") {
				return false
			}
		}
		return true
	}
	for _, a := range leanOutsideStd {
		root, tree := strings.CutSuffix(a, "/...")
		if pkg == root || tree && strings.HasPrefix(pkg, root+"/") {
			return true
		}
	}
	return false
}

// TestRuntimeProgramIsLean keeps the nexus-runtime program lean: it must
// not initialise packages it does not use, whatever nexus links. This is
// structural; the time it takes is measured by bench/runtime-start.
func TestRuntimeProgramIsLean(t *testing.T) {
	lean := runtimeProgram(t)
	out, err := runProgram(t, []string{"GODEBUG=inittrace=1"}, lean, "features")
	if err != nil {
		t.Fatalf("nexus-runtime features: %v\n%s", err, out)
	}
	var pkgs, bad, busy []string
	for _, line := range strings.Split(out, "\n") {
		if m := inittraceLine.FindStringSubmatch(line); m != nil {
			pkgs = append(pkgs, m[1])
			if !allowedInLean(m[1]) {
				bad = append(bad, m[1])
			}
			if allocs, _ := strconv.Atoi(m[3]); strings.HasPrefix(m[1], "nexus.dev/nexus/") && allocs > ownInitAllocs {
				busy = append(busy, fmt.Sprintf("%s (%s allocations, %s bytes)", m[1], m[3], m[2]))
			}
		}
	}
	if len(busy) > 0 {
		t.Errorf("packages of this module do work at initialisation (more than %d allocations), which every OCI call pays: %v\n"+
			"(compute it on first use, e.g. with sync.OnceValue)", ownInitAllocs, busy)
	}
	if len(pkgs) == 0 {
		t.Fatalf("no inittrace lines in the output of GODEBUG=inittrace=1 nexus-runtime features:\n%s", out)
	}
	if len(bad) > 0 {
		t.Fatalf("nexus-runtime initialises %d packages outside the runtime's: %v\n"+
			"(find who imports them with go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./cmd/nexus-runtime;"+
			" keep them out of runtime/... and cmd/internal/ocicli)", len(bad), bad)
	}
	t.Logf("nexus-runtime initialises %d packages", len(pkgs))

	// The same check must catch nexus itself, or it checks nothing.
	full, err := runProgram(t, []string{"GODEBUG=inittrace=1"}, nexusBinary(t), "--version")
	if err != nil {
		t.Fatalf("nexus --version: %v\n%s", err, full)
	}
	caught := false
	for _, line := range strings.Split(full, "\n") {
		if m := inittraceLine.FindStringSubmatch(line); m != nil && !allowedInLean(m[1]) {
			caught = true
			break
		}
	}
	if !caught {
		t.Fatal("the allow-list admits every package nexus initialises: it no longer tells a lean program from nexus")
	}
}

// runtime spec says what it wrote and what to do next (runc prints
// nothing, which leaves a new user guessing).
func TestRuntimeSpecSaysWhatItWrote(t *testing.T) {
	tests := []struct {
		name string
		argv []string
		next string
	}{
		{"nexus-runtime spec", []string{runtimeProgram(t)}, "nexus-runtime run --bundle"},
		{"nexus runtime spec", []string{nexusBinary(t), "runtime"}, "nexus runtime run --bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bundle := t.TempDir()
			out, err := runProgram(t, nil, tt.argv[0], append(tt.argv[1:], "spec", "--bundle", bundle)...)
			if err != nil {
				t.Fatalf("%s: %v\n%s", tt.name, err, out)
			}
			config := filepath.Join(bundle, "config.json")
			for _, w := range []string{"wrote " + config, filepath.Join(bundle, "rootfs"), "process.args", tt.next} {
				if !strings.Contains(out, w) {
					t.Errorf("%s printed %q, lacks %q", tt.name, out, w)
				}
			}
			data, err := os.ReadFile(config)
			var s specs.Spec
			if err != nil || json.Unmarshal(data, &s) != nil || s.Process == nil {
				t.Fatalf("config.json is not a spec with a process: %v\n%s", err, data)
			}
			out, err = runProgram(t, nil, tt.argv[0], append(tt.argv[1:], "spec", "--bundle", bundle)...)
			if err == nil || !strings.Contains(out, "already exists") {
				t.Fatalf("a second spec should refuse to overwrite config.json: %v\n%s", err, out)
			}
			if again, _ := os.ReadFile(config); !bytes.Equal(again, data) {
				t.Fatal("the refused spec changed config.json")
			}
		})
	}
}

// run --help must say that ID is a name the user picks, and show how.
func TestRuntimeRunHelp(t *testing.T) {
	out, err := runProgram(t, nil, runtimeProgram(t), "run", "--help")
	if err != nil {
		t.Fatalf("run --help: %v\n%s", err, out)
	}
	for _, w := range []string{"ID is a name you choose", "Examples:", "nexus-runtime spec --bundle mybundle", "nexus-runtime run --bundle mybundle web1"} {
		if !strings.Contains(out, w) {
			t.Errorf("run --help lacks %q:\n%s", w, out)
		}
	}
	out, err = runProgram(t, nil, nexusBinary(t), "runtime", "--help")
	if err != nil || !strings.Contains(out, "nexus-runtime") || !strings.Contains(out, "extract") {
		t.Errorf("nexus runtime --help should point OCI tools at nexus-runtime and extract: %v\n%s", err, out)
	}
}

// A user with only the nexus binary gets the lean program from it.
func TestRuntimeExtract(t *testing.T) {
	nexus := nexusBinary(t)
	if os.Getenv("NEXUS_BIN") == "" {
		testutil.Missing(t, "needs a nexus built by make build (it embeds nexus-runtime): make test sets NEXUS_BIN")
	}
	dir := t.TempDir()
	out, err := runProgram(t, nil, nexus, "runtime", "extract", dir)
	path := filepath.Join(dir, "nexus-runtime")
	if err != nil || !strings.Contains(out, "wrote "+path) {
		t.Fatalf("extract into a directory: %v\n%s", err, out)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(runtimeProgram(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the extracted program differs from the nexus-runtime make build wrote")
	}
	if out, err := runProgram(t, nil, path, "--version"); err != nil || !strings.Contains(out, "nexus-runtime version") {
		t.Fatalf("extracted nexus-runtime --version: %v\n%s", err, out)
	}
	if out, err := runProgram(t, nil, nexus, "runtime", "extract", path); err != nil || !strings.Contains(out, "already") {
		t.Fatalf("extract over the same program: %v\n%s", err, out)
	}

	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := runProgram(t, nil, nexus, "runtime", "extract", other); err == nil || !strings.Contains(out, "--force") {
		t.Fatalf("extract over another file should refuse and name --force: %v\n%s", err, out)
	}
	if data, _ := os.ReadFile(other); string(data) != "#!/bin/sh\n" {
		t.Fatal("a refused extract changed the file")
	}
	if out, err := runProgram(t, nil, nexus, "runtime", "extract", "--force", other); err != nil {
		t.Fatalf("extract --force: %v\n%s", err, out)
	}
	if data, _ := os.ReadFile(other); !bytes.Equal(data, want) {
		t.Fatal("extract --force did not replace the file")
	}
}

// BenchmarkProgramStart measures what every OCI call pays before the
// command runs: exec, Go runtime start and package initialisation, through
// the lean nexus-runtime and through nexus (`--version` does nothing else).
func BenchmarkProgramStart(b *testing.B) {
	for _, bin := range []struct{ name, path string }{
		{"nexus-runtime", runtimeProgram(b)},
		{"nexus", nexusBinary(b)},
	} {
		b.Run(bin.name, func(b *testing.B) {
			for b.Loop() {
				if out, err := exec.Command(bin.path, "--version").CombinedOutput(); err != nil {
					b.Fatalf("%s --version: %v\n%s", bin.path, err, out)
				}
			}
		})
	}
}

// startRun starts `nexus-runtime run` of bundle as container id under root,
// with its output in a file, and returns the command and a function that
// waits for it and returns its exit status and output.
func startRun(t *testing.T, root, bundle, id string) (*exec.Cmd, func() (int, string)) {
	t.Helper()
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	cmd := exec.Command(runtimeProgram(t), "--root", root, "run", "--bundle", bundle, id)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = exec.Command(runtimeProgram(t), "--root", root, "delete", "--force", id).Run()
	})
	return cmd, func() (int, string) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("nexus-runtime run did not exit within 30 s")
		}
		data, _ := os.ReadFile(out.Name())
		return cmd.ProcessState.ExitCode(), string(data)
	}
}

// waitForFile waits until path exists.
func waitForFile(t *testing.T, path string) {
	t.Helper()
	for i := 0; i < 1500; i++ {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not appear within 30 s", path)
}

// `run` passes a signal to the container's process once it runs, and a
// terminating signal before that stops the create and removes what it made
// (the command used to die halfway and leave the state behind).
func TestRuntimeRunRelaysSignals(t *testing.T) {
	testutil.RequireRoot(t)
	sig := t.TempDir()

	t.Run("to the running container", func(t *testing.T) {
		s := spec.Default()
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/sig", Type: "bind", Source: sig, Options: []string{"rbind"}})
		s.Process.Args = []string{"sh", "-c", `trap "exit 3" TERM; touch /sig/running; while :; do sleep 0.05; done`}
		root := t.TempDir()
		cmd, wait := startRun(t, root, testrootfs.Bundle(t, s, nil), "relay-run")
		waitForFile(t, filepath.Join(sig, "running"))
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code, out := wait(); code != 3 {
			t.Fatalf("run exited %d after SIGTERM, want 3 (the container's trap): %s", code, out)
		}
	})

	t.Run("before the container starts", func(t *testing.T) {
		hook := filepath.Join(t.TempDir(), "slow-create-runtime")
		marker := filepath.Join(sig, "in-create-runtime")
		script := "#!/bin/sh\ntouch " + marker + "\nsleep 3\n"
		if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		s := spec.Default()
		s.Process.Args = []string{"true"}
		s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: hook}}}
		root := t.TempDir()
		cmd, wait := startRun(t, root, testrootfs.Bundle(t, s, nil), "relay-create")
		waitForFile(t, marker)
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		code, out := wait()
		if code == 0 || !strings.Contains(out, "stopped by interrupt before the container started") {
			t.Fatalf("run after SIGINT during create: exit %d, output %q; want an error naming the signal", code, out)
		}
		entries, _ := os.ReadDir(root)
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ".") {
				t.Fatalf("the interrupted create left %s behind in its state root", e.Name())
			}
		}
	})
}

// TestRuntimeRunPreservesPassedDescriptors: --preserve-fds N gives the
// container the N descriptors its caller passed from 3 up, and refuses
// when the caller passed fewer: the container used to get the runtime's
// own open files in their place (the Go runtime's cgroup cpu files).
func TestRuntimeRunPreservesPassedDescriptors(t *testing.T) {
	testutil.RequireRoot(t)
	passed := filepath.Join(t.TempDir(), "passed")
	if err := os.WriteFile(passed, []byte("from the caller\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := spec.Default()
	s.Process.Args = []string{"sh", "-c", "cat <&3; ls /proc/self/fd"}
	bundle := testrootfs.Bundle(t, s, nil)
	run := func(id string, preserve int) (string, error) {
		f, err := os.Open(passed)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		root := t.TempDir()
		cmd := exec.Command(runtimeProgram(t), "--root", root, "run", "--bundle", bundle, "--preserve-fds", strconv.Itoa(preserve), id)
		cmd.ExtraFiles = []*os.File{f} // descriptor 3
		t.Cleanup(func() { _ = exec.Command(runtimeProgram(t), "--root", root, "delete", "--force", id).Run() })
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("preserve-one", 1)
	if err != nil || !strings.HasPrefix(out, "from the caller\n") {
		t.Fatalf("--preserve-fds 1 with descriptor 3 passed: %v\n%s", err, out)
	}
	out, err = run("preserve-two", 2)
	if err == nil || !strings.Contains(out, "descriptor 4 was not passed to this process") || strings.Contains(out, "from the caller") {
		t.Fatalf("--preserve-fds 2 with only descriptor 3 passed: %v\n%s\nwant a refusal naming descriptor 4", err, out)
	}
}

// TestRuntimeExecDetachOutlivesTheCommand: a process started with `exec
// --detach` in a container that has no pid namespace of its own keeps
// running after the command exits. It got the command's parent-death
// signal (SIGKILL) until the init stage cleared it in exec mode too.
func TestRuntimeExecDetachOutlivesTheCommand(t *testing.T) {
	testutil.RequireRoot(t)
	sig := t.TempDir()
	s := spec.Default()
	s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(ns specs.LinuxNamespace) bool { return ns.Type == specs.PIDNamespace })
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/sig", Type: "bind", Source: sig, Options: []string{"rbind"}})
	s.Process.Args = []string{"sleep", "100"}
	bundle := testrootfs.Bundle(t, s, nil)
	root := t.TempDir()
	id := "exec-detach-nopid"
	rt := func(args ...string) {
		t.Helper()
		// Output to a file: the detached processes keep a pipe open.
		out, err := os.CreateTemp(t.TempDir(), "out")
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		cmd := exec.Command(runtimeProgram(t), append([]string{"--root", root}, args...)...)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Run(); err != nil {
			data, _ := os.ReadFile(out.Name())
			t.Fatalf("nexus-runtime %v: %v\n%s", args, err, data)
		}
	}
	rt("run", "--detach", "--bundle", bundle, id)
	t.Cleanup(func() { _ = exec.Command(runtimeProgram(t), "--root", root, "delete", "--force", id).Run() })
	rt("exec", "--detach", id, "sh", "-c", "echo $$ > /sig/pid; exec sleep 100")
	waitForFile(t, filepath.Join(sig, "pid"))
	var pid int
	for range 100 { // the shell may not have written the number yet
		data, _ := os.ReadFile(filepath.Join(sig, "pid"))
		if pid, _ = strconv.Atoi(strings.TrimSpace(string(data))); pid > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if pid <= 0 {
		t.Fatal("the exec'd shell wrote no pid")
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	time.Sleep(300 * time.Millisecond)
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("the process exec --detach started (pid %d) is gone once the command exited: %v", pid, err)
	}
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err != nil || !strings.HasPrefix(string(data), "sleep\x00100") {
		t.Fatalf("pid %d runs %q, %v; want the exec'd sleep 100", pid, data, err)
	}
}

// TestAppletsByName: the binary called by an applet's name (the built-in
// image links each to /nexus) runs that applet, and its exit code is the
// program's, with nothing added.
func TestAppletsByName(t *testing.T) {
	dir := t.TempDir()
	for _, name := range hello.AppletNames() {
		if err := os.Symlink(nexusBinary(t), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	hostname := filepath.Join(dir, "hostname")
	if out, err := runProgram(t, nil, hostname); err != nil || out != want+"\n" {
		t.Fatalf("nexus as hostname: %q, %v; want %q", out, err, want+"\n")
	}
	out, err := runProgram(t, nil, hostname, "other")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.HasPrefix(out, "hostname: ") || strings.Contains(out, "Error:") {
		t.Fatalf("nexus as hostname with an argument: %q, %v; want exit 2 and hostname's own message", out, err)
	}
}
