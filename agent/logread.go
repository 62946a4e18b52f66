package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"nexus.dev/nexus/api/types"
)

// Logs streams the log of inst's container as opts select: the last
// opts.TailLines lines (negative: all) written since opts.Since, across
// the rotated files, each line prefixed with the time it was read when
// opts.Timestamps. The stream ends at the log's end, or with opts.Follow
// goes on with new output until ctx ends, the reader is closed, or the
// Instance leaves this node. It is api.NodeConn's Logs.
//
// An Instance that is not on this node, or whose container this agent
// has not started or adopted yet, is an error that wraps fs.ErrNotExist.
func (a *Agent) Logs(ctx context.Context, inst *types.Instance, opts types.LogOptions) (io.ReadCloser, error) {
	ref := inst.Namespace + "/" + inst.Name
	if inst.Spec.NodeName != a.cfg.NodeName {
		return nil, fmt.Errorf("instance %s is bound to node %q, not to this node (%s): %w", ref, inst.Spec.NodeName, a.cfg.NodeName, fs.ErrNotExist)
	}
	var l *containerLog
	if s := a.supervisor(inst.UID); s != nil {
		l = s.c.output.Load()
	}
	if l == nil {
		return nil, fmt.Errorf("instance %s has no log on node %s yet: its agent has not started its container (or has just restarted); try again in a moment: %w", ref, a.cfg.NodeName, fs.ErrNotExist)
	}
	return l.read(ctx, opts)
}

