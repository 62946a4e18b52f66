package mvcc

import (
	"errors"
	"slices"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"
)

// rangeFixture builds:
//
//	rev 2 put a=3   rev 3 put b=2   rev 4 put c=1   rev 5 put a=1
//	rev 6 put d=0   rev 7 put b=5   rev 8 delete d   rev 9 put e=9
//
// a: create 2, mod 5, version 2; b: create 3, mod 7, version 2;
// c: create 4, mod 4, version 1; e: create 9, mod 9, version 1.
func rangeFixture(t *testing.T) *Store {
	s := openTestStore(t, Options{})
	for _, r := range []*pb.InternalRaftRequest{
		put("a", "3"), put("b", "2"), put("c", "1"), put("a", "1"),
		put("d", "0"), put("b", "5"), del("d", ""), put("e", "9"),
	} {
		mustApply(t, s, r)
	}
	if got := s.Rev(); got != 9 {
		t.Fatalf("fixture rev = %d, want 9", got)
	}
	return s
}

func TestRange(t *testing.T) {
	s := rangeFixture(t)
	tests := []struct {
		name  string
		req   *pb.RangeRequest
		keys  []string
		vals  []string // checked when set
		count int64
		more  bool
		err   error
	}{
		{name: "single key", req: &pb.RangeRequest{Key: []byte("a")}, keys: []string{"a"}, vals: []string{"1"}, count: 1},
		{name: "missing key", req: &pb.RangeRequest{Key: []byte("d")}, keys: []string{}, count: 0},
		{name: "range", req: &pb.RangeRequest{Key: []byte("b"), RangeEnd: []byte("e")}, keys: []string{"b", "c"}, count: 2},
		{name: "all from key", req: &pb.RangeRequest{Key: []byte("b"), RangeEnd: []byte{0}}, keys: []string{"b", "c", "e"}, count: 3},
		{name: "all", req: &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}, keys: []string{"a", "b", "c", "e"}, count: 4},
		{name: "prefix", req: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("b")}, keys: []string{"a"}, count: 1},
		{name: "end before key", req: &pb.RangeRequest{Key: []byte("c"), RangeEnd: []byte("a")}, keys: []string{}, count: 0},
		{name: "limit", req: &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Limit: 2}, keys: []string{"a", "b"}, count: 4, more: true},
		{name: "limit exact", req: &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Limit: 4}, keys: []string{"a", "b", "c", "e"}, count: 4},
		{name: "historic", req: &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: 6}, keys: []string{"a", "b", "c", "d"}, vals: []string{"1", "2", "1", "0"}, count: 4},
		{name: "historic first", req: &pb.RangeRequest{Key: []byte("a"), Revision: 2}, keys: []string{"a"}, vals: []string{"3"}, count: 1},
		{name: "before creation", req: &pb.RangeRequest{Key: []byte("e"), Revision: 8}, keys: []string{}, count: 0},
		{name: "future", req: &pb.RangeRequest{Key: []byte("a"), Revision: 10}, err: rpctypes.ErrGRPCFutureRev},
		{name: "count only", req: &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, CountOnly: true}, keys: []string{}, count: 4},
		{name: "keys only", req: &pb.RangeRequest{Key: []byte("a"), KeysOnly: true}, keys: []string{"a"}, vals: []string{""}, count: 1},
		{name: "sort key descend", req: &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, SortOrder: pb.RangeRequest_DESCEND}, keys: []string{"e", "c", "b", "a"}, count: 4},
		{name: "sort value", req: &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, SortTarget: pb.RangeRequest_VALUE}, keys: []string{"a", "c", "b", "e"}, count: 4},
		{name: "sort value descend", req: &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, SortTarget: pb.RangeRequest_VALUE, SortOrder: pb.RangeRequest_DESCEND}, keys: []string{"e", "b", "a", "c"}, count: 4},
		{name: "sort version stable", req: &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, SortTarget: pb.RangeRequest_VERSION, SortOrder: pb.RangeRequest_ASCEND}, keys: []string{"c", "e", "a", "b"}, count: 4},
		{name: "sort create descend", req: &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, SortTarget: pb.RangeRequest_CREATE, SortOrder: pb.RangeRequest_DESCEND}, keys: []string{"e", "c", "b", "a"}, count: 4},
		{name: "sort mod", req: &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, SortTarget: pb.RangeRequest_MOD}, keys: []string{"c", "a", "b", "e"}, count: 4},
		{name: "sort then limit", req: &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, SortTarget: pb.RangeRequest_MOD, SortOrder: pb.RangeRequest_DESCEND, Limit: 1}, keys: []string{"e"}, count: 4, more: true},
		{name: "min mod", req: &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, MinModRevision: 5}, keys: []string{"a", "b", "e"}, count: 4},
		{name: "max mod", req: &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, MaxModRevision: 5}, keys: []string{"a", "c"}, count: 4},
		{name: "min create", req: &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, MinCreateRevision: 4}, keys: []string{"c", "e"}, count: 4},
		{name: "max create", req: &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, MaxCreateRevision: 3}, keys: []string{"a", "b"}, count: 4},
		{name: "filter then limit", req: &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, MinModRevision: 5, Limit: 2}, keys: []string{"a", "b"}, count: 4, more: true},
		{name: "empty key", req: &pb.RangeRequest{}, err: rpctypes.ErrGRPCEmptyKey},
		{name: "bad sort order", req: &pb.RangeRequest{Key: []byte("a"), SortOrder: 7}, err: rpctypes.ErrGRPCInvalidSortOption},
		{name: "bad sort target", req: &pb.RangeRequest{Key: []byte("a"), SortTarget: 9}, err: rpctypes.ErrGRPCInvalidSortOption},
		{name: "serializable ignored", req: &pb.RangeRequest{Key: []byte("a"), Serializable: true}, keys: []string{"a"}, count: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := s.Range(t.Context(), tt.req)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if tt.err != nil {
				return
			}
			if got := keysOf(resp.Kvs); !slices.Equal(got, tt.keys) {
				t.Errorf("keys = %q, want %q", got, tt.keys)
			}
			if tt.vals != nil {
				var vals []string
				for _, kv := range resp.Kvs {
					vals = append(vals, string(kv.Value))
				}
				if !slices.Equal(vals, tt.vals) {
					t.Errorf("values = %q, want %q", vals, tt.vals)
				}
			}
			if resp.Count != tt.count || resp.More != tt.more {
				t.Errorf("count, more = %d, %v; want %d, %v", resp.Count, resp.More, tt.count, tt.more)
			}
			if resp.Header.Revision != 9 {
				t.Errorf("header revision = %d, want 9", resp.Header.Revision)
			}
		})
	}
}

