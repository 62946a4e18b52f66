package image

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/singleflight"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/runtime/image/layer"
)

// Config configures a Store.
type Config struct {
	// Root is the directory the store lives in; it is created if missing.
	Root string
	// Limits bound what one layer may unpack to; the zero value means
	// layer.DefaultLimits().
	Limits layer.Limits
	// Jobs is how many blobs a pull fetches at once; 0 means 4.
	Jobs int
	// Logger receives debug records; nil means slog.Default().
	Logger *slog.Logger
}

// Store is an image store rooted at one directory. Its methods are safe for
// concurrent use, also by several processes sharing the directory.
type Store struct {
	root   string
	limits layer.Limits
	jobs   int
	log    *slog.Logger

	dbMu    sync.Mutex // bbolt allows one writer per file; serialise ours
	blobs   singleflight.Group
	unpacks singleflight.Group

	// leftovers tallies what cleanup removed since the store was opened,
	// for the next Prune to report.
	leftoversMu sync.Mutex
	leftovers   Leftovers

	builtins   singleflight.Group // imports of the built-in image, by source
	builtinMu  sync.Mutex
	builtinSrc builtinSourceCache // see builtinSource
}

const (
	dirBlobs      = "blobs/sha256"
	dirIngest     = "ingest"
	dirSnapshots  = "snapshots"
	dirContainers = "containers"
	fileLock      = "lock"
	fileMeta      = "meta.db"
	fileDone      = "done.json"
	tmpPrefix     = ".tmp-"
)

// Open opens (creating if needed) the store at cfg.Root. When no other
// process is using the store, it removes what interrupted operations left:
// partial downloads in ingest/ and unfinished snapshots.
func Open(cfg Config) (*Store, error) {
	if cfg.Root == "" {
		return nil, errors.New("image store: no root directory given")
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("image store %s: %w", cfg.Root, err)
	}
	s := &Store{root: root, limits: cfg.Limits, jobs: cfg.Jobs, log: cfg.Logger}
	if s.limits == (layer.Limits{}) {
		s.limits = layer.DefaultLimits()
	}
	if s.jobs <= 0 {
		s.jobs = 4
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if err := s.makeDirs(); err != nil {
		return nil, err
	}
	if err := s.update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketImages, bucketContainers} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	unlock, err := s.tryLock(unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	if unlock != nil {
		defer unlock()
		if err := s.cleanup(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// storeMode is the mode of the store's root and of every directory in it.
// Only root may traverse them: a snapshot holds the image's setuid programs
// and device nodes with the modes the image gave them, so a path into one
// that other users could walk would let any local user run a setuid-root
// program or open a device (Moby's CVE-2021-41091; containerd and Docker keep
// theirs 0700 and 0710). Containers never walk these paths: the runtime
// enters the root filesystem as root before it switches to the container's
// user.
const storeMode = 0o700

// makeDirs creates the store's directories, and closes those an earlier
// version left traversable by others (0711), down to each snapshot's and
// prepared container's own directory.
func (s *Store) makeDirs() error {
	dirs := []string{s.root, s.path(dirBlobs), s.path(dirIngest), s.path(dirSnapshots), s.path(dirContainers)}
	for _, d := range dirs {
		if err := os.MkdirAll(d, storeMode); err != nil {
			return fmt.Errorf("image store: create %s: %w", d, err)
		}
	}
	dirs = append(dirs, filepath.Dir(s.path(dirBlobs)))
	for _, parent := range []string{dirContainers, dirSnapshots} {
		entries, err := os.ReadDir(s.path(parent))
		if err != nil {
			return fmt.Errorf("image store: %w", err)
		}
		for _, e := range entries {
			if e.IsDir() {
				dirs = append(dirs, s.path(parent, e.Name()))
			}
		}
	}
	for _, d := range dirs {
		fi, err := os.Lstat(d)
		if err != nil {
			return fmt.Errorf("image store: %w", err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("image store: %s is not a directory: move it away", d)
		}
		if fi.Mode().Perm() != storeMode {
			if err := os.Chmod(d, storeMode); err != nil {
				return fmt.Errorf("image store: %s is open to other users (mode %04o) and cannot be closed: %w", d, fi.Mode().Perm(), err)
			}
			s.log.Info("image store: closed a directory to other users", "path", d, "was", fmt.Sprintf("%04o", fi.Mode().Perm()))
		}
	}
	return nil
}

// Close releases the store. Nothing stays open between operations, so it
// only exists to make the lifetime explicit to callers.
func (s *Store) Close() error { return nil }

// Root returns the store's directory.
func (s *Store) Root() string { return s.root }

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.root}, elem...)...)
}

// Leftovers counts what interrupted operations had left in the store.
type Leftovers struct {
	// Partial is the downloads and imports that never finished.
	Partial int `json:"partial"`
	// Unpacks is the layer unpacks that never finished.
	Unpacks int `json:"unpacks"`
	// Bytes is the disk space they took.
	Bytes int64 `json:"bytes"`
}

// cleanup removes leftovers of interrupted operations and adds them to
// s.leftovers. The caller holds the exclusive lock, so no operation is in
// progress.
func (s *Store) cleanup() error {
	var found Leftovers
	defer func() {
		s.leftoversMu.Lock()
		s.leftovers.Partial += found.Partial
		s.leftovers.Unpacks += found.Unpacks
		s.leftovers.Bytes += found.Bytes
		s.leftoversMu.Unlock()
	}()
	entries, err := os.ReadDir(s.path(dirIngest))
	if err != nil {
		return fmt.Errorf("image store: %w", err)
	}
	for _, e := range entries {
		p := s.path(dirIngest, e.Name())
		size := dirSize(p)
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("image store: remove partial download: %w", err)
		}
		if !strings.HasSuffix(e.Name(), ".lock") {
			found.Partial++
		}
		found.Bytes += size
	}
	entries, err = os.ReadDir(s.path(dirSnapshots))
	if err != nil {
		return fmt.Errorf("image store: %w", err)
	}
	for _, e := range entries {
		p := s.path(dirSnapshots, e.Name())
		if !strings.HasPrefix(e.Name(), tmpPrefix) {
			if _, err := os.Stat(filepath.Join(p, fileDone)); err == nil {
				continue
			}
		}
		s.log.Debug("removing unfinished snapshot", "path", p)
		size := dirSize(p)
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("image store: remove unfinished snapshot: %w", err)
		}
		found.Unpacks++
		found.Bytes += size
	}
	return nil
}

// lock takes the store's flock: shared (unix.LOCK_SH) for operations that
// add content, exclusive (unix.LOCK_EX) for those that delete it. Each call
// opens its own descriptor, so goroutines of one process exclude each other
// like separate processes do.
func (s *Store) lock(ctx context.Context, how int) (unlock func(), err error) {
	for {
		unlock, err := s.tryLock(how)
		if err != nil || unlock != nil {
			return unlock, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for the image store lock: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// tryLock is lock without waiting: it returns a nil unlock when the lock is
// held elsewhere.
func (s *Store) tryLock(how int) (unlock func(), err error) {
	f, err := os.OpenFile(s.path(fileLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image store lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, nil
		}
		return nil, fmt.Errorf("image store lock: %w", err)
	}
	return func() { f.Close() }, nil
}
