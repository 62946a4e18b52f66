package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The init program starts once per container, in the container's
// namespaces: every package it links is initialised (and faulted in) on
// every start. It must link the init stage and what that needs, not the
// OCI command line, the JSON codecs, the network stack or the seccomp
// compiler.
func TestInitProgramIsLean(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	denied := []string{"encoding/json", "net", "log/slog", "regexp", "text/template", "flag",
		"github.com/spf13/cobra", "nexus.dev/nexus/runtime", "nexus.dev/nexus/runtime/seccomp",
		"nexus.dev/nexus/runtime/cgroups", "nexus.dev/nexus/cmd/internal/ocicli"}
	deps := strings.Fields(string(out))
	for _, d := range deps {
		for _, no := range denied {
			if d == no {
				t.Errorf("nexus-init links %s (find who imports it: go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./cmd/nexus-init)", d)
			}
		}
	}
	t.Logf("nexus-init links %d packages", len(deps))
}
