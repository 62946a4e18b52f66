// Command imageunpack is the helper of bench/image-unpack: it generates a
// large image layer, applies one with Nexus's layer.Apply, and drives the
// timed comparison of layer.Apply with GNU tar on the same file.
//
//	imageunpack gen -out DIR [-size BYTES] [-small N]   write DIR/layer.tar and DIR/layer.tar.gz
//	imageunpack apply -layer FILE -dir DIR             unpack once with layer.Apply (Overlay mode)
//	imageunpack run -work DIR [-n N] [-tar tar]        time both, interleaved, and print medians
//
// The bench/image-unpack script builds this program and runs gen and run;
// use that rather than this program directly.
package main

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"

	"nexus.dev/nexus/runtime/image/layer"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: imageunpack gen|apply|run [flags] (see the package comment)")
	}
	var err error
	switch os.Args[1] {
	case "gen":
		err = gen(os.Args[2:])
	case "apply":
		err = apply(os.Args[2:])
	case "run":
		err = run(os.Args[2:])
	default:
		fail("unknown subcommand " + os.Args[1] + "; want gen, apply or run")
	}
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "imageunpack:", msg)
	os.Exit(1)
}

// summary describes a generated layer; gen writes it next to the layer.
type summary struct {
	Entries   int64 `json:"entries"`
	Files     int64 `json:"files"`
	Bytes     int64 `json:"bytes"`
	GzipBytes int64 `json:"gzip_bytes"`
}

// gen writes a layer of about -size bytes of file content: -small files of
// 1-16 KiB in directories of 100, the rest in files of 8-64 MiB, a few
// symbolic and hard links. Content is a mix of random and repeated text, so
// gzip shrinks it about as much as it shrinks binaries and libraries.
func gen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	out := fs.String("out", "", "directory to write layer.tar, layer.tar.gz and layer.json into")
	size := fs.Int64("size", 1<<30, "bytes of file content")
	small := fs.Int("small", 50000, "number of small (1-16 KiB) files")
	fs.Parse(args)
	if *out == "" {
		return fmt.Errorf("gen needs -out DIR")
	}
	rng := rand.New(rand.NewPCG(42, 7))
	pool := contentPool(rng, 64<<20)

	f, err := os.Create(filepath.Join(*out, "layer.tar"))
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	var s summary
	mtime := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	add := func(h *tar.Header, body []byte) error {
		h.ModTime = mtime
		s.Entries++
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	dir := ""
	for i := 0; i < *small; i++ {
		if i%100 == 0 {
			dir = fmt.Sprintf("usr/share/pkg%04d/", i/100)
			if err := add(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755}, nil); err != nil {
				return err
			}
		}
		n := 1<<10 + rng.IntN(15<<10)
		off := rng.IntN(len(pool) - n)
		name := fmt.Sprintf("%sfile%02d", dir, i%100)
		if err := add(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(n)}, pool[off:off+n]); err != nil {
			return err
		}
		s.Files++
		s.Bytes += int64(n)
		switch i % 1000 {
		case 1:
			add(&tar.Header{Typeflag: tar.TypeSymlink, Name: name + ".link", Linkname: fmt.Sprintf("file%02d", i%100-1)}, nil)
		case 2:
			add(&tar.Header{Typeflag: tar.TypeLink, Name: name + ".hard", Linkname: name}, nil)
		}
	}
	if err := add(&tar.Header{Typeflag: tar.TypeDir, Name: "opt/big/", Mode: 0o755}, nil); err != nil {
		return err
	}
	for i := 0; s.Bytes < *size; i++ {
		n := int64(8<<20 + rng.IntN(56<<20))
		n = min(n, *size-s.Bytes)
		h := &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("opt/big/blob%03d", i), Mode: 0o755, Size: n}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		s.Entries++
		for left := n; left > 0; {
			c := min(left, int64(len(pool)))
			off := rng.IntN(len(pool) - int(c) + 1)
			if _, err := tw.Write(pool[off : off+int(c)]); err != nil {
				return err
			}
			left -= c
		}
		s.Files++
		s.Bytes += n
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}

	if s.GzipBytes, err = compress(filepath.Join(*out, "layer.tar"), filepath.Join(*out, "layer.tar.gz")); err != nil {
		return err
	}
	js, _ := json.Marshal(s)
	if err := os.WriteFile(filepath.Join(*out, "layer.json"), js, 0o644); err != nil {
		return err
	}
	fmt.Printf("layer: %d entries, %d files, %.0f MiB of content; gzip %.0f MiB (%.2fx)\n",
		s.Entries, s.Files, mib(s.Bytes), mib(s.GzipBytes), float64(s.Bytes)/float64(s.GzipBytes))
	return nil
}

// contentPool returns n bytes, in 4 KiB blocks that are either random (one
// in five) or lines of words from a small vocabulary.
func contentPool(rng *rand.Rand, n int) []byte {
	words := strings.Fields("the layer file data image node lib so init main func return error config value string int buffer read write open close mount path root user group size time")
	b := make([]byte, 0, n)
	for len(b) < n {
		if rng.IntN(5) == 0 {
			for range 4096 {
				b = append(b, byte(rng.Uint32()))
			}
			continue
		}
		for end := len(b) + 4096; len(b) < end; {
			b = append(b, words[rng.IntN(len(words))]...)
			b = append(b, " \n"[rng.IntN(2)])
		}
	}
	return b[:n]
}

