package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/api/types"
)

// testLog opens a container log in a new directory; the test acts as the
// container through the pipes' writing ends.
func testLog(t *testing.T, dir string, maxBytes int64, maxFiles int) (*containerLog, *os.File, *os.File) {
	t.Helper()
	l, err := openContainerLog(dir, maxBytes, maxFiles, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.stop(false) })
	stdout, stderr, err := l.stdio()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdout.Close(); stderr.Close() })
	return l, stdout, stderr
}

var all = types.LogOptions{TailLines: -1}

// readLog reads the log to its end as opts say.
func readLog(t *testing.T, l *containerLog, opts types.LogOptions) string {
	t.Helper()
	rc, err := l.read(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitLog waits until the whole log reads as want.
func waitLog(t *testing.T, l *containerLog, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := readLog(t, l, all)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log reads\n%q\nwant\n%q", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func write(t *testing.T, f *os.File, s string) {
	t.Helper()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// TestLogRecordsTimeAndStream: each line of output is one entry with the
// time it was read and the stream it came on, and reads back as written.
func TestLogRecordsTimeAndStream(t *testing.T) {
	dir := t.TempDir()
	before := time.Now()
	l, stdout, stderr := testLog(t, dir, DefaultMaxLogBytes, DefaultMaxLogFiles)
	write(t, stdout, "one\n\ntwo\n")
	waitLog(t, l, "one\n\ntwo\n")
	write(t, stderr, "oops\n")
	waitLog(t, l, "one\n\ntwo\noops\n")
	after := time.Now()

	data, err := os.ReadFile(filepath.Join(dir, logName))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	want := []struct{ stream, text string }{{"stdout", "one"}, {"stdout", ""}, {"stdout", "two"}, {"stderr", "oops"}}
	if len(lines) != len(want) {
		t.Fatalf("log file has %d lines, want %d:\n%s", len(lines), len(want), data)
	}
	for i, line := range lines {
		e, ok := parseEntry([]byte(line))
		if !ok {
			t.Fatalf("line %d %q is not an entry", i, line)
		}
		ts := e.at
		if e.stream != want[i].stream || string(e.text) != want[i].text || e.partial || ts.Before(before) || ts.After(after) {
			t.Errorf("line %d: %q: want %s %q at %v-%v", i, line, want[i].stream, want[i].text, before, after)
		}
		if len(e.stamp) != len("2006-01-02T15:04:05.000000000Z") {
			t.Errorf("line %d: time %q is not fixed width", i, e.stamp)
		}
	}

	got := readLog(t, l, types.LogOptions{TailLines: -1, Timestamps: true})
	for i, line := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		stamp, text, _ := strings.Cut(line, " ")
		if _, err := time.Parse(time.RFC3339Nano, stamp); err != nil || text != want[i].text {
			t.Errorf("with timestamps, line %d is %q", i, line)
		}
	}
}

// TestLogPartialLines: text without a newline is written after a while
// (as a part), a line longer than an entry in pieces, and both read back
// as the program wrote them, with one timestamp per line.
func TestLogPartialLines(t *testing.T) {
	dir := t.TempDir()
	l, stdout, _ := testLog(t, dir, DefaultMaxLogBytes, DefaultMaxLogFiles)
	write(t, stdout, "continue? ")
	start := time.Now()
	waitLog(t, l, "continue? ")
	if d := time.Since(start); d < partialFlushDelay/2 {
		t.Errorf("a part of a line was written after %v, before it waited %v for its end", d, partialFlushDelay)
	}
	write(t, stdout, "yes\n")
	waitLog(t, l, "continue? yes\n")

	long := strings.Repeat("0123456789", 4000) // 40,000 bytes: 3 entries
	write(t, stdout, long+"\nafter\n")
	waitLog(t, l, "continue? yes\n"+long+"\nafter\n")
	data, _ := os.ReadFile(filepath.Join(dir, logName))
	var tags []string
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		e, _ := parseEntry([]byte(line))
		if len(e.text) > maxEntryText {
			t.Errorf("an entry holds %d bytes of text, more than %d", len(e.text), maxEntryText)
		}
		tags = append(tags, map[bool]string{true: "P", false: "F"}[e.partial])
	}
	if got := strings.Join(tags, ""); got != "PFPPFF" {
		t.Errorf("entries %s, want PFPPFF (part, end; 2 parts, end; a line)", got)
	}
	got := readLog(t, l, types.LogOptions{TailLines: -1, Timestamps: true})
	if n := strings.Count(got, "Z "); n != 3 {
		t.Errorf("%d timestamps for 3 lines:\n%.300s", n, got)
	}
	if got := readLog(t, l, types.LogOptions{TailLines: 1}); got != "after\n" {
		t.Errorf("tail 1: %q", got)
	}
	if got := readLog(t, l, types.LogOptions{TailLines: 2}); got != long+"\nafter\n" {
		t.Errorf("tail 2 is not the long line (in parts) and the last: %.100q", got)
	}
}

// numbered writes lines "line <from>" to "line <to>" one write each and
// returns them as they should read.
func numbered(t *testing.T, f *os.File, from, to int) string {
	t.Helper()
	var b strings.Builder
	for i := from; i <= to; i++ {
		s := fmt.Sprintf("line %d %s\n", i, strings.Repeat("x", 40))
		write(t, f, s)
		b.WriteString(s)
	}
	return b.String()
}

// TestLogRotation: past MaxLogBytes the log moves to container.log.1 (and
// .1 to .2), the oldest is dropped, and tail, since and a full read see
// one sequence across the files.
func TestLogRotation(t *testing.T) {
	dir := t.TempDir()
	const maxBytes = 2048
	l, stdout, _ := testLog(t, dir, maxBytes, 3)
	all1 := numbered(t, stdout, 1, 200)
	deadline := time.Now().Add(10 * time.Second)
	var got string
	for !strings.HasSuffix(got, "line 200 "+strings.Repeat("x", 40)+"\n") {
		if time.Now().After(deadline) {
			t.Fatalf("the last line did not arrive:\n%s", got)
		}
		time.Sleep(10 * time.Millisecond)
		got = readLog(t, l, all)
	}
	if !strings.HasSuffix(all1, got) || len(got) >= len(all1) {
		t.Fatalf("a full read after rotation is not the newest part of the output:\n%s", got)
	}
	var total int64
	for _, name := range []string{logName, logName + ".1", logName + ".2"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("after rotations: %v", err)
		}
		if st.Size() > maxBytes {
			t.Errorf("%s has %d bytes, more than %d", name, st.Size(), maxBytes)
		}
		total += st.Size()
	}
	if _, err := os.Stat(filepath.Join(dir, logName+".3")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("container.log.3 exists with 3 files kept: %v", err)
	}
	// A file past the kept ones (left by an agent that kept more) is not
	// read: the log is the files the rotation keeps.
	stale := appendEntry(nil, time.Now(), streamStdout, false, []byte("stale"))
	if err := os.WriteFile(filepath.Join(dir, logName+".5"), stale, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := readLog(t, l, all); strings.Contains(got, "stale") {
		t.Errorf("a file past the 3 kept is read:\n%s", got)
	}
	// The last 40 lines span container.log and container.log.1 (a file
	// holds about 25 lines).
	want := strings.SplitAfter(all1, "\n")
	tail := strings.Join(want[len(want)-41:], "")
	if got := readLog(t, l, types.LogOptions{TailLines: 40}); got != tail {
		t.Errorf("tail 40 across files:\n%s\nwant\n%s", got, tail)
	}
	if got := readLog(t, l, types.LogOptions{TailLines: 0}); got != "" {
		t.Errorf("tail 0: %q", got)
	}
	if got := readLog(t, l, types.LogOptions{TailLines: 10000}); got != readLog(t, l, all) {
		t.Errorf("tail beyond the log is not the whole log")
	}
}

// TestLogSince: since drops what was written before it, also with tail.
func TestLogSince(t *testing.T) {
	l, stdout, _ := testLog(t, t.TempDir(), DefaultMaxLogBytes, DefaultMaxLogFiles)
	write(t, stdout, "old 1\nold 2\n")
	waitLog(t, l, "old 1\nold 2\n")
	time.Sleep(20 * time.Millisecond)
	since := time.Now()
	write(t, stdout, "new 1\nnew 2\nnew 3\n")
	waitLog(t, l, "old 1\nold 2\nnew 1\nnew 2\nnew 3\n")
	if got := readLog(t, l, types.LogOptions{TailLines: -1, Since: since}); got != "new 1\nnew 2\nnew 3\n" {
		t.Errorf("since: %q", got)
	}
	if got := readLog(t, l, types.LogOptions{TailLines: 2, Since: since}); got != "new 2\nnew 3\n" {
		t.Errorf("since and tail 2: %q", got)
	}
	if got := readLog(t, l, types.LogOptions{TailLines: 4, Since: since}); got != "new 1\nnew 2\nnew 3\n" {
		t.Errorf("since and tail 4: %q", got)
	}
}

// lineWaiter reads a followed stream line by line.
type lineWaiter struct {
	t     *testing.T
	lines chan string
}

func follow(t *testing.T, l *containerLog, opts types.LogOptions) (*lineWaiter, chan error, io.Closer) {
	t.Helper()
	opts.Follow = true
	rc, err := l.read(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	w := &lineWaiter{t: t, lines: make(chan string, 1000)}
	done := make(chan error, 1)
	go func() {
		defer close(w.lines)
		var buf bytes.Buffer
		b := make([]byte, 4096)
		for {
			n, err := rc.Read(b)
			buf.Write(b[:n])
			for {
				line, rest, ok := strings.Cut(buf.String(), "\n")
				if !ok {
					break
				}
				w.lines <- line
				buf.Reset()
				buf.WriteString(rest)
			}
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				done <- err
				return
			}
		}
	}()
	t.Cleanup(func() { rc.Close() })
	return w, done, rc
}

func (w *lineWaiter) want(lines ...string) {
	w.t.Helper()
	for _, want := range lines {
		select {
		case got, ok := <-w.lines:
			if !ok {
				w.t.Fatalf("the stream ended; want %q", want)
			}
			if got != want {
				w.t.Fatalf("followed line %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			w.t.Fatalf("no line within 10 s; want %q", want)
		}
	}
}

// TestLogFollow: a follower gets the tail, then every new line in order,
// also across rotations, and its stream ends when the log is closed
// (the container removed) or when it closes it.
func TestLogFollow(t *testing.T) {
	// Files of 3 lines of the burst below, all kept.
	l, stdout, _ := testLog(t, t.TempDir(), 1500, 20)
	write(t, stdout, "a\nb\nc\n")
	waitLog(t, l, "a\nb\nc\n")
	w, done, _ := follow(t, l, types.LogOptions{TailLines: 1})
	w.want("c")
	write(t, stdout, "d\n")
	w.want("d")
	// A burst that rotates the log 10 times, faster than the follower
	// reads: it must go through the rotated files in order and lose none.
	var want []string
	for i := range 30 {
		s := fmt.Sprintf("%d %s", i, strings.Repeat("y", 400))
		want = append(want, s)
		write(t, stdout, s+"\n")
		if i%7 == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	w.want(want...)

	// A second follower, closed by its reader: its goroutine ends.
	_, done2, rc2 := follow(t, l, types.LogOptions{TailLines: 0})
	rc2.Close()
	select {
	case <-done2:
	case <-time.After(5 * time.Second):
		t.Fatal("a closed follower did not end")
	}

	write(t, stdout, "last words\n")
	l.stop(true)
	w.want("last words")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the stream ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the follower did not end when the log was closed")
	}
}

// TestLogStopDrains: output written just before the container went away
// is in the log once stop(true) returns.
func TestLogStopDrains(t *testing.T) {
	dir := t.TempDir()
	l, stdout, stderr := testLog(t, dir, DefaultMaxLogBytes, DefaultMaxLogFiles)
	want := numbered(t, stdout, 1, 500)
	write(t, stderr, "no newline at the end")
	stdout.Close()
	stderr.Close()
	l.stop(true)
	l2, err := openContainerLog(dir, DefaultMaxLogBytes, DefaultMaxLogFiles, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer l2.stop(false)
	if got := readLog(t, l2, all); got != want+"no newline at the end" {
		t.Fatalf("after a drained stop the log has %d bytes, want %d", len(got), len(want)+21)
	}
}

// TestLogSurvivesAgentRestart: while no agent reads, the container's
// output waits in the pipe (up to its enlarged buffer, without blocking
// the container), and the next agent, opening the same directory, reads
// it into the same log.
func TestLogSurvivesAgentRestart(t *testing.T) {
	dir := t.TempDir()
	l1, stdout, _ := testLog(t, dir, DefaultMaxLogBytes, DefaultMaxLogFiles)
	write(t, stdout, "before\n")
	waitLog(t, l1, "before\n")
	l1.stop(false) // the agent goes; the container (stdout) stays

	// 512 KiB while nobody reads: more than a pipe's default 64 KiB.
	written := make(chan string, 1)
	go func() {
		var b strings.Builder
		for i := range 4096 {
			s := fmt.Sprintf("while away %04d %s\n", i, strings.Repeat("z", 100))
			if _, err := stdout.WriteString(s); err != nil {
				break
			}
			b.WriteString(s)
		}
		written <- b.String()
	}()
	var away string
	select {
	case away = <-written:
	case <-time.After(10 * time.Second):
		t.Fatal("the container blocked writing 512 KiB while no agent read: the pipe was not enlarged")
	}
	write(t, stdout, "partial ")

	l2, err := openContainerLog(dir, DefaultMaxLogBytes, DefaultMaxLogFiles, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer l2.stop(false)
	write(t, stdout, "line\n")
	waitLog(t, l2, "before\n"+away+"partial line\n")
}

// TestRepairTail: a line an agent was killed in the middle of writing is
// cut, so the next entry starts on a line of its own.
func TestRepairTail(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, logName)
	good := string(appendEntry(nil, time.Now(), streamStdout, false, []byte("complete")))
	if err := os.WriteFile(path, []byte(good+"2026-12-03T05:01:02.1234"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, stdout, _ := testLog(t, dir, DefaultMaxLogBytes, DefaultMaxLogFiles)
	write(t, stdout, "next\n")
	waitLog(t, l, "complete\nnext\n")
}

// TestLogsOfUnknownInstance: an instance this agent does not run is an
// error that says so.
func TestLogsOfUnknownInstance(t *testing.T) {
	a := &Agent{cfg: Config{NodeName: "n1"}, sups: map[string]*supervisor{}}
	inst := &types.Instance{ObjectMeta: types.ObjectMeta{Namespace: "default", Name: "web-1", UID: "u1"}}
	inst.Spec.NodeName = "n2"
	if _, err := a.Logs(context.Background(), inst, all); err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), `bound to node "n2"`) {
		t.Errorf("instance on another node: %v", err)
	}
	inst.Spec.NodeName = "n1"
	if _, err := a.Logs(context.Background(), inst, all); err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "no log on node n1 yet") {
		t.Errorf("instance not started: %v", err)
	}
}
