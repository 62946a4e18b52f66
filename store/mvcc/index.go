package mvcc

import (
	"bytes"
	"sort"
)

// keyRev is one change of a key: a put or, when tomb is set, a delete.
type keyRev struct {
	rev  revision
	tomb bool
}

// keyIndex is the history of one user key, oldest first.
type keyIndex struct {
	key  []byte
	revs []keyRev
}

// latest returns the last change with main revision <= atRev.
func (ki *keyIndex) latest(atRev int64) (keyRev, bool) {
	i := sort.Search(len(ki.revs), func(i int) bool { return ki.revs[i].rev.main > atRev })
	if i == 0 {
		return keyRev{}, false
	}
	return ki.revs[i-1], true
}

// live returns the revision holding the key's value at atRev, if the key
// exists at atRev.
func (ki *keyIndex) live(atRev int64) (revision, bool) {
	kr, ok := ki.latest(atRev)
	if !ok || kr.tomb {
		return revision{}, false
	}
	return kr.rev, true
}

// compact drops the changes made obsolete by compacting at rev and returns
// them. The change that holds the key's value at rev is kept; a tombstone is
// kept only if it was written at rev itself, so that a watch starting at the
// compacted revision still sees the deletes of that revision.
func (ki *keyIndex) compact(rev int64) []keyRev {
	n := sort.Search(len(ki.revs), func(i int) bool { return ki.revs[i].rev.main > rev })
	if n == 0 {
		return nil
	}
	cut := n - 1
	if last := ki.revs[n-1]; last.tomb && last.rev.main < rev {
		cut = n
	}
	if cut == 0 {
		return nil
	}
	removed := append([]keyRev(nil), ki.revs[:cut]...)
	ki.revs = append(ki.revs[:0:0], ki.revs[cut:]...)
	return removed
}

// treeIndex maps user keys to their history, ordered by key.
//
// It is a sorted slice: lookups are binary searches and inserting a new key
// moves the tail of the slice. That is a memmove of 8 bytes per key, cheap
// next to the WAL fsync every write pays, and it keeps the structure
// obvious.
type treeIndex struct {
	keys []*keyIndex
}

// seek returns the position of the first key >= key.
func (t *treeIndex) seek(key []byte) int {
	return sort.Search(len(t.keys), func(i int) bool { return bytes.Compare(t.keys[i].key, key) >= 0 })
}

func (t *treeIndex) get(key []byte) *keyIndex {
	i := t.seek(key)
	if i < len(t.keys) && bytes.Equal(t.keys[i].key, key) {
		return t.keys[i]
	}
	return nil
}

func (t *treeIndex) getOrCreate(key []byte) *keyIndex {
	i := t.seek(key)
	if i < len(t.keys) && bytes.Equal(t.keys[i].key, key) {
		return t.keys[i]
	}
	ki := &keyIndex{key: append([]byte(nil), key...)}
	t.keys = append(t.keys, nil)
	copy(t.keys[i+1:], t.keys[i:])
	t.keys[i] = ki
	return ki
}

// add records a change; changes arrive in revision order.
func (t *treeIndex) add(key []byte, kr keyRev) {
	ki := t.getOrCreate(key)
	ki.revs = append(ki.revs, kr)
}

// ascend calls fn for every key in [key, end) in key order until fn returns
// false. An empty end selects key alone; end "\x00" selects every key >= key.
func (t *treeIndex) ascend(key, end []byte, fn func(*keyIndex) bool) {
	i := t.seek(key)
	if len(end) == 0 {
		if i < len(t.keys) && bytes.Equal(t.keys[i].key, key) {
			fn(t.keys[i])
		}
		return
	}
	all := isAllKeysEnd(end)
	for ; i < len(t.keys); i++ {
		ki := t.keys[i]
		if !all && bytes.Compare(ki.key, end) >= 0 {
			return
		}
		if !fn(ki) {
			return
		}
	}
}

// compact compacts every key at rev and calls removed for each dropped
// change, in key order.
func (t *treeIndex) compact(rev int64, removed func(key []byte, kr keyRev)) {
	kept := t.keys[:0]
	for _, ki := range t.keys {
		for _, kr := range ki.compact(rev) {
			removed(ki.key, kr)
		}
		if len(ki.revs) > 0 {
			kept = append(kept, ki)
		}
	}
	clear(t.keys[len(kept):])
	t.keys = kept
}

func isAllKeysEnd(end []byte) bool { return len(end) == 1 && end[0] == 0 }

// inRange reports whether k is in [key, end) with the range conventions of
// ascend.
func inRange(k, key, end []byte) bool {
	if len(end) == 0 {
		return bytes.Equal(k, key)
	}
	if bytes.Compare(k, key) < 0 {
		return false
	}
	return isAllKeysEnd(end) || bytes.Compare(k, end) < 0
}
