package sandbox

import (
	"syscall"
	"testing"

	"nexus.dev/nexus/runtime"
)

func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		name         string
		code, signal int
		want         runtime.ExitStatus
	}{
		{"exit 0", 0, 0, runtime.ExitStatus{Known: true}},
		{"exit 3", 3, 0, runtime.ExitStatus{Code: 3, Known: true}},
		{"exit 128", 128, 0, runtime.ExitStatus{Code: 128, Known: true}},
		{"SIGKILL as 137", 137, 0, runtime.ExitStatus{Code: 137, Signal: syscall.SIGKILL, Known: true}},
		{"SIGTERM as 143", 143, 0, runtime.ExitStatus{Code: 143, Signal: syscall.SIGTERM, Known: true}},
		{"sandbox killed", 137, 9, runtime.ExitStatus{Code: 137, Signal: syscall.SIGKILL, Known: true}},
		{"exit 255", 255, 0, runtime.ExitStatus{Code: 255, Known: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := exitStatus(tc.code, tc.signal); got != tc.want {
				t.Errorf("exitStatus(%d, %d) = %+v, want %+v", tc.code, tc.signal, got, tc.want)
			}
		})
	}
}
