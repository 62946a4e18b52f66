// Command nexus is the single Nexus binary: control plane, node agent, OCI
// runtime and store. This package only wires flags to the packages that do
// the work.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"

	"nexus.dev/nexus/cmd/internal/ocicli"
	"nexus.dev/nexus/internal/hello"
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
	// The built-in image links its applets to this binary (hello.Applet).
	if run, ok := hello.Applet(filepath.Base(os.Args[0])); ok {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	root := newRootCommand()
	// Called as nexus-runtime (a symlink to nexus, as make build used to
	// create), the binary is the OCI runtime command line. It works, but pays
	// for initialising the whole binary; the lean program that make build
	// now writes to bin/nexus-runtime does not.
	if filepath.Base(os.Args[0]) == "nexus-runtime" {
		root = ocicli.New(ocicli.Config{Name: "nexus-runtime"})
	}
	if err := root.Execute(); err != nil {
		// A process's exit status (nexus exec, nexus runtime run) is passed
		// on silently, as a shell's.
		if !errors.As(err, new(ocicli.ExitError)) {
			fmt.Fprintln(os.Stderr, "Error:", err)
		}
		os.Exit(ocicli.ExitCode(err))
	}
}
