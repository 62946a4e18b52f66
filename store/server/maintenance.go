package server

import (
	"context"
	"fmt"
	"io"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type maintenanceServer struct {
	etcdserverpb.UnimplementedMaintenanceServer
	s *Server
}

func (m *maintenanceServer) Status(ctx context.Context, _ *etcdserverpb.StatusRequest) (*etcdserverpb.StatusResponse, error) {
	st := m.s.node.Status()
	kst, err := m.s.kv.Status()
	if err != nil {
		return nil, toGRPC(err)
	}
	var learner bool
	for _, mem := range m.s.node.Members() {
		if mem.ID == m.s.cfg.ID {
			learner = mem.Learner
		}
	}
	resp := &etcdserverpb.StatusResponse{
		Header: m.s.header(), Version: Version,
		DbSize: kst.DBSize, DbSizeInUse: kst.DBSizeInUse,
		Leader: st.Leader, RaftIndex: st.Commit, RaftTerm: st.Term, RaftAppliedIndex: st.Applied,
		IsLearner: learner,
		// etcd reports the schema version of its database file; this is
		// the format of Nexus's, as recorded in it.
		StorageVersion: kst.StorageVersion,
	}
	for _, a := range kst.Alarms {
		resp.Errors = append(resp.Errors, alarmString(a))
	}
	return resp, nil
}

func (m *maintenanceServer) Hash(ctx context.Context, _ *etcdserverpb.HashRequest) (*etcdserverpb.HashResponse, error) {
	h, err := m.s.kv.Hash()
	if err != nil {
		return nil, toGRPC(err)
	}
	return &etcdserverpb.HashResponse{Header: m.s.header(), Hash: h}, nil
}

func (m *maintenanceServer) HashKV(ctx context.Context, r *etcdserverpb.HashKVRequest) (*etcdserverpb.HashKVResponse, error) {
	h, err := m.s.kv.HashKV(r.Revision)
	if err != nil {
		return nil, toGRPC(err)
	}
	compact := h.CompactRevision
	if compact == 0 {
		compact = -1 // etcd's answer for a store never compacted
	}
	return &etcdserverpb.HashKVResponse{Header: m.s.header(), Hash: h.Hash, CompactRevision: compact, HashRevision: h.Revision}, nil
}

func (m *maintenanceServer) Defragment(ctx context.Context, _ *etcdserverpb.DefragmentRequest) (*etcdserverpb.DefragmentResponse, error) {
	if err := m.s.kv.Defragment(); err != nil {
		return nil, toGRPC(err)
	}
	return &etcdserverpb.DefragmentResponse{Header: m.s.header()}, nil
}

// snapshotChunk is the size of the pieces a snapshot is streamed in.
const snapshotChunk = 32 << 10

func (m *maintenanceServer) Snapshot(_ *etcdserverpb.SnapshotRequest, stream grpc.ServerStreamingServer[etcdserverpb.SnapshotResponse]) error {
	pr, pw := io.Pipe()
	go func() {
		_, _, err := m.s.kv.Snapshot(pw)
		pw.CloseWithError(err)
	}()
	defer pr.Close()
	buf := make([]byte, snapshotChunk)
	for {
		n, err := io.ReadFull(pr, buf)
		if n > 0 {
			if serr := stream.Send(&etcdserverpb.SnapshotResponse{Header: m.s.header(), Blob: append([]byte(nil), buf[:n]...), Version: Version}); serr != nil {
				return serr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return toGRPC(err)
		}
	}
}

func (m *maintenanceServer) Alarm(ctx context.Context, r *etcdserverpb.AlarmRequest) (*etcdserverpb.AlarmResponse, error) {
	switch r.Action {
	case etcdserverpb.AlarmRequest_GET:
		// etcd puts GET through raft: an alarm a write was refused for is
		// listed by every member. A read barrier gives the same.
		if err := m.s.linearizable(ctx); err != nil {
			return nil, err
		}
		resp := &etcdserverpb.AlarmResponse{Header: m.s.header()}
		for _, a := range m.s.kv.Alarms() {
			if r.Alarm == etcdserverpb.AlarmType_NONE || a.Alarm == r.Alarm {
				resp.Alarms = append(resp.Alarms, a)
			}
		}
		return resp, nil
	case etcdserverpb.AlarmRequest_DEACTIVATE, etcdserverpb.AlarmRequest_ACTIVATE:
		res, err := m.s.propose(ctx, &etcdserverpb.InternalRaftRequest{Alarm: r})
		if err != nil {
			return nil, err
		}
		resp, _ := res.Resp.(*etcdserverpb.AlarmResponse)
		if resp == nil {
			resp = &etcdserverpb.AlarmResponse{}
		}
		resp.Header = m.s.header()
		return resp, nil
	}
	return nil, status.Errorf(codes.InvalidArgument, "unknown alarm action %v", r.Action)
}

func (m *maintenanceServer) MoveLeader(ctx context.Context, r *etcdserverpb.MoveLeaderRequest) (*etcdserverpb.MoveLeaderResponse, error) {
	if err := m.s.node.TransferLeadership(ctx, r.TargetID); err != nil {
		return nil, toGRPC(err)
	}
	return &etcdserverpb.MoveLeaderResponse{Header: m.s.header()}, nil
}

// alarmString is how etcd lists an alarm among a Status's errors (the text
// form of its AlarmMember).
func alarmString(a *etcdserverpb.AlarmMember) string {
	return fmt.Sprintf("memberID:%d alarm:%s ", a.MemberID, a.Alarm)
}
