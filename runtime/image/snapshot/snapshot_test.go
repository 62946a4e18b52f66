package snapshot

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/testutil"
)

// fixedTime is the mtime of every file the tests make, so trees compare.
var fixedTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// requireOverlay skips a test that needs root and a mountable overlayfs.
func requireOverlay(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t)
	if err := OverlaySupported(); err != nil {
		testutil.Missing(t, "overlayfs cannot be mounted here: %v", err)
	}
}

// layerBuilder writes a layer directory by hand, the way
// runtime/image/layer's Overlay mode leaves one.
type layerBuilder struct {
	t    *testing.T
	root string
}

func newLayer(t *testing.T, root string) *layerBuilder {
	t.Helper()
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	return &layerBuilder{t, root}
}

func (l *layerBuilder) path(rel string) string {
	p := filepath.Join(l.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		l.t.Fatal(err)
	}
	return p
}

func (l *layerBuilder) file(rel, content string, mode os.FileMode) *layerBuilder {
	p := l.path(rel)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		l.t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		l.t.Fatal(err)
	}
	return l
}

func (l *layerBuilder) dir(rel string) *layerBuilder {
	if err := os.MkdirAll(filepath.Join(l.root, rel), 0o755); err != nil {
		l.t.Fatal(err)
	}
	return l
}

func (l *layerBuilder) whiteout(rel string) *layerBuilder {
	if err := unix.Mknod(l.path(rel), unix.S_IFCHR, 0); err != nil {
		l.t.Fatal(err)
	}
	return l
}

func (l *layerBuilder) opaque(rel string) *layerBuilder {
	l.dir(rel)
	if err := unix.Setxattr(filepath.Join(l.root, rel), opaqueXattr, []byte("y"), 0); err != nil {
		l.t.Fatal(err)
	}
	return l
}

func (l *layerBuilder) symlink(rel, target string) *layerBuilder {
	if err := os.Symlink(target, l.path(rel)); err != nil {
		l.t.Fatal(err)
	}
	return l
}

func (l *layerBuilder) hardlink(rel, existing string) *layerBuilder {
	if err := os.Link(filepath.Join(l.root, existing), l.path(rel)); err != nil {
		l.t.Fatal(err)
	}
	return l
}

func (l *layerBuilder) node(rel string, mode uint32, dev int) *layerBuilder {
	if err := unix.Mknod(l.path(rel), mode, dev); err != nil {
		l.t.Fatal(err)
	}
	return l
}

// chown changes the owner and keeps the set-id bits chown clears.
func (l *layerBuilder) chown(rel string, uid, gid int) *layerBuilder {
	p := filepath.Join(l.root, rel)
	fi, err := os.Lstat(p)
	if err != nil {
		l.t.Fatal(err)
	}
	if err := os.Lchown(p, uid, gid); err != nil {
		l.t.Fatal(err)
	}
	if fi.Mode()&os.ModeSymlink == 0 {
		if err := os.Chmod(p, fi.Mode()); err != nil {
			l.t.Fatal(err)
		}
	}
	return l
}

func (l *layerBuilder) xattr(rel, name, value string) *layerBuilder {
	if err := unix.Lsetxattr(filepath.Join(l.root, rel), name, []byte(value), 0); err != nil {
		testutil.Missing(l.t, "setting xattr %s needs a file system that supports it (TMPDIR on a disk, or tmpfs from Linux 6.6): %v", name, err)
	}
	return l
}

// done sets every mtime to fixedTime, deepest first.
func (l *layerBuilder) done() string {
	var paths []string
	filepath.Walk(l.root, func(p string, _ os.FileInfo, err error) error {
		paths = append(paths, p)
		return err
	})
	sort.Sort(sort.Reverse(sort.StringSlice(paths)))
	ts := unix.NsecToTimespec(fixedTime.UnixNano())
	for _, p := range paths {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			l.t.Fatal(err)
		}
	}
	return l.root
}

