package spec

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkLoad measures reading and validating a hardened config.json,
// which every container start pays.
func BenchmarkLoad(b *testing.B) {
	dir := b.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "rootfs"), 0o755); err != nil {
		b.Fatal(err)
	}
	data, _ := json.Marshal(Default())
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Run("without-seccomp", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, _, err := LoadExceptSeccomp(dir); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("with-seccomp", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := Load(dir); err != nil {
				b.Fatal(err)
			}
		}
	})
}