func TestRangeKeyHistory(t *testing.T) {
	s := rangeFixture(t)
	resp, err := s.Range(t.Context(), &pb.RangeRequest{Key: []byte("b")})
	if err != nil {
		t.Fatal(err)
	}
	want := &mvccpb.KeyValue{Key: []byte("b"), Value: []byte("5"), CreateRevision: 3, ModRevision: 7, Version: 2}
	if !proto.Equal(resp.Kvs[0], want) {
		t.Fatalf("b = %v, want %v", resp.Kvs[0], want)
	}
	// Re-creating a deleted key starts a new generation.
	mustApply(t, s, put("d", "new"))
	resp, _ = s.Range(t.Context(), &pb.RangeRequest{Key: []byte("d")})
	want = &mvccpb.KeyValue{Key: []byte("d"), Value: []byte("new"), CreateRevision: 10, ModRevision: 10, Version: 1}
	if !proto.Equal(resp.Kvs[0], want) {
		t.Fatalf("d = %v, want %v", resp.Kvs[0], want)
	}
}

func TestPut(t *testing.T) {
	s := openTestStore(t, Options{})
	lease := mustApply(t, s, &pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: 7, TTL: 60}}).Resp.(*pb.LeaseGrantResponse)
	mustApply(t, s, putLease("k", "v1", lease.ID))

	tests := []struct {
		name    string
		req     *pb.PutRequest
		err     error
		wantKV  *mvccpb.KeyValue // state of the key afterwards
		wantPrv *mvccpb.KeyValue
	}{
		{name: "empty key", req: &pb.PutRequest{Value: []byte("x")}, err: rpctypes.ErrGRPCEmptyKey},
		{name: "unknown lease", req: &pb.PutRequest{Key: []byte("k"), Lease: 99}, err: rpctypes.ErrGRPCLeaseNotFound},
		{name: "ignore value on missing key", req: &pb.PutRequest{Key: []byte("nope"), IgnoreValue: true}, err: rpctypes.ErrGRPCKeyNotFound},
		{name: "ignore lease on missing key", req: &pb.PutRequest{Key: []byte("nope"), IgnoreLease: true}, err: rpctypes.ErrGRPCKeyNotFound},
		{name: "ignore value with value", req: &pb.PutRequest{Key: []byte("k"), Value: []byte("x"), IgnoreValue: true}, err: rpctypes.ErrGRPCValueProvided},
		{name: "ignore lease with lease", req: &pb.PutRequest{Key: []byte("k"), Lease: 7, IgnoreLease: true}, err: rpctypes.ErrGRPCLeaseProvided},
		{
			name:    "prev kv, lease detached",
			req:     &pb.PutRequest{Key: []byte("k"), Value: []byte("v2"), PrevKv: true},
			wantKV:  &mvccpb.KeyValue{Key: []byte("k"), Value: []byte("v2"), CreateRevision: 2, ModRevision: 3, Version: 2},
			wantPrv: &mvccpb.KeyValue{Key: []byte("k"), Value: []byte("v1"), CreateRevision: 2, ModRevision: 2, Version: 1, Lease: 7},
		},
		{
			name:   "ignore value keeps value",
			req:    &pb.PutRequest{Key: []byte("k"), IgnoreValue: true, Lease: 7},
			wantKV: &mvccpb.KeyValue{Key: []byte("k"), Value: []byte("v2"), CreateRevision: 2, ModRevision: 4, Version: 3, Lease: 7},
		},
		{
			name:   "ignore lease keeps lease",
			req:    &pb.PutRequest{Key: []byte("k"), Value: []byte("v3"), IgnoreLease: true},
			wantKV: &mvccpb.KeyValue{Key: []byte("k"), Value: []byte("v3"), CreateRevision: 2, ModRevision: 5, Version: 4, Lease: 7},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rev := s.Rev()
			res := apply(t, s, &pb.InternalRaftRequest{Put: tt.req})
			if !errors.Is(res.Err, tt.err) {
				t.Fatalf("err = %v, want %v", res.Err, tt.err)
			}
			if tt.err != nil {
				if s.Rev() != rev {
					t.Fatalf("failed put moved the revision to %d", s.Rev())
				}
				return
			}
			resp := res.Resp.(*pb.PutResponse)
			if resp.Header.Revision != rev+1 {
				t.Errorf("header revision = %d, want %d", resp.Header.Revision, rev+1)
			}
			if !proto.Equal(resp.PrevKv, tt.wantPrv) {
				t.Errorf("prev kv = %v, want %v", resp.PrevKv, tt.wantPrv)
			}
			got, _ := s.Range(t.Context(), &pb.RangeRequest{Key: tt.req.Key})
			if !proto.Equal(got.Kvs[0], tt.wantKV) {
				t.Errorf("kv = %v, want %v", got.Kvs[0], tt.wantKV)
			}
		})
	}
}

