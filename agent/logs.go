package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Output collection. A container's stdout and stderr are named pipes
// (FIFOs) in its instance directory, which the container gets opened
// read-write: the pipe then always has a reader, so the container never
// gets SIGPIPE or EPIPE, whether the agent is there or not. The agent
// reads each pipe with one goroutine and appends what comes, line by line
// with the time and the stream, to container.log (logformat.go), rotated
// by size. No process per container is needed, and the container outlives
// the agent: while no agent reads, output waits in the pipe (enlarged to
// pipeBufferBytes), and the next agent, adopting the container, opens the
// same pipes and goes on where the last one stopped. A container that
// writes more than that while no agent runs blocks in write(2) until one
// reads again (as Docker's live restore does). Lines get the time the
// agent read them, so output written while no agent ran carries the time
// it was collected.
//
// The same pipes and log serve every run of an Instance's container: a
// restarted container's output appends to the log of the ones before.

const (
	logName    = "container.log"
	stdoutFIFO = "stdout.fifo"
	stderrFIFO = "stderr.fifo"

	// DefaultMaxLogBytes is the size at which a container's log is
	// rotated, and DefaultMaxLogFiles how many files of it are kept
	// (container.log and container.log.1): at most 20 MiB per container,
	// as the kubelet's 10 MiB default size.
	DefaultMaxLogBytes = 10 << 20
	DefaultMaxLogFiles = 2

	// pipeBufferBytes is how much output a pipe holds while nobody reads
	// it (64 KiB by default; 1 MiB is the most an unprivileged process may
	// ask for, /proc/sys/fs/pipe-max-size). The kernel takes the pages
	// only as output waits in them.
	pipeBufferBytes = 1 << 20
	// maxEntryText bounds one entry's text: a longer line is written in
	// pieces (P entries), so one line never holds the log's reader.
	maxEntryText = 16 << 10
	// readBufferBytes is each stream's read buffer: at most maxEntryText
	// of it waits for a newline, so a read always has room.
	readBufferBytes = 2 * maxEntryText
	// partialFlushDelay is how long text without a newline (a prompt, a
	// progress bar) waits before it is written as a P entry.
	partialFlushDelay = time.Second
	// drainIdle is how long the pipes must stay empty, once the container
	// is gone, before its last output counts as read.
	drainIdle = 50 * time.Millisecond
)

// containerLog collects one container's output into its log files.
type containerLog struct {
	dir      string
	maxBytes int64
	maxFiles int
	log      *slog.Logger
	streams  []*logStream
	wg       sync.WaitGroup
	done     chan struct{} // closed once the collection has stopped

	mu      sync.Mutex
	f       *os.File // container.log, appended to
	size    int64
	changed chan struct{} // closed (and replaced) after each write
	buf     []byte        // the entries of one write
	failed  time.Time     // when a write last failed (logged once a minute)
}

// logStream is the reading side of one of the container's pipes.
type logStream struct {
	name string // streamStdout or streamStderr
	fifo string // its path
	r    *os.File

	// mu orders deadline changes between the reader and stop.
	mu       sync.Mutex
	stopping int // 0 running, stopNow or stopDrain
}

const (
	stopNow   = 1
	stopDrain = 2
)

// openContainerLog makes the pipes and the log in dir, if they are not
// there from an earlier agent, and starts reading.
func openContainerLog(dir string, maxBytes int64, maxFiles int, log *slog.Logger) (l *containerLog, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	l = &containerLog{dir: dir, maxBytes: maxBytes, maxFiles: maxFiles, log: log,
		done: make(chan struct{}), changed: make(chan struct{})}
	defer func() {
		if err != nil {
			for _, s := range l.streams {
				s.r.Close()
			}
			if l.f != nil {
				l.f.Close()
			}
		}
	}()
	if err := repairTail(l.path(0)); err != nil {
		return nil, err
	}
	if l.f, err = os.OpenFile(l.path(0), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err != nil {
		return nil, err
	}
	st, err := l.f.Stat()
	if err != nil {
		return nil, err
	}
	l.size = st.Size()
	for _, s := range []struct{ name, fifo string }{{streamStdout, stdoutFIFO}, {streamStderr, stderrFIFO}} {
		path := filepath.Join(dir, s.fifo)
		r, err := openFIFOReader(path)
		if err != nil {
			return nil, err
		}
		l.streams = append(l.streams, &logStream{name: s.name, fifo: path, r: r})
	}
	for _, s := range l.streams {
		l.wg.Add(1)
		go l.collect(s)
	}
	return l, nil
}

// openFIFOReader makes the FIFO at path when it is missing and opens its
// reading end. The agent opens it read-write too, so that a read waits
// for output rather than ending when no container holds the pipe
// (between two runs of a container); the file is non-blocking in Go's
// poller, so deadlines end a waiting read.
func openFIFOReader(path string) (*os.File, error) {
	st, err := os.Lstat(path)
	switch {
	case err == nil && st.Mode()&fs.ModeNamedPipe == 0:
		if err := os.Remove(path); err != nil {
			return nil, err
		}
		fallthrough
	case errors.Is(err, fs.ErrNotExist):
		if err := unix.Mkfifo(path, 0o600); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, &fs.PathError{Op: "mkfifo", Path: path, Err: err}
		}
	case err != nil:
		return nil, err
	}
	r, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	if err := r.SetReadDeadline(time.Time{}); err != nil {
		r.Close()
		return nil, fmt.Errorf("%s: cannot wait on it with a deadline: %w", path, err)
	}
	// Only a larger buffer is lost when this fails: the container blocks
	// sooner while no agent reads.
	if rc, err := r.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeBufferBytes)
		})
	}
	return r, nil
}

