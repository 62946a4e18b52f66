package runtime

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"nexus.dev/nexus/runtime/seccomp"
	"nexus.dev/nexus/runtime/spec"
)

// A profile compiled by one process is read back by the next from the
// state root, and what is read back is always the profile's own program:
// a file for another profile, or a damaged one, means a compile.
func TestFilterCacheFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), seccompCacheDir)
	profile := spec.Default().Linux.Seccomp
	want, err := seccomp.Compile(profile)
	if err != nil {
		t.Fatal(err)
	}
	first := &filterCache{dir: dir}
	if _, err := first.compile(profile); err != nil {
		t.Fatal(err)
	}
	files, _ := os.ReadDir(dir)
	if len(files) != 1 {
		t.Fatalf("cache holds %d files after one compile, want 1", len(files))
	}
	file := filepath.Join(dir, files[0].Name())
	saved, _ := os.ReadFile(file)

	other := *profile
	other.DefaultAction, other.DefaultErrnoRet = "SCMP_ACT_KILL", nil
	otherWant, err := seccomp.Compile(&other)
	if err != nil {
		t.Fatal(err)
	}
	otherDir := t.TempDir()
	if _, err := (&filterCache{dir: otherDir}).compile(&other); err != nil {
		t.Fatal(err)
	}
	otherFiles, _ := os.ReadDir(otherDir)
	if len(otherFiles) != 1 {
		t.Fatalf("other cache holds %d files, want 1", len(otherFiles))
	}
	otherSaved, err := os.ReadFile(filepath.Join(otherDir, otherFiles[0].Name()))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		contents []byte
		loaded   bool
	}{
		{"as saved", saved, true},
		{"torn", saved[:len(saved)/2], false},
		{"program damaged", append([]byte("{\"prog\":\"AAAA\"}"), saved[indexNewline(saved):]...), false},
		{"no newline", []byte("garbage"), false},
		{"another profile's (a name collision)", otherSaved, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(file, tc.contents, 0o600); err != nil {
				t.Fatal(err)
			}
			c := &filterCache{dir: dir}
			if got := c.load(mustJSON(t, profile)); (got != nil) != tc.loaded {
				t.Fatalf("load = %v, want loaded %v", got, tc.loaded)
			}
			f, err := c.compile(profile)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(f, want) {
				t.Fatal("the cache returned a program other than the profile's")
			}
		})
	}
	if f, err := (&filterCache{dir: dir}).compile(&other); err != nil || !reflect.DeepEqual(f, otherWant) {
		t.Fatalf("another profile through the same cache: %v", err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func indexNewline(b []byte) int {
	for i, c := range b {
		if c == '\n' {
			return i
		}
	}
	return len(b)
}
