// Command nexus is the single Nexus binary: control plane, node agent, OCI
// runtime and store. This package only wires flags to the packages that do
// the work.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
