package layer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// tarBlock is a 512-byte tar header with name, type flag, size and, for
// the old GNU format, magic "ustar  \x00"; fill edits it before the
// checksum is set.
func tarBlock(name string, flag byte, size int64, gnu bool, fill func(b []byte)) []byte {
	b := make([]byte, 512)
	copy(b, name)
	copy(b[100:], "0000644\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:], fmt.Sprintf("%011o\x00", size))
	copy(b[136:], "00000000000\x00")
	b[156] = flag
	if gnu {
		copy(b[257:], "ustar  \x00")
	} else {
		copy(b[257:], "ustar\x0000")
	}
	if fill != nil {
		fill(b)
	}
	copy(b[148:], "        ")
	var sum int
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func pad512(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

// paxSparseTar is a tar holding one file, name, of apparent size size whose
// only data is data at offset at, in GNU's PAX sparse format 1.0 (what
// `tar --sparse --format=posix` writes).
func paxSparseTar(name string, size, at int64, data string) []byte {
	var recs strings.Builder
	for _, kv := range [][2]string{{"GNU.sparse.major", "1"}, {"GNU.sparse.minor", "0"}, {"GNU.sparse.name", name}, {"GNU.sparse.realsize", fmt.Sprint(size)}} {
		rec := " " + kv[0] + "=" + kv[1] + "\n"
		n := len(rec) + 1
		for len(fmt.Sprint(n))+len(rec) != n {
			n++
		}
		fmt.Fprintf(&recs, "%d%s", n, rec)
	}
	sparseMap := pad512([]byte(fmt.Sprintf("1\n%d\n%d\n", at, len(data))))
	body := append(sparseMap, data...)
	var out []byte
	out = append(out, tarBlock("PaxHeaders/"+name, 'x', int64(recs.Len()), false, nil)...)
	out = append(out, pad512([]byte(recs.String()))...)
	out = append(out, tarBlock("GNUSparseFile.0/"+name, '0', int64(len(body)), false, nil)...)
	out = append(out, pad512(body)...)
	return append(out, make([]byte, 1024)...)
}

// oldGNUSparseTar is the same file in the old GNU sparse format (type 'S',
// the map in the header).
func oldGNUSparseTar(name string, size, at int64, data string) []byte {
	hdr := tarBlock(name, 'S', int64(len(data)), true, func(b []byte) {
		copy(b[386:], fmt.Sprintf("%011o\x00", at))
		copy(b[398:], fmt.Sprintf("%011o\x00", len(data)))
		copy(b[483:], fmt.Sprintf("%011o\x00", size))
	})
	out := append(hdr, pad512([]byte(data))...)
	return append(out, make([]byte, 1024)...)
}

// TestSparseFilesStaySparse unpacks a file of 1 GiB apparent size with 5
// bytes of data: it must take about no disk (it took the full GiB, written
// as zeros), read back the same, and its apparent size still counts
// against Limits.MaxBytes.
func TestSparseFilesStaySparse(t *testing.T) {
	const size, at, data = 1 << 30, 512 << 20, "hello"
	for _, tc := range []struct {
		name  string
		layer []byte
	}{
		{"PAX sparse 1.0", paxSparseTar("big", size, at, data)},
		{"old GNU sparse", oldGNUSparseTar("big", size, at, data)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.layer) > 10<<10 {
				t.Fatalf("the test layer is %d bytes, want a small one", len(tc.layer))
			}
			dir := t.TempDir()
			st := mustApply(t, dir, tc.layer, testOpts(Overlay))
			if st.Bytes != size {
				t.Errorf("Stats.Bytes %d, want the apparent size %d", st.Bytes, size)
			}
			p := filepath.Join(dir, "big")
			var sb unix.Stat_t
			if err := unix.Stat(p, &sb); err != nil {
				t.Fatal(err)
			}
			if sb.Size != size {
				t.Errorf("size %d, want %d", sb.Size, size)
			}
			if used := sb.Blocks * 512; used > 1<<20 {
				t.Errorf("the sparse file takes %d bytes of disk, want at most 1 MiB", used)
			}
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got := make([]byte, len(data)+2)
			if _, err := f.ReadAt(got, at-1); err != nil {
				t.Fatal(err)
			}
			if want := "\x00" + data + "\x00"; string(got) != want {
				t.Errorf("content around offset %d: %q, want %q", at, got, want)
			}

			o := testOpts(Overlay)
			o.Limits = Limits{MaxBytes: size - 1}
			_, err = Apply(context.Background(), t.TempDir(), bytes.NewReader(tc.layer), o)
			var h *HostileError
			if !errors.As(err, &h) || !strings.Contains(h.Reason, "limit Limits.MaxBytes") {
				t.Errorf("a sparse file over the limit: %v, want a refusal naming the limit", err)
			}
		})
	}
}

// TestZeroBlocksAreHoles checks the writing rules around holes: data at the
// start, middle and end, a file ending in a hole, and files smaller than a
// block, all read back exactly.
func TestZeroBlocksAreHoles(t *testing.T) {
	blk := strings.Repeat("\x00", holeBlock)
	for _, tc := range []struct {
		name, body string
		maxBlocks  int64 // most 512-byte units the file may use
	}{
		{"empty", "", 0},
		{"small data", "abc", 8},
		{"small zeros", "\x00\x00\x00", 8},
		{"data then hole", "x" + blk[1:] + blk + blk, 8},
		{"hole then data", blk + blk + "tail", 8},
		{"data hole data", "a" + blk[1:] + blk + blk + "b", 16},
		{"one zero byte in data", strings.Repeat("y", holeBlock) + "\x00" + strings.Repeat("z", holeBlock-1), 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			mustApply(t, dir, mkTar(t, reg("f", tc.body)), testOpts(Overlay))
			got, err := os.ReadFile(filepath.Join(dir, "f"))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.body {
				t.Fatalf("read back %d bytes, not the %d written", len(got), len(tc.body))
			}
			var sb unix.Stat_t
			if err := unix.Stat(filepath.Join(dir, "f"), &sb); err != nil {
				t.Fatal(err)
			}
			if sb.Blocks > tc.maxBlocks {
				t.Errorf("uses %d blocks of 512 bytes, want at most %d", sb.Blocks, tc.maxBlocks)
			}
		})
	}
}
