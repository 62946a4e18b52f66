package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/testutil"
)

func TestApplyEntries(t *testing.T) {
	tests := []struct {
		name     string
		root     bool // needs root (ownership, device nodes)
		ents     []tarEntry
		want     map[string]string
		wantOwns map[string]string // with owners; only checked as root
	}{
		{
			name: "files and directories",
			ents: []tarEntry{dirent("etc/"), reg("etc/hostname", "box\n"), reg("etc/empty", ""), dirent("usr/bin/"), withMode(reg("usr/bin/tool", "#!/bin/sh\n"), 0o755)},
			want: map[string]string{
				"etc": "dir 0755", "etc/hostname": `file 0644 "box\n"`, "etc/empty": `file 0644 ""`,
				"usr": "dir 0755", "usr/bin": "dir 0755", "usr/bin/tool": `file 0755 "#!/bin/sh\n"`,
			},
		},
		{
			name: "modes including setuid, setgid and sticky",
			ents: []tarEntry{withMode(dirent("tmp/"), 0o1777), withMode(reg("su", "x"), 0o4755), withMode(reg("wall", "y"), 0o2755), withMode(reg("secret", "z"), 0o600), withMode(dirent("locked/"), 0o500), reg("locked/inside", "w")},
			want: map[string]string{
				"tmp": "dir 1777", "su": `file 4755 "x"`, "wall": `file 2755 "y"`, "secret": `file 0600 "z"`,
				"locked": "dir 0500", "locked/inside": `file 0644 "w"`,
			},
		},
		{
			name: "ownership kept, setuid survives chown",
			root: true,
			ents: []tarEntry{withOwner(dirent("home/"), 1000, 1000), withOwner(withMode(reg("home/su", "s"), 0o4755), 1000, 50), withOwner(sym("home/l", "su"), 7, 8)},
			wantOwns: map[string]string{
				"home": "dir 0755 1000:1000", "home/su": `file 4755 "s" 1000:50`, "home/l": "symlink -> su 7:8",
			},
		},
		{
			name: "symbolic links are created as written",
			ents: []tarEntry{sym("abs", "/etc/passwd"), sym("rel", "../../../../outside"), sym("dot", "."), reg("f", "1"), sym("tof", "f")},
			want: map[string]string{
				"abs": "symlink -> /etc/passwd", "rel": "symlink -> ../../../../outside", "dot": "symlink -> .",
				"f": `file 0644 "1"`, "tof": "symlink -> f",
			},
		},
		{
			name: "hard links share the file",
			ents: []tarEntry{dirent("bin/"), withMode(reg("bin/busybox", "bb"), 0o755), hard("bin/sh", "bin/busybox"), hard("ls", "./bin/busybox")},
			want: map[string]string{"bin": "dir 0755", "bin/busybox": `file 0755 "bb"`, "bin/sh": `file 0755 "bb"`, "ls": `file 0755 "bb"`},
		},
		{
			name: "fifos and device nodes",
			root: true,
			ents: []tarEntry{
				dirent("dev/"),
				{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}},
				{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/loop9", Mode: 0o660, Devmajor: 7, Devminor: 9}},
				{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "dev/pipe", Mode: 0o620}},
			},
			want: map[string]string{"dev": "dir 0755", "dev/null": "char 1:3", "dev/loop9": "block 7:9", "dev/pipe": "fifo 0620"},
		},
		{
			name: "missing parents are created 0755",
			ents: []tarEntry{reg("a/b/c", "deep")},
			want: map[string]string{"a": "dir 0755", "a/b": "dir 0755", "a/b/c": `file 0644 "deep"`},
		},
		{
			name: "later entries replace earlier ones",
			ents: []tarEntry{
				reg("f", "old"), reg("f", "new"),
				dirent("d/"), reg("d/x", "x"), reg("d", "now a file"),
				reg("s", "file"), sym("s", "f"),
				sym("e", "/"), dirent("e/"), reg("e/y", "inside"),
				dirent("m/"), reg("m/1", "1"), withMode(dirent("m/"), 0o700), reg("m/2", "2"),
			},
			want: map[string]string{
				"f": `file 0644 "new"`, "d": `file 0644 "now a file"`, "s": "symlink -> f",
				"e": "dir 0755", "e/y": `file 0644 "inside"`,
				"m": "dir 0700", "m/1": `file 0644 "1"`, "m/2": `file 0644 "2"`,
			},
		},
		{
			name: "names are cleaned",
			ents: []tarEntry{dirent("./"), reg("./a", "1"), reg("b//c/./d", "2"), reg("x/../y", "3")},
			want: map[string]string{"a": `file 0644 "1"`, "b": "dir 0755", "b/c": "dir 0755", "b/c/d": `file 0644 "2"`, "y": `file 0644 "3"`},
		},
		{
			name: "a plain tar whose first name looks like a compression magic number",
			ents: []tarEntry{reg("BZh91AY", "not bzip2"), reg("\x28\xb5", "not zstd")},
			want: map[string]string{"BZh91AY": `file 0644 "not bzip2"`, "\x28\xb5": `file 0644 "not zstd"`},
		},
		{
			name: "AUFS metadata entries are skipped",
			ents: []tarEntry{dirent(".wh..wh.plnk/"), reg(".wh..wh.aufs", ""), reg("kept", "k")},
			want: map[string]string{"kept": `file 0644 "k"`},
		},
	}
	for _, tc := range tests {
		for _, mode := range []Mode{Overlay, Flatten} {
			t.Run(tc.name+"/"+mode.String(), func(t *testing.T) {
				if tc.root {
					testutil.RequireRoot(t)
				}
				dir := t.TempDir()
				removable(t, dir)
				st := mustApply(t, dir, mkTar(t, tc.ents...), testOpts(mode))
				if st.Entries != int64(len(tc.ents)) {
					t.Errorf("Stats.Entries = %d, want %d", st.Entries, len(tc.ents))
				}
				if tc.want != nil {
					checkTree(t, "Apply", dir, false, tc.want)
				}
				if tc.wantOwns != nil {
					checkTree(t, "Apply", dir, true, tc.wantOwns)
				}
			})
		}
	}
}

