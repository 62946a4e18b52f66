package mvcc

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Range reads keys at the current revision, or at r.Revision. It is a
// serializable read of this member's state; linearizability is the caller's
// business (read index), so r.Serializable is ignored.
func (s *Store) Range(ctx context.Context, r *etcdserverpb.RangeRequest) (*etcdserverpb.RangeResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := validateRange(r); err != nil {
		return nil, err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, ErrClosed
	}
	plan, err := s.planRange(r, s.rev)
	if err != nil {
		s.mu.RUnlock()
		return nil, err
	}
	tx, err := s.db.Begin(false)
	s.mu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("mvcc: range: %w", err)
	}
	defer tx.Rollback()
	kvs, err := fetch(tx.Bucket(keyBucket), plan)
	if err != nil {
		return nil, err
	}
	resp := finishRange(r, plan, kvs)
	resp.Header = &etcdserverpb.ResponseHeader{Revision: plan.curRev}
	return resp, nil
}

func validateRange(r *etcdserverpb.RangeRequest) error {
	if len(r.Key) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if _, ok := etcdserverpb.RangeRequest_SortOrder_name[int32(r.SortOrder)]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	if _, ok := etcdserverpb.RangeRequest_SortTarget_name[int32(r.SortTarget)]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	return nil
}

// rangePlan is what a range resolved from the index: which revisions to
// fetch, and how many keys matched.
type rangePlan struct {
	curRev int64
	count  int64
	revs   []revision
}

// planRange resolves r against the index at curRev. The caller holds s.mu.
func (s *Store) planRange(r *etcdserverpb.RangeRequest, curRev int64) (rangePlan, error) {
	rev := r.Revision
	if rev > curRev {
		return rangePlan{}, rpctypes.ErrGRPCFutureRev
	}
	if rev <= 0 {
		rev = curRev
	}
	if rev < s.compactRev {
		return rangePlan{}, rpctypes.ErrGRPCCompacted
	}
	// Sorting and revision filters need every match; otherwise one more
	// than the limit tells whether there is more.
	limit := r.Limit
	if r.SortOrder != etcdserverpb.RangeRequest_NONE ||
		r.MinModRevision != 0 || r.MaxModRevision != 0 ||
		r.MinCreateRevision != 0 || r.MaxCreateRevision != 0 {
		limit = 0
	}
	plan := rangePlan{curRev: curRev}
	s.index.ascend(r.Key, r.RangeEnd, func(ki *keyIndex) bool {
		at, ok := ki.live(rev)
		if !ok {
			return true
		}
		plan.count++
		if !r.CountOnly && (limit <= 0 || int64(len(plan.revs)) <= limit) {
			plan.revs = append(plan.revs, at)
		}
		return true
	})
	return plan, nil
}

func fetch(b *bolt.Bucket, plan rangePlan) ([]*mvccpb.KeyValue, error) {
	kvs := make([]*mvccpb.KeyValue, 0, len(plan.revs))
	for _, rev := range plan.revs {
		kv, err := getKV(b, rev)
		if err != nil {
			return nil, err
		}
		kvs = append(kvs, kv)
	}
	return kvs, nil
}

// finishRange applies filters, sort, limit and keys_only like etcd. Count
// is the number of keys in the range, before filters and limit.
func finishRange(r *etcdserverpb.RangeRequest, plan rangePlan, kvs []*mvccpb.KeyValue) *etcdserverpb.RangeResponse {
	prune := func(drop func(*mvccpb.KeyValue) bool) { kvs = slices.DeleteFunc(kvs, drop) }
	if r.MaxModRevision != 0 {
		prune(func(kv *mvccpb.KeyValue) bool { return kv.ModRevision > r.MaxModRevision })
	}
	if r.MinModRevision != 0 {
		prune(func(kv *mvccpb.KeyValue) bool { return kv.ModRevision < r.MinModRevision })
	}
	if r.MaxCreateRevision != 0 {
		prune(func(kv *mvccpb.KeyValue) bool { return kv.CreateRevision > r.MaxCreateRevision })
	}
	if r.MinCreateRevision != 0 {
		prune(func(kv *mvccpb.KeyValue) bool { return kv.CreateRevision < r.MinCreateRevision })
	}

	order := r.SortOrder
	switch {
	case r.SortTarget != etcdserverpb.RangeRequest_KEY && order == etcdserverpb.RangeRequest_NONE:
		// Results come in key order; any other target sorts ascending
		// unless told otherwise.
		order = etcdserverpb.RangeRequest_ASCEND
	case r.SortTarget == etcdserverpb.RangeRequest_KEY && order == etcdserverpb.RangeRequest_ASCEND:
		order = etcdserverpb.RangeRequest_NONE
	}
	if order != etcdserverpb.RangeRequest_NONE {
		by := sortKey(r.SortTarget)
		// Stable, so that ties stay in key order on every member.
		slices.SortStableFunc(kvs, func(a, b *mvccpb.KeyValue) int {
			if order == etcdserverpb.RangeRequest_DESCEND {
				return by(b, a)
			}
			return by(a, b)
		})
	}

	resp := &etcdserverpb.RangeResponse{Count: plan.count}
	if r.Limit > 0 && int64(len(kvs)) > r.Limit {
		kvs = kvs[:r.Limit]
		resp.More = true
	}
	if r.KeysOnly {
		for _, kv := range kvs {
			kv.Value = nil
		}
	}
	resp.Kvs = kvs
	return resp
}

func sortKey(t etcdserverpb.RangeRequest_SortTarget) func(a, b *mvccpb.KeyValue) int {
	switch t {
	case etcdserverpb.RangeRequest_VERSION:
		return func(a, b *mvccpb.KeyValue) int { return cmp.Compare(a.Version, b.Version) }
	case etcdserverpb.RangeRequest_CREATE:
		return func(a, b *mvccpb.KeyValue) int { return cmp.Compare(a.CreateRevision, b.CreateRevision) }
	case etcdserverpb.RangeRequest_MOD:
		return func(a, b *mvccpb.KeyValue) int { return cmp.Compare(a.ModRevision, b.ModRevision) }
	case etcdserverpb.RangeRequest_VALUE:
		return func(a, b *mvccpb.KeyValue) int { return bytes.Compare(a.Value, b.Value) }
	default:
		return func(a, b *mvccpb.KeyValue) int { return bytes.Compare(a.Key, b.Key) }
	}
}
