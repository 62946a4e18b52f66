package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// FuzzApply feeds arbitrary bytes to Apply as a layer. Apply must not panic
// and must write nothing outside the snapshot, whatever it is given. The
// seeds are small real layers, several hostile, so mutations start from
// archives that pass the tar checksum.
func FuzzApply(f *testing.F) {
	seeds := [][]tarEntry{
		{dirent("a/"), reg("a/f", "x"), sym("a/l", "f"), hard("a/h", "a/f")},
		{sym("evil", "../sentinel"), reg("evil/x", "pwned")},
		{sym("evil", "/"), dirent("evil/tmp/")},
		{reg("../sentinel/x", "pwned")},
		{hard("x", "../sentinel/keep")},
		{sym("lnk", "../sentinel"), hard("x", "lnk/keep")},
		{dirent("d/"), reg("d/.wh..wh..opq", ""), reg("d/.wh.x", ""), reg(".wh.d", "")},
		{sym("evil", "../sentinel"), reg("evil/.wh.keep", "")},
		{withXattr(reg("f", ""), "user.x", "y")},
		{{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "p", Mode: 0o600}}},
	}
	for i, s := range seeds {
		plain := mkTar(f, s...)
		f.Add(plain, i%2 == 0)
		f.Add(gzipped(f, plain), i%2 == 1)
	}
	f.Add(zstded(f, mkTar(f, seeds[0]...)), true)
	f.Fuzz(func(t *testing.T, layer []byte, flatten bool) {
		s := newSandbox(t)
		removable(t, s.snap)
		mode := Overlay
		if flatten {
			mode = Flatten
		}
		o := testOpts(mode)
		o.Limits = Limits{MaxBytes: 1 << 20, MaxEntries: 1000}
		_, err := Apply(context.Background(), s.snap, bytes.NewReader(layer), o)
		var h *HostileError
		if errors.As(err, &h) && (h.Reason == "" || !strings.Contains(err.Error(), "refusing to unpack")) {
			t.Errorf("HostileError without a reason: %v", err)
		}
		s.check(t)
	})
}

// FuzzApplyEntries builds a well-formed layer from a script, so that the
// fuzzer explores names, link targets and entry orders instead of tar
// checksums. Each line is "TYPE|NAME|LINK|BODY" with TYPE one of 0 (file),
// 5 (directory), 2 (symbolic link), 1 (hard link), 6 (fifo); "@S" in NAME or
// LINK stands for the sentinel directory's absolute path.
func FuzzApplyEntries(f *testing.F) {
	for _, s := range []string{
		"5|a/||\n0|a/f||x\n2|a/l|f|\n1|a/h|a/f|",
		"2|evil|@S|\n0|evil/x||pwned",
		"2|evil|../sentinel|\n0|evil/.wh.keep||",
		"2|up|..|\n1|x|up/sentinel/keep|",
		"5|d/||\n0|d/.wh..wh..opq||\n0|d/f||1\n0|d||2\n5|d/||\n0|d/g||3",
		"0|a/b/c||1\n2|a/b|/|\n0|a/b/c||2",
		"0|../sentinel/x||1\n0|/x||2\n0|a/../../x||3",
		"2|./||\n6|p||\n0|.wh...||",
		"5|usr/lib/||\n2|lib|usr/lib|\n0|lib/f||1\n1|lib/h|lib/f|\n0|lib/.wh.x||",
		"2|lib64|/usr/lib64|\n2|usr/lib64|../../..|\n0|lib64/@S/x||1",
		"2|a|b|\n2|b|a|\n0|a/x||1",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, script string, flatten bool) {
		s := newSandbox(t)
		removable(t, s.snap)
		var ents []tarEntry
		for _, line := range strings.Split(script, "\n") {
			fields := strings.SplitN(line, "|", 4)
			if len(fields) != 4 || fields[0] == "" {
				continue
			}
			name := strings.ReplaceAll(fields[1], "@S", s.sentinel)
			link := strings.ReplaceAll(fields[2], "@S", s.sentinel)
			if name == "" || strings.ContainsRune(name+link, 0) || len(name) > 200 || len(link) > 200 {
				continue
			}
			h := tar.Header{Name: name, Linkname: link, Mode: 0o755}
			switch fields[0][0] {
			case '0':
				h.Typeflag, h.Linkname = tar.TypeReg, ""
			case '5':
				h.Typeflag, h.Linkname = tar.TypeDir, ""
			case '2':
				h.Typeflag = tar.TypeSymlink
			case '1':
				h.Typeflag = tar.TypeLink
			case '6':
				h.Typeflag, h.Linkname = tar.TypeFifo, ""
			default:
				continue
			}
			body := ""
			if h.Typeflag == tar.TypeReg {
				body = fields[3]
			}
			ents = append(ents, tarEntry{hdr: h, body: body})
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range ents {
			h := e.hdr
			h.Size = int64(len(e.body))
			if tw.WriteHeader(&h) != nil {
				return // archive/tar will not write it (e.g. a name it cannot encode)
			}
			tw.Write([]byte(e.body))
		}
		tw.Close()
		mode := Overlay
		if flatten {
			mode = Flatten
			// Flatten applies on top of lower layers: give it one with a
			// link out, which must be replaced rather than followed.
			mustApply(t, s.snap, mkTar(t, sym("lower-evil", s.sentinel), dirent("d/"), reg("d/old", "o")), testOpts(Flatten))
		}
		Apply(context.Background(), s.snap, bytes.NewReader(buf.Bytes()), testOpts(mode))
		s.check(t)
	})
}