func TestDeleteRange(t *testing.T) {
	tests := []struct {
		name     string
		key, end string
		prev     bool
		deleted  int64
		left     []string
	}{
		{name: "one key", key: "b", deleted: 1, left: []string{"a", "c", "e"}},
		{name: "missing key", key: "zz", deleted: 0, left: []string{"a", "b", "c", "e"}},
		{name: "range with prev", key: "a", end: "c", prev: true, deleted: 2, left: []string{"c", "e"}},
		{name: "from key", key: "c", end: "\x00", deleted: 2, left: []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := rangeFixture(t)
			res := mustApply(t, s, &pb.InternalRaftRequest{DeleteRange: &pb.DeleteRangeRequest{Key: []byte(tt.key), RangeEnd: []byte(tt.end), PrevKv: tt.prev}})
			resp := res.Resp.(*pb.DeleteRangeResponse)
			if resp.Deleted != tt.deleted {
				t.Errorf("deleted = %d, want %d", resp.Deleted, tt.deleted)
			}
			wantRev := int64(9)
			if tt.deleted > 0 {
				wantRev = 10
			}
			if resp.Header.Revision != wantRev || s.Rev() != wantRev {
				t.Errorf("revision = %d (store %d), want %d", resp.Header.Revision, s.Rev(), wantRev)
			}
			if tt.prev && len(resp.PrevKvs) != int(tt.deleted) {
				t.Errorf("prev kvs = %d, want %d", len(resp.PrevKvs), tt.deleted)
			}
			if !tt.prev && len(resp.PrevKvs) != 0 {
				t.Errorf("prev kvs returned without prev_kv")
			}
			if got := keysOf(rangeAll(t, s)); !slices.Equal(got, tt.left) {
				t.Errorf("left = %q, want %q", got, tt.left)
			}
		})
	}
	s := openTestStore(t, Options{})
	if res := apply(t, s, &pb.InternalRaftRequest{DeleteRange: &pb.DeleteRangeRequest{}}); !errors.Is(res.Err, rpctypes.ErrGRPCEmptyKey) {
		t.Fatalf("empty key: %v", res.Err)
	}
}

