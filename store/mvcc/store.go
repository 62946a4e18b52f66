package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// Defaults of Options; they match etcd's.
const (
	DefaultMaxTxnOps       = 128
	DefaultMaxRequestBytes = 1536 * 1024
	DefaultWatchBuffer     = 128
	// MaxLeaseTTL is the longest lease a client may ask for, in seconds.
	MaxLeaseTTL = 9000000000
)

// Options configures a Store. Every field that influences Apply (op and
// request limits, minimum lease TTL) must be identical on all members, or
// their states diverge.
type Options struct {
	// MaxTxnOps bounds the compares and the ops of each branch of a Txn.
	MaxTxnOps int
	// MaxRequestBytes bounds the encoded size of an applied request.
	MaxRequestBytes int
	// MinLeaseTTL is the shortest lease granted, in seconds; shorter
	// requests are rounded up, as etcd does for TTLs below its election
	// timeout. Zero means 1.
	MinLeaseTTL int64
	// WatchBuffer is the number of event batches a watcher may have
	// undelivered before it is cancelled as too slow.
	WatchBuffer int
	// NoSync commits without fsync, for a caller that keeps the data
	// durable elsewhere (the store server: raft's WAL and snapshots) and
	// calls Sync at a clean shutdown. Unlike UnsafeNoFsync it is meant for
	// production, together with that caller's recovery.
	NoSync bool
	// UnsafeNoFsync skips fsync on commit, like etcd's flag of that name:
	// for tests and benchmarks only, a power failure loses data.
	UnsafeNoFsync bool
}

func (o Options) withDefaults() Options {
	if o.MaxTxnOps <= 0 {
		o.MaxTxnOps = DefaultMaxTxnOps
	}
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if o.MinLeaseTTL <= 0 {
		o.MinLeaseTTL = 1
	}
	if o.WatchBuffer <= 0 {
		o.WatchBuffer = DefaultWatchBuffer
	}
	return o
}

var (
	// ErrClosed is returned by every method once Close has been called.
	ErrClosed = errors.New("mvcc: store is closed")
	// ErrUnsupported is the result of applying a request this store does
	// not implement (auth, membership); the entry still counts as applied.
	ErrUnsupported = errors.New("mvcc: unsupported request")
	// ErrCorrupt wraps every error reporting that the database file cannot
	// be trusted.
	ErrCorrupt = errors.New("mvcc: database is corrupt")
)

var (
	keyBucket   = []byte("key")
	leaseBucket = []byte("lease")
	metaBucket  = []byte("meta")

	metaVersionKey = []byte("storage_version")
	metaAppliedKey = []byte("consistent_index")
	metaCompactKey = []byte("finished_compact_rev")

	storageVersion = []byte("nexus-mvcc/1")
)

// state is everything the store derives from its database file; Restore
// swaps it as a whole.
type state struct {
	index      treeIndex
	rev        int64 // published: every change <= rev is committed
	compactRev int64
	applied    uint64
	leases     map[int64]*lease
	alarms     []*etcdserverpb.AlarmMember // raised, ordered by alarmIndex
	kvBytes    int64                       // bytes of the records, see Status.LogicalBytes
}

// Store is the MVCC key-value state machine. It is safe for concurrent use;
// Apply calls are serialised.
type Store struct {
	path string
	opts Options

	// applyMu serialises writers of the database: Apply, Restore,
	// Defragment and Close. It is held across bbolt commits.
	applyMu sync.Mutex

	// mu guards db and state. Readers hold it shared while they pick a
	// revision, walk the index and begin their bbolt transaction.
	mu     sync.RWMutex
	db     *bolt.DB
	closed bool
	fatal  error // sticky: a failed commit leaves memory ahead of disk
	state

	watchMu     sync.Mutex
	synced      map[*Watcher]struct{}
	unsynced    map[*Watcher]struct{}
	notifiedRev int64 // every event <= notifiedRev was offered to synced watchers
	watchWG     sync.WaitGroup
}

