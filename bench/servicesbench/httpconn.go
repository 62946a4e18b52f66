package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// The requests the bench sends, written out once: the client is a few
// writes and reads per request, the same for every mode, so that what
// differs between modes is the path between client and server. "/healthz"
// is the built-in image's smallest answer ("ok\n") and is not in its
// access log (a write to the container's log per request would weigh on
// every figure alike and blur the differences).
var (
	reqSmall       = []byte("GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
	reqSmallClose  = []byte("GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
	reqReportClose = []byte("GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
)

func reqBytes(n int64) []byte {
	return []byte("GET /bytes?n=" + strconv.FormatInt(n, 10) + " HTTP/1.1\r\nHost: bench\r\n\r\n")
}

// ioTimeout bounds every read and write: a stuck connection fails the
// figure instead of hanging the run.
const ioTimeout = 10 * time.Second

// httpConn is one HTTP/1.1 client connection.
type httpConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialHTTP(ctx context.Context, addr string) (*httpConn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// Large enough that a bulk body is read in few system calls.
	return &httpConn{c: c, r: bufio.NewReaderSize(c, 256<<10)}, nil
}

func (h *httpConn) close() { h.c.Close() }

// do sends req and reads the answer, which must be 200; it discards the
// body and returns its length.
func (h *httpConn) do(req []byte) (int64, error) {
	n, err := h.head(req)
	if err != nil {
		return 0, err
	}
	if _, err := h.r.Discard(int(n)); err != nil {
		return 0, fmt.Errorf("read a %d-byte body from %s: %w", n, h.c.RemoteAddr(), err)
	}
	return n, nil
}

// getBody sends req and returns the body of its 200 answer.
func (h *httpConn) getBody(req []byte) ([]byte, error) {
	n, err := h.head(req)
	if err != nil {
		return nil, err
	}
	if n > 1<<20 {
		return nil, fmt.Errorf("%s answered with a %d-byte body: more than expected", h.c.RemoteAddr(), n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(h.r, body); err != nil {
		return nil, fmt.Errorf("read the body from %s: %w", h.c.RemoteAddr(), err)
	}
	return body, nil
}

// waitClose reads until the server closes the connection (it answered a
// "Connection: close" request), then closes this side. The server closing
// first keeps TIME_WAIT on its side, so that the client's ports are free
// again at once, as they are for a client that talks to many servers.
func (h *httpConn) waitClose() error {
	defer h.c.Close()
	var b [1]byte
	if n, err := h.r.Read(b[:]); err != io.EOF {
		return fmt.Errorf("%s did not close the connection after a Connection: close answer (read %d bytes, %v)", h.c.RemoteAddr(), n, err)
	}
	return nil
}

// head writes req and reads the status line and headers of the answer,
// which must be 200 with a Content-Length; it returns that length.
func (h *httpConn) head(req []byte) (int64, error) {
	_ = h.c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := h.c.Write(req); err != nil {
		return 0, fmt.Errorf("send a request to %s: %w", h.c.RemoteAddr(), err)
	}
	line, err := h.r.ReadSlice('\n')
	if err != nil {
		return 0, fmt.Errorf("read the answer from %s: %w", h.c.RemoteAddr(), err)
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return 0, fmt.Errorf("%s answered %q, want 200", h.c.RemoteAddr(), bytes.TrimSpace(line))
	}
	length := int64(-1)
	for {
		line, err := h.r.ReadSlice('\n')
		if err != nil {
			return 0, fmt.Errorf("read the answer's headers from %s: %w", h.c.RemoteAddr(), err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(name, []byte("Content-Length")) {
			if length, err = strconv.ParseInt(string(bytes.TrimSpace(value)), 10, 64); err != nil || length < 0 {
				return 0, fmt.Errorf("%s answered Content-Length %q", h.c.RemoteAddr(), value)
			}
		}
	}
	if length < 0 {
		return 0, fmt.Errorf("%s answered without a Content-Length", h.c.RemoteAddr())
	}
	return length, nil
}
