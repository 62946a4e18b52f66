package types

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// An exec (POST .../instances/{name}/exec) is one HTTP/2 or HTTP/3
// request whose body and answer are streams, full duplex, as Kubernetes'
// pods/exec is over SPDY or WebSocket, but without an upgrade:
//
//	request body  one line of JSON: the ExecOptions, then frames:
//	              stdin, resize, close-stdin
//	answer body   frames: stdout, stderr, then one exit frame, last
//
// A frame is a 1-byte stream, a 4-byte big-endian payload length and the
// payload (at most MaxExecFrame bytes).

// ExecStream says what a frame of an exec carries.
type ExecStream byte

// The streams of an exec's frames.
const (
	StreamStdin      ExecStream = 0 // bytes for the process's input
	StreamStdout     ExecStream = 1 // bytes the process wrote (and its terminal's, with tty)
	StreamStderr     ExecStream = 2 // bytes the process wrote to stderr (not with tty)
	StreamResize     ExecStream = 3 // JSON TerminalSize: the terminal's new size
	StreamExit       ExecStream = 4 // JSON ExecResult: the last frame of the answer
	StreamCloseStdin ExecStream = 5 // empty: the process's input ends
)

var streamNames = [...]string{"stdin", "stdout", "stderr", "resize", "exit", "close-stdin"}

func (s ExecStream) String() string {
	if int(s) < len(streamNames) {
		return streamNames[s]
	}
	return fmt.Sprintf("stream %d", s)
}

// Bounds of an exec's stream.
const (
	// MaxExecFrame bounds a frame's payload: small enough that the reader
	// needs only a small buffer, big enough that output is not chopped
	// into many frames (a pipe's default capacity is 64 KiB).
	MaxExecFrame = 32 << 10
	// MaxExecOptions bounds the options line: MaxExecBytes of command and
	// environment, escaped as JSON.
	MaxExecOptions = 8 * MaxExecBytes
	// ExecContentType is the media type of an exec's request and answer.
	ExecContentType = "application/vnd.nexus.exec"
)

const execFrameHeader = 5

// AppendExecFrame appends a frame of stream s to dst; payload must not be
// longer than MaxExecFrame.
func AppendExecFrame(dst []byte, s ExecStream, payload []byte) []byte {
	dst = append(dst, byte(s))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	return append(dst, payload...)
}

// ExecFrameReader reads the frames of one direction of an exec.
type ExecFrameReader struct {
	r   io.Reader
	buf []byte
}

// NewExecFrameReader reads frames from r.
func NewExecFrameReader(r io.Reader) *ExecFrameReader { return &ExecFrameReader{r: r} }

// ErrExecFrame is a frame that breaks the exec stream's rules.
var ErrExecFrame = errors.New("malformed exec frame")

// Next returns the next frame. Its payload is valid until the next call.
// At a clean end between frames it returns io.EOF; inside one,
// io.ErrUnexpectedEOF; a frame of an unknown stream, longer than
// MaxExecFrame, or a close-stdin with a payload is an ErrExecFrame.
func (fr *ExecFrameReader) Next() (ExecStream, []byte, error) {
	var hdr [execFrameHeader]byte
	if _, err := io.ReadFull(fr.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	s, n := ExecStream(hdr[0]), binary.BigEndian.Uint32(hdr[1:])
	switch {
	case int(s) >= len(streamNames):
		return 0, nil, fmt.Errorf("%w: unknown stream %d", ErrExecFrame, s)
	case n > MaxExecFrame:
		return 0, nil, fmt.Errorf("%w: a %s frame of %d bytes, more than the %d allowed", ErrExecFrame, s, n, MaxExecFrame)
	case s == StreamCloseStdin && n != 0:
		return 0, nil, fmt.Errorf("%w: a close-stdin frame with a payload", ErrExecFrame)
	}
	if cap(fr.buf) < int(n) {
		fr.buf = make([]byte, n, max(n, 4<<10))
	}
	p := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return s, p, nil
}

// ReadExecOptions reads the options line that starts an exec's request
// body, strictly decoded and validated. It returns the line as JSON (for
// the audit record).
func ReadExecOptions(r *bufio.Reader) (*ExecOptions, []byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > MaxExecOptions {
			return nil, nil, &DecodeError{Msg: fmt.Sprintf("the exec options line is longer than %d bytes", MaxExecOptions)}
		}
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			if len(line) == 0 {
				return nil, nil, &DecodeError{Msg: "the request body is empty: it starts with the exec options as one line of JSON, e.g. {\"command\":[\"hostname\"]}"}
			}
			return nil, nil, &DecodeError{Msg: "the exec options line does not end with a newline"}
		}
		return nil, nil, err
	}
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return nil, nil, &DecodeError{Msg: "the request body must start with the exec options as one line of JSON, e.g. {\"command\":[\"hostname\"]}"}
	}
	var o ExecOptions
	if err := decodeStrict(line, &o); err != nil {
		return nil, nil, err
	}
	if errs := ValidateExecOptions(&o); len(errs) > 0 {
		return nil, nil, &DecodeError{Msg: "invalid exec options", Fields: errs}
	}
	return &o, line, nil
}

// DecodeTerminalSize reads a resize frame's payload.
func DecodeTerminalSize(p []byte) (TerminalSize, error) {
	var ts TerminalSize
	if err := decodeStrict(p, &ts); err != nil {
		return ts, fmt.Errorf("resize frame: %w", err)
	}
	if ts.Width == 0 || ts.Height == 0 {
		return ts, fmt.Errorf("resize frame: %dx%d: width and height must be at least 1", ts.Width, ts.Height)
	}
	return ts, nil
}
