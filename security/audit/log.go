package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/fsutil"
)

// CurrentFile is the name of the file being written in a log directory.
const CurrentFile = "audit.log"

// Defaults for Config.
const (
	DefaultMaxBytes = 100 << 20
	DefaultMaxFiles = 10
)

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("audit log closed")

// Clock is the source of record times.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Config configures a Log.
type Config struct {
	// Dir holds the log's files (<data-dir>/audit); it is created 0700.
	Dir string
	// MaxBytes is the size past which audit.log is rotated (DefaultMaxBytes
	// when 0). A file is never left empty for want of room: one record
	// always fits.
	MaxBytes int64
	// MaxFiles is how many rotated files are kept (DefaultMaxFiles when 0);
	// older ones are deleted.
	MaxFiles int
	// Policy sets each record's level (DefaultPolicy when nil).
	Policy *Policy
	// Redactors are applied to the bodies of the resource they are keyed
	// by, before the built-in Secrets redaction (which always runs).
	Redactors map[string]Redactor
	Clock     Clock
	Logger    *slog.Logger
}

// Log appends records to the audit files of one directory. It is safe for
// concurrent use; one process at a time may hold a directory.
type Log struct {
	cfg  Config
	lock *os.File

	mu      sync.Mutex
	flushed sync.Cond // signalled when a flush ends
	seq     uint64    // the last record queued
	head    string    // its hash
	pending []*pending
	// flushing is true while one writer writes and syncs a batch; that
	// writer alone touches the file state below until it clears it.
	flushing bool
	broken   error // set by a failed sync or Close: every Write fails
	// flushArmed is set while a delayed flush for Enqueue is scheduled.
	flushArmed bool
	lastErr    error // the last failed flush, cleared by the next success

	durableSeq  uint64 // the last record known to be on disk
	durableHash string

	f           *os.File
	size        int64
	first, last uint64 // seq range in audit.log; first is 0 when empty
	buf         []byte
	syncs       atomic.Uint64
}

type pending struct {
	seq  uint64
	hash string
	line []byte // with its newline
	done bool
	err  error
}

