package mvcc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// lease is a granted lease. id, ttl and remaining are replicated; expiry is
// the leader's private deadline and never reaches the database.
type lease struct {
	id        int64
	ttl       int64 // seconds
	remaining int64 // seconds left at the last checkpoint; 0 if none
	keys      map[string]struct{}
	expiry    time.Time // zero: not tracked yet on this member
}

const leaseValueLen = 16

func leaseKey(id int64) []byte { return putUint64(uint64(id)) }

func (l *lease) value() []byte {
	b := make([]byte, leaseValueLen)
	binary.BigEndian.PutUint64(b, uint64(l.ttl))
	binary.BigEndian.PutUint64(b[8:], uint64(l.remaining))
	return b
}

func decodeLease(k, v []byte) (*lease, error) {
	if len(k) != 8 || len(v) != leaseValueLen {
		return nil, fmt.Errorf("lease bucket entry %x has %d/%d bytes, want 8/%d", k, len(k), len(v), leaseValueLen)
	}
	return &lease{
		id:        int64(uint64FromBytes(k)),
		ttl:       int64(uint64FromBytes(v)),
		remaining: int64(uint64FromBytes(v[8:])),
		keys:      make(map[string]struct{}),
	}, nil
}

// startTTL is the time a lease gets when a member starts tracking it.
func (l *lease) startTTL() time.Duration {
	if l.remaining > 0 {
		return time.Duration(l.remaining) * time.Second
	}
	return time.Duration(l.ttl) * time.Second
}

// LeaseInfo describes a lease.
type LeaseInfo struct {
	ID int64
	// TTL is the granted time to live, in seconds.
	TTL int64
	// Remaining is the time left, in seconds, rounded up: from the
	// deadline this member tracks, or, if it tracks none (it is not the
	// leader), from the last checkpoint or the TTL.
	Remaining int64
	// Keys are the keys attached to the lease, sorted.
	Keys [][]byte
}

func (l *lease) info(now time.Time, withKeys bool) LeaseInfo {
	li := LeaseInfo{ID: l.id, TTL: l.ttl, Remaining: int64(l.startTTL() / time.Second)}
	if !l.expiry.IsZero() {
		left := l.expiry.Sub(now)
		li.Remaining = max(0, int64((left+time.Second-1)/time.Second))
	}
	if withKeys {
		li.Keys = sortedKeys(l.keys)
	}
	return li
}

func sortedKeys(m map[string]struct{}) [][]byte {
	keys := make([][]byte, 0, len(m))
	for k := range m {
		keys = append(keys, []byte(k))
	}
	slices.SortFunc(keys, bytes.Compare)
	return keys
}

func (s *Store) sortedLeaseIDs() []int64 {
	ids := make([]int64, 0, len(s.leases))
	for id := range s.leases {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Leases lists every lease, by ID, without their keys.
func (s *Store) Leases(now time.Time) []LeaseInfo {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]LeaseInfo, 0, len(s.leases))
	for _, id := range s.sortedLeaseIDs() {
		out = append(out, s.leases[id].info(now, false))
	}
	return out
}

// LeaseTimeToLive describes lease id with its keys, or fails with
// ErrGRPCLeaseNotFound.
func (s *Store) LeaseTimeToLive(id int64, now time.Time) (LeaseInfo, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	l, ok := s.leases[id]
	if !ok {
		return LeaseInfo{}, rpctypes.ErrGRPCLeaseNotFound
	}
	return l.info(now, true), nil
}

// ExpiredLeases returns, sorted, the leases whose deadline is not after now.
// The leader calls it periodically and proposes a LeaseRevoke for each. A
// lease this member does not track yet (it was granted or checkpointed since
// the last call) starts its deadline at now.
func (s *Store) ExpiredLeases(now time.Time) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var expired []int64
	for _, id := range s.sortedLeaseIDs() {
		l := s.leases[id]
		if l.expiry.IsZero() {
			l.expiry = now.Add(l.startTTL())
		}
		if !now.Before(l.expiry) {
			expired = append(expired, id)
		}
	}
	return expired
}

// Renew is a keep-alive: it restarts the deadline of lease id at now+TTL and
// returns the TTL. It changes only this member's memory, which is why only
// the leader serves keep-alives. An expired lease, whose revoke is on its
// way through raft, is not renewed.
func (s *Store) Renew(id int64, now time.Time) (ttl int64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.leases[id]
	if !ok || (!l.expiry.IsZero() && !now.Before(l.expiry)) {
		return 0, rpctypes.ErrGRPCLeaseNotFound
	}
	l.expiry = now.Add(time.Duration(l.ttl) * time.Second)
	return l.ttl, nil
}

// Promote is called when this member becomes leader: every lease gets a
// fresh deadline of now + extend + its remaining TTL (last checkpoint, or
// the full TTL), so clients have time to find the new leader before their
// leases expire.
func (s *Store) Promote(now time.Time, extend time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.leases {
		l.expiry = now.Add(extend + l.startTTL())
	}
}

// Demote forgets every deadline, when this member stops being leader.
func (s *Store) Demote() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.leases {
		l.expiry = time.Time{}
	}
}

// Checkpoints returns the remaining TTL of every tracked lease, sorted by
// ID, for the leader to propose as a LeaseCheckpoint so that a future leader
// does not restart long leases from their full TTL.
func (s *Store) Checkpoints(now time.Time) []*etcdserverpb.LeaseCheckpoint {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var cps []*etcdserverpb.LeaseCheckpoint
	for _, id := range s.sortedLeaseIDs() {
		l := s.leases[id]
		if l.expiry.IsZero() {
			continue
		}
		cps = append(cps, &etcdserverpb.LeaseCheckpoint{ID: id, Remaining_TTL: l.info(now, false).Remaining})
	}
	return cps
}
