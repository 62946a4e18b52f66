package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// buildLog writes n records and returns the log's files, oldest first.
// With maxBytes set small the chain spans several files.
func buildLog(t *testing.T, n int, maxBytes int64) []string {
	t.Helper()
	dir := t.TempDir()
	l := openLog(t, Config{Dir: dir, MaxBytes: maxBytes, MaxFiles: 100})
	for i := 1; i <= n; i++ {
		mustWrite(t, l, req("create", "workloads", fmt.Sprintf("web-%d", i)))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files, err := Files(dir)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func fileLines(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(data, []byte("\n"))
}

func writeLines(t *testing.T, path string, lines [][]byte) {
	t.Helper()
	if err := os.WriteFile(path, bytes.Join(lines, nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

// editLines applies f to the lines of path (each with its newline).
func editLines(t *testing.T, path string, f func([][]byte) [][]byte) {
	t.Helper()
	ls := fileLines(t, path)
	if len(ls[len(ls)-1]) == 0 {
		ls = ls[:len(ls)-1]
	}
	writeLines(t, path, f(ls))
}

// rehash gives a line a correct hash for its (changed) content, as an
// attacker who knows the format would.
func rehash(line []byte) []byte {
	body := line[:len(line)-1-suffixLen]
	sum := sha256.Sum256(append(append([]byte{}, body...), '}'))
	return []byte(string(body) + hashKey + hex.EncodeToString(sum[:]) + "\"}\n")
}

func TestVerify(t *testing.T) {
	type mutation func(t *testing.T, files []string) []string
	one := func(f func([][]byte) [][]byte) mutation {
		return func(t *testing.T, files []string) []string {
			editLines(t, files[0], f)
			return files
		}
	}
	tests := []struct {
		name     string
		maxBytes int64 // 0: one file
		mutate   mutation
		kind     ProblemKind // "" for an intact chain
		file     int         // index in the built files of the problem's file
		line     int
		detail   string
	}{
		{name: "intact", mutate: func(_ *testing.T, f []string) []string { return f }},
		{name: "one byte of a record edited", kind: ProblemEdited, line: 4, detail: "record seq 4 was changed",
			mutate: one(func(ls [][]byte) [][]byte {
				ls[3] = bytes.Replace(ls[3], []byte("web-4"), []byte("web-5"), 1)
				return ls
			})},
		{name: "the last record edited", kind: ProblemEdited, line: 8,
			mutate: one(func(ls [][]byte) [][]byte {
				ls[7] = bytes.Replace(ls[7], []byte(`"code":200`), []byte(`"code":201`), 1)
				return ls
			})},
		{name: "a stored hash edited", kind: ProblemEdited, line: 2,
			mutate: one(func(ls [][]byte) [][]byte {
				h := ls[1][len(ls[1])-4]
				ls[1][len(ls[1])-4] = "01"[(h+1)%2]
				return ls
			})},
		{name: "a record deleted", kind: ProblemMissing, line: 4, detail: "records 4..4 are missing (records were deleted)",
			mutate: one(func(ls [][]byte) [][]byte { return append(ls[:3:3], ls[4:]...) })},
		{name: "two records swapped", kind: ProblemReordered, line: 3, detail: "seq 4 comes before seq 3",
			mutate: one(func(ls [][]byte) [][]byte { ls[2], ls[3] = ls[3], ls[2]; return ls })},
		{name: "a record moved to the end", kind: ProblemMissing, line: 3, detail: "records 3..3 are missing",
			mutate: one(func(ls [][]byte) [][]byte { return append(append(ls[:2:2], ls[3:]...), ls[2]) })},
		{name: "a record repeated", kind: ProblemReordered, line: 6, detail: "seq 5 after seq 5",
			mutate: one(func(ls [][]byte) [][]byte { return append(ls[:5:5], append([][]byte{ls[4]}, ls[5:]...)...) })},
		{name: "a record rewritten with a fresh hash", kind: ProblemBrokenLink, line: 6, detail: "is not the hash",
			mutate: one(func(ls [][]byte) [][]byte {
				ls[4] = rehash(bytes.Replace(ls[4], []byte("alice"), []byte("mallory"), 1))
				return ls
			})},
		{name: "the last line cut short", kind: ProblemTorn, line: 8, detail: "incomplete last line",
			mutate: one(func(ls [][]byte) [][]byte { ls[7] = ls[7][:len(ls[7])-10]; return ls })},
		{name: "a blank line inserted", kind: ProblemMalformed, line: 3,
			mutate: one(func(ls [][]byte) [][]byte { return append(ls[:2:2], append([][]byte{[]byte("\n")}, ls[2:]...)...) })},
		{name: "the first record's prev changed", kind: ProblemEdited, line: 1,
			mutate: one(func(ls [][]byte) [][]byte {
				ls[0] = bytes.Replace(ls[0], []byte(ZeroHash), []byte(strings.Repeat("1", 64)), 1)
				return ls
			})},
		{name: "the first record replaced, rehashed", kind: ProblemBrokenLink, line: 1, detail: "the log's first record",
			mutate: one(func(ls [][]byte) [][]byte {
				ls[0] = rehash(bytes.Replace(ls[0], []byte(ZeroHash), []byte(strings.Repeat("1", 64)), 1))
				return ls
			})},

		// Several files: 16 records of ~690 bytes, three to a file of at most 2,200.
		{name: "rotated files intact", maxBytes: 2200, mutate: func(_ *testing.T, f []string) []string { return f }},
		{name: "rotated files given in any order", maxBytes: 2200, mutate: func(_ *testing.T, f []string) []string {
			return append(f[2:], f[:2]...)
		}},
		{name: "a middle file missing", maxBytes: 2200, kind: ProblemMissing, file: 2, line: 1, detail: "a file is missing from the set",
			mutate: func(_ *testing.T, f []string) []string { return append(f[:1:1], f[2:]...) }},
		{name: "a file given twice", maxBytes: 2200, kind: ProblemReordered, file: 1, line: 1, detail: "is a file given twice",
			mutate: func(_ *testing.T, f []string) []string { return append([]string{f[1]}, f...) }},
		{name: "the last record of a rotated file deleted", maxBytes: 2200, kind: ProblemCutFile, file: 1, line: 3, detail: "records were removed from it",
			mutate: func(t *testing.T, f []string) []string {
				editLines(t, f[1], func(ls [][]byte) [][]byte { return ls[:len(ls)-1] })
				return f
			}},
		{name: "a record in a rotated file edited", maxBytes: 2200, kind: ProblemEdited, file: 2, line: 2,
			mutate: func(t *testing.T, f []string) []string {
				editLines(t, f[2], func(ls [][]byte) [][]byte {
					ls[1] = bytes.Replace(ls[1], []byte("admins"), []byte("adMins"), 1)
					return ls
				})
				return f
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := 8
			if tt.maxBytes > 0 {
				n = 16
			}
			files := buildLog(t, n, tt.maxBytes)
			if tt.maxBytes > 0 && len(files) < 4 {
				t.Fatalf("want at least 4 files, got %v", files)
			}
			built := append([]string(nil), files...)
			rep, err := Verify(tt.mutate(t, files)...)
			if err != nil {
				t.Fatal(err)
			}
			if tt.kind == "" {
				if rep.Problem != nil {
					t.Fatalf("intact log reported: %v", rep.Problem)
				}
				if rep.Records != n || rep.First != 1 || rep.Last != uint64(n) || rep.Anchor != ZeroHash || len(rep.Head) != 64 {
					t.Fatalf("report %+v, want %d records 1..%d from the zero anchor", rep, n, n)
				}
				return
			}
			p := rep.Problem
			if p == nil {
				t.Fatalf("no problem found; report %+v", rep)
			}
			if p.Kind != tt.kind || p.File != built[tt.file] || p.Line != tt.line || !strings.Contains(p.Detail, tt.detail) {
				t.Fatalf("problem %s (%s), want %s at %s:%d with %q", p, p.Kind, tt.kind, filepath.Base(built[tt.file]), tt.line, tt.detail)
			}
		})
	}
}

// TestVerifyAfterOldFilesDeleted: with MaxFiles rotated files kept, the
// chain verifies from the oldest file left, anchored on its first prev.
func TestVerifyAfterOldFilesDeleted(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Config{Dir: dir, MaxBytes: 2000, MaxFiles: 2})
	for i := 1; i <= 30; i++ {
		mustWrite(t, l, req("update", "workloads", fmt.Sprintf("web-%d", i)))
	}
	files, err := Files(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 || filepath.Base(files[2]) != CurrentFile {
		t.Fatalf("files %v, want 2 rotated and %s", files, CurrentFile)
	}
	rep, err := Verify(files...)
	if err != nil || rep.Problem != nil {
		t.Fatalf("verify: %v %v", err, rep.Problem)
	}
	if rep.First <= 1 || rep.Last != 30 || rep.Anchor == ZeroHash {
		t.Fatalf("report %+v: want a chain ending at 30, starting after 1 from a non-zero anchor", rep)
	}
	seq, head := l.Head()
	if seq != 30 || head != rep.Head {
		t.Fatalf("Head() = %d %s, Verify's head %s", seq, head, rep.Head)
	}
}

func TestVerifyEmptyAndMissing(t *testing.T) {
	empty := filepath.Join(t.TempDir(), CurrentFile)
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(empty)
	if err != nil || rep.Problem != nil || rep.Records != 0 {
		t.Fatalf("empty file: %+v %v", rep, err)
	}
	if _, err := Verify(filepath.Join(t.TempDir(), "nope.log")); err == nil || !strings.Contains(err.Error(), "nope.log") {
		t.Fatalf("missing file: %v, want an error naming it", err)
	}
	if _, err := Verify(); err == nil {
		t.Fatal("no files: no error")
	}
}
