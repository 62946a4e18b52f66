package testutil

import (
	"os/exec"
	goruntime "runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// recorder stands in for a test: it records whether Missing skipped or failed.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Skip(args ...any)               { r.skipped = args[0].(string) }
func (r *recorder) Fatalf(format string, a ...any) { r.failed = format }

func TestMissingFailsInCI(t *testing.T) {
	for _, tc := range []struct {
		ci       string
		wantFail bool
	}{
		{"", false},
		{"false", false},
		{"true", true},
		{"1", true},
	} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			r := &recorder{TB: t}
			RequireProgram(r, "nexus-no-such-program", "nexus-no-such-package")
			if tc.wantFail {
				if r.failed == "" || r.skipped != "" {
					t.Fatalf("CI=%s: want a failure, got skip %q", tc.ci, r.skipped)
				}
				return
			}
			if r.skipped == "" || r.failed != "" {
				t.Fatalf("CI=%s: want a skip, got failure %q", tc.ci, r.failed)
			}
			if !strings.Contains(r.skipped, "apt-get install -y nexus-no-such-package") {
				t.Errorf("skip reason %q does not say how to install it", r.skipped)
			}
		})
	}
}

// TestStartTiedOutlivesItsStartersThread: children started by StartTied
// from goroutines that lock their thread and return (Go then ends the
// thread) keep running, and are killed only when told. (A plain Pdeathsig
// child does not die in every such case, only in some, as the agent's
// exec tests showed; so this test checks the survival, not the hazard.)
func TestStartTiedOutlivesItsStartersThread(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep program")
	}
	var children []*exec.Cmd
	for range 3 {
		c := exec.Command(sleep, "60")
		done := make(chan error, 1)
		go func() {
			goruntime.LockOSThread()
			done <- StartTied(c)
		}()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		children = append(children, c)
	}
	time.Sleep(300 * time.Millisecond)
	for _, c := range children {
		if err := c.Process.Signal(syscall.Signal(0)); err != nil {
			t.Errorf("a tied child died with its starter's thread: %v", err)
		}
		c.Process.Kill()
		c.Wait()
	}
}
