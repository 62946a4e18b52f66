// Command nexus-runtime is the OCI runtime on its own: the OCI command line
// (cmd/internal/ocicli) and the container init stage, linking only the
// runtime's packages. OCI tools (podman, containerd) start it once per
// container operation and every container start runs it twice (the command
// and the init stage), so it must not pay for initialising the packages of
// the whole nexus binary: 4.5 ms per process there (GODEBUG=inittrace=1),
// against well under 1 ms here. make build writes it to bin/nexus-runtime
// and embeds it in nexus, which executes it as the init stage of the
// containers it starts and writes it out with `nexus runtime extract`.
package main

import (
	"fmt"
	"os"
	goruntime "runtime"

	"nexus.dev/nexus/cmd/internal/ocicli"
	"nexus.dev/nexus/runtime"
)

func init() {
	// The container init stage changes namespaces and credentials of the
	// calling thread and then execs from it: pin main to the main thread.
	if runtime.IsInit() {
		goruntime.LockOSThread()
	}
}

func main() {
	if runtime.IsInit() {
		runtime.InitMain() // never returns
	}
	// One P is enough for the command line, which does one thing at a time,
	// and spares the Go runtime's sysmon thread from waking every 20 µs
	// while a goroutine waits in a system call (9 % of the process's CPU
	// time in perf): a whole `run` took 46.0 against 47.6 ms with this, and
	// 49.1 ms with neither this nor the init's (medians of 40 interleaved
	// runs).
	goruntime.GOMAXPROCS(1)
	if err := ocicli.New(ocicli.Config{Name: "nexus-runtime"}).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(ocicli.ExitCode(err))
	}
}