func TestApplyHardLinkIsSameInode(t *testing.T) {
	dir := t.TempDir()
	mustApply(t, dir, mkTar(t, reg("a", "data"), hard("b", "a"), sym("s", "a"), hard("t", "s")), testOpts(Overlay))
	var a, b, s, tt unix.Stat_t
	for p, st := range map[string]*unix.Stat_t{"a": &a, "b": &b, "s": &s, "t": &tt} {
		if err := unix.Lstat(filepath.Join(dir, p), st); err != nil {
			t.Fatal(err)
		}
	}
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("b is not a hard link of a: inodes %d and %d, nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	if s.Ino != tt.Ino || tt.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Errorf("a hard link to a symbolic link must link the link itself, not its target")
	}
}

func TestApplyTimesAndSize(t *testing.T) {
	mtime := time.Date(2001, 2, 3, 4, 5, 6, 700, time.UTC)
	e := func(x tarEntry) tarEntry { x.hdr.ModTime = mtime; return x }
	dir := t.TempDir()
	st := mustApply(t, dir, mkTar(t, e(dirent("d/")), e(reg("d/f", "12345")), e(sym("d/l", "f")), e(dirent("d/sub/")), e(reg("d/sub/g", "678"))), testOpts(Overlay))
	if st.Bytes != 8 {
		t.Errorf("Stats.Bytes = %d, want 8", st.Bytes)
	}
	// Directory times are set after their children are written, so they
	// keep the archive's time.
	for _, p := range []string{"d", "d/f", "d/l", "d/sub", "d/sub/g"} {
		var s unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, p), &s); err != nil {
			t.Fatal(err)
		}
		if got := time.Unix(s.Mtim.Sec, s.Mtim.Nsec); !got.Equal(mtime.Truncate(time.Second)) && !got.Equal(mtime) {
			t.Errorf("%s: mtime %v, want %v", p, got.UTC(), mtime)
		}
	}
}