// read opens the log's files as they are now and streams them from a
// goroutine that ends with the returned reader's Close.
func (l *containerLog) read(ctx context.Context, opts types.LogOptions) (io.ReadCloser, error) {
	files, err := l.openFiles()
	if err != nil {
		return nil, err
	}
	closeFiles := func() {
		for _, f := range files {
			f.Close()
		}
	}
	first, off := 0, int64(0)
	if opts.TailLines >= 0 {
		if first, off, err = tailStart(files, opts.TailLines); err != nil {
			closeFiles()
			return nil, fmt.Errorf("find the last %d lines of %s: %w", opts.TailLines, l.path(0), err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	go func() {
		defer closeFiles()
		err := l.stream(ctx, files, first, off, opts, pw)
		if ctx.Err() != nil {
			err = nil
		}
		pw.CloseWithError(err)
	}()
	return &logReader{PipeReader: pr, cancel: cancel}, nil
}

// logReader is a log stream; Close ends its goroutine.
type logReader struct {
	*io.PipeReader
	cancel context.CancelFunc
}

func (r *logReader) Close() error {
	r.cancel()
	return r.PipeReader.Close()
}

// openFiles opens the kept rotated files, oldest first, and
// container.log, under the lock rotation takes, so that they are one
// consistent set.
func (l *containerLog) openFiles() ([]*os.File, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var files []*os.File
	for i := max(l.maxFiles, 1) - 1; i >= 0; i-- {
		f, err := os.Open(l.path(i))
		if errors.Is(err, fs.ErrNotExist) && i > 0 {
			continue // not rotated that often yet
		}
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

// tailStart finds where the last n lines of output begin in files (oldest
// first): right after the (n+1)-th line end from the end, or at the start
// of the oldest file. Parts of a line (P entries) go with the line they
// begin.
func tailStart(files []*os.File, n int) (int, int64, error) {
	ends := 0
	for i := len(files) - 1; i >= 0; i-- {
		st, err := files[i].Stat()
		if err != nil {
			return 0, 0, err
		}
		found, at := false, int64(0)
		err = scanBack(files[i], st.Size(), func(line []byte, off int64) bool {
			if endsLine(line) {
				if ends++; ends == n+1 {
					found, at = true, off+int64(len(line))+1
					return false
				}
			}
			return true
		})
		if err != nil {
			return 0, 0, err
		}
		if found {
			return i, at, nil
		}
	}
	return 0, 0, nil
}

// stream writes the log's lines to w from files[first] at off, as opts
// say, and with opts.Follow waits for more until ctx ends or the log is
// closed.
func (l *containerLog) stream(ctx context.Context, files []*os.File, first int, off int64, opts types.LogOptions, w io.Writer) error {
	p := &logPrinter{w: bufio.NewWriterSize(w, 32<<10), opts: opts}
	if _, err := files[first].Seek(off, io.SeekStart); err != nil {
		return err
	}
	for _, f := range files[first : len(files)-1] {
		if err := p.printLines(newLineReader(f)); err != nil {
			return err
		}
	}
	cur := files[len(files)-1]
	lr := newLineReader(cur)
	// The caller closes files; stream the files it opens after rotations.
	defer func() {
		if cur != files[len(files)-1] {
			cur.Close()
		}
	}()
	for {
		changed := l.changes()
		if err := p.printLines(lr); err != nil {
			return err
		}
		if !opts.Follow {
			return p.w.Flush()
		}
		if next := l.nextFile(cur); next != nil {
			// Whatever reached the old file before it was rotated.
			if err := p.printLines(lr); err != nil {
				next.Close()
				return err
			}
			if cur != files[len(files)-1] {
				cur.Close()
			}
			cur, lr = next, newLineReader(next)
			continue
		}
		if err := p.w.Flush(); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		case <-l.done:
			if err := p.printLines(lr); err != nil {
				return err
			}
			return p.w.Flush()
		}
	}
}

// nextFile returns the file that follows cur once cur was rotated: the
// one rotated after it, or container.log; nil while cur is container.log.
// A follower that fell so far behind that the files after its own were
// dropped goes on with the oldest kept.
func (l *containerLog) nextFile(cur *os.File) *os.File {
	st, err := cur.Stat()
	if err != nil {
		return nil
	}
	if now, err := os.Stat(l.path(0)); err != nil || os.SameFile(now, st) {
		return nil
	}
	files, err := l.openFiles()
	if err != nil {
		return nil
	}
	next := 0
	for i, f := range files {
		if fst, err := f.Stat(); err == nil && os.SameFile(fst, st) {
			next = i + 1
		}
	}
	for i, f := range files {
		if i != next {
			f.Close()
		}
	}
	if next == len(files) {
		return nil
	}
	return files[next]
}

// logPrinter writes entries as the reader asked for them.
type logPrinter struct {
	w    *bufio.Writer
	opts types.LogOptions
	// midLine: the last entry written was part of a line, so the next
	// continues it (and gets no timestamp).
	midLine bool
}

// printLines prints every complete line lr has now.
func (p *logPrinter) printLines(lr *lineReader) error {
	for {
		line, err := lr.next()
		if errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		if err := p.print(line); err != nil {
			return err
		}
	}
}

func (p *logPrinter) print(line []byte) error {
	e, ok := parseEntry(line)
	if !ok {
		// Not an entry (a log written by something else): shown whole,
		// whatever the time asked for, since it has none.
		p.midLine = false
		p.w.Write(line)
		return p.w.WriteByte('\n')
	}
	if !p.opts.Since.IsZero() && e.at.Before(p.opts.Since) {
		return nil
	}
	if p.opts.Timestamps && !p.midLine {
		p.w.Write(e.stamp)
		p.w.WriteByte(' ')
	}
	p.midLine = e.partial
	_, err := p.w.Write(e.text)
	if !e.partial {
		err = p.w.WriteByte('\n')
	}
	return err
}

// maxLogLine bounds the line a lineReader holds: the agent writes none
// longer than maxEntryText and its header; longer ones (a log written by
// something else) are handed out in pieces.
const maxLogLine = 1 << 20

// lineReader reads complete lines from a file that may still grow: at
// its end, a line without its newline yet stays for the next call.
type lineReader struct {
	r          io.Reader
	buf        []byte
	start, end int
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{r: r, buf: make([]byte, 32<<10)}
}

// next returns the next complete line without its newline (valid until
// the next call), or io.EOF when there is none now.
func (lr *lineReader) next() ([]byte, error) {
	for {
		if i := bytes.IndexByte(lr.buf[lr.start:lr.end], '\n'); i >= 0 {
			line := lr.buf[lr.start : lr.start+i]
			lr.start += i + 1
			return line, nil
		}
		if lr.start > 0 {
			lr.end = copy(lr.buf, lr.buf[lr.start:lr.end])
			lr.start = 0
		}
		if lr.end == len(lr.buf) {
			if len(lr.buf) >= maxLogLine {
				lr.start = lr.end
				return lr.buf[:lr.end], nil
			}
			lr.buf = append(lr.buf, make([]byte, len(lr.buf))...)
		}
		n, err := lr.r.Read(lr.buf[lr.end:])
		lr.end += n
		if n == 0 {
			if err == nil {
				err = io.ErrNoProgress
			}
			return nil, err
		}
	}
}