// Status describes the store for operators and the maintenance API.
type Status struct {
	DBSize          int64 // bytes of the database file in use (Size)
	DBSizeInUse     int64 // of those, bytes of pages holding data
	LogicalBytes    int64 // bytes of the key, lease and value records
	Revision        int64
	CompactRevision int64
	AppliedIndex    uint64
	Keys            int
	Leases          int
	Alarms          []*etcdserverpb.AlarmMember
	// StorageVersion is the format of the database file, as recorded in it.
	StorageVersion string
}

// Open opens or creates the store in the bbolt file at path. It verifies the
// file and refuses to start from a corrupt one.
func Open(path string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	db, st, err := openVerified(path, opts)
	if err != nil {
		return nil, err
	}
	s := &Store{
		path:     path,
		opts:     opts,
		db:       db,
		state:    *st,
		synced:   make(map[*Watcher]struct{}),
		unsynced: make(map[*Watcher]struct{}),
	}
	s.notifiedRev = s.rev
	return s, nil
}

func corruptError(path string, err error) error {
	return fmt.Errorf("%w: %s: %v; this member cannot start from it: restore the file from a snapshot of a healthy member, or remove it and re-join the member to the cluster", ErrCorrupt, path, err)
}

// openVerified opens path and loads its state, converting every sign of
// corruption, including panics and memory faults in bbolt while reading a
// damaged file, into an error.
func openVerified(path string, opts Options) (db *bolt.DB, st *state, err error) {
	fi, statErr := os.Stat(path)
	if statErr == nil && fi.Size() == 0 {
		return nil, nil, corruptError(path, errors.New("file exists but is empty"))
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if db != nil {
				db.Close()
			}
			db, st, err = nil, nil, corruptError(path, fmt.Errorf("reading the file crashed: %v", p))
		}
	}()
	// Opening a file for writing, bbolt rebuilds its free list (the store
	// does not write one, see boltOptions) and checks its pages in a
	// goroutine of its own, where a damaged page would crash the process
	// instead of failing here. So an existing file is read in full
	// read-only first, in this goroutine, which recovers.
	if statErr == nil {
		if st, err = loadReadOnly(path); err != nil {
			return nil, nil, err
		}
	}
	db, err = bolt.Open(path, 0o600, boltOptions(opts.UnsafeNoFsync || opts.NoSync))
	if err != nil {
		return nil, nil, openError(path, err)
	}
	if err := initBuckets(db); err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("mvcc: initialise %s: %w", path, err)
	}
	if st == nil {
		if st, err = load(db, path); err != nil {
			db.Close()
			return nil, nil, err
		}
	}
	return db, st, nil
}

func openError(path string, err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("mvcc: open %s: file is locked by another process; stop it or use another data directory", path)
	case os.IsPermission(err) || os.IsNotExist(err):
		return fmt.Errorf("mvcc: open %s: %w", path, err)
	}
	return corruptError(path, err)
}

// loadReadOnly verifies an existing file and loads its state, or returns
// a nil state for a file that has no buckets yet (a new store that stopped
// before initBuckets).
func loadReadOnly(path string) (*state, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		return nil, openError(path, err)
	}
	defer db.Close()
	fresh := true
	db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func([]byte, *bolt.Bucket) error {
			fresh = false
			return nil
		})
	})
	if fresh {
		return nil, nil
	}
	return load(db, path)
}

// boltOptions are the options of the store's files. As etcd does, commits
// do not write bbolt's freelist; Open rebuilds it (reading every page,
// which the verification at Open does anyway). Besides a page less per
// commit, the file then grows as etcd's does under the same writes, so a
// space quota is reached at the same write (measured against etcd 3.4: 8
// puts of 133 KiB under 2 MiB, 10 of 133,000 bytes under 2,000,000; with
// the freelist written, 8 and 8).
func boltOptions(noSync bool) *bolt.Options {
	return &bolt.Options{Timeout: time.Second, NoSync: noSync, NoFreelistSync: true}
}

// initBuckets gives a fresh file its buckets and format version. A file that
// already has buckets is left to load to judge, but for dropping the
// record of a NOSPACE alarm in the old layout (see legacyNoSpaceKey).
func initBuckets(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		empty := true
		tx.ForEach(func([]byte, *bolt.Bucket) error {
			empty = false
			return nil
		})
		if !empty {
			if meta := tx.Bucket(metaBucket); meta != nil && meta.Get(legacyNoSpaceKey) != nil {
				return meta.Delete(legacyNoSpaceKey)
			}
			return nil
		}
		for _, name := range [][]byte{keyBucket, leaseBucket, metaBucket} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		return tx.Bucket(metaBucket).Put(metaVersionKey, storageVersion)
	})
}

