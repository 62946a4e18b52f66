package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/testutil"
)

// sandbox is a snapshot directory with a sentinel directory beside it; a
// hostile layer must leave the sentinel, and everything else outside the
// snapshot, as it was.
type sandbox struct {
	base, snap, sentinel string
}

func newSandbox(t testing.TB) sandbox {
	t.Helper()
	base := t.TempDir()
	s := sandbox{base: base, snap: filepath.Join(base, "snap"), sentinel: filepath.Join(base, "sentinel")}
	for _, d := range []string{s.snap, s.sentinel} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.sentinel, "keep"), []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// check fails the test if anything outside the snapshot changed.
func (s sandbox) check(t testing.TB) {
	t.Helper()
	want := map[string]string{"sentinel": "dir 0755", "sentinel/keep": `file 0644 "untouched"`}
	got := tree(t, s.base, false)
	for k := range got {
		if k == "snap" || strings.HasPrefix(k, "snap/") {
			delete(got, k)
		}
	}
	if d := diffTrees(got, want); d != "" {
		t.Errorf("something was written outside the snapshot:\n%s", d)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(s.sentinel, "keep"), &st); err == nil && st.Nlink != 1 {
		t.Errorf("the sentinel file got a hard link from inside the snapshot (nlink %d)", st.Nlink)
	}
}

func TestHostileLayers(t *testing.T) {
	// sentinel paths are filled in per test: "@S" is the sentinel directory
	// (absolute), "@R" the same without its leading slash.
	tests := []struct {
		name       string
		ents       []tarEntry
		limits     Limits
		raw        []byte // instead of ents, for what archive/tar will not write
		wantReason string
		wantEntry  string
	}{
		{name: "dot-dot", ents: []tarEntry{reg("../sentinel/x", "pwned")}, wantReason: "path climbs out of the layer root", wantEntry: "../sentinel/x"},
		{name: "dot-dot after a directory", ents: []tarEntry{dirent("a/"), reg("a/../../sentinel/x", "pwned")}, wantReason: "climbs out"},
		{name: "dot-dot directory", ents: []tarEntry{dirent("../sentinel/d/")}, wantReason: "climbs out"},
		{name: "absolute path", ents: []tarEntry{reg("@S/x", "pwned")}, wantReason: "absolute path"},
		{name: "absolute /etc path", ents: []tarEntry{reg("/etc/nexus-layer-test-never-written", "pwned")}, wantReason: "absolute path"},
		{name: "hard link out with dot-dot", ents: []tarEntry{hard("x", "../../sentinel/keep")}, wantReason: `hard link target "../../sentinel/keep": path climbs out`},
		{name: "hard link to an absolute path", ents: []tarEntry{hard("x", "@S/keep")}, wantReason: "absolute path"},
		{name: "hard link to the root", ents: []tarEntry{hard("x", ".")}, wantReason: "hard link to the layer root"},
		{name: "symbolic link loop", ents: []tarEntry{sym("a", "b"), sym("b", "a"), reg("a/x", "")}, wantReason: "more than 40 symbolic links"},
		{
			name:       "tar bomb: bytes",
			ents:       []tarEntry{reg("a", strings.Repeat("x", 600)), reg("b", strings.Repeat("y", 600))},
			limits:     Limits{MaxBytes: 1000},
			wantReason: "past 1000 bytes (limit Limits.MaxBytes); treated as a tar bomb", wantEntry: "b",
		},
		{
			name:       "tar bomb: entries",
			ents:       []tarEntry{reg("a", ""), reg("b", ""), reg("c", ""), reg("d", "")},
			limits:     Limits{MaxEntries: 3},
			wantReason: "more than 3 entries (limit Limits.MaxEntries)", wantEntry: "d",
		},
		{
			name:       "tar bomb: trailing data",
			raw:        append(mkTar(t, reg("a", "x")), make([]byte, 4096)...),
			limits:     Limits{MaxBytes: 2048},
			wantReason: "trailing data",
		},
		{
			name:       "forged opaque xattr",
			ents:       []tarEntry{withXattr(dirent("etc/"), "trusted.overlay.opaque", "y")},
			wantReason: `sets the overlayfs attribute "trusted.overlay.opaque"`,
		},
		{
			name:       "forged redirect xattr",
			ents:       []tarEntry{withXattr(reg("f", ""), "trusted.overlay.redirect", "/etc")},
			wantReason: "overlayfs attribute",
		},
		{
			name:       "forged userxattr whiteout",
			ents:       []tarEntry{withXattr(reg("f", ""), "user.overlay.whiteout", "y")},
			wantReason: "overlayfs attribute",
		},
		{name: "whiteout of the parent", ents: []tarEntry{dirent("a/"), reg("a/.wh...", "")}, wantReason: `whiteout of ".." names no file`},
		{name: "whiteout of nothing", ents: []tarEntry{reg(".wh.", "")}, wantReason: "names no file"},
		{name: "root replaced by a symlink", ents: []tarEntry{sym("./", "@S")}, wantReason: "the layer root can only be a directory"},
	}
	for _, tc := range tests {
		for _, mode := range []Mode{Overlay, Flatten} {
			t.Run(tc.name+"/"+mode.String(), func(t *testing.T) {
				s := newSandbox(t)
				layer := tc.raw
				if layer == nil {
					var ents []tarEntry
					for _, e := range tc.ents {
						e.hdr.Name, e.hdr.Linkname = s.fill(e.hdr.Name), s.fill(e.hdr.Linkname)
						ents = append(ents, e)
					}
					layer = mkTar(t, ents...)
				}
				o := testOpts(mode)
				o.Limits = tc.limits
				_, err := Apply(context.Background(), s.snap, bytes.NewReader(layer), o)
				var h *HostileError
				if !errors.As(err, &h) {
					t.Fatalf("Apply: %v; want a *HostileError", err)
				}
				if !strings.Contains(h.Reason, tc.wantReason) {
					t.Errorf("reason %q, want it to contain %q", h.Reason, tc.wantReason)
				}
				if tc.wantEntry != "" && h.Entry != tc.wantEntry {
					t.Errorf("entry %q, want %q", h.Entry, tc.wantEntry)
				}
				if !strings.Contains(err.Error(), "refusing to unpack") {
					t.Errorf("error %q does not tell the user the image is refused", err)
				}
				s.check(t)
			})
		}
	}
}