// stdio opens the pipes' writing ends for a new container: blocking
// (the container's output waits rather than being dropped when the pipe
// is full) and read-write (never SIGPIPE). The caller closes them once
// the runtime has passed them on.
func (l *containerLog) stdio() (stdout, stderr *os.File, err error) {
	var ends []*os.File
	for _, s := range l.streams {
		fd, err := unix.Open(s.fifo, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			for _, f := range ends {
				f.Close()
			}
			return nil, nil, &os.PathError{Op: "open", Path: s.fifo, Err: err}
		}
		ends = append(ends, os.NewFile(uintptr(fd), s.fifo))
	}
	return ends[0], ends[1], nil
}

// stop ends the collection and closes the files. With drain (the
// container is gone) the output still in the pipes is read first;
// without it (the agent stops, the container runs on) the pipes keep it
// for the next agent. Readers of the log see its end.
func (l *containerLog) stop(drain bool) {
	for _, s := range l.streams {
		s.mu.Lock()
		if s.stopping == 0 {
			if drain {
				s.stopping = stopDrain
				_ = s.r.SetReadDeadline(time.Now().Add(drainIdle))
			} else {
				s.stopping = stopNow
				_ = s.r.SetReadDeadline(time.Now())
			}
		}
		s.mu.Unlock()
	}
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.done:
		return
	default:
	}
	for _, s := range l.streams {
		s.r.Close()
	}
	l.f.Close()
	close(l.done)
}

// collect reads one stream until stop, and writes what it reads as
// entries: whole lines as they come, a line longer than maxEntryText in
// pieces, and text without a newline once it has waited
// partialFlushDelay.
func (l *containerLog) collect(s *logStream) {
	defer l.wg.Done()
	buf := make([]byte, readBufferBytes)
	n := 0            // bytes in buf not yet written: part of a line
	var waiting bool  // a deadline is set for them
	var draining bool // the deadline is the drain's (stopDrain seen)
	// setDeadline sets the deadline for a part of a line; while draining,
	// any call extends the drain instead.
	setDeadline := func(t time.Time) {
		s.mu.Lock()
		defer s.mu.Unlock()
		switch s.stopping {
		case 0:
			_ = s.r.SetReadDeadline(t)
		case stopDrain:
			_ = s.r.SetReadDeadline(time.Now().Add(drainIdle))
		}
	}
	stopping := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.stopping
	}
	for {
		k, err := s.r.Read(buf[n:])
		if k > 0 {
			total := n + k
			pieces, rest := splitEntries(buf[:total])
			l.write(s.name, pieces)
			n = copy(buf, buf[total-rest:total])
			switch {
			case stopping() == stopDrain:
				draining = true
				setDeadline(time.Time{}) // extends the drain
			case n > 0 && !waiting:
				setDeadline(time.Now().Add(partialFlushDelay))
				waiting = true
			case n == 0 && waiting:
				setDeadline(time.Time{})
				waiting = false
			}
		}
		if err == nil {
			continue
		}
		if n > 0 {
			l.write(s.name, []piece{{text: buf[:n], partial: true}})
			n = 0
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			switch stopping() {
			case 0: // the wait for the rest of a line is over
				waiting = false
				setDeadline(time.Time{})
				continue
			case stopDrain:
				// A deadline set before the drain began (for a part of a
				// line) is no sign the pipe is empty: drain from here.
				if !draining {
					draining = true
					setDeadline(time.Time{})
					continue
				}
			}
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, os.ErrClosed) {
			l.log.Warn("read the container's output", "stream", s.name, "err", err)
		}
		return
	}
}

// piece is the text of one entry.
type piece struct {
	text    []byte
	partial bool
}

// splitEntries cuts b into the entries that can be written now, and
// returns how many bytes at its end remain (part of a line shorter than
// maxEntryText).
func splitEntries(b []byte) ([]piece, int) {
	var out []piece
	for {
		i := bytes.IndexByte(b, '\n')
		switch {
		case i >= 0 && i <= maxEntryText:
			out = append(out, piece{text: b[:i]})
			b = b[i+1:]
		case len(b) >= maxEntryText:
			out = append(out, piece{text: b[:maxEntryText], partial: true})
			b = b[maxEntryText:]
		default:
			return out, len(b)
		}
	}
}