func TestApplyXattrs(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Setxattr(dir, "user.probe", []byte("1"), 0); err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
		testutil.Missing(t, "the filesystem of %s does not support user.* xattrs (tmpfs before Linux 6.6?): %v", dir, err)
	}
	unix.Removexattr(dir, "user.probe")
	ents := []tarEntry{
		withXattr(withXattr(reg("f", "x"), "user.mime", "text/plain"), "user.empty", ""),
		withXattr(dirent("d/"), "user.note", "a directory"),
	}
	if os.Geteuid() == 0 {
		ents = append(ents, withXattr(reg("ping", "p"), "security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	}
	mustApply(t, dir, mkTar(t, ents...), testOpts(Overlay))
	for _, e := range ents {
		for k, v := range e.hdr.PAXRecords {
			key := strings.TrimPrefix(k, paxXattr)
			b := make([]byte, 256)
			n, err := unix.Lgetxattr(filepath.Join(dir, e.hdr.Name), key, b)
			if err != nil {
				t.Errorf("%s: xattr %s: %v", e.hdr.Name, key, err)
				continue
			}
			if string(b[:n]) != v {
				t.Errorf("%s: xattr %s = %q, want %q", e.hdr.Name, key, b[:n], v)
			}
		}
	}
}

// compressedForms is plain as every format a layer may come in.
func compressedForms(t *testing.T, plain []byte) []struct {
	name  string
	layer []byte
} {
	return []struct {
		name  string
		layer []byte
	}{
		{"tar", plain},
		{"gzip", gzipped(t, plain)},
		{"zstd", zstded(t, plain)},
		{"gzip multistream", append(gzipped(t, plain[:512]), gzipped(t, plain[512:])...)},
	}
}

func TestApplyCompressionFormats(t *testing.T) {
	plain := mkTar(t, dirent("d/"), reg("d/a", strings.Repeat("abc", 100000)), sym("d/l", "a"))
	want := map[string]string{"d": "dir 0755", "d/a": `file 0644 "` + strings.Repeat("abc", 100000) + `"`, "d/l": "symlink -> a"}
	for _, tc := range compressedForms(t, plain) {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var last int64
			o := testOpts(Overlay)
			o.Progress = func(n int64) { last = n }
			mustApply(t, dir, tc.layer, o)
			checkTree(t, tc.name, dir, false, want)
			if last != int64(len(tc.layer)) {
				t.Errorf("last progress report %d bytes, want the whole layer (%d)", last, len(tc.layer))
			}
		})
	}
}

func TestApplyBadInput(t *testing.T) {
	plain := mkTar(t, reg("a", strings.Repeat("x", 200000)), reg("b", "y"))
	gz := gzipped(t, plain)
	corrupt := bytes.Clone(gz)
	corrupt[len(corrupt)-6] ^= 0xff // the CRC-32 in the trailer
	tests := []struct {
		name, wantErr string
		layer         []byte
	}{
		{"truncated gzip", "the layer is truncated (gzip)", gz[:len(gz)/2]},
		{"gzip checksum", "gzip stream: gzip: invalid checksum", corrupt},
		{"truncated zstd", "the layer is truncated (zstd)", zstded(t, plain)[:100]},
		{"truncated tar", "the layer is truncated (tar)", plain[:1000]},
		{"empty", "the layer is empty (0 bytes)", nil},
		{"xz", "bzip2- or xz-compressed", []byte("\xfd7zXZ\x00rest")},
		{"bzip2", "bzip2- or xz-compressed", []byte("BZh91AY&SYrest")},
		{"not a tar", "read layer (tar)", bytes.Repeat([]byte("not a tar archive "), 100)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(tc.layer), testOpts(Overlay))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Apply: %v, want an error containing %q", err, tc.wantErr)
			}
			var h *HostileError
			if errors.As(err, &h) {
				t.Errorf("a damaged layer is not a hostile one: %v", err)
			}
		})
	}
}

