package agent_test

import (
	"os"
	goruntime "runtime"
	"testing"

	"nexus.dev/nexus/runtime"
)

func init() {
	if runtime.IsInit() {
		goruntime.LockOSThread()
	}
}

// TestMain lets the test binary act as the container init stage: the
// runtime executes its own binary (this test binary) when it is built
// without the embedded init program, as `go test` builds it.
func TestMain(m *testing.M) {
	if runtime.IsInit() {
		runtime.InitMain()
	}
	os.Exit(m.Run())
}
