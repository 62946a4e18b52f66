package runtime

import (
	"testing"

	"nexus.dev/nexus/runtime/seccomp"
	"nexus.dev/nexus/runtime/spec"
)

// BenchmarkSpecForInit measures preparing what the init stage receives of
// a hardened spec (compiling its seccomp profile included), which every
// container start pays after spec.BenchmarkLoad's reading and validating.
func BenchmarkSpecForInit(b *testing.B) {
	s := spec.Default()
	for i := 0; i < b.N; i++ {
		if _, _, err := specForInit(s, seccomp.Compile); err != nil {
			b.Fatal(err)
		}
	}
}
