package fsutil

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSyncDir(t *testing.T) {
	if err := SyncDir(t.TempDir()); err != nil {
		t.Fatalf("SyncDir of a directory: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "nope")
	if err := SyncDir(missing); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("SyncDir of a missing directory: %v, want an error naming it", err)
	}
}

func TestWriteFileSync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	for _, data := range []string{"first, longer", "second"} {
		if err := WriteFileSync(path, []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != data {
			t.Fatalf("read back %q, %v; want %q (the file is truncated first)", got, err, data)
		}
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want 0640", fi.Mode().Perm())
	}
	if err := WriteFileSync(filepath.Join(t.TempDir(), "no", "dir"), nil, 0o600); err == nil {
		t.Fatal("a write into a missing directory succeeded")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	for _, f := range []func(string, []byte, os.FileMode) error{WriteFileAtomic, ReplaceFile} {
		testReplace(t, f)
	}
}

func testReplace(t *testing.T, replace func(string, []byte, os.FileMode) error) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	for _, data := range []string{"first, longer", "second"} {
		if err := replace(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != data {
			t.Fatalf("read back %q, %v; want %q", got, err, data)
		}
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries after the writes, want only the file (no temporary left)", len(entries))
	}
	if err := replace(filepath.Join(dir, "no", "f"), nil, 0o600); err == nil {
		t.Fatal("a write into a missing directory succeeded")
	}
}

func TestReadFileLimit(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, n int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bytes.Repeat([]byte{'x'}, n), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		path    string
		want    int   // bytes read, when no error is wanted
		wantErr error // nil: success
	}{
		{"small", write("small", 10), 10, nil},
		{"exactly the limit", write("exact", 100), 100, nil},
		{"empty", write("empty", 0), 0, nil},
		{"one byte over", write("over", 101), 0, ErrTooLarge},
		{"device that never ends", "/dev/zero", 0, ErrTooLarge},
		{"missing", filepath.Join(dir, "missing"), 0, fs.ErrNotExist},
		{"directory", dir, 0, syscall.EISDIR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := ReadFileLimit(tt.path, 100)
			if tt.wantErr == nil {
				if err != nil || len(data) != tt.want {
					t.Fatalf("read %d bytes, %v; want %d", len(data), err, tt.want)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.path) {
				t.Fatalf("err = %v, want %v naming %s", err, tt.wantErr, tt.path)
			}
			if errors.Is(err, ErrTooLarge) && !strings.Contains(err.Error(), "100 bytes") {
				t.Fatalf("err = %v, want the limit named", err)
			}
		})
	}
}

func TestReadLimitStopsAtLimit(t *testing.T) {
	r := &endless{}
	_, err := ReadLimit(r, "the stream", 1<<20)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "the stream") || !strings.Contains(err.Error(), "1 MiB") {
		t.Fatalf("err = %v, want ErrTooLarge naming the stream and 1 MiB", err)
	}
	if r.read > 1<<20+1 {
		t.Fatalf("read %d bytes of an endless stream, want at most the limit + 1", r.read)
	}
}

// endless is a stream of zeros that never ends and counts what was read.
type endless struct{ read int64 }

func (e *endless) Read(p []byte) (int, error) {
	clear(p)
	e.read += int64(len(p))
	return len(p), nil
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{1 << 20: "1 MiB", 16 << 20: "16 MiB", 64 << 10: "64 KiB", 100: "100 bytes", 1<<20 + 1: "1048577 bytes"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestMaxNameLen(t *testing.T) {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, filepath.Join(dir, "not", "yet", "there")} {
		n, err := MaxNameLen(p)
		if err != nil || n != int(st.Namelen) || n <= 0 {
			t.Fatalf("MaxNameLen(%s) = %d, %v; want %d", p, n, err, st.Namelen)
		}
	}
}

func TestMkdirAllUndo(t *testing.T) {
	base := t.TempDir()
	deep := filepath.Join(base, "a", "b", "c")
	undo, err := MkdirAll(deep, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(deep); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("%s: %v %v", deep, fi, err)
	}
	undo()
	if _, err := os.Stat(filepath.Join(base, "a")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("undo left %s/a behind: %v", base, err)
	}
	if _, err := os.Stat(base); err != nil {
		t.Fatalf("undo removed the directory that was already there: %v", err)
	}

	// A directory someone wrote into meanwhile is kept, and so are its parents.
	undo, err = MkdirAll(deep, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "a", "b", "keep"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	undo()
	if _, err := os.Stat(filepath.Join(base, "a", "b", "keep")); err != nil {
		t.Fatalf("undo removed another writer's file: %v", err)
	}
	if _, err := os.Stat(deep); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("undo left the empty %s: %v", deep, err)
	}

	// A MkdirAll that fails part-way takes away what it did make.
	long := filepath.Join(base, "n1", strings.Repeat("x", 256))
	if _, err := MkdirAll(long, 0o700); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Fatalf("MkdirAll of a 256-byte name: %v, want ENAMETOOLONG", err)
	}
	if _, err := os.Stat(filepath.Join(base, "n1")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a failed MkdirAll left %s/n1 behind: %v", base, err)
	}
}

// TestIdentityOf: a file keeps its identity until it is written (even a
// write that keeps its size and modification time) or replaced.
func TestIdentityOf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	identity := func() Identity {
		t.Helper()
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		id, err := IdentityOf(f)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	first := identity()
	if again := identity(); again != first {
		t.Fatalf("an unchanged file: %+v, then %+v", first, again)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	written := identity()
	if written == first {
		t.Fatalf("a file written in place (same size and modification time) kept its identity %+v", first)
	}
	next := path + ".new"
	if err := os.WriteFile(next, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, path); err != nil {
		t.Fatal(err)
	}
	if replaced := identity(); replaced == written || replaced.Ino == written.Ino {
		t.Fatalf("a replaced file kept its identity %+v", written)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := IdentityOf(f); err == nil {
		t.Fatal("IdentityOf a closed file: no error")
	}
}
