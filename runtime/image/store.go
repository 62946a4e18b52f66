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
	// The root and containers/ are traversable so that a container whose
	// root user is mapped to another host uid can reach its rootfs; blobs
	// and ingest hold data only Nexus reads.
	dirs := []struct {
		path string
		mode os.FileMode
	}{
		{root, 0o711}, {s.path(dirBlobs), 0o700}, {s.path(dirIngest), 0o700},
		{s.path(dirSnapshots), 0o711}, {s.path(dirContainers), 0o711},
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("image store: create %s: %w", d.path, err)
		}
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

// Close releases the store. Nothing stays open between operations, so it
// only exists to make the lifetime explicit to callers.
func (s *Store) Close() error { return nil }

// Root returns the store's directory.
func (s *Store) Root() string { return s.root }

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.root}, elem...)...)
}

// cleanup removes leftovers of interrupted operations. The caller holds the
// exclusive lock, so no operation is in progress.
func (s *Store) cleanup() error {
	entries, err := os.ReadDir(s.path(dirIngest))
	if err != nil {
		return fmt.Errorf("image store: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(s.path(dirIngest, e.Name())); err != nil {
			return fmt.Errorf("image store: remove partial download: %w", err)
		}
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
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("image store: remove unfinished snapshot: %w", err)
		}
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
