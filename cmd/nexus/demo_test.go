package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"nexus.dev/nexus/internal/testutil"
)

// TestDemoRunsTheBuiltinImage: `nexus demo` packages the binary as the
// built-in image, runs it with the runtime, gets answers from it, stops it
// with SIGTERM and leaves nothing mounted or prepared.
func TestDemoRunsTheBuiltinImage(t *testing.T) {
	testutil.RequireRoot(t)
	bin := nexusBinary(t)
	dir := t.TempDir()
	out, err := exec.Command(bin, "--data-dir", dir, "demo", "--requests", "2").CombinedOutput()
	if err != nil {
		t.Fatalf("nexus demo: %v\n%s", err, out)
	}
	for _, want := range []string{"hello from nexus-demo", "served by the nexus demo", "request 1: GET /", "request 2: GET /", "exit code 0"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), dir) {
		t.Errorf("a mount under %s is left after the demo", dir)
	}
	left, _ := os.ReadDir(dir + "/images/containers")
	if len(left) != 0 {
		t.Errorf("prepared containers left: %v", left)
	}
}

func TestDemoNeedsRequests(t *testing.T) {
	testutil.RequireRoot(t)
	out, err := exec.Command(nexusBinary(t), "--data-dir", t.TempDir(), "demo", "--requests", "0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "at least one") {
		t.Fatalf("--requests 0: err %v, output %s", err, out)
	}
}

// TestDemoRejectsBadFlags: flag mistakes are reported before anything
// else, root or not.
func TestDemoRejectsBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"demo", "--port", "70000"}, "--port 70000 is outside 0-65535"},
		{[]string{"demo", "--port", "-1"}, "--port -1 is outside 0-65535"},
		{[]string{"demo", "--requests", "0"}, "send at least one"},
	}
	for _, tt := range tests {
		out, err := run(t, append([]string{"--data-dir", t.TempDir()}, tt.args...)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want %q\n%s", tt.args, err, tt.want, out)
		}
	}
}

// demoRun is a `nexus demo` started with its standard output on a pipe
// the test reads line by line.
type demoRun struct {
	cmd     *exec.Cmd
	id      string // the container's ID, from its "container ... started" line
	lines   *bufio.Scanner
	out     io.ReadCloser
	stderr  *bytes.Buffer
	dataDir string
}

// startDemo starts a demo on dataDir that would send many requests and
// reads its output up to the line that says the container started. Tests
// share a data directory where they can: packaging the built-in image into
// a new one takes seconds.
func startDemo(t *testing.T, dataDir string) *demoRun {
	t.Helper()
	d := &demoRun{dataDir: dataDir, stderr: &bytes.Buffer{}}
	d.cmd = exec.Command(nexusBinary(t), "--data-dir", d.dataDir, "demo", "--requests", "1000000")
	d.cmd.Stderr = d.stderr
	var err error
	if d.out, err = d.cmd.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		d.cmd.Wait()
		if d.id != "" { // whatever a failed test left
			exec.Command(nexusBinary(t), "runtime", "delete", "--force", d.id).Run()
			exec.Command(nexusBinary(t), "--data-dir", d.dataDir, "image", "release", d.id).Run()
		}
	})
	d.lines = bufio.NewScanner(d.out)
	for d.lines.Scan() {
		if f := strings.Fields(d.lines.Text()); len(f) > 2 && f[0] == "container" && f[2] == "started" {
			d.id = f[1]
			break
		}
	}
	if d.id == "" {
		d.cmd.Wait()
		t.Fatalf("the demo never said its container started; stderr:\n%s", d.stderr)
	}
	// Wait for the first answer, so the container is surely serving.
	for d.lines.Scan() {
		if strings.HasPrefix(d.lines.Text(), "--- GET") {
			break
		}
	}
	return d
}

// wait waits for the demo to exit and returns its error.
func (d *demoRun) wait(t *testing.T) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(60 * time.Second):
		t.Fatalf("the demo did not exit within 60 s; stderr:\n%s", d.stderr)
		return nil
	}
}

// checkGone fails the test if anything of the demo's container is left: a
// runtime container, a mount under the data directory, a prepared container
// in the image store.
func (d *demoRun) checkGone(t *testing.T) {
	t.Helper()
	if out, err := exec.Command(nexusBinary(t), "runtime", "state", d.id).CombinedOutput(); err == nil {
		t.Errorf("container %s still exists: %s", d.id, out)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), d.dataDir) {
		t.Errorf("a mount under %s is left", d.dataDir)
	}
	if left, _ := os.ReadDir(filepath.Join(d.dataDir, "images", "containers")); len(left) != 0 {
		t.Errorf("prepared containers left: %v", left)
	}
	if out, err := exec.Command(nexusBinary(t), "--data-dir", d.dataDir, "image", "inspect", "nexus.local/hello").CombinedOutput(); err != nil || strings.Contains(string(out), "Containers:") {
		t.Errorf("the image still lists a prepared container (%v):\n%s", err, out)
	}
}

