package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
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

// TestStartTiedKillsTheChildWithItsParent: a child started by StartTied
// dies when the process that started it exits (here a copy of this test
// binary, which starts `sleep 60`, prints its pid and exits), and cmd.Wait
// still reaps a tied child and reports how it ended (StartTied waits for it
// without reaping it). (The hazard StartTied also guards against, a
// Pdeathsig tied to a thread Go ends, is what the runtime's
// TestCreateSurvivesEndedThreads reproduces for container inits.)
func TestStartTiedKillsTheChildWithItsParent(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep program")
	}
	if os.Getenv("TESTUTIL_TIED_PARENT") == "1" {
		c := exec.Command(sleep, "60")
		if err := StartTied(c); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(c.Process.Pid)
		os.Exit(0)
	}
	parent := exec.Command(os.Args[0], "-test.run=^TestStartTiedKillsTheChildWithItsParent$")
	parent.Env = append(os.Environ(), "TESTUTIL_TIED_PARENT=1")
	out, err := parent.Output()
	if err != nil {
		t.Fatalf("the parent: %v: %s", err, out)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("the parent printed %q", out)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		// A killed child whose parent is gone is reaped by init; until
		// then it is a zombie, dead all the same.
		if state, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); strings.Contains(string(state), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the tied child %d outlived its parent by 10 s", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}

	c := exec.Command(sleep, "60")
	if err := StartTied(c); err != nil {
		t.Fatal(err)
	}
	_ = c.Process.Kill()
	if err := c.Wait(); err == nil || !strings.Contains(err.Error(), "signal: killed") {
		t.Fatalf("Wait of a killed tied child: %v, want signal: killed", err)
	}
}