func TestApplyRefusesNonEmptyOverlayDir(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "left-over"), nil, 0o644)
	_, err := Apply(context.Background(), dir, bytes.NewReader(mkTar(t, reg("a", "1"))), testOpts(Overlay))
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("Apply into a used directory in Overlay mode: %v, want a 'not empty' error", err)
	}
}

func TestApplyCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Apply(ctx, t.TempDir(), bytes.NewReader(mkTar(t, reg("a", "1"))), testOpts(Overlay))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply with a canceled context: %v, want context.Canceled", err)
	}
}

func TestApplyReadsToEnd(t *testing.T) {
	layer := gzipped(t, append(mkTar(t, reg("a", "1")), make([]byte, 8192)...))
	r := bytes.NewReader(layer)
	if _, err := Apply(context.Background(), t.TempDir(), r, testOpts(Overlay)); err != nil {
		t.Fatal(err)
	}
	if r.Len() != 0 {
		t.Errorf("Apply left %d bytes of the layer unread; a caller hashing the stream would see a wrong digest", r.Len())
	}
}

func TestCleanName(t *testing.T) {
	for _, tc := range []struct{ in, want, why string }{
		{"a/b/", "a/b", ""},
		{"./a", "a", ""},
		{".", "", ""},
		{"./", "", ""},
		{"a/../b", "b", ""},
		{"a/../../b", "", "path climbs out of the layer root"},
		{"..", "", "path climbs out of the layer root"},
		{"/etc/passwd", "", "absolute path; layer entries must be relative to the layer root"},
		{"a\x00b", "", "name contains a NUL byte"},
		{"", "", "empty name"},
	} {
		got, why := cleanName(tc.in)
		if got != tc.want || why != tc.why {
			t.Errorf("cleanName(%q) = %q, %q; want %q, %q", tc.in, got, why, tc.want, tc.why)
		}
	}
}

func TestDefaultLimits(t *testing.T) {
	l, err := Limits{MaxEntries: 7}.withDefaults()
	if err != nil || l.MaxEntries != 7 || l.MaxBytes != DefaultLimits().MaxBytes {
		t.Errorf("Limits{MaxEntries: 7} with defaults = %+v, %v", l, err)
	}
	if _, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(mkTar(t)), Options{Limits: Limits{MaxBytes: -1}}); err == nil {
		t.Error("negative limits accepted")
	}
}

func TestDecompress(t *testing.T) {
	plain := mkTar(t, reg("a", strings.Repeat("abc", 100000)))
	for _, tc := range compressedForms(t, plain) {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := Decompress(bytes.NewReader(tc.layer))
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, plain) {
				t.Errorf("Decompress gave %d bytes that differ from the %d-byte tar", len(got), len(plain))
			}
		})
	}
}

// A zstd frame that asks for a window over zstdMaxWindow could make the
// decoder allocate that much: it is refused before any content is read.
func TestDecompressRefusesHugeZstdWindow(t *testing.T) {
	// Magic number; frame header descriptor 0 (no content size, not single
	// segment, so the window descriptor follows); window log 10+18 = 28
	// (256 MiB); then one last raw block holding "x".
	frame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 18 << 3, 0x09, 0x00, 0x00, 'x'}
	rc, err := Decompress(bytes.NewReader(frame))
	if err == nil {
		_, err = io.ReadAll(rc)
		rc.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "window") {
		t.Fatalf("Decompress of a frame with a %d-byte window: %v, want a window size error", 2*zstdMaxWindow, err)
	}
}