// Open opens the log in cfg.Dir, creating it if needed, and resumes the
// chain after the last record on disk (see the package doc for what it
// does with a torn last line).
func Open(cfg Config) (*Log, error) {
	if cfg.Dir == "" {
		return nil, errors.New("open audit log: no directory given")
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.MaxFiles <= 0 {
		cfg.MaxFiles = DefaultMaxFiles
	}
	if cfg.Policy == nil {
		cfg.Policy = DefaultPolicy()
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	if err := os.Chmod(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cfg.Dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("open audit log %s: another process holds its lock: %w", cfg.Dir, err)
	}
	l := &Log{cfg: cfg, lock: lock}
	l.flushed.L = &l.mu
	recovered, err := l.resume()
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("open audit log %s: %w", cfg.Dir, err)
	}
	if recovered != "" {
		cfg.Logger.Warn("audit log: cut an incomplete last line", "dir", cfg.Dir, "detail", recovered)
		if err := l.Write(context.Background(), Record{Event: EventLogRecovered, Message: recovered}); err != nil {
			l.Close()
			return nil, fmt.Errorf("open audit log %s: record the recovery: %w", cfg.Dir, err)
		}
	}
	return l, nil
}

// resume finds the last record on disk and opens audit.log for appending.
// It returns a description of the torn tail it cut, if any.
func (l *Log) resume() (string, error) {
	files, err := Files(l.cfg.Dir)
	if err != nil {
		return "", err
	}
	l.seq, l.head = 0, ZeroHash
	cur := filepath.Join(l.cfg.Dir, CurrentFile)
	var recovered string
	for i := len(files) - 1; i >= 0; i-- {
		t, err := readEnds(files[i])
		if err != nil {
			return "", err
		}
		isCur := files[i] == cur
		if t.torn > 0 {
			if !isCur {
				return "", fmt.Errorf("%s ends in an incomplete line at offset %d, but only %s is ever written to: verify the audit files and move the damaged one aside", files[i], t.size-t.torn, CurrentFile)
			}
			if err := os.Truncate(cur, t.size-t.torn); err != nil {
				return "", fmt.Errorf("cut the incomplete last line of %s: %w", cur, err)
			}
			recovered = fmt.Sprintf("cut %d bytes of an incomplete last line at offset %d of %s (a write interrupted by a crash, never acknowledged)", t.torn, t.size-t.torn, CurrentFile)
		}
		if t.lastLine == nil {
			continue // an empty (or all-torn) audit.log: the chain ends in the file before
		}
		if isCur {
			l.first, l.size = t.firstSeq, t.size-t.torn
		}
		l.seq, l.head = t.lastSeq, t.lastHash
		break
	}
	l.durableSeq, l.durableHash = l.seq, l.head
	f, err := os.OpenFile(cur, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return "", err
	}
	l.f, l.last = f, l.seq
	return recovered, fsutil.SyncDir(l.cfg.Dir)
}

// fileEnds is what Open needs from a file: its first record's seq, its last
// complete record, and the length of an incomplete line after it.
type fileEnds struct {
	size              int64
	firstSeq, lastSeq uint64
	lastHash          string
	lastLine          []byte
	torn              int64
}

// readEnds reads the first and the last complete line of path and checks
// both. Only the ends are read: a full check is Verify's job.
func readEnds(path string) (fileEnds, error) {
	f, err := os.Open(path)
	if err != nil {
		return fileEnds{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fileEnds{}, err
	}
	t := fileEnds{size: st.Size()}
	window := min(t.size, 2*(MaxLineBytes+1))
	tail := make([]byte, window)
	if _, err := f.ReadAt(tail, t.size-window); err != nil && err != io.EOF {
		return fileEnds{}, fmt.Errorf("read %s: %w", path, err)
	}
	nl := bytes.LastIndexByte(tail, '\n')
	if nl < 0 {
		if window < t.size {
			return fileEnds{}, fmt.Errorf("%s: no line end in its last %d bytes: not an audit file, or damaged", path, window)
		}
		t.torn = t.size
		return t, nil
	}
	t.torn = int64(len(tail) - nl - 1)
	start := bytes.LastIndexByte(tail[:nl], '\n') + 1
	if start == 0 && window < t.size {
		return fileEnds{}, fmt.Errorf("%s: its last line is longer than %d bytes: not an audit file, or damaged", path, MaxLineBytes)
	}
	t.lastLine = tail[start:nl]
	lineOff := t.size - window + int64(start)
	last, err := parseLine(t.lastLine)
	if err == nil && last.hash != last.computed {
		err = errors.New("its hash does not match its content")
	}
	if err != nil {
		return fileEnds{}, fmt.Errorf("%s: the last record (offset %d) is damaged: %v: verify the audit files and move the damaged one aside", path, lineOff, err)
	}
	t.lastSeq, t.lastHash = last.seq, last.hash
	head := make([]byte, min(t.size, MaxLineBytes+1))
	if _, err := f.ReadAt(head, 0); err != nil && err != io.EOF {
		return fileEnds{}, fmt.Errorf("read %s: %w", path, err)
	}
	firstLine, _, _ := bytes.Cut(head, []byte("\n"))
	first, err := parseLine(firstLine)
	if err != nil {
		return fileEnds{}, fmt.Errorf("%s: the first record is damaged: %v: verify the audit files and move the damaged one aside", path, err)
	}
	t.firstSeq = first.seq
	return t, nil
}

// Write records r if the policy asks for it, and returns once it is on
// disk. An error means it is not in the log: the caller fails a mutating
// request (503). Once queued, a record is not abandoned when ctx ends: the
// caller waits for its sync, which only the disk can delay.
func (l *Log) Write(ctx context.Context, r Record) error {
	return l.write(ctx, r, true)
}

// FlushDelay is how long a record queued by Enqueue waits for a flush that
// some Write starts anyway before one is started for it.
const FlushDelay = 20 * time.Millisecond

// Enqueue records r like Write but returns once it is in the chain, before
// it is on disk: it goes out with the next flush, at most FlushDelay later.
// It is for reads that were allowed, which need a record but need not hold
// their response for a sync of their own (a crash may lose the last few
// milliseconds of them, never a change, a denial or a failure, which go
// through Write). Records that must be kept are written as by Write.
func (l *Log) Enqueue(ctx context.Context, r Record) error {
	if r.mustKeep() {
		return l.write(ctx, r, true)
	}
	return l.write(ctx, r, false)
}

func (l *Log) write(ctx context.Context, r Record, wait bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	lvl := l.cfg.Policy.LevelOf(&r)
	if lvl < Metadata && r.mustKeep() {
		lvl = Metadata
	}
	lvl = min(lvl, RequestResponse)
	if lvl <= None {
		return nil
	}
	l.prepare(&r, lvl)

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken != nil {
		return l.broken
	}
	r.Seq, r.Prev = l.seq+1, l.head
	line, h, err := encodeLine(&r)
	if err != nil {
		return err
	}
	if len(line) > MaxLineBytes {
		return fmt.Errorf("audit record for %s %s is %d bytes, more than the %d a record may have", r.Verb, r.URI, len(line), MaxLineBytes)
	}
	l.seq, l.head = r.Seq, h
	p := &pending{seq: r.Seq, hash: h, line: append(line, '\n')}
	l.pending = append(l.pending, p)
	if !wait {
		if !l.flushArmed {
			l.flushArmed = true
			time.AfterFunc(FlushDelay, l.delayedFlush)
		}
		return nil
	}
	for !p.done {
		if l.flushing {
			l.flushed.Wait()
		} else {
			l.flush()
		}
	}
	return p.err
}

// delayedFlush writes what Enqueue queued, unless a Write did already.
func (l *Log) delayedFlush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushArmed = false
	for len(l.pending) > 0 && l.broken == nil {
		if l.flushing {
			l.flushed.Wait()
			continue
		}
		l.flush()
	}
}

// prepare sets what Write fills and cuts r down to its level.
func (l *Log) prepare(r *Record, lvl Level) {
	r.Level = lvl
	r.Time = l.cfg.Clock.Now().UTC()
	if r.Event == "" {
		r.Event = EventRequest
	}
	if lvl < Request {
		r.Request = nil
	}
	if lvl < RequestResponse {
		r.Response = nil
	}
	redact := func(body json.RawMessage) json.RawMessage {
		if len(body) == 0 {
			return body
		}
		if rd := l.cfg.Redactors[r.Resource]; rd != nil {
			body = rd(body)
		}
		if isSecrets(r.Resource) {
			body = RedactSecret(body)
		}
		if len(body) > maxBodyBytes {
			return json.RawMessage(fmt.Sprintf(`"<omitted: %d bytes, more than the %d the audit log keeps>"`, len(body), maxBodyBytes))
		}
		if !json.Valid(body) {
			return json.RawMessage(`"<omitted: not JSON>"`)
		}
		return body
	}
	r.Request, r.Response = redact(r.Request), redact(r.Response)
}

// flush writes and syncs what is pending. Called with l.mu held and no
// flush running; it drops the lock while it does I/O.
func (l *Log) flush() {
	if l.broken != nil {
		// Closed (or broken) while these waited: the file is not ours to touch.
		for _, p := range l.pending {
			p.done, p.err = true, l.broken
		}
		l.pending = nil
		l.flushed.Broadcast()
		return
	}
	l.flushing = true
	batch := l.pending
	l.pending = nil
	l.mu.Unlock()
	n, err := l.writeBatch(batch)
	l.mu.Lock()
	l.flushing = false
	for _, p := range batch[:n] {
		p.done = true
	}
	if n > 0 {
		l.durableSeq, l.durableHash = batch[n-1].seq, batch[n-1].hash
	}
	if err != nil {
		// Everything queued after the first failed record chains onto it,
		// so none of it can go to the file: fail it all and resume the
		// chain from the last record on disk.
		l.cfg.Logger.Error("audit log write failed", "dir", l.cfg.Dir, "err", err)
		for _, p := range append(batch[n:], l.pending...) {
			p.done, p.err = true, err
		}
		l.pending = nil
		l.seq, l.head = l.durableSeq, l.durableHash
		l.lastErr = err
	} else {
		l.lastErr = nil
	}
	l.flushed.Broadcast()
}

// writeBatch appends batch to the file, rotating where MaxBytes says, and
// returns how many records are durable.
func (l *Log) writeBatch(batch []*pending) (int, error) {
	done, start := 0, 0
	buf := l.buf[:0]
	for i, p := range batch {
		full := l.first != 0 || i > start
		if full && l.size+int64(len(buf)+len(p.line)) > l.cfg.MaxBytes {
			if err := l.appendSync(buf, batch[start:i]); err != nil {
				return done, err
			}
			done, start, buf = i, i, buf[:0]
			if err := l.rotate(); err != nil {
				return done, err
			}
		}
		buf = append(buf, p.line...)
	}
	err := l.appendSync(buf, batch[start:])
	if err == nil {
		done = len(batch)
	}
	if cap(buf) <= 1<<20 {
		l.buf = buf[:0]
	}
	return done, err
}

// appendSync appends the lines of recs (in buf) to audit.log and syncs it.
// The file grows by appending, unlike store/wal's preallocated segments:
// overwriting preallocated blocks measured p50 480-520 µs per fdatasync
// against 590-680 µs for an append here, too little to justify a NUL-padded
// tail in a text file that people read with tail and grep.
// A failed write is cut off again so the file ends on a whole record; a
// failed sync breaks the log (the kernel may have dropped the dirty pages
// and reported the error once: writing on could hide a hole).
func (l *Log) appendSync(buf []byte, recs []*pending) error {
	if len(recs) == 0 {
		return nil
	}
	if l.f == nil {
		f, err := os.OpenFile(filepath.Join(l.cfg.Dir, CurrentFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("audit log: create %s: %w", CurrentFile, err)
		}
		if err := fsutil.SyncDir(l.cfg.Dir); err != nil {
			f.Close()
			return fmt.Errorf("audit log: %w", err)
		}
		l.f = f
	}
	if _, err := l.f.Write(buf); err != nil {
		if terr := l.f.Truncate(l.size); terr != nil {
			l.breakLog(fmt.Errorf("audit log: write %s failed (%v) and cutting the partial record failed: %w", l.f.Name(), err, terr))
			return l.broken
		}
		return fmt.Errorf("audit log: %w", err)
	}
	if err := unix.Fdatasync(int(l.f.Fd())); err != nil {
		l.breakLog(fmt.Errorf("audit log: sync %s: %w (reopen the log once the disk is fixed)", l.f.Name(), err))
		return l.broken
	}
	l.syncs.Add(1)
	l.size += int64(len(buf))
	if l.first == 0 {
		l.first = recs[0].seq
	}
	l.last = recs[len(recs)-1].seq
	return nil
}

// breakLog makes every later Write fail with err.
func (l *Log) breakLog(err error) {
	l.mu.Lock()
	l.broken = err
	l.mu.Unlock()
}

// rotate renames the full audit.log to its rotated name and deletes the
// oldest rotated files beyond MaxFiles. The next append creates audit.log.
func (l *Log) rotate() error {
	cur := filepath.Join(l.cfg.Dir, CurrentFile)
	rotated := filepath.Join(l.cfg.Dir, rotatedName(l.first, l.last))
	if err := os.Rename(cur, rotated); err != nil {
		return fmt.Errorf("audit log: rotate %s: %w", cur, err)
	}
	l.f.Close()
	l.f, l.size, l.first = nil, 0, 0
	if err := fsutil.SyncDir(l.cfg.Dir); err != nil {
		return fmt.Errorf("audit log: rotate: %w", err)
	}
	files, err := rotatedFiles(l.cfg.Dir)
	if err != nil {
		return fmt.Errorf("audit log: list rotated files: %w", err)
	}
	if extra := len(files) - l.cfg.MaxFiles; extra > 0 {
		for _, rf := range files[:extra] {
			if err := os.Remove(rf.path); err != nil {
				return fmt.Errorf("audit log: delete the oldest file: %w", err)
			}
		}
		if err := fsutil.SyncDir(l.cfg.Dir); err != nil {
			return fmt.Errorf("audit log: %w", err)
		}
	}
	return nil
}

// Head returns the seq and hash of the last record on disk (0 and ZeroHash
// for an empty log). Kept where the log's own machine cannot change it, it
// lets a later Verify prove that nothing was cut off the end.
func (l *Log) Head() (uint64, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.durableSeq, l.durableHash
}

// Healthy returns nil when the last write reached the disk, else why it did
// not. A server can check it before it starts a mutation it could not audit.
func (l *Log) Healthy() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken != nil {
		return l.broken
	}
	return l.lastErr
}

// Syncs returns how many fdatasyncs the log has issued since Open.
func (l *Log) Syncs() uint64 { return l.syncs.Load() }

// Close waits for a running flush, then closes the files. Writes after it
// fail with ErrClosed.
func (l *Log) Close() error {
	l.mu.Lock()
	// Records Enqueue queued go to disk first.
	for l.flushing || (len(l.pending) > 0 && l.broken == nil) {
		if l.flushing {
			l.flushed.Wait()
			continue
		}
		l.flush()
	}
	if l.broken == nil {
		l.broken = ErrClosed
	}
	l.mu.Unlock()
	var err error
	if l.f != nil {
		err = l.f.Close()
		l.f = nil
	}
	if l.lock != nil {
		l.lock.Close()
		l.lock = nil
	}
	return err
}
