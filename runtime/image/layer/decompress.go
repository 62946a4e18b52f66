package layer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// zstdMaxWindow bounds the memory a zstd frame may ask for. 128 MiB covers
// every level up to --ultra -22 and --long (windowLog 27); larger windows
// only come from explicit --long=28..31, which no image tool uses.
const zstdMaxWindow = 128 << 20

// Magic numbers of the formats a layer may come in.
var (
	magicGzip  = []byte{0x1f, 0x8b}
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicBzip2 = []byte("1AY&SY") // after "BZh" and a block size digit: a tar name may start with "BZh"
	magicXz    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
)

// stream is the uncompressed tar stream of a layer.
type stream struct {
	io.Reader
	format string
	close  func()
}

// Close stops any decoder goroutines.
func (s *stream) Close() error {
	s.close()
	return nil
}

// Decompress returns the uncompressed stream of r, a tar that may be gzip-
// or zstd-compressed: the format is told by r's first bytes, not by the
// media type a source claims, and a zstd frame may ask for no more than a
// 128 MiB window. Read errors name the format. Close the stream when done.
//
// Apply decompresses by itself; Decompress is for a caller that needs the
// uncompressed bytes too (to hash them into a diffID, or to spool an
// archive).
func Decompress(r io.Reader) (io.ReadCloser, error) {
	return decompress(bufio.NewReaderSize(r, 256<<10))
}

// openStream detects the compression of r from its first bytes and returns
// the uncompressed stream, refusing an empty layer and the formats OCI does
// not allow. Close it to stop any decoder goroutines.
func openStream(r io.Reader) (*stream, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	head, err := br.Peek(10)
	if len(head) == 0 {
		if err == io.EOF {
			return nil, errors.New("the layer is empty (0 bytes); a layer is a tar stream, possibly gzip- or zstd-compressed")
		}
		return nil, fmt.Errorf("read layer: %w", err)
	}
	if isBzip2(head) || bytes.HasPrefix(head, magicXz) {
		return nil, errors.New("the layer is bzip2- or xz-compressed; OCI layers are tar, tar+gzip or tar+zstd: recompress it with gzip or zstd")
	}
	return decompress(br)
}

func decompress(br *bufio.Reader) (*stream, error) {
	head, _ := br.Peek(len(magicZstd))
	switch {
	case bytes.HasPrefix(head, magicGzip):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("layer looks gzip-compressed but its header is unreadable: %w", err)
		}
		return &stream{Reader: &annotated{r: zr, format: "gzip"}, format: "gzip", close: func() {}}, nil
	case bytes.HasPrefix(head, magicZstd):
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return nil, fmt.Errorf("layer looks zstd-compressed but its header is unreadable: %w", err)
		}
		return &stream{Reader: &annotated{r: zr, format: "zstd"}, format: "zstd", close: zr.Close}, nil
	}
	return &stream{Reader: br, format: "tar", close: func() {}}, nil
}

func isBzip2(head []byte) bool {
	return len(head) == 10 && string(head[:3]) == "BZh" && head[3] >= '1' && head[3] <= '9' && bytes.Equal(head[4:], magicBzip2)
}

// annotated names the compression format in read errors, so that "unexpected
// EOF" reads as a truncated gzip stream rather than a tar problem.
type annotated struct {
	r      io.Reader
	format string
}

func (a *annotated) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%s stream: %w", a.format, err)
	}
	return n, err
}

// progressReader counts the bytes read from the caller's reader and reports
// them at most every progressEvery.
type progressReader struct {
	r    io.Reader
	n    int64
	fn   func(int64)
	last time.Time
}

const progressEvery = 100 * time.Millisecond

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.fn != nil && n > 0 {
		if now := time.Now(); now.Sub(p.last) >= progressEvery {
			p.last = now
			p.fn(p.n)
		}
	}
	return n, err
}

// copyBuffers are the 1 MiB buffers file contents are copied through; one
// per running Apply or WriteTar.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}
