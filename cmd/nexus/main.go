// Command nexus is the single Nexus binary: control plane, node agent, OCI
// runtime and store. This package only wires flags to the packages that do
// the work.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"

	"nexus.dev/nexus/runtime"
	"nexus.dev/nexus/runtime/sandbox"
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
	if sandbox.IsShim() {
		sandbox.ShimMain() // never returns
	}
	root := newRootCommand()
	// Called as nexus-runtime (a symlink), the binary is an OCI runtime
	// command line, which is how podman and containerd call a runtime.
	if filepath.Base(os.Args[0]) == "nexus-runtime" {
		root = newRuntimeCommand(&globalOptions{}, true)
		root.Use = "nexus-runtime"
	}
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(exitCode(err))
	}
}