// fill replaces "@S" in v with the sandbox's sentinel directory
// (absolute) and "@R" with the same without its leading slash.
func (s sandbox) fill(v string) string {
	v = strings.ReplaceAll(v, "@S", s.sentinel)
	return strings.ReplaceAll(v, "@R", strings.TrimPrefix(s.sentinel, "/"))
}

// TestSymlinkedParentsResolveInsideTheLayer checks entries whose parent
// path goes through a symbolic link of the same layer: the link is followed
// as the container will see it, with the layer root as "/", so merged-/usr
// images (lib -> usr/lib, then lib/...) unpack, and links that point out of
// the layer (absolute, or climbing with "..") land inside it. Nothing
// outside the snapshot changes.
func TestSymlinkedParentsResolveInsideTheLayer(t *testing.T) {
	tests := []struct {
		name    string
		ents    []tarEntry
		want    map[string]string // paths in the snapshot, "@R" filled in
		wantErr string
		modes   []Mode // default both
	}{
		{
			name: "merged /usr: lib -> usr/lib, then lib/foo",
			ents: []tarEntry{dirent("usr/"), dirent("usr/lib/"), sym("lib", "usr/lib"), reg("lib/libfoo.so", "elf")},
			want: map[string]string{"lib": "symlink -> usr/lib", "usr/lib/libfoo.so": `file 0644 "elf"`},
		},
		{
			name: "absolute link whose target this layer lacks",
			ents: []tarEntry{sym("lib64", "/usr/lib64"), reg("lib64/ld.so", "ld")},
			want: map[string]string{"usr/lib64": "dir 0755", "usr/lib64/ld.so": `file 0644 "ld"`},
		},
		{
			name: "link through a link",
			ents: []tarEntry{sym("bin", "usr/bin"), sym("usr/bin", "../sbin"), reg("bin/sh", "sh")},
			want: map[string]string{"usr/bin": "symlink -> ../sbin", "sbin/sh": `file 0644 "sh"`},
		},
		{
			name: "link to the host root",
			ents: []tarEntry{sym("evil", "/"), reg("evil/@R/x", "inside")},
			want: map[string]string{"@R/x": `file 0644 "inside"`},
		},
		{
			name: "link to a sibling directory by absolute path",
			ents: []tarEntry{sym("evil", "@S"), reg("evil/x", "inside")},
			want: map[string]string{"@R/x": `file 0644 "inside"`},
		},
		{
			name: "relative link climbing above the root",
			ents: []tarEntry{dirent("a/"), sym("a/b", "../../sentinel"), dirent("a/b/d/")},
			want: map[string]string{"sentinel/d": "dir 0755"},
		},
		{
			name: "link replacing a directory",
			ents: []tarEntry{dirent("d/"), reg("d/f", "1"), sym("d", "@S"), reg("d/x", "inside")},
			want: map[string]string{"d": "symlink -> @S", "@R/x": `file 0644 "inside"`},
		},
		{
			name: "hard link created through a link",
			ents: []tarEntry{reg("f", "1"), sym("evil", "@S"), hard("evil/x", "f")},
			want: map[string]string{"@R/x": `file 0644 "1"`},
		},
		{
			name: "hard link whose target goes through a link of the layer",
			ents: []tarEntry{dirent("usr/"), reg("usr/f", "1"), sym("u", "usr"), hard("g", "u/f")},
			want: map[string]string{"g": `file 0644 "1"`},
		},
		{
			name:  "whiteout through a link",
			ents:  []tarEntry{sym("evil", "@S"), reg("evil/.wh.keep", "")},
			want:  map[string]string{"@R/keep": "char 0:0"},
			modes: []Mode{Overlay},
		},
		{
			name:  "opaque marker through a link",
			ents:  []tarEntry{sym("evil", "@S"), reg("evil/.wh..wh..opq", "")},
			modes: []Mode{Overlay},
		},
		{
			name:    "hard link to a host file through a link",
			ents:    []tarEntry{sym("lnk", "@S"), hard("x", "lnk/keep")},
			wantErr: `hard link target "lnk/keep" does not exist`,
		},
		{
			name:    "hard link to a host file through a nested link",
			ents:    []tarEntry{dirent("a/"), sym("a/up", "../.."), hard("x", "a/up/sentinel/keep")},
			wantErr: "does not exist",
		},
	}
	for _, tc := range tests {
		modes := tc.modes
		if modes == nil {
			modes = []Mode{Overlay, Flatten}
		}
		for _, mode := range modes {
			t.Run(tc.name+"/"+mode.String(), func(t *testing.T) {
				s := newSandbox(t)
				var ents []tarEntry
				for _, e := range tc.ents {
					e.hdr.Name, e.hdr.Linkname = s.fill(e.hdr.Name), s.fill(e.hdr.Linkname)
					ents = append(ents, e)
				}
				_, err := Apply(context.Background(), s.snap, bytes.NewReader(mkTar(t, ents...)), testOpts(mode))
				switch {
				case tc.wantErr == "" && err != nil:
					t.Fatalf("Apply: %v", err)
				case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
					t.Fatalf("Apply: %v, want an error containing %q", err, tc.wantErr)
				}
				got := tree(t, s.snap, false)
				for k, v := range tc.want {
					if g := got[s.fill(k)]; g != s.fill(v) {
						t.Errorf("%s in the snapshot: %q, want %q", s.fill(k), g, s.fill(v))
					}
				}
				s.check(t)
			})
		}
	}
}

