package mvcc

import "encoding/binary"

// revision identifies one change: main is the store revision of the raft
// entry (or transaction) that made it, sub orders the changes within it.
type revision struct {
	main int64
	sub  int64
}

const (
	revBytesLen       = 8 + 1 + 8
	markedRevBytesLen = revBytesLen + 1
	tombstoneMark     = 't'
)

// revToBytes encodes rev the way etcd does, so that bbolt's byte order is
// revision order: main, '_', sub, and a trailing 't' for tombstones.
func revToBytes(rev revision, tombstone bool) []byte {
	n := revBytesLen
	if tombstone {
		n = markedRevBytesLen
	}
	b := make([]byte, n)
	binary.BigEndian.PutUint64(b, uint64(rev.main))
	b[8] = '_'
	binary.BigEndian.PutUint64(b[9:], uint64(rev.sub))
	if tombstone {
		b[revBytesLen] = tombstoneMark
	}
	return b
}

// bytesToRev decodes a bbolt key of the key bucket; ok is false for keys that
// are not revisions.
func bytesToRev(b []byte) (rev revision, tombstone bool, ok bool) {
	switch {
	case len(b) == revBytesLen:
	case len(b) == markedRevBytesLen && b[revBytesLen] == tombstoneMark:
		tombstone = true
	default:
		return revision{}, false, false
	}
	if b[8] != '_' {
		return revision{}, false, false
	}
	rev.main = int64(binary.BigEndian.Uint64(b))
	rev.sub = int64(binary.BigEndian.Uint64(b[9:]))
	if rev.main < 0 || rev.sub < 0 {
		return revision{}, false, false
	}
	return rev, tombstone, true
}

func putUint64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func uint64FromBytes(b []byte) uint64 { return binary.BigEndian.Uint64(b) }