// compress gzips src into dst at the default level, as docker and most
// registries' layers are.
func compress(src, dst string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return 0, err
	}
	zw := gzip.NewWriter(out)
	if _, err := io.Copy(zw, in); err != nil {
		return 0, err
	}
	if err := zw.Close(); err != nil {
		return 0, err
	}
	st, err := out.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), out.Close()
}

func apply(args []string) error {
	fs := flag.NewFlagSet("apply", flag.ExitOnError)
	file := fs.String("layer", "", "layer file")
	dir := fs.String("dir", "", "empty directory to unpack into")
	fs.Parse(args)
	if *file == "" || *dir == "" {
		return fmt.Errorf("apply needs -layer FILE and -dir DIR")
	}
	f, err := os.Open(*file)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = layer.Apply(context.Background(), *dir, f, layer.Options{Mode: layer.Overlay, NoOwnership: os.Geteuid() != 0})
	return err
}

// run times `imageunpack apply` and `tar -x` on the same layers, each into
// a fresh directory on the same filesystem, interleaved with the order
// alternating, after one warm-up of each (which also puts the layer files in
// the page cache).
func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	work := fs.String("work", "", "directory holding layer.tar, layer.tar.gz and layer.json; unpacks go below it")
	n := fs.Int("n", 3, "timed runs of each tool and variant")
	tarBin := fs.String("tar", "tar", "GNU tar")
	gzipProg := fs.String("gzip-program", "", "tar --use-compress-program for the gzip variant (pigz); empty: tar -z")
	fs.Parse(args)
	if *work == "" {
		return fmt.Errorf("run needs -work DIR (the -out DIR of gen)")
	}
	js, err := os.ReadFile(filepath.Join(*work, "layer.json"))
	if err != nil {
		return fmt.Errorf("read the layer summary (run gen first): %w", err)
	}
	var s summary
	if err := json.Unmarshal(js, &s); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	gzArgs := []string{"-xzf"}
	if *gzipProg != "" {
		gzArgs = []string{"--use-compress-program=" + *gzipProg, "-xf"}
	}
	type tool struct {
		name string
		argv func(file, dir string) []string
	}
	variants := []struct {
		name  string
		file  string
		tools []tool
	}{
		{"tar", "layer.tar", []tool{
			{"nexus", func(f, d string) []string { return []string{self, "apply", "-layer", f, "-dir", d} }},
			{"tar -x", func(f, d string) []string { return []string{*tarBin, "-xf", f, "-C", d} }},
		}},
		{"tar+gzip", "layer.tar.gz", []tool{
			{"nexus", func(f, d string) []string { return []string{self, "apply", "-layer", f, "-dir", d} }},
			{"tar " + strings.Join(gzArgs, " "), func(f, d string) []string { return append(append([]string{*tarBin}, gzArgs...), f, "-C", d) }},
		}},
	}
	once := func(argv []string) (time.Duration, error) {
		dir := filepath.Join(*work, "out")
		if err := os.RemoveAll(dir); err != nil {
			return 0, err
		}
		if err := os.Mkdir(dir, 0o755); err != nil {
			return 0, err
		}
		argv = append(slices.Clone(argv[:len(argv)-1]), dir)
		// Flush the previous run's dirty pages so they are not written back
		// on this run's time.
		exec.Command("sync").Run()
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		start := time.Now()
		err := cmd.Run()
		d := time.Since(start)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
		}
		return d, os.RemoveAll(dir)
	}
	fmt.Printf("%d entries, %d files, %.0f MiB of content; MiB/s and files/s are of the uncompressed layer\n", s.Entries, s.Files, mib(s.Bytes))
	for _, v := range variants {
		file := filepath.Join(*work, v.file)
		times := make([][]time.Duration, len(v.tools))
		for _, t := range v.tools {
			if _, err := once(t.argv(file, "")); err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
		}
		// Alternate which tool goes first (ABBA...): on ext4 every create
		// after many recent deletes costs more than the one before (the
		// allocator skips recently freed inodes), so a fixed order would
		// charge that drift to whichever tool always runs second.
		for r := range *n {
			for k := range v.tools {
				i := k
				if r%2 == 1 {
					i = len(v.tools) - 1 - k
				}
				d, err := once(v.tools[i].argv(file, ""))
				if err != nil {
					return err
				}
				times[i] = append(times[i], d)
			}
		}
		var med []time.Duration
		for i, t := range v.tools {
			m := median(times[i])
			med = append(med, m)
			fmt.Printf("%-9s %-28s median %6.2f s  %7.1f MiB/s  %8.0f files/s  (runs: %s)\n",
				v.name, t.name, m.Seconds(), mib(s.Bytes)/m.Seconds(), float64(s.Files)/m.Seconds(), fmtRuns(times[i]))
		}
		fmt.Printf("%-9s nexus time / %s time = %.2f\n", v.name, v.tools[1].name, med[0].Seconds()/med[1].Seconds())
	}
	return nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtRuns(d []time.Duration) string {
	var parts []string
	for _, x := range d {
		parts = append(parts, fmt.Sprintf("%.2f", x.Seconds()))
	}
	return strings.Join(parts, " ")
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