func cmpReq(key string, target pb.Compare_CompareTarget, result pb.Compare_CompareResult, v any) *pb.Compare {
	c := &pb.Compare{Key: []byte(key), Target: target, Result: result}
	switch x := v.(type) {
	case string:
		c.TargetUnion = &pb.Compare_Value{Value: []byte(x)}
	case int64:
		switch target {
		case pb.Compare_VERSION:
			c.TargetUnion = &pb.Compare_Version{Version: x}
		case pb.Compare_CREATE:
			c.TargetUnion = &pb.Compare_CreateRevision{CreateRevision: x}
		case pb.Compare_MOD:
			c.TargetUnion = &pb.Compare_ModRevision{ModRevision: x}
		case pb.Compare_LEASE:
			c.TargetUnion = &pb.Compare_Lease{Lease: x}
		}
	}
	return c
}

func TestTxnCompare(t *testing.T) {
	s := rangeFixture(t) // a: value 1, create 2, mod 5, version 2
	withEnd := func(c *pb.Compare, end string) *pb.Compare { c.RangeEnd = []byte(end); return c }
	tests := []struct {
		name string
		cmp  *pb.Compare
		want bool
	}{
		{"value equal", cmpReq("a", pb.Compare_VALUE, pb.Compare_EQUAL, "1"), true},
		{"value not equal", cmpReq("a", pb.Compare_VALUE, pb.Compare_NOT_EQUAL, "1"), false},
		{"value greater", cmpReq("a", pb.Compare_VALUE, pb.Compare_GREATER, "0"), true},
		{"value less", cmpReq("a", pb.Compare_VALUE, pb.Compare_LESS, "0"), false},
		{"version equal", cmpReq("a", pb.Compare_VERSION, pb.Compare_EQUAL, int64(2)), true},
		{"version greater", cmpReq("a", pb.Compare_VERSION, pb.Compare_GREATER, int64(2)), false},
		{"create equal", cmpReq("a", pb.Compare_CREATE, pb.Compare_EQUAL, int64(2)), true},
		{"create less", cmpReq("a", pb.Compare_CREATE, pb.Compare_LESS, int64(3)), true},
		{"mod equal", cmpReq("a", pb.Compare_MOD, pb.Compare_EQUAL, int64(5)), true},
		{"mod not equal", cmpReq("a", pb.Compare_MOD, pb.Compare_NOT_EQUAL, int64(5)), false},
		{"lease equal zero", cmpReq("a", pb.Compare_LEASE, pb.Compare_EQUAL, int64(0)), true},
		{"missing key version zero", cmpReq("zz", pb.Compare_VERSION, pb.Compare_EQUAL, int64(0)), true},
		{"missing key create zero", cmpReq("zz", pb.Compare_CREATE, pb.Compare_EQUAL, int64(0)), true},
		{"missing key value", cmpReq("zz", pb.Compare_VALUE, pb.Compare_NOT_EQUAL, "x"), false},
		{"deleted key version zero", cmpReq("d", pb.Compare_VERSION, pb.Compare_EQUAL, int64(0)), true},
		{"range all versions > 0", withEnd(cmpReq("a", pb.Compare_VERSION, pb.Compare_GREATER, int64(0)), "\x00"), true},
		{"range all versions > 1", withEnd(cmpReq("a", pb.Compare_VERSION, pb.Compare_GREATER, int64(1)), "\x00"), false},
		{"range mod < 8", withEnd(cmpReq("a", pb.Compare_MOD, pb.Compare_LESS, int64(8)), "d"), true},
		{"empty range", withEnd(cmpReq("x", pb.Compare_VERSION, pb.Compare_EQUAL, int64(0)), "y"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := mustApply(t, s, txn(&pb.TxnRequest{Compare: []*pb.Compare{tt.cmp}}))
			resp := res.Resp.(*pb.TxnResponse)
			if resp.Succeeded != tt.want {
				t.Fatalf("succeeded = %v, want %v", resp.Succeeded, tt.want)
			}
			if s.Rev() != 9 || resp.Header.Revision != 9 {
				t.Fatalf("read-only txn moved revision to %d", s.Rev())
			}
		})
	}
}

