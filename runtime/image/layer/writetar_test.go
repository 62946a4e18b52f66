package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/testutil"
)

func TestWriteTarRoundTrip(t *testing.T) {
	ents := []tarEntry{
		dirent("etc/"), withMode(reg("etc/shadow", "secret"), 0o600),
		withMode(dirent("tmp/"), 0o1777),
		dirent("bin/"), withMode(reg("bin/busybox", "bb"), 0o4755), hard("bin/sh", "bin/busybox"), sym("bin/ls", "busybox"),
		sym("dangling", "/nowhere"), {hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "fifo", Mode: 0o644}},
		reg("z-last", "z"), reg("a-first", "a"),
	}
	xattrs := true
	probe := t.TempDir()
	if err := unix.Setxattr(probe, "user.probe", []byte("1"), 0); err != nil {
		xattrs = false
		t.Logf("no user.* xattrs under %s (%v); xattrs not round-tripped", probe, err)
	}
	if xattrs {
		ents = append(ents, withXattr(reg("tagged", "t"), "user.k", "v"))
	}
	if os.Geteuid() == 0 {
		ents = append(ents,
			withOwner(reg("owned", "o"), 1234, 5678),
			tarEntry{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "null", Mode: 0o666, Devmajor: 1, Devminor: 3}})
	}
	src := t.TempDir()
	mustApply(t, src, mkTar(t, ents...), testOpts(Overlay))
	os.Chtimes(src, testTime, testTime) // the root is not archived; keep it out of the comparison anyway

	var first, second bytes.Buffer
	if err := WriteTar(context.Background(), &first, src); err != nil {
		t.Fatal(err)
	}
	if err := WriteTar(context.Background(), &second, src); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.Bytes(), second.Bytes()) {
		t.Error("WriteTar of the same tree gave different bytes twice")
	}

	// Directory first, then its contents, each directory sorted.
	var names []string
	tr := tar.NewReader(bytes.NewReader(first.Bytes()))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Name == "bin/sh" && (h.Typeflag != tar.TypeLink || h.Linkname != "bin/busybox") {
			t.Errorf("bin/sh: type %q link %q, want a hard link to bin/busybox", h.Typeflag, h.Linkname)
		}
	}
	if names[0] != "a-first" || names[1] != "bin/" || names[2] != "bin/busybox" || names[3] != "bin/ls" || names[4] != "bin/sh" {
		t.Errorf("entry order %q, want sorted with directories before their contents", names)
	}

	dst := t.TempDir()
	mustApply(t, dst, first.Bytes(), testOpts(Overlay))
	if d := diffTrees(tree(t, dst, true), tree(t, src, true)); d != "" {
		t.Errorf("WriteTar then Apply does not give the same tree:\n%s", d)
	}
	var a, b unix.Stat_t
	unix.Lstat(filepath.Join(dst, "bin/busybox"), &a)
	unix.Lstat(filepath.Join(dst, "bin/sh"), &b)
	if a.Ino != b.Ino {
		t.Error("the hard link did not survive the round trip")
	}
	if xattrs {
		v := make([]byte, 8)
		if n, err := unix.Lgetxattr(filepath.Join(dst, "tagged"), "user.k", v); err != nil || string(v[:n]) != "v" {
			t.Errorf("xattr user.k after the round trip: %q, %v", v[:n], err)
		}
	}
}

func TestWriteTarSkipsOverlayXattrs(t *testing.T) {
	testutil.RequireRoot(t) // trusted.* xattrs need root
	src := t.TempDir()
	os.Mkdir(filepath.Join(src, "d"), 0o755)
	if err := unix.Setxattr(filepath.Join(src, "d"), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		testutil.Missing(t, "cannot set trusted.overlay.opaque here: %v", err)
	}
	var buf bytes.Buffer
	if err := WriteTar(context.Background(), &buf, src); err != nil {
		t.Fatal(err)
	}
	// The archive must be a layer Apply accepts.
	mustApply(t, t.TempDir(), buf.Bytes(), testOpts(Overlay))
}
