package agent

import (
	"bytes"
	"time"
)

// A container log file holds one entry per line, in the format of the
// Kubernetes CRI log files (which fluent-bit, vector and promtail read
// as they are):
//
//	2026-12-03T05:01:02.123456789Z stdout F GET / from 10.0.0.3:51000
//	<time, UTC, fixed width>       <stream> <tag> <text>
//
// The tag is F for a full line (the program wrote a newline, dropped
// here) or P for part of one: a line longer than maxEntryText, or text
// without a newline for partialFlushDelay, is written in pieces, and the
// piece that ends the line is the F. The text is the program's bytes as
// written; it never holds a newline.
const (
	logTimeLayout = "2006-01-02T15:04:05.000000000Z07:00"
	streamStdout  = "stdout"
	streamStderr  = "stderr"
)

// appendEntry appends one log line (with its newline) to b.
func appendEntry(b []byte, t time.Time, stream string, partial bool, text []byte) []byte {
	b = t.UTC().AppendFormat(b, logTimeLayout)
	b = append(b, ' ')
	b = append(b, stream...)
	if partial {
		b = append(b, " P "...)
	} else {
		b = append(b, " F "...)
	}
	b = append(b, text...)
	return append(b, '\n')
}

// logEntry is one line of a log file, parsed. Its slices point into the
// line.
type logEntry struct {
	stamp   []byte    // the time as written
	at      time.Time // stamp parsed: when the entry was read from the container
	stream  string    // streamStdout or streamStderr
	partial bool
	text    []byte
}

// parseEntry parses one line of a log file (without its newline). A line
// not in the format (a log written by something else) is not an entry.
func parseEntry(line []byte) (logEntry, bool) {
	var e logEntry
	sp := bytes.IndexByte(line, ' ')
	if sp < len("2006-01-02T15:04:05Z") || sp > len(logTimeLayout) {
		return e, false
	}
	e.stamp, line = line[:sp], line[sp+1:]
	switch {
	case bytes.HasPrefix(line, []byte(streamStdout+" ")):
		e.stream, line = streamStdout, line[len(streamStdout)+1:]
	case bytes.HasPrefix(line, []byte(streamStderr+" ")):
		e.stream, line = streamStderr, line[len(streamStderr)+1:]
	default:
		return e, false
	}
	if len(line) < 2 || line[1] != ' ' || (line[0] != 'F' && line[0] != 'P') {
		return e, false
	}
	e.partial, e.text = line[0] == 'P', line[2:]
	var err error
	if e.at, err = time.Parse(time.RFC3339Nano, string(e.stamp)); err != nil {
		return e, false
	}
	return e, true
}

// endsLine reports whether a log file line ends a line of output: a full
// entry, or a line not in the format (taken whole).
func endsLine(line []byte) bool {
	e, ok := parseEntry(line)
	return !ok || !e.partial
}
