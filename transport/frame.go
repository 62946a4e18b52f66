package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Frame types. Every frame is a 5-byte header — the type and the body
// length as a big-endian uint32 — followed by the body.
const (
	// FrameCall opens a call: body = kind (1 byte), method length (1 byte),
	// method, payload. It is the first frame the caller sends on a stream.
	FrameCall byte = 1
	// FrameMessage carries one request or response message.
	FrameMessage byte = 2
	// FrameError ends a call with the handler's error: body = code
	// (big-endian uint32), message.
	FrameError byte = 3
)

// Call kinds in a FrameCall.
const (
	// KindUnary is one request, one response; the caller then closes its side.
	KindUnary byte = 0
	// KindStream lets both sides send any number of messages; closing the
	// send side (the stream's FIN) ends each direction.
	KindStream byte = 1
)

const (
	frameHeaderLen = 5
	// DefaultMaxFrameSize bounds a frame body unless configured otherwise.
	DefaultMaxFrameSize = 4 << 20
	maxMethodLen        = 255
)

// Code classifies an error carried in a FrameError.
type Code uint32

// Codes the transport itself sends. Handlers may return a *RemoteError with
// their own codes; codes from 1000 up are left to services.
const (
	CodeUnknown       Code = 1 // a handler returned an error that is not a *RemoteError
	CodeFrameTooLarge Code = 2 // a frame exceeded the receiver's MaxFrameSize
	CodeUnimplemented Code = 3 // the service has no handler for this kind of call
	CodeBadFrame      Code = 4 // the stream did not follow the framing rules
)

// RemoteError is an error the peer sent in an error frame. Handlers return
// one to choose the code; any other error is sent with CodeUnknown.
type RemoteError struct {
	Code    Code
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("%s (error code %d from peer)", e.Message, e.Code)
}

// FrameTooLargeError reports a frame larger than the configured maximum,
// whether about to be sent or announced by the peer.
type FrameTooLargeError struct {
	Size, Max int
}

func (e *FrameTooLargeError) Error() string {
	return fmt.Sprintf("frame of %d bytes exceeds the maximum frame size of %d bytes: "+
		"split the data into messages of a stream, or raise MaxFrameSize on both ends", e.Size, e.Max)
}

// Framer reads and writes frames on one stream (or any byte stream: the
// benchmark runs the same framing over TCP + TLS). It is not safe for
// concurrent use by several writers or several readers.
type Framer struct {
	r   io.Reader
	w   io.Writer
	max int
	hdr [frameHeaderLen]byte
}

// NewFramer returns a Framer over r and w that refuses frames larger than
// maxFrameSize (DefaultMaxFrameSize if 0).
func NewFramer(r io.Reader, w io.Writer, maxFrameSize int) *Framer {
	if maxFrameSize <= 0 {
		maxFrameSize = DefaultMaxFrameSize
	}
	return &Framer{r: r, w: w, max: maxFrameSize}
}

// writeBufs recycles the buffers frames are assembled in: header and body go
// out in one Write, which on QUIC means one STREAM frame instead of two.
var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

const maxPooledBuf = 256 << 10

func (f *Framer) write(typ byte, parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if n > f.max {
		return &FrameTooLargeError{Size: n, Max: f.max}
	}
	bp := writeBufs.Get().(*[]byte)
	b := append((*bp)[:0], typ, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(b[1:], uint32(n))
	for _, p := range parts {
		b = append(b, p...)
	}
	_, err := f.w.Write(b)
	if cap(b) <= maxPooledBuf {
		*bp = b
		writeBufs.Put(bp)
	}
	return err
}

// WriteCall writes a call frame.
func (f *Framer) WriteCall(kind byte, method string, payload []byte) error {
	if len(method) == 0 || len(method) > maxMethodLen {
		return fmt.Errorf("method name %q must be 1 to %d bytes", method, maxMethodLen)
	}
	head := [2]byte{kind, byte(len(method))}
	return f.write(FrameCall, head[:], []byte(method), payload)
}

// WriteMessage writes a message frame.
func (f *Framer) WriteMessage(p []byte) error { return f.write(FrameMessage, p) }

// WriteError writes an error frame.
func (f *Framer) WriteError(code Code, msg string) error {
	var c [4]byte
	binary.BigEndian.PutUint32(c[:], uint32(code))
	if len(msg)+4 > f.max {
		msg = msg[:f.max-4]
	}
	return f.write(FrameError, c[:], []byte(msg))
}

// ReadFrame reads the next frame and returns its type and a freshly
// allocated body. It returns io.EOF when the stream ends cleanly between
// frames, and a *FrameTooLargeError (without reading the body) when the
// header announces more than the maximum.
func (f *Framer) ReadFrame() (typ byte, body []byte, err error) {
	if _, err := io.ReadFull(f.r, f.hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, fmt.Errorf("read frame header: %w", err)
		}
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(f.hdr[1:])
	if uint64(n) > uint64(f.max) {
		return 0, nil, &FrameTooLargeError{Size: int(n), Max: f.max}
	}
	body = make([]byte, n)
	if _, err := io.ReadFull(f.r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, fmt.Errorf("read frame body: %w", err)
	}
	return f.hdr[0], body, nil
}

// ParseCall splits the body of a call frame.
func ParseCall(body []byte) (kind byte, method string, payload []byte, err error) {
	if len(body) < 2 || len(body) < 2+int(body[1]) || body[1] == 0 {
		return 0, "", nil, &RemoteError{Code: CodeBadFrame, Message: "malformed call frame"}
	}
	end := 2 + int(body[1])
	return body[0], string(body[2:end]), body[end:], nil
}

// ParseError turns the body of an error frame into a *RemoteError.
func ParseError(body []byte) *RemoteError {
	if len(body) < 4 {
		return &RemoteError{Code: CodeBadFrame, Message: "malformed error frame"}
	}
	return &RemoteError{Code: Code(binary.BigEndian.Uint32(body)), Message: string(body[4:])}
}

// ReadResponse reads one message or error frame, as a caller does for the
// response of a unary call or the next message of a stream.
func (f *Framer) ReadResponse() ([]byte, error) {
	typ, body, err := f.ReadFrame()
	if err != nil {
		return nil, err
	}
	switch typ {
	case FrameMessage:
		return body, nil
	case FrameError:
		return nil, ParseError(body)
	default:
		return nil, &RemoteError{Code: CodeBadFrame, Message: fmt.Sprintf("unexpected frame type %d", typ)}
	}
}

// errorFrame returns the code and message to send for a handler's error.
func errorFrame(err error) (Code, string) {
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Code, re.Message
	}
	var tl *FrameTooLargeError
	if errors.As(err, &tl) {
		return CodeFrameTooLarge, err.Error()
	}
	return CodeUnknown, err.Error()
}