// write appends entries of one stream to the log, rotating it whenever
// the next entry would take it past maxBytes, and wakes the log's
// followers.
func (l *containerLog) write(stream string, pieces []piece) {
	if len(pieces) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// The time is taken under the lock, so the file is in time order.
	now := time.Now()
	l.buf = l.buf[:0]
	for _, p := range pieces {
		n := len(l.buf)
		l.buf = appendEntry(l.buf, now, stream, p.partial, p.text)
		if n > 0 && l.size+int64(len(l.buf)) > l.maxBytes {
			l.flushLocked(l.buf[:n])
			l.buf = l.buf[:copy(l.buf, l.buf[n:])]
		}
		if l.size > 0 && l.size+int64(len(l.buf)) > l.maxBytes {
			if err := l.rotate(); err != nil {
				l.warnLocked("rotate the container's log", err)
			}
		}
	}
	l.flushLocked(l.buf)
	if cap(l.buf) > 4*readBufferBytes {
		l.buf = nil // one large batch does not pin its buffer
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *containerLog) flushLocked(b []byte) {
	n, err := l.f.Write(b)
	l.size += int64(n)
	if err != nil {
		l.warnLocked("write the container's log", err)
	}
}

func (l *containerLog) warnLocked(what string, err error) {
	if now := time.Now(); now.Sub(l.failed) >= time.Minute {
		l.failed = now
		l.log.Warn(what+" (output is lost until this is fixed)", "dir", l.dir, "err", err)
	}
}

// rotate moves container.log to container.log.1, .1 to .2 and so on,
// dropping the oldest, and starts a new container.log. Followers holding
// the old file read it to its end and then open the new one.
func (l *containerLog) rotate() error {
	for i := l.maxFiles - 1; i > 0; i-- {
		if err := os.Rename(l.path(i-1), l.path(i)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if l.maxFiles <= 1 {
		if err := os.Remove(l.path(0)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	f, err := os.OpenFile(l.path(0), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	l.f.Close()
	l.f, l.size = f, 0
	return nil
}

// path is container.log (i = 0) or its i-th rotated file.
func (l *containerLog) path(i int) string {
	p := filepath.Join(l.dir, logName)
	if i > 0 {
		p += "." + strconv.Itoa(i)
	}
	return p
}

// changes is closed by the next write.
func (l *containerLog) changes() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// repairTail cuts what follows the last newline of the log at path: a
// line an agent was killed in the middle of writing, which the next
// entry would otherwise run into.
func repairTail(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return err
	}
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, st.Size()-1); err != nil {
		return err
	}
	if last[0] == '\n' {
		return nil
	}
	end := int64(0)
	err = scanBack(f, st.Size(), func(line []byte, off int64) bool {
		end = off + int64(len(line)) + 1
		return false
	})
	if err != nil {
		return err
	}
	return f.Truncate(end)
}

// scanBack calls fn with each complete line of r[0:size) (without its
// newline) from the last to the first, with the offset where it starts,
// until fn returns false. Text after the last newline is no line yet.
func scanBack(r io.ReaderAt, size int64, fn func(line []byte, off int64) bool) error {
	return scanBackBy(r, size, 32<<10, fn)
}

// scanBackBy is scanBack reading chunk bytes at a time.
func scanBackBy(r io.ReaderAt, size, chunk int64, fn func(line []byte, off int64) bool) error {
	var data []byte // r[pos : pos+len(data)], ending with a newline once one is found
	pos := size
	for {
		for len(data) > 0 {
			i := bytes.LastIndexByte(data[:len(data)-1], '\n')
			if i < 0 && pos > 0 {
				break // the line starts before pos
			}
			if !fn(data[i+1:len(data)-1], pos+int64(i+1)) {
				return nil
			}
			data = data[:i+1]
		}
		if pos == 0 {
			return nil
		}
		k := min(chunk, pos)
		pos -= k
		b := make([]byte, k, int(k)+len(data))
		if _, err := r.ReadAt(b, pos); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if data == nil {
			// Still looking for the last newline: what follows it is no
			// line.
			if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
				data = b[:i+1]
			}
			continue
		}
		data = append(b, data...)
	}
}

// startLog starts collecting the container's output, unless it is
// collected already.
func (c *container) startLog() error {
	if c.output.Load() != nil {
		return nil
	}
	l, err := openContainerLog(c.dir, c.a.cfg.MaxLogBytes, c.a.cfg.MaxLogFiles, c.a.log.With("container", c.id))
	if err != nil {
		return fmt.Errorf("collect the output of %s: %w", c.id, err)
	}
	c.output.Store(l)
	return nil
}

// stdio opens the container's stdout and stderr, its log's pipes.
func (c *container) stdio() (stdout, stderr *os.File, err error) {
	if err := c.startLog(); err != nil {
		return nil, nil, err
	}
	return c.output.Load().stdio()
}

// stopLog ends the collection of the container's output: drain when the
// container is gone (its last output is read first), not when the agent
// stops and leaves the container running.
func (c *container) stopLog(drain bool) {
	if l := c.output.Load(); l != nil {
		l.stop(drain)
	}
}
