package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"nexus.dev/nexus/internal/fsutil"
)

// Snapshot writes a consistent copy of the database to w and returns the
// applied index it contains and the bytes written. Writes go on meanwhile;
// Restore and Defragment wait for the copy to finish before releasing the
// file it reads.
func (s *Store) Snapshot(w io.Writer) (appliedIndex uint64, n int64, err error) {
	tx, err := s.readTx("snapshot")
	if err != nil {
		return 0, 0, err
	}
	defer tx.Rollback()
	appliedIndex, err = metaUint64(tx.Bucket(metaBucket), metaAppliedKey)
	if err != nil {
		return 0, 0, fmt.Errorf("mvcc: snapshot: %w", err)
	}
	n, err = tx.WriteTo(w)
	if err != nil {
		return 0, n, fmt.Errorf("mvcc: snapshot: write: %w", err)
	}
	return appliedIndex, n, nil
}

// Restore replaces the store's contents with a snapshot made by Snapshot.
// The snapshot is written next to the database, verified like Open verifies
// a file, and only then swapped in; a bad snapshot leaves the store as it
// was. Every watcher is cancelled with ErrRestored and lease deadlines are
// forgotten.
func (s *Store) Restore(r io.Reader) error {
	tmp := s.path + ".restore"
	if err := writeFile(tmp, r); err != nil {
		return fmt.Errorf("mvcc: restore: %w", err)
	}
	db, st, err := openVerified(tmp, s.opts)
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("mvcc: restore: snapshot rejected: %w", err)
	}

	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if err := s.swapDB(db, tmp, st); err != nil {
		return fmt.Errorf("mvcc: restore: %w", err)
	}
	s.cancelAllWatchers(ErrRestored)
	s.watchMu.Lock()
	s.notifiedRev = st.rev
	s.watchMu.Unlock()
	return nil
}

func writeFile(path string, r io.Reader) error {
	os.Remove(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// swapDB makes db, opened at tmp, the store's database: it renames tmp over
// the store's file and swaps the handle, holding the store lock only for the
// swap. With st set, the in-memory state is replaced too. The caller holds
// applyMu.
func (s *Store) swapDB(db *bolt.DB, tmp string, st *state) error {
	s.mu.RLock()
	closed, fatal := s.closed, s.fatal
	s.mu.RUnlock()
	if closed || fatal != nil {
		db.Close()
		os.Remove(tmp)
		return errors.Join(ErrClosed, fatal)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		db.Close()
		os.Remove(tmp)
		return err
	}
	if err := fsutil.SyncDir(filepath.Dir(s.path)); err != nil {
		// The rename happened; the new file is the store now.
		s.mu.Lock()
		s.fatal = fmt.Errorf("mvcc: sync directory of %s: %w; restart the member", s.path, err)
		s.mu.Unlock()
	}
	s.mu.Lock()
	old := s.db
	s.db = db
	if st != nil {
		s.state = *st
	}
	s.mu.Unlock()
	// Waits for readers still in the old file, outside the lock.
	return old.Close()
}

// Defragment rewrites the database into a new file without free pages and
// swaps it in. Writes wait until it is done; reads go on against the old
// file and are held only for the swap.
func (s *Store) Defragment() error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.mu.RLock()
	closed, src := s.closed, s.db
	s.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	tmp := s.path + ".defrag"
	os.Remove(tmp)
	dst, err := bolt.Open(tmp, 0o600, boltOptions(true))
	if err != nil {
		return fmt.Errorf("mvcc: defragment: create %s: %w", tmp, err)
	}
	fail := func(err error) error {
		dst.Close()
		os.Remove(tmp)
		return fmt.Errorf("mvcc: defragment: %w", err)
	}
	if err := bolt.Compact(dst, src, 16<<20); err != nil {
		return fail(err)
	}
	if err := dst.Sync(); err != nil {
		return fail(err)
	}
	dst.NoSync = s.opts.UnsafeNoFsync || s.opts.NoSync
	if err := s.swapDB(dst, tmp, nil); err != nil {
		return fmt.Errorf("mvcc: defragment: %w", err)
	}
	return nil
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Hash is a CRC-32C over every bucket's name, keys and values, except the
// applied index, like etcd's backend hash. Members that applied the same
// entries have the same hash.
func (s *Store) Hash() (uint32, error) {
	tx, err := s.readTx("hash")
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	h := crc32.New(crcTable)
	err = tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		h.Write(name)
		return b.ForEach(func(k, v []byte) error {
			if bytes.Equal(name, metaBucket) && bytes.Equal(k, metaAppliedKey) {
				return nil
			}
			h.Write(k)
			h.Write(v)
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("mvcc: hash: %w", err)
	}
	return h.Sum32(), nil
}

// KVHash is the answer of HashKV.
type KVHash struct {
	Hash uint32
	// Revision is the revision the hash covers: the one asked for, or the
	// store's revision when the hash was taken.
	Revision int64
	// CompactRevision is the revision the store was compacted at (0: never);
	// hashes are comparable only between members with the same one.
	CompactRevision int64
}

// HashKV is etcd's HashKV: a CRC-32C over the key bucket's name and the
// records of revision rev (0: current), the same as etcd's for the same
// history, for comparing members at one revision. It covers every record
// after the compacted revision up to rev, and of those at or before it the
// ones still holding a key's value at rev (etcd's "keep" set).
func (s *Store) HashKV(rev int64) (KVHash, error) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return KVHash{}, ErrClosed
	}
	out := KVHash{Revision: rev, CompactRevision: s.compactRev}
	if rev <= 0 {
		out.Revision = s.rev
	}
	switch {
	case out.Revision > s.rev:
		s.mu.RUnlock()
		return KVHash{CompactRevision: out.CompactRevision}, rpctypes.ErrGRPCFutureRev
	case out.Revision < out.CompactRevision:
		s.mu.RUnlock()
		return KVHash{CompactRevision: out.CompactRevision}, rpctypes.ErrGRPCCompacted
	}
	// Memory, not the transaction, decides: a compaction publishes its
	// revision and trims the index before it commits, so the transaction
	// may still hold records the filter below leaves out.
	keep := make(map[revision]struct{})
	if out.CompactRevision > 0 {
		for _, ki := range s.index.keys {
			if r, ok := ki.live(out.Revision); ok && r.main <= out.CompactRevision {
				keep[r] = struct{}{}
			}
		}
	}
	tx, err := s.db.Begin(false)
	s.mu.RUnlock()
	if err != nil {
		return KVHash{}, fmt.Errorf("mvcc: hashkv: %w", err)
	}
	defer tx.Rollback()
	h := crc32.New(crcTable)
	h.Write(keyBucket)
	c := tx.Bucket(keyBucket).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		r, _, ok := bytesToRev(k)
		if !ok || r.main > out.Revision {
			break
		}
		if r.main <= out.CompactRevision && len(keep) > 0 {
			if _, kept := keep[r]; !kept {
				continue
			}
		}
		h.Write(k)
		h.Write(v)
	}
	out.Hash = h.Sum32()
	return out, nil
}
