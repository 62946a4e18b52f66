package layer

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/testutil"
)

// base is the lower layer most whiteout cases start from.
var base = []tarEntry{
	dirent("etc/"), reg("etc/passwd", "root"), reg("etc/motd", "hello"),
	dirent("var/"), dirent("var/cache/"), reg("var/cache/a", "a"), dirent("var/cache/sub/"), reg("var/cache/sub/b", "b"),
	dirent("usr/"), dirent("usr/lib/"), reg("usr/lib/libc.so", "libc"),
	sym("lib", "usr/lib"),
	reg("file-then-dir", "f"), dirent("dir-then-file/"), reg("dir-then-file/x", "x"),
}

var baseTree = map[string]string{
	"etc": "dir 0755", "etc/passwd": `file 0644 "root"`, "etc/motd": `file 0644 "hello"`,
	"var": "dir 0755", "var/cache": "dir 0755", "var/cache/a": `file 0644 "a"`, "var/cache/sub": "dir 0755", "var/cache/sub/b": `file 0644 "b"`,
	"usr": "dir 0755", "usr/lib": "dir 0755", "usr/lib/libc.so": `file 0644 "libc"`,
	"lib":           "symlink -> usr/lib",
	"file-then-dir": `file 0644 "f"`, "dir-then-file": "dir 0755", "dir-then-file/x": `file 0644 "x"`,
}