// TestLinksPointingOutAreHarmless checks the cases that look hostile but are
// not: a symbolic link may point anywhere (it is resolved in the container),
// a hard link to such a link links the link itself, and in Flatten mode a
// lower layer's symbolic link in a parent position is replaced, not followed.
func TestLinksPointingOutAreHarmless(t *testing.T) {
	for _, mode := range []Mode{Overlay, Flatten} {
		t.Run(mode.String(), func(t *testing.T) {
			s := newSandbox(t)
			mustApply(t, s.snap, mkTar(t, sym("out", s.sentinel+"/keep"), hard("x", "out"), sym("up", "../sentinel")), testOpts(mode))
			checkTree(t, "Apply", s.snap, false, map[string]string{
				"out": "symlink -> " + s.sentinel + "/keep", "x": "symlink -> " + s.sentinel + "/keep", "up": "symlink -> ../sentinel",
			})
			s.check(t)
		})
	}
	t.Run("lower layer symlink in Flatten mode", func(t *testing.T) {
		s := newSandbox(t)
		mustApply(t, s.snap, mkTar(t, sym("evil", s.sentinel), sym("rel", "../sentinel")), testOpts(Flatten))
		mustApply(t, s.snap, mkTar(t, reg("evil/x", "in the snapshot"), reg("rel/.wh.keep", ""), reg("evil/.wh..wh..opq", "")), testOpts(Flatten))
		checkTree(t, "Apply", s.snap, false, map[string]string{"evil": "dir 0755", "evil/x": `file 0644 "in the snapshot"`, "rel": "dir 0755"})
		s.check(t)
	})
}

// TestDeviceNodesNeedRoot checks that an unprivileged unpack refuses device
// nodes with an error that says why. As root (CI) it runs itself again as
// nobody.
func TestDeviceNodesNeedRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		out, err := testutil.CommandAsNobody(t, t.Name()).CombinedOutput()
		if err != nil {
			t.Fatalf("as uid %d: %v\n%s", testutil.Nobody, err, out)
		}
		if !strings.Contains(string(out), "PASS") {
			t.Fatalf("as uid %d the test did not run:\n%s", testutil.Nobody, out)
		}
		return
	}
	layer := mkTar(t, tarEntry{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "null", Mode: 0o666, Devmajor: 1, Devminor: 3}})
	dir := t.TempDir()
	_, err := Apply(context.Background(), dir, bytes.NewReader(layer), testOpts(Overlay))
	if err == nil || !strings.Contains(err.Error(), "device nodes can only be created by root") {
		t.Fatalf("Apply of a device node as uid %d: %v", os.Geteuid(), err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "null")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused device node was created anyway: %v", err)
	}
}

func TestUnsupportedEntryType(t *testing.T) {
	layer := mkTar(t, tarEntry{hdr: tar.Header{Typeflag: 'V', Name: "volume-label"}})
	_, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(layer), testOpts(Overlay))
	if err == nil || !strings.Contains(err.Error(), `unsupported tar entry type 'V'`) {
		t.Fatalf("Apply: %v, want an unsupported-type error", err)
	}
}
