package mvcc

import (
	"errors"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

func grant(id, ttl int64) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: id, TTL: ttl}}
}

func revoke(id int64) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}}
}

func TestLeaseGrantAttachRevoke(t *testing.T) {
	s := openTestStore(t, Options{MinLeaseTTL: 5})
	g := mustApply(t, s, grant(100, 2)).Resp.(*pb.LeaseGrantResponse)
	if g.ID != 100 || g.TTL != 5 {
		t.Fatalf("grant = %v, want ID 100 with TTL raised to the minimum 5", g)
	}
	if res := apply(t, s, grant(100, 10)); !errors.Is(res.Err, rpctypes.ErrGRPCLeaseExist) {
		t.Errorf("regrant: %v", res.Err)
	}
	if res := apply(t, s, grant(1, MaxLeaseTTL+1)); !errors.Is(res.Err, rpctypes.ErrGRPCLeaseTTLTooLarge) {
		t.Errorf("huge TTL: %v", res.Err)
	}
	// ID 0: derived from the raft index, the same on every member.
	idx := s.AppliedIndex() + 1
	g0 := mustApply(t, s, grant(0, 30)).Resp.(*pb.LeaseGrantResponse)
	if g0.ID != int64(idx) {
		t.Errorf("derived ID = %d, want raft index %d", g0.ID, idx)
	}

	mustApply(t, s, putLease("a", "1", 100))
	mustApply(t, s, putLease("b", "1", 100))
	mustApply(t, s, putLease("c", "1", 100))
	mustApply(t, s, put("c", "detached"))      // a put without lease detaches
	mustApply(t, s, putLease("d", "1", g0.ID)) // another lease
	mustApply(t, s, del("b", ""))              // deleting detaches too

	info, err := s.LeaseTimeToLive(100, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := keysOf2(info.Keys); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("keys of lease 100 = %q", got)
	}

	rev := s.Rev()
	resp := mustApply(t, s, revoke(100)).Resp.(*pb.LeaseRevokeResponse)
	if resp.Header.Revision != rev+1 {
		t.Errorf("revoke revision = %d, want %d", resp.Header.Revision, rev+1)
	}
	if got := keysOf(rangeAll(t, s)); !slices.Equal(got, []string{"c", "d"}) {
		t.Errorf("keys after revoke = %q", got)
	}
	if _, err := s.LeaseTimeToLive(100, time.Now()); !errors.Is(err, rpctypes.ErrGRPCLeaseNotFound) {
		t.Errorf("revoked lease: %v", err)
	}
	if res := apply(t, s, revoke(100)); !errors.Is(res.Err, rpctypes.ErrGRPCLeaseNotFound) {
		t.Errorf("second revoke: %v", res.Err)
	}
	if res := apply(t, s, putLease("x", "1", 100)); !errors.Is(res.Err, rpctypes.ErrGRPCLeaseNotFound) {
		t.Errorf("put with revoked lease: %v", res.Err)
	}
	// A lease without keys revokes without a new revision.
	rev = s.Rev()
	mustApply(t, s, grant(200, 10))
	mustApply(t, s, revoke(200))
	if s.Rev() != rev {
		t.Errorf("empty revoke moved revision %d -> %d", rev, s.Rev())
	}
}

func keysOf2(keys [][]byte) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = string(k)
	}
	return out
}

func TestLeaseExpiryIsLeaderMemory(t *testing.T) {
	s := openTestStore(t, Options{})
	mustApply(t, s, grant(1, 10))
	mustApply(t, s, grant(2, 100))
	t0 := time.Unix(1000, 0)

	// Deadlines start when the leader first looks.
	if got := s.ExpiredLeases(t0); len(got) != 0 {
		t.Fatalf("expired at start: %v", got)
	}
	if got := s.ExpiredLeases(t0.Add(9 * time.Second)); len(got) != 0 {
		t.Fatalf("expired early: %v", got)
	}
	if ttl, err := s.Renew(1, t0.Add(9*time.Second)); err != nil || ttl != 10 {
		t.Fatalf("Renew = %d, %v", ttl, err)
	}
	if got := s.ExpiredLeases(t0.Add(18 * time.Second)); len(got) != 0 {
		t.Fatalf("renewed lease expired: %v", got)
	}
	info, _ := s.LeaseTimeToLive(1, t0.Add(18*time.Second))
	if info.Remaining != 1 || info.TTL != 10 {
		t.Errorf("time to live = %+v", info)
	}
	if got := s.ExpiredLeases(t0.Add(19 * time.Second)); !slices.Equal(got, []int64{1}) {
		t.Fatalf("expired = %v, want [1]", got)
	}
	if _, err := s.Renew(1, t0.Add(20*time.Second)); !errors.Is(err, rpctypes.ErrGRPCLeaseNotFound) {
		t.Errorf("renewing an expired lease: %v", err)
	}

	// A checkpoint is replicated: a new leader restarts from it.
	mustApply(t, s, &pb.InternalRaftRequest{LeaseCheckpoint: &pb.LeaseCheckpointRequest{Checkpoints: []*pb.LeaseCheckpoint{{ID: 2, Remaining_TTL: 30}, {ID: 99, Remaining_TTL: 1}}}})
	s.Demote()
	if info, _ := s.LeaseTimeToLive(2, time.Time{}); info.Remaining != 30 {
		t.Errorf("follower remaining = %d, want the checkpointed 30", info.Remaining)
	}
	t1 := time.Unix(5000, 0)
	s.Promote(t1, 2*time.Second)
	if got := s.ExpiredLeases(t1.Add(31 * time.Second)); slices.Contains(got, 2) {
		t.Errorf("lease 2 expired before checkpoint+extend: %v", got)
	}
	if got := s.ExpiredLeases(t1.Add(32 * time.Second)); !slices.Contains(got, 2) {
		t.Errorf("lease 2 not expired after checkpoint+extend: %v", got)
	}
	cps := s.Checkpoints(t1.Add(10 * time.Second))
	if len(cps) != 2 || cps[0].ID != 1 || cps[1].ID != 2 || cps[1].Remaining_TTL != 22 {
		t.Errorf("checkpoints = %v", cps)
	}
	if ls := s.Leases(t1); len(ls) != 2 || ls[0].ID != 1 || ls[1].ID != 2 {
		t.Errorf("leases = %+v", ls)
	}
}