// TestDemoCleansUpWhenStopped stops a running demo the ways a user does:
// signals, and a reader that goes away (`nexus demo | head -3`). Each must
// leave no container, mount or prepared container behind; SIGPIPE used to
// kill the demo outright and orphan its running container.
func TestDemoCleansUpWhenStopped(t *testing.T) {
	testutil.RequireRoot(t)
	dataDir := t.TempDir()
	for _, tc := range []struct {
		name string
		stop func(d *demoRun) error
		want string
	}{
		{"standard output closed", func(d *demoRun) error { return d.out.Close() }, "broken pipe signal received"},
		{"SIGINT", func(d *demoRun) error { return d.cmd.Process.Signal(syscall.SIGINT) }, "interrupt signal received"},
		{"SIGTERM", func(d *demoRun) error { return d.cmd.Process.Signal(syscall.SIGTERM) }, "terminated signal received"},
		{"SIGHUP", func(d *demoRun) error { return d.cmd.Process.Signal(syscall.SIGHUP) }, "hangup signal received"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDemo(t, dataDir)
			if err := tc.stop(d); err != nil {
				t.Fatal(err)
			}
			go io.Copy(io.Discard, d.out)
			err := d.wait(t)
			if code := d.cmd.ProcessState.ExitCode(); err == nil || code != 1 {
				t.Errorf("exit: %v (code %d), want status 1 after clean-up", err, code)
			}
			if !strings.Contains(d.stderr.String(), tc.want) || !strings.Contains(d.stderr.String(), "the container was removed") {
				t.Errorf("stderr %q, want it to say %q and that the container was removed", d.stderr, tc.want)
			}
			d.checkGone(t)
		})
	}
}

// TestKilledDemoCanBeCleanedUp kills a demo with SIGKILL, which nothing
// can catch, and cleans up after it the way its help says: the image store
// keeps the container's layers while it runs, names the command that
// releases it, and prune releases it once the runtime container is gone;
// so does `nexus image release`.
func TestKilledDemoCanBeCleanedUp(t *testing.T) {
	testutil.RequireRoot(t)
	d := startDemo(t, t.TempDir())
	d.cmd.Process.Kill()
	d.wait(t)
	bin := nexusBinary(t)
	image := func(args ...string) (string, error) {
		out, err := exec.Command(bin, append([]string{"--data-dir", d.dataDir, "image"}, args...)...).CombinedOutput()
		return string(out), err
	}
	// The container runs on: prune keeps it, rm and release say what to do.
	if out, err := image("prune"); err != nil || strings.Contains(out, "abandoned") {
		t.Fatalf("prune while the orphaned container runs: %v\n%s", err, out)
	}
	if out, err := image("rm", "nexus.local/hello"); err == nil || !strings.Contains(out, "nexus image release "+d.id) {
		t.Errorf("rm of the image in use: %v\n%s", err, out)
	}
	if out, err := image("release", d.id); err == nil || !strings.Contains(out, "nexus runtime delete --force "+d.id) {
		t.Errorf("release of a running container: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "runtime", "delete", "--force", d.id).CombinedOutput(); err != nil {
		t.Fatalf("runtime delete: %v\n%s", err, out)
	}
	out, err := image("prune")
	if err != nil || !strings.Contains(out, "1 abandoned prepared container ("+d.id+")") {
		t.Fatalf("prune after the container is gone: %v\n%s", err, out)
	}
	d.checkGone(t)

	// The same, released by hand.
	d = startDemo(t, d.dataDir)
	d.cmd.Process.Kill()
	d.wait(t)
	if out, err := exec.Command(bin, "runtime", "delete", "--force", d.id).CombinedOutput(); err != nil {
		t.Fatalf("runtime delete: %v\n%s", err, out)
	}
	if out, err := image("release", d.id); err != nil || !strings.Contains(out, "Released "+d.id) {
		t.Fatalf("release: %v\n%s", err, out)
	}
	d.checkGone(t)
	if out, err := image("release", d.id); err == nil || !strings.Contains(out, "no prepared container "+d.id) {
		t.Errorf("second release: %v\n%s", err, out)
	}
	if out, err := image("rm", "nexus.local/hello"); err != nil {
		t.Errorf("rm once released: %v\n%s", err, out)
	}
}
