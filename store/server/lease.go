package server

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
)

// Leases follow etcd's design: a lease's deadline lives only in the
// leader's memory. The leader renews on keep-alive, proposes a revoke when a
// deadline passes, and checkpoints remaining TTLs into the log now and then
// so that a new leader does not restart long leases from scratch. A
// follower that receives a keep-alive turns it into a checkpoint with the
// full TTL through raft, which restarts the leader's deadline.

const (
	leaseTick       = 250 * time.Millisecond
	checkpointEvery = 5 * time.Minute
)

type leaseServer struct {
	etcdserverpb.UnimplementedLeaseServer
	s *Server
}

func (l *leaseServer) LeaseGrant(ctx context.Context, r *etcdserverpb.LeaseGrantRequest) (*etcdserverpb.LeaseGrantResponse, error) {
	if r.ID == 0 {
		// The ID is chosen before proposing, so every member applies the
		// same one.
		var b [8]byte
		_, _ = rand.Read(b[:])
		r.ID = int64(binary.BigEndian.Uint64(b[:]) >> 1)
		if r.ID == 0 {
			r.ID = 1
		}
	}
	req := &etcdserverpb.InternalRaftRequest{LeaseGrant: r}
	if err := l.s.admit(ctx, req); err != nil {
		return nil, err
	}
	res, err := l.s.propose(ctx, req)
	if err != nil {
		return nil, err
	}
	resp := res.Resp.(*etcdserverpb.LeaseGrantResponse)
	resp.Header = l.s.withRev(resp.Header)
	return resp, nil
}

func (l *leaseServer) LeaseRevoke(ctx context.Context, r *etcdserverpb.LeaseRevokeRequest) (*etcdserverpb.LeaseRevokeResponse, error) {
	res, err := l.s.propose(ctx, &etcdserverpb.InternalRaftRequest{LeaseRevoke: r})
	if err != nil {
		return nil, err
	}
	resp := res.Resp.(*etcdserverpb.LeaseRevokeResponse)
	resp.Header = l.s.withRev(resp.Header)
	return resp, nil
}

func (l *leaseServer) LeaseKeepAlive(stream grpc.BidiStreamingServer[etcdserverpb.LeaseKeepAliveRequest, etcdserverpb.LeaseKeepAliveResponse]) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		ttl, err := l.s.keepAlive(stream.Context(), req.ID)
		if err != nil && !errors.Is(err, rpctypes.ErrGRPCLeaseNotFound) {
			// A failure that says nothing about the lease (no leader during
			// an election, a proposal that timed out) ends the stream, as
			// etcd's does: the client opens another and goes on keeping the
			// lease alive. Answering TTL 0 would tell it the lease is gone,
			// and it would stop (a session ended at every leader change).
			return toGRPC(err)
		}
		resp := &etcdserverpb.LeaseKeepAliveResponse{Header: l.s.header(), ID: req.ID, TTL: ttl}
		if err != nil {
			resp.TTL = 0 // the lease is gone: the client stops keeping it alive
		}
		if err := stream.Send(resp); err != nil {
			return nil
		}
	}
}

// keepAlive renews a lease on the leader, or through raft from a follower.
// It first waits until this member has applied everything committed (as
// etcd's leader waits for its applied index): a keep-alive may arrive here
// right after the grant was acknowledged by another member.
func (s *Server) keepAlive(ctx context.Context, id int64) (int64, error) {
	if err := s.linearizable(ctx); err != nil {
		return 0, err
	}
	if s.node.Leader() == s.cfg.ID {
		return s.kv.Renew(id, time.Now())
	}
	info, err := s.kv.LeaseTimeToLive(id, time.Now())
	if err != nil {
		return 0, err
	}
	cp := &etcdserverpb.LeaseCheckpointRequest{Checkpoints: []*etcdserverpb.LeaseCheckpoint{{ID: id, Remaining_TTL: info.TTL}}}
	if _, err := s.propose(ctx, &etcdserverpb.InternalRaftRequest{LeaseCheckpoint: cp}); err != nil {
		return 0, err
	}
	return info.TTL, nil
}

func (l *leaseServer) LeaseTimeToLive(ctx context.Context, r *etcdserverpb.LeaseTimeToLiveRequest) (*etcdserverpb.LeaseTimeToLiveResponse, error) {
	if err := l.s.linearizable(ctx); err != nil {
		return nil, err
	}
	info, err := l.s.kv.LeaseTimeToLive(r.ID, time.Now())
	if errors.Is(err, rpctypes.ErrGRPCLeaseNotFound) {
		// etcd answers a lease that does not exist (any more) with TTL -1,
		// which etcdctl prints as "already expired".
		return &etcdserverpb.LeaseTimeToLiveResponse{Header: l.s.header(), ID: r.ID, TTL: -1}, nil
	}
	if err != nil {
		return nil, toGRPC(err)
	}
	resp := &etcdserverpb.LeaseTimeToLiveResponse{Header: l.s.header(), ID: info.ID, TTL: info.Remaining, GrantedTTL: info.TTL}
	if r.Keys {
		resp.Keys = info.Keys
	}
	return resp, nil
}

func (l *leaseServer) LeaseLeases(ctx context.Context, _ *etcdserverpb.LeaseLeasesRequest) (*etcdserverpb.LeaseLeasesResponse, error) {
	if err := l.s.linearizable(ctx); err != nil {
		return nil, err
	}
	resp := &etcdserverpb.LeaseLeasesResponse{Header: l.s.header()}
	for _, li := range l.s.kv.Leases(time.Now()) {
		resp.Leases = append(resp.Leases, &etcdserverpb.LeaseStatus{ID: li.ID})
	}
	return resp, nil
}

// leaseLoop is the leader's lease work: track deadlines when leadership is
// gained, revoke what expired, checkpoint now and then.
func (s *Server) leaseLoop(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(leaseTick)
	defer t.Stop()
	leader := false
	var lastCheckpoint time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		isLeader := s.node.Leader() == s.cfg.ID
		switch {
		case isLeader && !leader:
			// Give clients an election timeout to find the new leader.
			s.kv.Promote(now, 10*s.tick())
			lastCheckpoint = now
		case !isLeader && leader:
			s.kv.Demote()
		}
		leader = isLeader
		if !leader {
			continue
		}
		for _, id := range s.kv.ExpiredLeases(now) {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := s.propose(pctx, &etcdserverpb.InternalRaftRequest{LeaseRevoke: &etcdserverpb.LeaseRevokeRequest{ID: id}})
			cancel()
			if err != nil {
				s.log.Debug("revoke expired lease", "lease", id, "err", err)
			}
		}
		if now.Sub(lastCheckpoint) >= checkpointEvery {
			lastCheckpoint = now
			if cps := s.kv.Checkpoints(now); len(cps) > 0 {
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, _ = s.propose(pctx, &etcdserverpb.InternalRaftRequest{LeaseCheckpoint: &etcdserverpb.LeaseCheckpointRequest{Checkpoints: cps}})
				cancel()
			}
		}
	}
}

func (s *Server) tick() time.Duration {
	if s.cfg.TickInterval > 0 {
		return s.cfg.TickInterval
	}
	return 100 * time.Millisecond
}