// twoLayers is a small image with every kind of entry: the lower layer
// has files, a hard link pair, a symlink, devices, set-id and owned files
// and an xattr; the upper one deletes a file and a directory with
// whiteouts, hides a directory's lower content with an opaque directory,
// changes a file and replaces a directory with a file.
func twoLayers(t *testing.T) []string {
	base := t.TempDir()
	l1 := newLayer(t, filepath.Join(base, "l1")).
		file("a.txt", "a1", 0o644).xattr("a.txt", "user.note", "v1").
		file("b.txt", "b1", 0o644).
		file("dir/x", "x1", 0o640).chown("dir/x", 1000, 1001).
		file("dir/y", "y1", 0o644).
		file("opq/old", "old", 0o644).
		file("gone/f", "f", 0o644).
		file("replaced/sub", "sub", 0o644).
		symlink("link", "a.txt").symlink("abs-link", "/etc/passwd").
		file("hard1", "shared", 0o600).hardlink("hard2", "hard1").
		node("null", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))).
		node("fifo", unix.S_IFIFO|0o620, 0).
		file("suid", "s", os.ModeSetuid|0o755).chown("suid", 1000, 1000).
		dir("empty").done()
	l2 := newLayer(t, filepath.Join(base, "l2")).
		whiteout("b.txt").
		whiteout("gone").
		opaque("opq").file("opq/new", "new", 0o644).
		file("dir/y", "y2", 0o600).
		file("c.txt", "c2", 0o644).
		file("replaced", "now a file", 0o644).
		done()
	return []string{l1, l2}
}

// wantTwoLayers checks the merged view of twoLayers.
func wantTwoLayers(t *testing.T, root string) {
	t.Helper()
	files := map[string]string{
		"a.txt": "a1", "c.txt": "c2", "dir/x": "x1", "dir/y": "y2", "opq/new": "new",
		"replaced": "now a file", "hard1": "shared", "hard2": "shared", "suid": "s",
	}
	for rel, want := range files {
		got, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", rel, got, err, want)
		}
	}
	for _, rel := range []string{"b.txt", "gone", "gone/f", "opq/old", "replaced/sub"} {
		if _, err := os.Lstat(filepath.Join(root, rel)); !os.IsNotExist(err) && !isNotDir(err) {
			t.Errorf("%s should be gone: %v", rel, err)
		}
	}
	if l, err := os.Readlink(filepath.Join(root, "link")); err != nil || l != "a.txt" {
		t.Errorf("link -> %q, %v", l, err)
	}
	fi, err := os.Lstat(filepath.Join(root, "suid"))
	if err != nil || fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("suid: %v %v", fi.Mode(), err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "null"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("null device: %+v %v", st, err)
	}
	if err := unix.Lstat(filepath.Join(root, "dir/x"), &st); err != nil || st.Uid != 1000 || st.Gid != 1001 || st.Mode&0o777 != 0o640 {
		t.Errorf("dir/x owner %d:%d mode %o", st.Uid, st.Gid, st.Mode&0o777)
	}
	entries, _ := os.ReadDir(filepath.Join(root, "opq"))
	if len(entries) != 1 {
		t.Errorf("opaque dir lists %v, want only new", entries)
	}
}

func isNotDir(err error) bool { return err != nil && strings.Contains(err.Error(), "not a directory") }

// mounted reports whether path is a mount point in this mount namespace.
func mounted(t *testing.T, path string) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

type mountDirs struct{ upper, work, target string }