// load verifies the database and rebuilds the in-memory state from it.
func load(db *bolt.DB, path string) (*state, error) {
	st := &state{leases: make(map[int64]*lease)}
	err := db.View(func(tx *bolt.Tx) error {
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("mvcc: stat %s: %w", path, err)
		}
		if fi.Size() < tx.Size() {
			return corruptError(path, fmt.Errorf("file has %d bytes but its metadata describes %d (truncated?)", fi.Size(), tx.Size()))
		}
		if err := readEverything(tx); err != nil {
			return corruptError(path, err)
		}
		return loadTx(tx, st, path)
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// readEverything touches every page of the file that holds data, through
// every key and value of every bucket, and checks that keys come in order,
// so that a damaged page fails here, where openVerified recovers panics and
// faults, and not in the goroutine in which bbolt checks the pages again as
// it opens the file for writing (what that check finds still fails Open,
// but it leaves that goroutine and the file handle behind).
func readEverything(tx *bolt.Tx) error {
	var sink byte
	touch := func(b []byte) {
		if len(b) > 0 {
			sink ^= b[0] ^ b[len(b)-1]
		}
	}
	var walk func(name []byte, b *bolt.Bucket) error
	walk = func(name []byte, b *bolt.Bucket) error {
		c := b.Cursor()
		var prev []byte
		for k, v := c.First(); k != nil; k, v = c.Next() {
			touch(k)
			if prev != nil && bytes.Compare(prev, k) >= 0 {
				return fmt.Errorf("bucket %q: key %x follows %x", name, k, prev)
			}
			prev = k
			if v == nil {
				if nested := b.Bucket(k); nested != nil {
					if err := walk(k, nested); err != nil {
						return err
					}
				}
				continue
			}
			touch(v)
		}
		return nil
	}
	err := tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		touch(name)
		return walk(name, b)
	})
	_ = sink
	return err
}

func loadTx(tx *bolt.Tx, st *state, path string) error {
	meta, keys, leases := tx.Bucket(metaBucket), tx.Bucket(keyBucket), tx.Bucket(leaseBucket)
	if meta == nil || keys == nil || leases == nil {
		return corruptError(path, errors.New("not a Nexus store: buckets key, lease and meta are missing"))
	}
	if v := meta.Get(metaVersionKey); string(v) != string(storageVersion) {
		return corruptError(path, fmt.Errorf("unknown storage version %q (want %q)", v, storageVersion))
	}
	var err error
	if st.applied, err = metaUint64(meta, metaAppliedKey); err != nil {
		return corruptError(path, err)
	}
	compact, err := metaUint64(meta, metaCompactKey)
	if err != nil {
		return corruptError(path, err)
	}
	st.compactRev = int64(compact)
	if st.alarms, err = loadAlarms(meta); err != nil {
		return corruptError(path, err)
	}
	st.rev = max(1, st.compactRev)

	err = keys.ForEach(func(k, v []byte) error {
		rev, tomb, ok := bytesToRev(k)
		if !ok {
			return fmt.Errorf("key bucket holds %x, which is not a revision", k)
		}
		var kv mvccpb.KeyValue
		if err := proto.Unmarshal(v, &kv); err != nil {
			return fmt.Errorf("revision %d.%d: %w", rev.main, rev.sub, err)
		}
		if len(kv.Key) == 0 {
			return fmt.Errorf("revision %d.%d has an empty key", rev.main, rev.sub)
		}
		st.index.add(kv.Key, keyRev{rev: rev, tomb: tomb})
		st.rev = max(st.rev, rev.main)
		st.kvBytes += int64(len(k) + len(v))
		return nil
	})
	if err != nil {
		return corruptError(path, err)
	}
	err = leases.ForEach(func(k, v []byte) error {
		l, err := decodeLease(k, v)
		if err != nil {
			return err
		}
		st.leases[l.id] = l
		st.kvBytes += int64(len(k) + len(v))
		return nil
	})
	if err != nil {
		return corruptError(path, err)
	}
	// Attach every live key to its lease.
	for _, ki := range st.index.keys {
		kr := ki.revs[len(ki.revs)-1]
		if kr.tomb {
			continue
		}
		kv, err := getKV(keys, kr.rev)
		if err != nil {
			return corruptError(path, err)
		}
		if kv.Lease == 0 {
			continue
		}
		l, ok := st.leases[kv.Lease]
		if !ok {
			return corruptError(path, fmt.Errorf("key %q is attached to lease %x, which does not exist", kv.Key, kv.Lease))
		}
		l.keys[string(kv.Key)] = struct{}{}
	}
	return nil
}

