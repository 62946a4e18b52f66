package server

import (
	"context"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type kvServer struct {
	etcdserverpb.UnimplementedKVServer
	s *Server
}

func (k *kvServer) Range(ctx context.Context, r *etcdserverpb.RangeRequest) (*etcdserverpb.RangeResponse, error) {
	if !r.Serializable {
		if err := k.s.linearizable(ctx); err != nil {
			return nil, err
		}
	}
	resp, err := k.s.kv.Range(ctx, r)
	if err != nil {
		return nil, toGRPC(err)
	}
	resp.Header = k.s.withRev(resp.Header)
	return resp, nil
}

func (k *kvServer) RangeStream(*etcdserverpb.RangeRequest, grpc.ServerStreamingServer[etcdserverpb.RangeStreamResponse]) error {
	return status.Error(codes.Unimplemented, "RangeStream is not supported: use Range with a limit")
}

func (k *kvServer) Put(ctx context.Context, r *etcdserverpb.PutRequest) (*etcdserverpb.PutResponse, error) {
	req := &etcdserverpb.InternalRaftRequest{Put: r}
	if err := k.s.admit(ctx, req); err != nil {
		return nil, err
	}
	res, err := k.s.propose(ctx, req)
	if err != nil {
		return nil, err
	}
	resp := res.Resp.(*etcdserverpb.PutResponse)
	resp.Header = k.s.withRev(resp.Header)
	return resp, nil
}

func (k *kvServer) DeleteRange(ctx context.Context, r *etcdserverpb.DeleteRangeRequest) (*etcdserverpb.DeleteRangeResponse, error) {
	res, err := k.s.propose(ctx, &etcdserverpb.InternalRaftRequest{DeleteRange: r})
	if err != nil {
		return nil, err
	}
	resp := res.Resp.(*etcdserverpb.DeleteRangeResponse)
	resp.Header = k.s.withRev(resp.Header)
	return resp, nil
}

func (k *kvServer) Txn(ctx context.Context, r *etcdserverpb.TxnRequest) (*etcdserverpb.TxnResponse, error) {
	req := &etcdserverpb.InternalRaftRequest{Txn: r}
	if err := k.s.admit(ctx, req); err != nil {
		return nil, err
	}
	res, err := k.s.propose(ctx, req)
	if err != nil {
		return nil, err
	}
	resp := res.Resp.(*etcdserverpb.TxnResponse)
	resp.Header = k.s.withRev(resp.Header)
	return resp, nil
}

func (k *kvServer) Compact(ctx context.Context, r *etcdserverpb.CompactionRequest) (*etcdserverpb.CompactionResponse, error) {
	res, err := k.s.propose(ctx, &etcdserverpb.InternalRaftRequest{Compaction: r})
	if err != nil {
		return nil, err
	}
	resp := res.Resp.(*etcdserverpb.CompactionResponse)
	resp.Header = k.s.withRev(resp.Header)
	return resp, nil
}

// withRev completes a response header the state machine started (it knows
// the revision of the write) with the cluster and member.
func (s *Server) withRev(h *etcdserverpb.ResponseHeader) *etcdserverpb.ResponseHeader {
	full := s.header()
	if h != nil && h.Revision != 0 {
		full.Revision = h.Revision
	}
	return full
}
