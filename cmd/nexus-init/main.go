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

	"nexus.dev/nexus/runtime/initstage"
)

// The init stage changes namespaces and credentials of the calling thread
// and then execs from it, so it must stay on one thread. It runs during
// package initialisation, where the Go runtime already keeps the main
// goroutine on the main thread: runtime.LockOSThread would also start the
// runtime's template thread, another clone for this process and another
// thread for execve to tear down (the program ran 0.4-0.8 ms longer with
// it, GODEBUG=inittrace=1).
func init() {
	if initstage.IsInit() {
		initstage.Main() // never returns
	}
}

func main() {
	os.Stderr.WriteString("nexus-init is the container init stage of nexus and nexus-runtime, which start it; it takes no commands\n")
	os.Exit(2)
}