func metaUint64(meta *bolt.Bucket, key []byte) (uint64, error) {
	v := meta.Get(key)
	switch len(v) {
	case 0:
		return 0, nil
	case 8:
		return uint64FromBytes(v), nil
	default:
		return 0, fmt.Errorf("meta %s has %d bytes, want 8", key, len(v))
	}
}

// getKV reads the value written at rev.
func getKV(b *bolt.Bucket, rev revision) (*mvccpb.KeyValue, error) {
	v := b.Get(revToBytes(rev, false))
	if v == nil {
		return nil, fmt.Errorf("mvcc: revision %d.%d is missing from the key bucket", rev.main, rev.sub)
	}
	kv := new(mvccpb.KeyValue)
	if err := proto.Unmarshal(v, kv); err != nil {
		return nil, fmt.Errorf("mvcc: decode revision %d.%d: %w", rev.main, rev.sub, err)
	}
	return kv, nil
}

// AppliedIndex returns the raft index of the last applied entry.
func (s *Store) AppliedIndex() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied
}

// Rev returns the current revision.
func (s *Store) Rev() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rev
}

// CompactRev returns the revision the store was last compacted at; reads
// below it fail with ErrCompacted.
func (s *Store) CompactRev() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.compactRev
}

// Status reports sizes and positions of the store.
func (s *Store) Status() (Status, error) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return Status{}, ErrClosed
	}
	st := Status{
		LogicalBytes:    s.kvBytes,
		Revision:        s.rev,
		CompactRevision: s.compactRev,
		AppliedIndex:    s.applied,
		Keys:            len(s.index.keys),
		Leases:          len(s.leases),
		Alarms:          cloneAlarms(s.alarms, etcdserverpb.AlarmType_NONE),
	}
	db := s.db
	tx, err := db.Begin(false)
	s.mu.RUnlock()
	if err != nil {
		return Status{}, fmt.Errorf("mvcc: status: %w", err)
	}
	defer tx.Rollback()
	stats := db.Stats()
	st.DBSize = tx.Size()
	st.DBSizeInUse = st.DBSize - int64(stats.FreePageN+stats.PendingPageN)*int64(db.Info().PageSize)
	st.StorageVersion = string(tx.Bucket(metaBucket).Get(metaVersionKey))
	return st, nil
}

// Size is the size of the database file in use, as etcd measures its
// backend for --quota-backend-bytes: bbolt's high-water mark of pages
// (free pages included, so it shrinks only by Defragment). It is what
// Status reports as DBSize and etcdctl endpoint status as DB SIZE.
func (s *Store) Size() (int64, error) {
	tx, err := s.readTx("size")
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	return tx.Size(), nil
}

// readTx begins a read transaction on the current database file (Restore
// and Defragment replace it) for the operation named what.
func (s *Store) readTx(what string) (*bolt.Tx, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	tx, err := s.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("mvcc: %s: %w", what, err)
	}
	return tx, nil
}

// Close cancels every watcher and closes the database. Calls after the first
// return ErrClosed.
// Sync flushes every committed transaction to disk (fdatasync), for a
// store opened with NoSync.
func (s *Store) Sync() error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	return s.db.Sync()
}

func (s *Store) Close() error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	db := s.db
	s.mu.Unlock()
	s.cancelAllWatchers(ErrClosed)
	s.watchWG.Wait()
	if err := db.Close(); err != nil {
		return fmt.Errorf("mvcc: close %s: %w", s.path, err)
	}
	return nil
}
