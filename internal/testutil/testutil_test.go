package testutil

import (
	"strings"
	"testing"
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
