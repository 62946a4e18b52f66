// Command nexus-init is the container init stage on its own: the program
// the runtime forks into a new container's namespaces, which builds the
// container's root file system, drops privileges and execs the container's
// process. Every container start runs it once, so it links only
// runtime/initstage (no encoding/json, no cobra, no network stack) and
// starts in about 2 ms less than the nexus-runtime program did as its own
// init stage (docs/benchmarks.md). make build embeds it in nexus-runtime
// and nexus, which write it to their state root and execute it read-only.
package main

import (
	"os"
	goruntime "runtime"

	"nexus.dev/nexus/runtime/initstage"
)

func init() {
	// The init stage changes namespaces and credentials of the calling
	// thread and then execs from it: pin main to the main thread.
	goruntime.LockOSThread()
}

func main() {
	if !initstage.IsInit() {
		os.Stderr.WriteString("nexus-init is the container init stage of nexus and nexus-runtime, which start it; it takes no commands\n")
		os.Exit(2)
	}
	initstage.Main() // never returns
}