func TestTxnOps(t *testing.T) {
	s := rangeFixture(t)
	isA1 := cmpReq("a", pb.Compare_VALUE, pb.Compare_EQUAL, "1")
	res := mustApply(t, s, txn(&pb.TxnRequest{
		Compare: []*pb.Compare{isA1},
		Success: []*pb.RequestOp{
			opPut("x", "1"),
			opRange("x", ""),
			opDel("b", ""),
			opTxn(&pb.TxnRequest{
				Compare: []*pb.Compare{cmpReq("b", pb.Compare_VERSION, pb.Compare_EQUAL, int64(2))},
				Success: []*pb.RequestOp{opPut("y", "then")},
				Failure: []*pb.RequestOp{opPut("y", "else")},
			}),
			opRange("\x00", "\x00"),
		},
		Failure: []*pb.RequestOp{opPut("x", "failed")},
	}))
	resp := res.Resp.(*pb.TxnResponse)
	if !resp.Succeeded || len(resp.Responses) != 5 {
		t.Fatalf("resp = %v", resp)
	}
	if s.Rev() != 10 || resp.Header.Revision != 10 {
		t.Fatalf("revision = %d, want one revision for the whole txn", s.Rev())
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) != 1 || string(kvs[0].Value) != "1" {
		t.Errorf("range in txn does not see the txn's own put: %v", kvs)
	}
	// Nested compares are evaluated before the txn ran: b still had
	// version 2, so the nested txn took its success branch.
	nested := resp.Responses[3].GetResponseTxn()
	if !nested.Succeeded {
		t.Errorf("nested txn took failure branch")
	}
	if got := keysOf(resp.Responses[4].GetResponseRange().Kvs); !slices.Equal(got, []string{"a", "c", "e", "x", "y"}) {
		t.Errorf("final range in txn = %q", got)
	}
	// Sub-revisions order the writes of the revision.
	w, err := s.Watch(t.Context(), &pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: 10})
	if err != nil {
		t.Fatal(err)
	}
	batch := <-w.Events()
	var got []string
	for _, ev := range batch.Events {
		got = append(got, ev.Type.String()+":"+string(ev.Kv.Key))
		if ev.Kv.ModRevision != 10 {
			t.Errorf("event %v at revision %d", ev, ev.Kv.ModRevision)
		}
	}
	if want := []string{"PUT:x", "DELETE:b", "PUT:y"}; !slices.Equal(got, want) {
		t.Errorf("events = %q, want %q", got, want)
	}
	y, _ := s.Range(t.Context(), &pb.RangeRequest{Key: []byte("y")})
	if string(y.Kvs[0].Value) != "then" {
		t.Errorf("y = %q", y.Kvs[0].Value)
	}
}