// with returns baseTree changed by edits ("" deletes).
func with(edits map[string]string) map[string]string {
	m := map[string]string{}
	for k, v := range baseTree {
		m[k] = v
	}
	for k, v := range edits {
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return m
}

// TestWhiteouts applies base and then upper in Flatten mode and checks the
// tree; as root it also unpacks both in Overlay mode, mounts them and checks
// that the overlay view is the same tree.
func TestWhiteouts(t *testing.T) {
	tests := []struct {
		name  string
		upper []tarEntry
		want  map[string]string
		// layer is what the upper layer's own directory holds in Overlay mode.
		layer map[string]string
	}{
		{
			name:  "whiteout removes a file",
			upper: []tarEntry{dirent("etc/"), reg("etc/.wh.motd", "")},
			want:  with(map[string]string{"etc/motd": ""}),
			layer: map[string]string{"etc": "dir 0755", "etc/motd": "char 0:0"},
		},
		{
			name:  "whiteout removes a directory and its contents",
			upper: []tarEntry{reg("var/.wh.cache", "")},
			want:  with(map[string]string{"var/cache": "", "var/cache/a": "", "var/cache/sub": "", "var/cache/sub/b": ""}),
			layer: map[string]string{"var": "dir 0755", "var/cache": "char 0:0"},
		},
		{
			name:  "whiteout of a symbolic link removes the link and not its target",
			upper: []tarEntry{reg(".wh.lib", "")},
			want:  with(map[string]string{"lib": ""}),
			layer: map[string]string{"lib": "char 0:0"},
		},
		{
			name:  "whiteout then re-create",
			upper: []tarEntry{dirent("etc/"), reg("etc/.wh.motd", ""), reg("etc/motd", "new")},
			want:  with(map[string]string{"etc/motd": `file 0644 "new"`}),
			layer: map[string]string{"etc": "dir 0755", "etc/motd": `file 0644 "new"`},
		},
		{
			name:  "a whiteout does not hide a file of its own layer",
			upper: []tarEntry{dirent("etc/"), reg("etc/motd", "new"), reg("etc/.wh.motd", "")},
			want:  with(map[string]string{"etc/motd": `file 0644 "new"`}),
			layer: map[string]string{"etc": "dir 0755", "etc/motd": `file 0644 "new"`},
		},
		{
			name:  "whiteout of a file no lower layer has",
			upper: []tarEntry{reg("etc/.wh.nothing", "")},
			want:  with(nil),
			layer: map[string]string{"etc": "dir 0755", "etc/nothing": "char 0:0"},
		},
		{
			// The parent is created as tar would; the overlay view is not
			// compared here because overlayfs lists whiteouts in a directory
			// that exists in one layer only.
			name:  "whiteout under a missing parent",
			upper: []tarEntry{reg("opt/.wh.nothing", "")},
			want:  with(map[string]string{"opt": "dir 0755"}),
		},
		{
			name:  "opaque directory hides the lower contents",
			upper: []tarEntry{dirent("var/cache/"), reg("var/cache/.wh..wh..opq", ""), reg("var/cache/new", "n")},
			want:  with(map[string]string{"var/cache/a": "", "var/cache/sub": "", "var/cache/sub/b": "", "var/cache/new": `file 0644 "n"`}),
			layer: map[string]string{"var": "dir 0755", "var/cache": "dir 0755 opaque", "var/cache/new": `file 0644 "n"`},
		},
		{
			name: "opaque marker after the layer's own entries keeps them, at any depth",
			upper: []tarEntry{
				dirent("var/cache/"), dirent("var/cache/sub/"), reg("var/cache/sub/c", "c"), reg("var/cache/new", "n"),
				reg("var/cache/.wh..wh..opq", ""),
			},
			want: with(map[string]string{"var/cache/a": "", "var/cache/sub/b": "", "var/cache/new": `file 0644 "n"`, "var/cache/sub/c": `file 0644 "c"`}),
			layer: map[string]string{
				"var": "dir 0755", "var/cache": "dir 0755 opaque", "var/cache/sub": "dir 0755",
				"var/cache/sub/c": `file 0644 "c"`, "var/cache/new": `file 0644 "n"`,
			},
		},
		{
			name:  "a directory merges with the lower one",
			upper: []tarEntry{withMode(dirent("etc/"), 0o750), reg("etc/hosts", "h")},
			want:  with(map[string]string{"etc": "dir 0750", "etc/hosts": `file 0644 "h"`}),
			layer: map[string]string{"etc": "dir 0750", "etc/hosts": `file 0644 "h"`},
		},
		{
			name:  "files and directories replace each other",
			upper: []tarEntry{dirent("file-then-dir/"), reg("file-then-dir/y", "y"), reg("dir-then-file", "now a file")},
			want: with(map[string]string{
				"file-then-dir": "dir 0755", "file-then-dir/y": `file 0644 "y"`,
				"dir-then-file": `file 0644 "now a file"`, "dir-then-file/x": "",
			}),
			layer: map[string]string{"file-then-dir": "dir 0755", "file-then-dir/y": `file 0644 "y"`, "dir-then-file": `file 0644 "now a file"`},
		},
		{
			// A lower layer's symbolic link is not written through: the
			// upper layer's directory hides it, as in the overlay view.
			name:  "a directory hides a lower symbolic link of the same name",
			upper: []tarEntry{reg("lib/extra.so", "x")},
			want:  with(map[string]string{"lib": "dir 0755", "lib/extra.so": `file 0644 "x"`}),
			layer: map[string]string{"lib": "dir 0755", "lib/extra.so": `file 0644 "x"`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			flat := t.TempDir()
			mustApply(t, flat, mkTar(t, base...), testOpts(Flatten))
			mustApply(t, flat, mkTar(t, tc.upper...), testOpts(Flatten))
			checkTree(t, "Flatten", flat, false, tc.want)

			if os.Geteuid() != 0 {
				t.Log("the overlay view is only checked as root (whiteouts are device nodes, opaque markers trusted.* xattrs)")
				return
			}
			lower, upper := t.TempDir(), t.TempDir()
			mustApply(t, lower, mkTar(t, base...), testOpts(Overlay))
			mustApply(t, upper, mkTar(t, tc.upper...), testOpts(Overlay))
			if tc.layer == nil {
				return
			}
			checkTree(t, "Overlay layer", upper, false, tc.layer)
			merged := mountOverlay(t, lower, upper)
			checkTree(t, "overlay view", merged, false, tc.want)
			// And the flattened tree equals the overlay view, owners included.
			if d := diffTrees(tree(t, merged, true), tree(t, flat, true)); d != "" {
				t.Errorf("overlay view differs from the Flatten result:\n%s", d)
			}
		})
	}
}

// TestWhiteoutsThreeLayers checks that a whiteout in the top layer reaches
// through a middle one, and that an opaque directory in the middle hides the
// bottom but not the top.
func TestWhiteoutsThreeLayers(t *testing.T) {
	layers := [][]tarEntry{
		base,
		{dirent("etc/"), reg("etc/.wh..wh..opq", ""), reg("etc/only-middle", "m")},
		{dirent("etc/"), reg("etc/top", "t"), reg("etc/.wh.only-middle", ""), reg(".wh.usr", "")},
	}
	want := with(map[string]string{
		"etc/passwd": "", "etc/motd": "", "etc/top": `file 0644 "t"`,
		"usr": "", "usr/lib": "", "usr/lib/libc.so": "",
	})
	flat := t.TempDir()
	for _, l := range layers {
		mustApply(t, flat, mkTar(t, l...), testOpts(Flatten))
	}
	checkTree(t, "Flatten", flat, false, want)

	testutil.RequireRoot(t)
	var dirs []string
	for _, l := range layers {
		d := t.TempDir()
		mustApply(t, d, mkTar(t, l...), testOpts(Overlay))
		dirs = append(dirs, d)
	}
	checkTree(t, "overlay view", mountOverlay(t, dirs...), false, want)
}

func TestOverlayOpaqueXattr(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	mustApply(t, dir, mkTar(t, dirent("a/"), reg("a/.wh..wh..opq", "")), testOpts(Overlay))
	b := make([]byte, 8)
	n, err := unix.Lgetxattr(filepath.Join(dir, "a"), "trusted.overlay.opaque", b)
	if err != nil || string(b[:n]) != "y" {
		t.Fatalf("trusted.overlay.opaque on a = %q, %v; want \"y\"", b[:n], err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "a", ".wh..wh..opq")); !os.IsNotExist(err) {
		t.Errorf("the opaque marker itself must not be written: %v", err)
	}
}
