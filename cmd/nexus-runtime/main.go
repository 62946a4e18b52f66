// Command nexus-init is the container init stage on its own: the part of
// nexus that runs inside a new container before the user's program. It is
// embedded in the nexus binary (make build) so that a container start does
// not pay for initialising every package of the whole binary (DESIGN §6);
// it links only the runtime.
package main

import (
	"fmt"
	"os"
	goruntime "runtime"

	"nexus.dev/nexus/runtime"
)

func init() {
	// Namespaces and credentials are per thread until execve.
	goruntime.LockOSThread()
}

func main() {
	if !runtime.IsInit() {
		fmt.Fprintln(os.Stderr, "nexus-init is started by nexus runtime, not by hand")
		os.Exit(2)
	}
	runtime.InitMain()
}
