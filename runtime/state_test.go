package runtime

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/runtime/spec"
)

// FuzzReadState: what the fast decoder takes of a state.json, json.Unmarshal
// decodes the same.
func FuzzReadState(f *testing.F) {
	st := &savedState{ID: "c1", Pid: 42, PidStart: 7, Bundle: "/b", Rootfs: "/b/rootfs", Created: time.Date(2026, 12, 2, 20, 0, 0, 5, time.UTC),
		Annotations: map[string]string{"a": "b"}, Spec: spec.Default()}
	st.Cgroup.Paths = map[string]string{"memory": "/sys/fs/cgroup/memory/c1"}
	dir := f.TempDir()
	if err := writeState(dir, st); err != nil {
		f.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte(`{"id":"c1","created":null,"spec":null}`))
	f.Add([]byte(`{"id":"c1","created":"2026-13-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var fast, slow savedState
		if !spec.DecodeFast(data, &fast) {
			return
		}
		if err := json.Unmarshal(data, &slow); err != nil || !reflect.DeepEqual(fast, slow) {
			t.Fatalf("the fast decoder took a state json.Unmarshal decodes differently (%v):\n%+v\n%+v", err, fast, slow)
		}
		// readState decodes the spec it kept as written in a second step.
		var fastDoc, slowDoc *spec.Document
		if len(fast.SavedSpec) > 0 && spec.DecodeFast(fast.SavedSpec, &fastDoc) {
			if err := json.Unmarshal(fast.SavedSpec, &slowDoc); err != nil || !reflect.DeepEqual(fastDoc, slowDoc) {
				t.Fatalf("the fast decoder took a spec json.Unmarshal decodes differently (%v):\n%+v\n%+v", err, fastDoc, slowDoc)
			}
		}
	})
}

// A state.json written from config.json as read decodes to the spec the
// container was created with, through the fast decoder.
func TestStateKeepsTheSpecAsRead(t *testing.T) {
	want := spec.Default()
	want.Process.Args = []string{"sh", "-c", "a && b"}
	raw, err := json.MarshalIndent(want, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	dir := containerDir(root, "c1")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	st := &savedState{ID: "c1", Pid: 1, Created: time.Now().UTC(), Spec: want, rawSpec: raw}
	if err := writeState(dir, st); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	var fast savedState
	if !spec.DecodeFast(data, &fast) {
		t.Fatalf("the fast decoder left state.json to json.Unmarshal: %s", data)
	}
	got, err := readState(root, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Spec, want) || got.ID != "c1" || !got.Created.Equal(st.Created) {
		t.Fatalf("read back %+v, want the spec written", got)
	}
	// What State and Stats read: everything but the spec.
	head, err := readStateNoSpec(root, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if head.Spec != nil || head.ID != "c1" || head.Pid != 1 || !head.Created.Equal(st.Created) {
		t.Fatalf("read without the spec: %+v", head)
	}
	// A state written again after a change of the spec (Update) keeps
	// the change.
	got.Spec.Hostname = "changed"
	if err := writeState(dir, got); err != nil {
		t.Fatal(err)
	}
	again, err := readState(root, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if again.Spec.Hostname != "changed" || !reflect.DeepEqual(again.Spec.Process, want.Process) {
		t.Fatalf("read back after a change: %+v", again.Spec)
	}
}

// BenchmarkReadState reads a state.json with the default spec (its seccomp
// profile is most of the file): whole, as the calls that use the spec do,
// and without the spec, as State, Stats and Wait do.
func BenchmarkReadState(b *testing.B) {
	root := b.TempDir()
	dir := containerDir(root, "c1")
	if err := os.Mkdir(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	st := &savedState{ID: "c1", Pid: 1, Created: time.Now().UTC(), Spec: spec.Default()}
	st.Cgroup.Paths = map[string]string{"": "/sys/fs/cgroup/nexus/c1"}
	if err := writeState(dir, st); err != nil {
		b.Fatal(err)
	}
	for name, read := range map[string]func(root, id string) (*savedState, error){"spec": readState, "no-spec": readStateNoSpec} {
		b.Run(name, func(b *testing.B) {
			for range b.N {
				if _, err := read(root, "c1"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestHintsNameTheStateRoot: the commands an error suggests act on the
// runtime's own state root; the node agent's is not the default, and a
// hint without --root looked elsewhere.
func TestHintsNameTheStateRoot(t *testing.T) {
	root := t.TempDir()
	r := New(Config{Root: root})
	_, err := r.State("missing")
	want := "`nexus runtime --root " + root + " list`"
	if !errors.Is(err, ErrNotExist) || err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("State of a missing container: %v; want ErrNotExist and the hint %s", err, want)
	}
	if got := command(DefaultRoot, "list"); got != "`nexus runtime list`" {
		t.Fatalf("hint for the default root: %s, want no --root", got)
	}
}
