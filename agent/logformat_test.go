package agent

import (
	"bytes"
	"slices"
	"testing"
	"time"
)

func TestParseEntry(t *testing.T) {
	for _, tc := range []struct {
		line    string
		ok      bool
		stream  string
		partial bool
		text    string
	}{
		{"2026-12-03T05:01:02.123456789Z stdout F hello world", true, "stdout", false, "hello world"},
		{"2026-12-03T05:01:02.123456789Z stderr P part", true, "stderr", true, "part"},
		{"2026-12-03T05:01:02.123456789Z stdout F ", true, "stdout", false, ""},
		{"2026-12-03T05:01:02Z stdout F short time", true, "stdout", false, "short time"},
		{"2026-12-03T05:01:02.123456789+01:00 stdout F offset", true, "stdout", false, "offset"},
		{"2026-12-03T05:01:02.123456789Z stdout F  two  spaces ", true, "stdout", false, " two  spaces "},
		{"hello world", false, "", false, ""},
		{"", false, "", false, ""},
		{"2026-12-03T05:01:02.123456789Z stdin F x", false, "", false, ""},
		{"2026-12-03T05:01:02.123456789Z stdout X x", false, "", false, ""},
		{"2026-12-03T05:01:02.123456789Z stdout F", false, "", false, ""},
		{"2026-13-03T05:01:02.123456789Z stdout F bad month", false, "", false, ""},
		{"not-a-time-but-long-enough stdout F x", false, "", false, ""},
	} {
		e, ok := parseEntry([]byte(tc.line))
		if ok != tc.ok {
			t.Errorf("%q: ok %v, want %v", tc.line, ok, tc.ok)
			continue
		}
		if ok && (e.stream != tc.stream || e.partial != tc.partial || string(e.text) != tc.text) {
			t.Errorf("%q: %s partial=%v %q", tc.line, e.stream, e.partial, e.text)
		}
	}
}

// FuzzParseEntry: any line parses without panicking, and an entry found
// in it writes back (in UTC) to one that parses the same, if its time is
// within the four-digit years the format has; every entry written parses
// back to what was written.
func FuzzParseEntry(f *testing.F) {
	f.Add([]byte("2026-12-03T05:01:02.123456789Z stdout F hello"), int64(0), false, false)
	f.Add([]byte("2026-12-03T05:01:02.5+01:00 stderr P x"), int64(0), false, false)
	f.Add([]byte("0000-01-01T0:00:00+01:00 stderr P "), int64(0), false, false)
	f.Add([]byte("x y z"), int64(1<<40), true, true)
	f.Add([]byte(""), int64(-1), false, true)
	f.Fuzz(func(t *testing.T, line []byte, nanos int64, stderr, partial bool) {
		if e, ok := parseEntry(line); ok && e.at.UTC().Year() >= 0 && e.at.UTC().Year() <= 9999 {
			b := appendEntry(nil, e.at, e.stream, e.partial, e.text)
			again, ok := parseEntry(b[:len(b)-1])
			if !ok || !again.at.Equal(e.at) || again.stream != e.stream || again.partial != e.partial || !bytes.Equal(again.text, e.text) {
				t.Fatalf("%q parsed, but written back as %q it does not parse the same", line, b)
			}
		}
		text := bytes.ReplaceAll(line, []byte("\n"), nil)
		ts := time.Unix(0, nanos)
		stream := streamStdout
		if stderr {
			stream = streamStderr
		}
		b := appendEntry(nil, ts, stream, partial, text)
		if bytes.Count(b, []byte("\n")) != 1 || b[len(b)-1] != '\n' {
			t.Fatalf("entry %q is not one line", b)
		}
		e, ok := parseEntry(b[:len(b)-1])
		if !ok {
			t.Fatalf("written entry %q does not parse", b)
		}
		if e.stream != stream || e.partial != partial || !bytes.Equal(e.text, text) || !e.at.Equal(ts) {
			t.Fatalf("%q parsed as %s %v %q %v", b, e.stream, e.partial, e.text, e.at)
		}
	})
}

// FuzzScanBack: the lines scanBack finds from the end are the complete
// lines of the data, last first, at their offsets; with any chunking.
func FuzzScanBack(f *testing.F) {
	f.Add([]byte("a\nbb\n\nccc"), uint8(3))
	f.Add([]byte("\n"), uint8(1))
	f.Add(bytes.Repeat([]byte("0123456789abcdef\n"), 50), uint8(7))
	f.Add(append(bytes.Repeat([]byte("x"), 700), '\n', 'y', '\n'), uint8(64))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		type line struct {
			text string
			off  int64
		}
		var want []line
		off := 0
		for {
			i := bytes.IndexByte(data[off:], '\n')
			if i < 0 {
				break
			}
			want = append(want, line{string(data[off : off+i]), int64(off)})
			off += i + 1
		}
		slices.Reverse(want)
		var got []line
		err := scanBackBy(bytes.NewReader(data), int64(len(data)), int64(chunk)+1, func(l []byte, off int64) bool {
			got = append(got, line{string(l), off})
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("scanBack found %d lines, want %d", len(got), len(want))
		}
	})
}
