package runtime

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"nexus.dev/nexus/runtime/seccomp"
)

// BenchmarkLoadSpec measures reading and validating a hardened config.json,
// which every container start pays.
func BenchmarkLoadSpec(b *testing.B) {
	dir := b.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "rootfs"), 0o755); err != nil {
		b.Fatal(err)
	}
	data, _ := json.Marshal(DefaultSpec())
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Run("without-seccomp", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, _, err := loadSpec(dir, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("with-seccomp", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, _, err := loadSpec(dir, true); err != nil {
				b.Fatal(err)
			}
		}
	})
	spec, _, _ := loadSpec(dir, false)
	b.Run("specForInit", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, _, err := specForInit(spec, seccomp.Compile); err != nil {
				b.Fatal(err)
			}
		}
	})
}
