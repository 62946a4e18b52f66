package mvcc

import (
	"time"

	bolt "go.etcd.io/bbolt"
	"path/filepath"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

func openTestStore(t testing.TB, opts Options) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "db"), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// apply applies r as the next raft entry.
func apply(t testing.TB, s *Store, r *pb.InternalRaftRequest) *Result {
	t.Helper()
	res := s.Apply(s.AppliedIndex()+1, r)
	if res.Skipped {
		t.Fatalf("entry skipped")
	}
	return res
}

// mustApply applies r and fails the test on a request error.
func mustApply(t testing.TB, s *Store, r *pb.InternalRaftRequest) *Result {
	t.Helper()
	res := apply(t, s, r)
	if res.Err != nil {
		t.Fatalf("apply %v: %v", r, res.Err)
	}
	return res
}

func put(k, v string) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}
}

func putLease(k, v string, lease int64) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(k), Value: []byte(v), Lease: lease}}
}

func del(k, end string) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{DeleteRange: &pb.DeleteRangeRequest{Key: []byte(k), RangeEnd: []byte(end)}}
}

func compact(rev int64) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{Compaction: &pb.CompactionRequest{Revision: rev}}
}

func txn(r *pb.TxnRequest) *pb.InternalRaftRequest { return &pb.InternalRaftRequest{Txn: r} }

func opPut(k, v string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
}

func opDel(k, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(k), RangeEnd: []byte(end)}}}
}

func opRange(k, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(k), RangeEnd: []byte(end)}}}
}

func opTxn(r *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: r}}
}

func rangeAll(t testing.TB, s *Store) []*mvccpb.KeyValue {
	t.Helper()
	resp, err := s.Range(t.Context(), &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
	if err != nil {
		t.Fatalf("Range: %v", err)
	}
	return resp.Kvs
}

func keysOf(kvs []*mvccpb.KeyValue) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = string(kv.Key)
	}
	return out
}

func mustHash(t testing.TB, s *Store) uint32 {
	t.Helper()
	h, err := s.Hash()
	if err != nil {
		t.Fatalf("Hash: %v", err)
	}
	return h
}

type boltTx = bolt.Tx

var nilTime time.Time