func TestTxnErrors(t *testing.T) {
	tooMany := make([]*pb.RequestOp, DefaultMaxTxnOps+1)
	for i := range tooMany {
		tooMany[i] = opPut(string(rune('a'+i%26))+string(rune('a'+i/26)), "v")
	}
	tests := []struct {
		name string
		req  *pb.TxnRequest
		err  error
	}{
		{"too many ops", &pb.TxnRequest{Success: tooMany}, rpctypes.ErrGRPCTooManyOps},
		{"too many in nested", &pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Failure: tooMany})}}, rpctypes.ErrGRPCTooManyOps},
		{"duplicate put", &pb.TxnRequest{Success: []*pb.RequestOp{opPut("k", "1"), opPut("k", "2")}}, rpctypes.ErrGRPCDuplicateKey},
		{"put in deleted range", &pb.TxnRequest{Success: []*pb.RequestOp{opDel("a", "z"), opPut("k", "2")}}, rpctypes.ErrGRPCDuplicateKey},
		{"put in deleted prefix of all", &pb.TxnRequest{Failure: []*pb.RequestOp{opPut("k", "2"), opDel("a", "\x00")}}, rpctypes.ErrGRPCDuplicateKey},
		{"nested put duplicates outer", &pb.TxnRequest{Success: []*pb.RequestOp{opPut("k", "1"), opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("k", "2")}})}}, rpctypes.ErrGRPCDuplicateKey},
		{"nested delete covers outer put", &pb.TxnRequest{Success: []*pb.RequestOp{opPut("k", "1"), opTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{opDel("k", "")}})}}, rpctypes.ErrGRPCDuplicateKey},
		{"empty compare key", &pb.TxnRequest{Compare: []*pb.Compare{{}}}, rpctypes.ErrGRPCEmptyKey},
		{"empty op", &pb.TxnRequest{Success: []*pb.RequestOp{{}}}, rpctypes.ErrGRPCKeyNotFound},
		{"unknown lease", &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("k"), Lease: 5}}}}}, rpctypes.ErrGRPCLeaseNotFound},
		{"future range", &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("k"), Revision: 100}}}}}, rpctypes.ErrGRPCFutureRev},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestStore(t, Options{})
			res := apply(t, s, txn(tt.req))
			if !errors.Is(res.Err, tt.err) {
				t.Fatalf("err = %v, want %v", res.Err, tt.err)
			}
			if s.Rev() != 1 || len(rangeAll(t, s)) != 0 {
				t.Fatalf("failed txn changed the store")
			}
		})
	}
	// Both branches of a nested txn may write the same key: only one runs.
	s := openTestStore(t, Options{})
	mustApply(t, s, txn(&pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{
		Success: []*pb.RequestOp{opPut("k", "1")},
		Failure: []*pb.RequestOp{opPut("k", "2")},
	})}}))
	// Overlapping deletes are fine.
	mustApply(t, s, txn(&pb.TxnRequest{Success: []*pb.RequestOp{opDel("a", "z"), opDel("k", "")}}))
}

func TestCompaction(t *testing.T) {
	s := rangeFixture(t)
	if res := apply(t, s, compact(10)); !errors.Is(res.Err, rpctypes.ErrGRPCFutureRev) {
		t.Fatalf("future compaction: %v", res.Err)
	}
	before, _ := s.Range(t.Context(), &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: 7})
	logical := s.kvBytesForTest()
	mustApply(t, s, compact(7))
	if s.CompactRev() != 7 {
		t.Fatalf("compact rev = %d", s.CompactRev())
	}
	if s.kvBytesForTest() >= logical {
		t.Errorf("compaction freed nothing: %d -> %d", logical, s.kvBytesForTest())
	}
	for _, rev := range []int64{2, 6} {
		if _, err := s.Range(t.Context(), &pb.RangeRequest{Key: []byte("a"), Revision: rev}); !errors.Is(err, rpctypes.ErrGRPCCompacted) {
			t.Errorf("range at %d: %v, want ErrCompacted", rev, err)
		}
	}
	at7, err := s.Range(t.Context(), &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: 7})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(before.Kvs, at7.Kvs, func(a, b *mvccpb.KeyValue) bool { return proto.Equal(a, b) }) {
		t.Errorf("state at the compacted revision changed: %v vs %v", before.Kvs, at7.Kvs)
	}
	if got := keysOf(rangeAll(t, s)); !slices.Equal(got, []string{"a", "b", "c", "e"}) {
		t.Errorf("current = %q", got)
	}
	if res := apply(t, s, compact(7)); !errors.Is(res.Err, rpctypes.ErrGRPCCompacted) {
		t.Errorf("compacting again: %v", res.Err)
	}
	// Compacting past the delete of d drops its tombstone and key.
	mustApply(t, s, compact(9))
	if s.index.get([]byte("d")) != nil {
		t.Errorf("d still indexed after compaction past its delete")
	}
	if _, err := s.HashKV(8); !errors.Is(err, rpctypes.ErrGRPCCompacted) {
		t.Errorf("HashKV below compaction: %v", err)
	}
}

func (s *Store) kvBytesForTest() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.kvBytes
}
