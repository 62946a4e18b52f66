package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"

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
