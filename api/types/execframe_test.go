package types

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

// TestExecFrames: frames written with AppendExecFrame read back as
// written, and a stream ends cleanly only between frames.
func TestExecFrames(t *testing.T) {
	var b []byte
	b = AppendExecFrame(b, StreamStdin, []byte("hello\n"))
	b = AppendExecFrame(b, StreamResize, []byte(`{"width":80,"height":24}`))
	b = AppendExecFrame(b, StreamCloseStdin, nil)
	fr := NewExecFrameReader(bytes.NewReader(b))
	for _, want := range []struct {
		s ExecStream
		p string
	}{{StreamStdin, "hello\n"}, {StreamResize, `{"width":80,"height":24}`}, {StreamCloseStdin, ""}} {
		s, p, err := fr.Next()
		if err != nil || s != want.s || string(p) != want.p {
			t.Fatalf("Next = %v %q %v, want %v %q", s, p, err, want.s, want.p)
		}
	}
	if _, _, err := fr.Next(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
	if _, _, err := NewExecFrameReader(bytes.NewReader(b[:len(b)-8])).Next(); err != nil {
		t.Fatalf("first frame of a cut stream: %v", err)
	}
	fr = NewExecFrameReader(bytes.NewReader(b[:3]))
	if _, _, err := fr.Next(); err != io.ErrUnexpectedEOF {
		t.Fatalf("a cut header: %v, want io.ErrUnexpectedEOF", err)
	}
	fr = NewExecFrameReader(bytes.NewReader(b[:8]))
	if _, _, err := fr.Next(); err != io.ErrUnexpectedEOF {
		t.Fatalf("a cut payload: %v, want io.ErrUnexpectedEOF", err)
	}
	for name, bad := range map[string][]byte{
		"unknown stream":         {9, 0, 0, 0, 0},
		"too long":               {1, 0, 1, 0, 0},
		"close-stdin with bytes": {5, 0, 0, 0, 1, 'x'},
	} {
		if _, _, err := NewExecFrameReader(bytes.NewReader(bad)).Next(); !errors.Is(err, ErrExecFrame) {
			t.Errorf("%s: %v, want ErrExecFrame", name, err)
		}
	}
}

// TestReadExecOptions: the options line is decoded strictly and
// validated, with errors that name the field.
func TestReadExecOptions(t *testing.T) {
	long := strings.Repeat("a", MaxExecBytes)
	for _, tc := range []struct {
		body, wantErr string
	}{
		{`{"command":["hostname"]}` + "\n", ""},
		{`{"command":["sh","-c","stty size"],"tty":true,"stdin":true,"size":{"width":80,"height":24},"env":["TERM=xterm"],"workingDir":"/tmp"}` + "\n" + "\x00\x00", ""},
		{"", "the request body is empty"},
		{`{"command":["x"]}`, "does not end with a newline"},
		{"hostname\n", "must start with the exec options"},
		{`{"command":[]}` + "\n", "command: must name the program"},
		{`{"command":[""]}` + "\n", "command[0]: must name the program"},
		{`{"command":["a\u0000b"]}` + "\n", "command[0]: contains a NUL byte"},
		{`{"command":["x"],"cmd":1}` + "\n", "cmd"},
		{`{"command":"x"}` + "\n", "command"},
		{`{"command":["x"],"env":["NOVALUE"]}` + "\n", "env[0]: \"NOVALUE\" must be NAME=VALUE"},
		{`{"command":["x"],"env":["1A=b"]}` + "\n", "env[0]: \"1A\" is not a variable name"},
		{`{"command":["x"],"workingDir":"tmp"}` + "\n", "workingDir"},
		{`{"command":["x"],"size":{"width":80,"height":24}}` + "\n", "size: is set without tty"},
		{`{"command":["x"],"tty":true,"size":{"width":0,"height":24}}` + "\n", "width and height must be at least 1"},
		{`{"command":["x","` + long + `"]}` + "\n", "more than the 262144 allowed"},
		{`{"command":["x","` + strings.Repeat(long, 9) + `"]}` + "\n", "options line is longer than"},
	} {
		o, line, err := ReadExecOptions(bufio.NewReader(strings.NewReader(tc.body)))
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("%.60q: %v", tc.body, err)
				continue
			}
			if !json.Valid(line) || len(o.Command) == 0 {
				t.Errorf("%.60q: options %+v, line %q", tc.body, o, line)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%.60q: error %v, want one with %q", tc.body, err, tc.wantErr)
		}
	}
}

// FuzzExecFrames: the frame reader never panics and never returns a
// frame the rules forbid; every frame it returns writes back to the same
// bytes.
func FuzzExecFrames(f *testing.F) {
	f.Add(AppendExecFrame(AppendExecFrame(nil, StreamStdout, []byte("out")), StreamExit, []byte(`{"exitCode":0}`)))
	f.Add([]byte{5, 0, 0, 0, 0, 0, 0, 0, 0, 1, 'x'})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := NewExecFrameReader(bytes.NewReader(data))
		var again []byte
		for {
			s, p, err := fr.Next()
			if err != nil {
				if err == io.EOF && !bytes.Equal(again, data) {
					t.Fatalf("clean end, but the frames read %x are not the input %x", again, data)
				}
				return
			}
			if len(p) > MaxExecFrame || int(s) >= len(streamNames) || (s == StreamCloseStdin && len(p) > 0) {
				t.Fatalf("a forbidden frame: %v, %d bytes", s, len(p))
			}
			if s == StreamResize {
				if ts, err := DecodeTerminalSize(p); err == nil && (ts.Width == 0 || ts.Height == 0) {
					t.Fatalf("an empty terminal size accepted: %+v", ts)
				}
			}
			again = AppendExecFrame(again, s, p)
		}
	})
}

// FuzzReadExecOptions: options that are accepted are valid, their line is
// JSON, and they survive a round trip.
func FuzzReadExecOptions(f *testing.F) {
	f.Add([]byte(`{"command":["hostname"]}` + "\n"))
	f.Add([]byte(`{"command":["sh"],"tty":true,"stdin":true,"size":{"width":1,"height":1},"env":["A=b"],"workingDir":"/"}` + "\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		o, line, err := ReadExecOptions(bufio.NewReader(bytes.NewReader(body)))
		if err != nil {
			return
		}
		if !json.Valid(line) {
			t.Fatalf("accepted line is not JSON: %q", line)
		}
		if errs := ValidateExecOptions(o); len(errs) > 0 {
			t.Fatalf("accepted invalid options %+v: %v", o, errs)
		}
		js, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		back, _, err := ReadExecOptions(bufio.NewReader(bytes.NewReader(append(js, '\n'))))
		if err != nil {
			t.Fatalf("accepted options do not round-trip: %v\n%s", err, js)
		}
		if len(back.Command) != len(o.Command) {
			t.Fatalf("round trip changed the command: %q -> %q", o.Command, back.Command)
		}
	})
}
