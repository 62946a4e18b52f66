package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/testutil"
)

// tarEntry is one entry of a test layer.
type tarEntry struct {
	hdr  tar.Header
	body string
}

var testTime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

func reg(name, body string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644}, body: body}
}

func dirent(name string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}

func sym(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

func hard(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target}}
}

func withMode(e tarEntry, mode int64) tarEntry { e.hdr.Mode = mode; return e }

func withOwner(e tarEntry, uid, gid int) tarEntry { e.hdr.Uid, e.hdr.Gid = uid, gid; return e }

func withXattr(e tarEntry, k, v string) tarEntry {
	if e.hdr.PAXRecords == nil {
		e.hdr.PAXRecords = map[string]string{}
	}
	e.hdr.PAXRecords[paxXattr+k] = v
	return e
}

// mkTar builds an uncompressed layer.
func mkTar(t testing.TB, ents ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.hdr
		if h.ModTime.IsZero() {
			h.ModTime = testTime
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if len(h.PAXRecords) > 0 {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("write test tar header %q: %v", h.Name, err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatalf("write test tar body %q: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstded(t testing.TB, b []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}

// opts returns options a test can use as any user: ownership only as root.
func testOpts(mode Mode) Options {
	return Options{Mode: mode, NoOwnership: os.Geteuid() != 0}
}

func mustApply(t testing.TB, dir string, layer []byte, o Options) Stats {
	t.Helper()
	st, err := Apply(context.Background(), dir, bytes.NewReader(layer), o)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return st
}

// tree describes every file under dir: kind, permission bits, content or
// link target, and with owners also uid:gid. Overlay whiteouts show as
// "char 0:0"; opaque directories as "dir ... opaque".
func tree(t testing.TB, dir string, owners bool) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		perm := st.Mode & 0o7777
		var s string
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			s = fmt.Sprintf("dir %04o", perm)
			if v := make([]byte, 4); os.Geteuid() == 0 {
				if n, err := unix.Lgetxattr(p, "trusted.overlay.opaque", v); err == nil && string(v[:n]) == "y" {
					s += " opaque"
				}
			}
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s = fmt.Sprintf("file %04o %q", perm, b)
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			s = "symlink -> " + target
			perm = 0
		case unix.S_IFCHR:
			s = fmt.Sprintf("char %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		case unix.S_IFBLK:
			s = fmt.Sprintf("block %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		case unix.S_IFIFO:
			s = fmt.Sprintf("fifo %04o", perm)
		default:
			s = fmt.Sprintf("mode %o", st.Mode)
		}
		if owners {
			s += fmt.Sprintf(" %d:%d", st.Uid, st.Gid)
		}
		m[rel] = s
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return m
}

func diffTrees(got, want map[string]string) string {
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		g, gok := got[k]
		w, wok := want[k]
		switch {
		case !gok:
			fmt.Fprintf(&b, "  missing %s: want %s\n", k, w)
		case !wok:
			fmt.Fprintf(&b, "  extra   %s: %s\n", k, g)
		case g != w:
			fmt.Fprintf(&b, "  differs %s: got %s, want %s\n", k, g, w)
		}
	}
	return b.String()
}

func checkTree(t testing.TB, what, dir string, owners bool, want map[string]string) {
	t.Helper()
	if d := diffTrees(tree(t, dir, owners), want); d != "" {
		t.Errorf("%s: tree under %s differs from the expected one:\n%s", what, dir, d)
	}
}

// mountOverlay mounts the layer directories (bottom first) read-only and
// returns the merged view, unmounted when the test ends.
func mountOverlay(t testing.TB, layers ...string) string {
	t.Helper()
	merged := t.TempDir()
	lower := slices.Clone(layers)
	slices.Reverse(lower)
	if len(lower) == 1 {
		// overlayfs wants two layers (or an upperdir); an empty one adds nothing.
		lower = append(lower, t.TempDir())
	}
	for _, l := range lower {
		if strings.ContainsAny(l, ",:") {
			t.Fatalf("layer directory %s holds ',' or ':', which overlayfs' lowerdir option cannot carry; rename the test", l)
		}
	}
	if err := unix.Mount("overlay", merged, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(lower, ":")); err != nil {
		testutil.Missing(t, "cannot mount overlayfs here (%v); the overlay view is not checked", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount overlay %s: %v", merged, err)
		}
	})
	return merged
}

// removable makes every directory under dir writable when the test ends, so
// that t.TempDir can remove what a layer made read-only even without root.
func removable(t testing.TB, dir string) {
	t.Cleanup(func() {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
	})
}
