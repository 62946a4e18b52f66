package server

import (
	"context"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"nexus.dev/nexus/store/mvcc"
)

// The space quota is etcd's --quota-backend-bytes. What counts is the size
// of this member's database file in use (mvcc.Store.Size, etcd's backend
// size, "DB SIZE" in etcdctl endpoint status), not the logical size of the
// data: free pages count until a defragmentation returns them. The sizes of
// members' files differ, so the check is not part of the replicated state
// machine; as in etcd, a member that finds itself over its quota raises its
// own NOSPACE alarm through raft, and every member then refuses what would
// add data until the alarm is disarmed (mvcc's capped apply).
//
// A write is checked twice, as etcd checks it: by the member that receives
// it, before proposing (size + QuotaCost must stay below the quota, else
// the write fails with NOSPACE and the alarm is raised), and by every
// member as it applies it (then the alarm is raised, the write having been
// admitted already). The second catches concurrent writes that each passed
// the first, and members whose file is larger than the receiver's. Unlike
// etcd, a write admitted by the first check is answered as applied (etcd
// answers NOSPACE although it applied it).

const (
	// DefaultQuotaBytes is the quota when none is configured, etcd's.
	DefaultQuotaBytes = 2 << 30
	// MaxQuotaBytes is where etcd starts warning that the quota is larger
	// than it suggests.
	MaxQuotaBytes = 8 << 30
)

// quotaBytes is the configured quota: 0 means none.
func quotaBytes(configured int64) int64 {
	switch {
	case configured < 0:
		return 0
	case configured == 0:
		return DefaultQuotaBytes
	}
	return configured
}

// overQuota reports whether a request of cost bytes would take a database
// of size bytes to the quota or beyond.
func (s *Server) overQuota(size, cost int64) bool {
	return s.quota > 0 && cost > 0 && size+cost >= s.quota
}

// admit refuses r with NOSPACE if the database would reach the quota with
// it, and raises this member's alarm, as etcd does before it proposes a
// write.
func (s *Server) admit(ctx context.Context, r *etcdserverpb.InternalRaftRequest) error {
	cost := mvcc.QuotaCost(r)
	if s.quota <= 0 || cost == 0 {
		return nil
	}
	size, err := s.kv.Size()
	if err != nil {
		return toGRPC(err)
	}
	if !s.overQuota(size, cost) {
		return nil
	}
	if !s.ownNoSpace() {
		s.raiseNoSpace(ctx, size)
	}
	return rpctypes.ErrGRPCNoSpace
}

// ownNoSpace reports whether this member's NOSPACE alarm is raised.
func (s *Server) ownNoSpace() bool {
	for _, a := range s.kv.Alarms() {
		if a.MemberID == s.cfg.ID && a.Alarm == etcdserverpb.AlarmType_NOSPACE {
			return true
		}
	}
	return false
}

// raiseNoSpace proposes this member's NOSPACE alarm.
func (s *Server) raiseNoSpace(ctx context.Context, size int64) {
	s.log.Warn("the database reached its space quota: raising the NOSPACE alarm; writes fail until it is disarmed "+
		"(compact, defragment, then etcdctl alarm disarm)", "size", size, "quota", s.quota)
	a := &etcdserverpb.AlarmRequest{Action: etcdserverpb.AlarmRequest_ACTIVATE, MemberID: s.cfg.ID, Alarm: etcdserverpb.AlarmType_NOSPACE}
	if _, err := s.propose(ctx, &etcdserverpb.InternalRaftRequest{Alarm: a}); err != nil {
		s.log.Warn("raising the NOSPACE alarm failed; the next write over the quota tries again", "err", err)
	}
}

// quotaAfterApply is the check at apply: entries admitted elsewhere, or
// together with others, may have taken this member over its quota.
func (s *Server) quotaAfterApply(size int64, entries []mvcc.Entry, results []*mvcc.Result) {
	for i, e := range entries {
		if results[i].Skipped || !s.overQuota(size, mvcc.QuotaCost(e.Req)) {
			continue
		}
		if !s.ownNoSpace() {
			// Proposing waits for the entry to be applied, by the very
			// goroutine that calls this: hand it to alarmLoop.
			select {
			case s.raiseAlarm <- size:
			default: // one is pending already
			}
		}
		return
	}
}

// alarmLoop raises the alarms quotaAfterApply asks for.
func (s *Server) alarmLoop(ctx context.Context) {
	defer s.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case size := <-s.raiseAlarm:
			if s.ownNoSpace() {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			s.raiseNoSpace(pctx, size)
			cancel()
		}
	}
}