// newMountDirs makes the directory names of a container's snapshot and
// unmounts the target when the test ends, however it ends.
func newMountDirs(t *testing.T) mountDirs {
	t.Helper()
	base := t.TempDir()
	d := mountDirs{filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")}
	t.Cleanup(func() {
		if err := Unmount(d.target); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return d
}

func TestMountMergesLayersAndWritesToUpper(t *testing.T) {
	requireOverlay(t)
	for _, api := range []struct {
		name    string
		classic bool
	}{{"new mount API", false}, {"mount(2)", true}} {
		t.Run(api.name, func(t *testing.T) {
			layers := twoLayers(t)
			d := newMountDirs(t)
			// A caller may make the upper dir with any mode; the
			// container's root must still be the image's.
			if err := os.Mkdir(d.upper, 0o711); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(layers[1], 0o755); err != nil {
				t.Fatal(err)
			}
			m := &Mounter{classicOnly: api.classic}
			if err := m.Mount(context.Background(), layers, d.upper, d.work, d.target); err != nil {
				t.Fatal(err)
			}
			if !mounted(t, d.target) {
				t.Fatal("target is not a mount point after Mount")
			}
			wantTwoLayers(t, d.target)
			if fi, err := os.Stat(d.target); err != nil || fi.Mode().Perm() != 0o755 {
				t.Errorf("the container's root has mode %v, want the image's 0755 (%v)", fi.Mode(), err)
			}

			// Writes land in the upper dir; the layers stay as they were.
			if err := os.WriteFile(filepath.Join(d.target, "written"), []byte("w"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(d.target, "a.txt")); err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile(filepath.Join(d.upper, "written")); err != nil || string(got) != "w" {
				t.Errorf("upper/written = %q, %v", got, err)
			}
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(d.upper, "a.txt"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
				t.Errorf("deleting a.txt left no whiteout in upper: %+v %v", st, err)
			}
			for _, l := range layers {
				if _, err := os.Stat(filepath.Join(l, "written")); err == nil {
					t.Errorf("a write reached layer %s", l)
				}
			}
			if _, err := os.Stat(filepath.Join(layers[0], "a.txt")); err != nil {
				t.Errorf("a delete reached the lower layer: %v", err)
			}

			if err := Unmount(d.target); err != nil {
				t.Fatal(err)
			}
			if mounted(t, d.target) {
				t.Fatal("still mounted after Unmount")
			}
			if err := Unmount(d.target); err != nil {
				t.Fatalf("second Unmount: %v", err)
			}
		})
	}
}

// node is what a user can observe of one file in a tree.
type node struct {
	Type     uint32
	Mode     uint32
	UID, GID uint32
	Rdev     uint64
	Content  string
	Mtime    int64
	Xattrs   string
}

// tree records every file under root except root itself.
func tree(t *testing.T, root string) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil || p == root {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		n := node{Type: st.Mode & unix.S_IFMT, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, Mtime: st.Mtim.Nano()}
		switch n.Type {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n.Content = string(b)
		case unix.S_IFLNK:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			n.Content, n.Mode = l, 0
		case unix.S_IFCHR, unix.S_IFBLK:
			n.Rdev = st.Rdev
		}
		names, err := listXattrs(p)
		if err != nil {
			return err
		}
		slices.Sort(names)
		var xs []string
		for _, name := range names {
			if strings.HasPrefix(name, "trusted.overlay.") {
				continue
			}
			v, _ := getXattr(p, name)
			xs = append(xs, name+"="+string(v))
		}
		n.Xattrs = strings.Join(xs, ",")
		rel, _ := filepath.Rel(root, p)
		out[rel] = n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffTrees(t *testing.T, want, got map[string]node) {
	t.Helper()
	for rel, w := range want {
		g, ok := got[rel]
		if !ok {
			t.Errorf("%s: missing", rel)
			continue
		}
		if g != w {
			t.Errorf("%s:\n overlay %+v\n copy    %+v", rel, w, g)
		}
	}
	for rel := range got {
		if _, ok := want[rel]; !ok {
			t.Errorf("%s: in the copy only", rel)
		}
	}
}

func TestCopyMatchesOverlayView(t *testing.T) {
	requireOverlay(t)
	layers := twoLayers(t)
	d := newMountDirs(t)
	if err := Mount(context.Background(), layers, d.upper, d.work, d.target); err != nil {
		t.Fatal(err)
	}
	overlay := tree(t, d.target)
	copied := filepath.Join(t.TempDir(), "copy")
	if err := Copy(context.Background(), layers, copied); err != nil {
		t.Fatal(err)
	}
	wantTwoLayers(t, copied)
	diffTrees(t, overlay, tree(t, copied))

	var h1, h2 unix.Stat_t
	unix.Lstat(filepath.Join(copied, "hard1"), &h1)
	unix.Lstat(filepath.Join(copied, "hard2"), &h2)
	if h1.Ino != h2.Ino || h1.Nlink != 2 {
		t.Errorf("hard links not kept: inodes %d and %d, nlink %d", h1.Ino, h2.Ino, h1.Nlink)
	}
	if _, err := unix.Lgetxattr(filepath.Join(copied, "opq"), opaqueXattr, make([]byte, 8)); err == nil {
		t.Error("the copy kept the overlay opaque xattr")
	}
	if v, err := getXattr(filepath.Join(copied, "a.txt"), "user.note"); err != nil || string(v) != "v1" {
		t.Errorf("user.note = %q, %v", v, err)
	}
}

func TestCopyRefusesBadInput(t *testing.T) {
	testutil.RequireRoot(t)
	layers := twoLayers(t)
	full := t.TempDir()
	os.WriteFile(filepath.Join(full, "x"), nil, 0o644)
	tests := []struct {
		name   string
		layers []string
		target string
		want   string
	}{
		{"no layers", nil, t.TempDir(), "no layers given"},
		{"non-empty target", layers, full, "is not empty"},
		{"missing layer", []string{layers[0], filepath.Join(full, "nope")}, filepath.Join(t.TempDir(), "t"), "copy layer 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Copy(context.Background(), tt.layers, tt.target); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Copy(ctx, layers, filepath.Join(t.TempDir(), "t")); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("cancelled copy: %v", err)
	}
}

// manyLayers makes n layers: layer i adds f<i> and rewrites "top"; layer
// n/2 deletes f10; layer n-50 makes d opaque, hiding the d/e<i> files of
// the layers below it.
func manyLayers(t *testing.T, n int) []string {
	base := t.TempDir()
	var layers []string
	for i := range n {
		l := newLayer(t, filepath.Join(base, fmt.Sprintf("layer-%04d", i))).
			file(fmt.Sprintf("f%d", i), fmt.Sprint(i), 0o644).
			file("top", fmt.Sprint(i), 0o644)
		switch {
		case i == n/2:
			l.whiteout("f10")
		case i == n-50:
			l.opaque("d")
		}
		l.file(fmt.Sprintf("d/e%d", i), "", 0o644)
		layers = append(layers, l.done())
	}
	return layers
}

func wantManyLayers(t *testing.T, root string, n int) {
	t.Helper()
	if got, _ := os.ReadFile(filepath.Join(root, "top")); string(got) != fmt.Sprint(n-1) {
		t.Errorf("top = %q, want the top-most layer's %d", got, n-1)
	}
	for i := range n {
		got, err := os.ReadFile(filepath.Join(root, fmt.Sprintf("f%d", i)))
		if i == 10 {
			if err == nil {
				t.Error("f10 survived its whiteout")
			}
			continue
		}
		if err != nil || string(got) != fmt.Sprint(i) {
			t.Errorf("f%d = %q, %v", i, got, err)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(root, "d"))
	if len(entries) != 50 {
		t.Errorf("opaque d lists %d files, want the 50 from its layer up", len(entries))
	}
}

func TestMountMoreLayersThanOneMountTakes(t *testing.T) {
	requireOverlay(t)
	const n = 600
	layers := manyLayers(t, n)
	for _, api := range []struct {
		name    string
		classic bool
	}{{"new mount API", false}, {"mount(2)", true}} {
		t.Run(api.name, func(t *testing.T) {
			m := &Mounter{CacheDir: t.TempDir(), classicOnly: api.classic}
			d := newMountDirs(t)
			if err := m.Mount(context.Background(), layers, d.upper, d.work, d.target); err != nil {
				t.Fatal(err)
			}
			wantManyLayers(t, d.target, n)
			flats, _ := filepath.Glob(filepath.Join(m.CacheDir, "flat-*"))
			if len(flats) != 1 {
				t.Fatalf("cache holds %q, want one flattened directory", flats)
			}
			before, _ := os.Stat(flats[0])
			// The new API takes 500 lower layers, so it merges only the
			// 101 bottom-most; mount(2) must merge more to fit a page.
			merged, _ := filepath.Glob(filepath.Join(flats[0], "f*"))
			least := n - (maxLowerLayers - 1)
			if api.classic && len(merged) <= least || !api.classic && len(merged) != least {
				t.Errorf("flattened the files of %d layers; the fewest that fit is %d", len(merged), least)
			}

			// A second container of the image reuses the flattened layers.
			d2 := newMountDirs(t)
			if err := m.Mount(context.Background(), layers, d2.upper, d2.work, d2.target); err != nil {
				t.Fatal(err)
			}
			wantManyLayers(t, d2.target, n)
			flats2, _ := filepath.Glob(filepath.Join(m.CacheDir, "*"))
			after, _ := os.Stat(flats[0])
			if len(flats2) != 1 || !os.SameFile(before, after) {
				t.Errorf("second mount did not reuse the flattened layers: %q", flats2)
			}
			for _, target := range []string{d.target, d2.target} {
				if err := Unmount(target); err != nil || mounted(t, target) {
					t.Errorf("unmount %s: %v", target, err)
				}
			}
		})
	}
}

func TestMountFlattensBesideUpperWithoutCacheDir(t *testing.T) {
	requireOverlay(t)
	layers := manyLayers(t, 520)
	d := newMountDirs(t)
	if err := Mount(context.Background(), layers, d.upper, d.work, d.target); err != nil {
		t.Fatal(err)
	}
	wantManyLayers(t, d.target, 520)
	if flats, _ := filepath.Glob(filepath.Join(filepath.Dir(d.upper), "flat-*")); len(flats) != 1 {
		t.Errorf("flattened layers not beside the upper dir: %q", flats)
	}
}

func TestCopyOfManyLayersMatchesMount(t *testing.T) {
	requireOverlay(t)
	layers := manyLayers(t, 120)
	d := newMountDirs(t)
	if err := Mount(context.Background(), layers, d.upper, d.work, d.target); err != nil {
		t.Fatal(err)
	}
	copied := filepath.Join(t.TempDir(), "copy")
	if err := Copy(context.Background(), layers, copied); err != nil {
		t.Fatal(err)
	}
	wantManyLayers(t, copied, 120)
	diffTrees(t, tree(t, d.target), tree(t, copied))
}

func TestMountRefusesBadInput(t *testing.T) {
	testutil.RequireRoot(t)
	layers := twoLayers(t)
	base := t.TempDir()
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o644)
	tests := []struct {
		name               string
		layers             []string
		upper, work, merge string
		want               string
	}{
		{"no layers", nil, base + "/u", base + "/w", base + "/m", "no layers given"},
		{"missing layer", []string{base + "/nope"}, base + "/u", base + "/w", base + "/m", "layer 0"},
		{"layer is a file", []string{file}, base + "/u", base + "/w", base + "/m", "is not a directory"},
		{"no upper", layers, "", base + "/w", base + "/m", "no upper directory"},
		{"same upper and work", layers, base + "/u", base + "/u/", base + "/m", "the same directory"},
	}
	if shm, err := os.MkdirTemp("/dev/shm", "snapshot-test"); err == nil {
		t.Cleanup(func() { os.RemoveAll(shm) })
		var a, b unix.Statfs_t
		if unix.Statfs(shm, &a) == nil && unix.Statfs(base, &b) == nil && a.Type != b.Type {
			tests = append(tests, struct {
				name               string
				layers             []string
				upper, work, merge string
				want               string
			}{"upper and work apart", layers, shm + "/u", base + "/w", base + "/m", "different file systems"})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Cleanup(func() { Unmount(tt.merge) })
			err := Mount(context.Background(), tt.layers, tt.upper, tt.work, tt.merge)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestUnmountIsIdempotent(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	for _, p := range []string{dir, filepath.Join(dir, "missing")} {
		if err := Unmount(p); err != nil {
			t.Errorf("Unmount(%s) of something not mounted: %v", p, err)
		}
	}
}

func TestUnmountDetachesABusyMount(t *testing.T) {
	requireOverlay(t)
	layers := twoLayers(t)
	d := newMountDirs(t)
	if err := Mount(context.Background(), layers, d.upper, d.work, d.target); err != nil {
		t.Fatal(err)
	}
	// An open directory keeps the mount busy, as a process inside would.
	f, err := os.Open(filepath.Join(d.target, "dir"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Unmount(d.target); err != nil {
		t.Fatal(err)
	}
	if mounted(t, d.target) {
		t.Fatal("busy mount still visible after Unmount")
	}
	if names, err := f.Readdirnames(-1); err != nil || !slices.Contains(names, "x") {
		t.Errorf("the open handle lost its view: %v %v", names, err)
	}
}

func TestOverlaySupportedExplainsItself(t *testing.T) {
	err := OverlaySupported()
	if os.Geteuid() != 0 {
		if err == nil || !strings.Contains(err.Error(), "root") && !strings.Contains(err.Error(), "overlay") {
			t.Errorf("unprivileged probe: %v", err)
		}
		return
	}
	fs, _ := os.ReadFile("/proc/filesystems")
	if bytes.Contains(fs, []byte("\toverlay\n")) && err != nil {
		t.Logf("overlay is listed but the probe failed: %v", err)
	}
	if err2 := OverlaySupported(); (err == nil) != (err2 == nil) {
		t.Errorf("the cached answer changed: %v then %v", err, err2)
	}
}
