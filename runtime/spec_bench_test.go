package runtime

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

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
			if _, err := loadSpec(dir, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("with-seccomp", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := loadSpec(dir, true); err != nil {
				b.Fatal(err)
			}
		}
	})
	spec, _ := loadSpec(dir, false)
	b.Run("specForInit", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, _, err := specForInit(spec, seccomp.Compile); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// firstDecodeEnv makes this test binary decode one init config and exit (see
// BenchmarkInitConfigFirstDecode): "spec" or "initSpec", then the file.
const firstDecodeEnv = "NEXUS_TEST_FIRST_DECODE"

func init() {
	if v := os.Getenv(firstDecodeEnv); v != "" {
		kind, path, _ := strings.Cut(v, ":")
		data, err := os.ReadFile(path)
		if err != nil {
			panic(err)
		}
		t0 := time.Now()
		if kind == "spec" {
			var cfg struct {
				initConfig
				Spec *specs.Spec `json:"spec"`
			}
			err = json.Unmarshal(data, &cfg)
		} else {
			var cfg initConfig
			err = json.Unmarshal(data, &cfg)
		}
		d := time.Since(t0)
		if err != nil {
			panic(err)
		}
		fmt.Println(d.Nanoseconds())
		os.Exit(0)
	}
}

// BenchmarkInitConfigFirstDecode measures what a container's init stage
// pays to decode its config. The first decode of a type in a process builds
// encoding/json's codecs for every type reachable from it, and the init is
// a new process every time, so each iteration runs this test binary afresh
// and times the decode alone; the metric is the median. "spec" decodes the
// whole specs.Spec, which the init received before, "initSpec" the part it
// acts on, which it receives now.
func BenchmarkInitConfigFirstDecode(b *testing.B) {
	spec := DefaultSpec()
	ispec, filter, err := specForInit(spec, seccomp.Compile)
	if err != nil {
		b.Fatal(err)
	}
	full := *spec
	full.Linux = &specs.Linux{}
	*full.Linux = *spec.Linux
	full.Linux.Seccomp = nil
	data, err := json.Marshal(struct {
		initConfig
		Spec *specs.Spec `json:"spec"`
	}{initConfig{Mode: "create", ID: "bench", Spec: ispec, Seccomp: filter}, &full})
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "config.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	for _, kind := range []string{"spec", "initSpec"} {
		b.Run(kind, func(b *testing.B) {
			var ds []float64
			for b.Loop() {
				cmd := exec.Command(os.Args[0])
				cmd.Env = append(os.Environ(), firstDecodeEnv+"="+kind+":"+path)
				out, err := cmd.Output()
				if err != nil {
					b.Fatalf("decode helper: %v", err)
				}
				ns, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
				if err != nil {
					b.Fatalf("decode helper printed %q", out)
				}
				ds = append(ds, ns)
			}
			slices.Sort(ds)
			b.ReportMetric(ds[len(ds)/2]/1e3, "µs/decode(median)")
		})
	}
}
