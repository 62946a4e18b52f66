package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
)

// benchLayer is a ~64 MiB layer like a language runtime's: a few hundred
// directories of many small files (1-16 KiB) and some large ones (1-8 MiB).
func benchLayer(b *testing.B) (layer []byte, files int, size int64) {
	b.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	content := make([]byte, 8<<20)
	for i := range content {
		content[i] = byte(rng.IntN(64)) // compressible about like binaries
	}
	add := func(h *tar.Header, body []byte) {
		h.ModTime, h.Uid, h.Gid = testTime, 0, 0
		if err := tw.WriteHeader(h); err != nil {
			b.Fatal(err)
		}
		tw.Write(body)
	}
	const target = 64 << 20
	for d := 0; size < target; d++ {
		dir := fmt.Sprintf("usr/lib/pkg%03d/", d)
		add(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755}, nil)
		for f := 0; f < 64 && size < target; f++ {
			n := 1<<10 + rng.IntN(15<<10)
			if f == 0 && d%4 == 0 {
				n = 1<<20 + rng.IntN(7<<20)
			}
			n = min(n, target-int(size))
			add(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("%sf%02d.so", dir, f), Mode: 0o644, Size: int64(n)}, content[:n])
			files++
			size += int64(n)
		}
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes(), files, size
}

func BenchmarkApply(b *testing.B) {
	plain, files, size := benchLayer(b)
	for _, tc := range []struct {
		name  string
		layer []byte
	}{
		{"tar", plain},
		{"gzip", gzipped(b, plain)},
		{"zstd", zstded(b, plain)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(size)
			parent := b.TempDir()
			o := testOpts(Overlay)
			i := 0
			for b.Loop() {
				b.StopTimer()
				dir := fmt.Sprintf("%s/%d", parent, i)
				i++
				if err := os.Mkdir(dir, 0o755); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if _, err := Apply(context.Background(), dir, bytes.NewReader(tc.layer), o); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.RemoveAll(dir)
				b.StartTimer()
			}
			b.ReportMetric(float64(files)*float64(b.N)/b.Elapsed().Seconds(), "files/s")
		})
	}
}
