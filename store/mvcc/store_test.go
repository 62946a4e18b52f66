package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"
)

func sameKVs(a, b []*mvccpb.KeyValue) bool {
	return slices.EqualFunc(a, b, func(x, y *mvccpb.KeyValue) bool { return proto.Equal(x, y) })
}

// populate applies a mixed history with leases, deletes and a compaction.
func populate(t testing.TB, s *Store) {
	t.Helper()
	mustApply(t, s, grant(5, 60))
	for i := range 40 {
		mustApply(t, s, put(fmt.Sprintf("k%02d", i%15), fmt.Sprint(i)))
	}
	mustApply(t, s, putLease("leased", "x", 5))
	mustApply(t, s, del("k03", "k06"))
	mustApply(t, s, compact(s.Rev()-5))
	mustApply(t, s, put("after", "compact"))
}

func TestApplySkipsAppliedEntries(t *testing.T) {
	s := openTestStore(t, Options{})
	if res := s.Apply(5, put("a", "1")); res.Err != nil || res.Skipped {
		t.Fatalf("first apply: %+v", res)
	}
	h := mustHash(t, s)
	for _, idx := range []uint64{5, 3, 0} {
		if res := s.Apply(idx, put("a", "again")); !res.Skipped || res.Resp != nil || res.Err != nil {
			t.Errorf("apply at %d: %+v, want skipped", idx, res)
		}
	}
	if mustHash(t, s) != h || s.Rev() != 2 || s.AppliedIndex() != 5 {
		t.Errorf("skipped entries changed the store")
	}
	// A failing request still counts as applied.
	if res := s.Apply(6, put("", "x")); !errors.Is(res.Err, rpctypes.ErrGRPCEmptyKey) {
		t.Fatalf("empty key: %v", res.Err)
	}
	if s.AppliedIndex() != 6 {
		t.Errorf("applied index = %d after failed request, want 6", s.AppliedIndex())
	}
	if res := s.Apply(7, &pb.InternalRaftRequest{AuthEnable: &pb.AuthEnableRequest{}}); !errors.Is(res.Err, ErrUnsupported) {
		t.Errorf("auth request: %v", res.Err)
	}
}

func TestReopenPreservesEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	populate(t, s)
	mustApply(t, s, &pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: 7, Alarm: pb.AlarmType_NOSPACE}})
	want := rangeAll(t, s)
	hash, rev, compactRev, applied := mustHash(t, s), s.Rev(), s.CompactRev(), s.AppliedIndex()
	leases := s.Leases(nilTime)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v", err)
	}

	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !sameKVs(rangeAll(t, s), want) {
		t.Errorf("keys differ after reopen")
	}
	if mustHash(t, s) != hash || s.Rev() != rev || s.CompactRev() != compactRev || s.AppliedIndex() != applied {
		t.Errorf("reopened: rev %d compact %d applied %d; want %d %d %d", s.Rev(), s.CompactRev(), s.AppliedIndex(), rev, compactRev, applied)
	}
	if got := s.Leases(nilTime); !slices.EqualFunc(got, leases, func(a, b LeaseInfo) bool { return a.ID == b.ID && a.TTL == b.TTL }) {
		t.Errorf("leases = %+v, want %+v", got, leases)
	}
	if info, _ := s.LeaseTimeToLive(5, nilTime); len(info.Keys) != 1 {
		t.Errorf("lease keys not rebuilt: %+v", info)
	}
	if got := s.Alarms(); len(got) != 1 || got[0].MemberID != 7 || got[0].Alarm != pb.AlarmType_NOSPACE {
		t.Errorf("alarm lost: %v", got)
	}
	if res := apply(t, s, revoke(5)); res.Err != nil || len(rangeAll(t, s)) != len(want)-1 {
		t.Errorf("revoke after reopen: %v", res.Err)
	}
}

func TestSnapshotRestore(t *testing.T) {
	src := openTestStore(t, Options{})
	populate(t, src)
	var buf bytes.Buffer
	idx, n, err := src.Snapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if idx != src.AppliedIndex() || n != int64(buf.Len()) {
		t.Fatalf("snapshot index %d size %d; want %d %d", idx, n, src.AppliedIndex(), buf.Len())
	}

	dst := openTestStore(t, Options{})
	mustApply(t, dst, put("stale", "x"))
	w, err := dst.Watch(t.Context(), &pb.WatchCreateRequest{Key: []byte("stale")})
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	for range w.Events() {
	}
	if !errors.Is(w.Err(), ErrRestored) {
		t.Errorf("watcher after restore: %v", w.Err())
	}
	if !sameKVs(rangeAll(t, dst), rangeAll(t, src)) {
		t.Errorf("keys differ after restore")
	}
	for _, rev := range []int64{src.CompactRev(), src.Rev() - 1} {
		a, errA := src.Range(t.Context(), &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: rev})
		b, errB := dst.Range(t.Context(), &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: rev})
		if errA != nil || errB != nil || !sameKVs(a.Kvs, b.Kvs) {
			t.Errorf("range at %d differs: %v %v", rev, errA, errB)
		}
	}
	if mustHash(t, dst) != mustHash(t, src) || dst.Rev() != src.Rev() || dst.AppliedIndex() != src.AppliedIndex() || dst.CompactRev() != src.CompactRev() {
		t.Errorf("restored store differs")
	}
	// The restored store keeps working and agrees with the source.
	mustApply(t, src, put("next", "1"))
	mustApply(t, dst, put("next", "1"))
	if mustHash(t, dst) != mustHash(t, src) {
		t.Errorf("hash differs after the next entry")
	}

	// A broken snapshot is rejected and the store stays as it was.
	h := mustHash(t, dst)
	if err := dst.Restore(strings.NewReader("not a database")); !errors.Is(err, ErrCorrupt) {
		t.Errorf("garbage snapshot: %v", err)
	}
	if mustHash(t, dst) != h {
		t.Errorf("failed restore changed the store")
	}
}

// storeFile makes a closed store with n puts of 200 bytes, then the
// requests given, and returns its file.
func storeFile(t *testing.T, n int, then ...*pb.InternalRaftRequest) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		mustApply(t, s, put(fmt.Sprintf("key-%04d", i), strings.Repeat("v", 200)))
	}
	for _, r := range then {
		mustApply(t, s, r)
	}
	s.Close()
	return path
}

func TestOpenRefusesCorruptFiles(t *testing.T) {
	build := func(t *testing.T) string { return storeFile(t, 500) }
	tests := []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"empty file", func(t *testing.T, path string) { os.Truncate(path, 0) }},
		{"truncated to one page", func(t *testing.T, path string) { os.Truncate(path, 4096) }},
		{"truncated in half", func(t *testing.T, path string) {
			fi, _ := os.Stat(path)
			os.Truncate(path, fi.Size()/2)
		}},
		{"garbled meta pages", func(t *testing.T, path string) { garble(t, path, 0, 2*4096) }},
		{"garbled data pages", func(t *testing.T, path string) {
			fi, _ := os.Stat(path)
			garble(t, path, 4*4096, fi.Size()-4*4096)
		}},
		{"not a database", func(t *testing.T, path string) { os.WriteFile(path, bytes.Repeat([]byte("nexus"), 5000), 0o600) }},
		{"bad meta", func(t *testing.T, path string) {
			s, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			s.db.Update(func(tx *boltTx) error { return tx.Bucket(metaBucket).Put(metaAppliedKey, []byte{1, 2, 3}) })
			s.Close()
		}},
		{"foreign bbolt file", func(t *testing.T, path string) {
			s, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			s.db.Update(func(tx *boltTx) error { return tx.Bucket(metaBucket).Put(metaVersionKey, []byte("other/9")) })
			s.Close()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := build(t)
			tt.damage(t, path)
			s, err := Open(path, Options{})
			if err == nil {
				s.Close()
				t.Fatalf("Open accepted a damaged file")
			}
			t.Log(err)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "snapshot") {
				t.Errorf("error does not name the file and the remedy: %v", err)
			}
		})
	}
}

// garble overwrites n bytes at off with pseudo-random bytes.
func garble(t *testing.T, path string, off, n int64) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestHashKV(t *testing.T) {
	a, b := openTestStore(t, Options{}), openTestStore(t, Options{})
	populate(t, a)
	populate(t, b)
	mid := a.Rev() - 1
	ha, errA := a.HashKV(mid)
	hb, errB := b.HashKV(mid)
	if errA != nil || errB != nil || ha != hb || ha.CompactRevision != a.CompactRev() {
		t.Fatalf("HashKV: %+v/%v vs %+v/%v", ha, errA, hb, errB)
	}
	// The answer names the revision hashed, not the current one.
	if ha.Revision != mid {
		t.Errorf("HashKV(%d) says it hashed revision %d", mid, ha.Revision)
	}
	mustApply(t, b, put("diverge", "1"))
	if h1, _ := a.HashKV(mid); h1.Hash != ha.Hash {
		t.Errorf("HashKV at a fixed revision changed")
	}
	now, _ := b.HashKV(0)
	if now.Hash == hb.Hash || now.Revision != b.Rev() {
		t.Errorf("HashKV of the current state: %+v, want a new hash at revision %d", now, b.Rev())
	}
	if _, err := a.HashKV(a.Rev() + 1); !errors.Is(err, rpctypes.ErrGRPCFutureRev) {
		t.Errorf("future HashKV: %v", err)
	}
	if mustHash(t, a) == mustHash(t, b) {
		t.Errorf("Hash equal for different states")
	}
}

// randomRequest builds a request from r over a small key space, so that
// requests collide, nest and fail in interesting ways.
func randomRequest(r *rand.Rand, depth int) *pb.InternalRaftRequest {
	key := func() []byte { return []byte{'k', byte('a' + r.IntN(8))} }
	switch r.IntN(12) {
	case 0, 1, 2:
		return &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: key(), Value: []byte(fmt.Sprint(r.IntN(100))), Lease: int64(r.IntN(3)), PrevKv: r.IntN(2) == 0, IgnoreValue: r.IntN(8) == 0}}
	case 3:
		k := key()
		return &pb.InternalRaftRequest{DeleteRange: &pb.DeleteRangeRequest{Key: k, RangeEnd: []byte{k[0], k[1] + byte(r.IntN(3))}, PrevKv: true}}
	case 4, 5:
		return &pb.InternalRaftRequest{Txn: randomTxn(r, depth)}
	case 6:
		return &pb.InternalRaftRequest{Compaction: &pb.CompactionRequest{Revision: int64(r.IntN(400))}}
	case 7:
		return &pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: int64(r.IntN(3)), TTL: int64(r.IntN(100))}}
	case 8:
		return &pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: int64(r.IntN(3))}}
	case 9:
		return &pb.InternalRaftRequest{LeaseCheckpoint: &pb.LeaseCheckpointRequest{Checkpoints: []*pb.LeaseCheckpoint{{ID: int64(r.IntN(3)), Remaining_TTL: int64(r.IntN(50))}}}}
	case 10:
		return &pb.InternalRaftRequest{Range: &pb.RangeRequest{Key: key(), RangeEnd: []byte{0}, Revision: int64(r.IntN(20)), SortTarget: pb.RangeRequest_SortTarget(r.IntN(5)), SortOrder: pb.RangeRequest_SortOrder(r.IntN(3)), Limit: int64(r.IntN(3))}}
	default:
		return &pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{Action: pb.AlarmRequest_AlarmAction(r.IntN(3)), MemberID: uint64(r.IntN(2)), Alarm: pb.AlarmType(r.IntN(3))}}
	}
}

func randomTxn(r *rand.Rand, depth int) *pb.TxnRequest {
	t := &pb.TxnRequest{}
	for range r.IntN(3) {
		t.Compare = append(t.Compare, &pb.Compare{
			Key:         []byte{'k', byte('a' + r.IntN(8))},
			Target:      pb.Compare_CompareTarget(r.IntN(5)),
			Result:      pb.Compare_CompareResult(r.IntN(4)),
			TargetUnion: &pb.Compare_Version{Version: int64(r.IntN(3))},
		})
	}
	ops := func() []*pb.RequestOp {
		var out []*pb.RequestOp
		for range r.IntN(4) {
			req := randomRequest(r, depth+1)
			switch {
			case req.Put != nil:
				out = append(out, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: req.Put}})
			case req.DeleteRange != nil:
				out = append(out, &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: req.DeleteRange}})
			case req.Range != nil:
				out = append(out, &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: req.Range}})
			case req.Txn != nil && depth < 2:
				out = append(out, &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: req.Txn}})
			}
		}
		return out
	}
	t.Success, t.Failure = ops(), ops()
	return t
}

func TestDeterminism(t *testing.T) {
	opts := Options{UnsafeNoFsync: true}
	a, b := openTestStore(t, opts), openTestStore(t, opts)
	ra, rb := rand.New(rand.NewPCG(7, 7)), rand.New(rand.NewPCG(7, 7))
	for i := range 1500 {
		reqA, reqB := randomRequest(ra, 0), randomRequest(rb, 0)
		resA, resB := apply(t, a, reqA), apply(t, b, reqB)
		if !errors.Is(resA.Err, resB.Err) || !proto.Equal(resA.Resp, resB.Resp) {
			t.Fatalf("step %d: results differ: %+v vs %+v", i, resA, resB)
		}
		if ha, hb := mustHash(t, a), mustHash(t, b); ha != hb {
			t.Fatalf("step %d (%v): hash %x vs %x", i, reqA, ha, hb)
		}
	}
	if !sameKVs(rangeAll(t, a), rangeAll(t, b)) || a.Rev() != b.Rev() {
		t.Fatalf("stores differ")
	}
	t.Logf("rev %d, compacted %d, keys %d", a.Rev(), a.CompactRev(), len(rangeAll(t, a)))
}

func alarmReq(action pb.AlarmRequest_AlarmAction, member uint64, a pb.AlarmType) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{Action: action, MemberID: member, Alarm: a}}
}

// TestNoSpaceAlarm: while any member's NOSPACE alarm is raised, what would
// add data fails and what frees or reads it works, as with etcd's capped
// applier; alarms are per member and answered as etcd answers them.
func TestNoSpaceAlarm(t *testing.T) {
	s := openTestStore(t, Options{})
	mustApply(t, s, put("k0", "v"))
	mustApply(t, s, put("k1", "v"))
	mustApply(t, s, &pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: 9, TTL: 60}})
	for _, member := range []uint64{1, 2, 1} { // raising one twice keeps one record
		res := mustApply(t, s, alarmReq(pb.AlarmRequest_ACTIVATE, member, pb.AlarmType_NOSPACE))
		got := res.Resp.(*pb.AlarmResponse).Alarms
		if len(got) != 1 || got[0].MemberID != member || got[0].Alarm != pb.AlarmType_NOSPACE {
			t.Fatalf("ACTIVATE for member %d answered %v", member, got)
		}
	}
	if got := s.Alarms(); len(got) != 2 || got[0].MemberID != 1 || got[1].MemberID != 2 {
		t.Fatalf("alarms = %v, want NOSPACE of members 1 and 2", got)
	}
	refused := []struct {
		name string
		req  *pb.InternalRaftRequest
	}{
		{"put", put("small", "1")},
		{"put to a missing lease", putLease("small", "1", 404)},
		{"txn with a put", txn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("t", "1")}})},
		{"txn with a put only in the branch not taken", txn(&pb.TxnRequest{Success: []*pb.RequestOp{opRange("k0", "")}, Failure: []*pb.RequestOp{opPut("t", "1")}})},
		{"nested txn with a put", txn(&pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("t", "1")}})}})},
		{"lease grant", &pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: 10, TTL: 60}}},
	}
	for _, tt := range refused {
		if res := apply(t, s, tt.req); !errors.Is(res.Err, rpctypes.ErrGRPCNoSpace) {
			t.Errorf("%s under NOSPACE: %v, want %v", tt.name, res.Err, rpctypes.ErrGRPCNoSpace)
		}
	}
	// Reads, deletes, compaction and revokes make room, so they work.
	mustApply(t, s, txn(&pb.TxnRequest{Success: []*pb.RequestOp{opRange("k0", "")}}))
	mustApply(t, s, del("k0", ""))
	mustApply(t, s, compact(s.Rev()))
	mustApply(t, s, revoke(9))

	res := mustApply(t, s, alarmReq(pb.AlarmRequest_DEACTIVATE, 1, pb.AlarmType_NOSPACE))
	if got := res.Resp.(*pb.AlarmResponse).Alarms; len(got) != 1 || got[0].MemberID != 1 {
		t.Fatalf("DEACTIVATE answered %v, want the alarm it cleared", got)
	}
	if res := apply(t, s, put("small", "1")); !errors.Is(res.Err, rpctypes.ErrGRPCNoSpace) {
		t.Fatalf("put with member 2's alarm still raised: %v", res.Err)
	}
	mustApply(t, s, alarmReq(pb.AlarmRequest_DEACTIVATE, 2, pb.AlarmType_NOSPACE))
	res = mustApply(t, s, alarmReq(pb.AlarmRequest_DEACTIVATE, 2, pb.AlarmType_NOSPACE))
	if got := res.Resp.(*pb.AlarmResponse).Alarms; len(got) != 0 {
		t.Fatalf("DEACTIVATE of an alarm not raised answered %v", got)
	}
	if len(s.Alarms()) != 0 {
		t.Fatalf("alarms left: %v", s.Alarms())
	}
	mustApply(t, s, put("k0", "again"))
	if res := apply(t, s, alarmReq(pb.AlarmRequest_ACTIVATE, 1, pb.AlarmType_CORRUPT)); !errors.Is(res.Err, ErrUnsupported) {
		t.Errorf("ACTIVATE CORRUPT: %v, want ErrUnsupported", res.Err)
	}
}

func TestQuotaCost(t *testing.T) {
	big := strings.Repeat("x", 1000)
	tests := []struct {
		name string
		req  *pb.InternalRaftRequest
		want int64
	}{
		{"put", put("key", big), 256 + 3 + 1000},
		{"delete", del("a", "z"), 0},
		{"range", &pb.InternalRaftRequest{Range: &pb.RangeRequest{Key: []byte("a")}}, 0},
		{"compaction", compact(3), 0},
		{"lease grant", &pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{TTL: 5}}, 64},
		{"lease revoke", revoke(5), 0},
		{"txn: the dearer branch", txn(&pb.TxnRequest{
			Success: []*pb.RequestOp{opPut("a", "1"), opDel("b", "")},
			Failure: []*pb.RequestOp{opPut("a", "1"), opPut("bb", "22")},
		}), (256 + 2) + (256 + 4)},
		{"txn: nested", txn(&pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{opPut("a", "1")}})}}), 256 + 2},
		{"txn without puts", txn(&pb.TxnRequest{Success: []*pb.RequestOp{opRange("a", "")}}), 0},
		{"alarm", alarmReq(pb.AlarmRequest_ACTIVATE, 1, pb.AlarmType_NOSPACE), 0},
		{"nil", nil, 0},
	}
	for _, tt := range tests {
		if got := QuotaCost(tt.req); got != tt.want {
			t.Errorf("%s: QuotaCost = %d, want %d", tt.name, got, tt.want)
		}
	}
}

// TestOldNoSpaceRecordDropped: a database from before per-member alarms
// opens without the NOSPACE record it kept for itself (the server raises
// the alarm again from the file size if it is still over its quota).
func TestOldNoSpaceRecordDropped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, put("k", "v"))
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(metaBucket).Put(legacyNoSpaceKey, []byte{1}) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.Alarms(); len(got) != 0 {
		t.Fatalf("alarms = %v after reopening an old database", got)
	}
	mustApply(t, s, put("k", "w"))
	var left []byte
	s.db.View(func(tx *bolt.Tx) error { left = tx.Bucket(metaBucket).Get(legacyNoSpaceKey); return nil })
	if left != nil {
		t.Fatal("the old NOSPACE record is still in the database")
	}
}

func TestDefragment(t *testing.T) {
	s := openTestStore(t, Options{})
	for i := range 300 {
		mustApply(t, s, put(fmt.Sprintf("k%03d", i), strings.Repeat("v", 1000)))
	}
	mustApply(t, s, del("k", "l"))
	mustApply(t, s, compact(s.Rev()))
	before, err := s.Status()
	if err != nil {
		t.Fatal(err)
	}
	hash := mustHash(t, s)
	if err := s.Defragment(); err != nil {
		t.Fatal(err)
	}
	after, _ := s.Status()
	if after.DBSize >= before.DBSize {
		t.Errorf("defragment did not shrink the file: %d -> %d", before.DBSize, after.DBSize)
	}
	if mustHash(t, s) != hash || after.Revision != before.Revision || after.AppliedIndex != before.AppliedIndex {
		t.Errorf("defragment changed the state")
	}
	mustApply(t, s, put("after", "defrag"))
	if got := keysOf(rangeAll(t, s)); !slices.Equal(got, []string{"after"}) {
		t.Errorf("keys = %q", got)
	}
	if after.DBSizeInUse <= 0 || after.DBSizeInUse > after.DBSize {
		t.Errorf("in use = %d of %d", after.DBSizeInUse, after.DBSize)
	}
}

func TestOpenLockedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second Open: %v", err)
	}
}

// TestConcurrentReadsSeeWholeRevisions reads while entries, a defragment and
// a snapshot run: every read must see both keys of a txn or neither.
func TestConcurrentReadsSeeWholeRevisions(t *testing.T) {
	s := openTestStore(t, Options{UnsafeNoFsync: true})
	mustApply(t, s, txn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("x", "0"), opPut("y", "0")}}))
	done := make(chan struct{})
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				resp, err := s.Range(t.Context(), &pb.RangeRequest{Key: []byte("x"), RangeEnd: []byte("z")})
				if err != nil {
					errs <- err
					return
				}
				if len(resp.Kvs) != 2 || !bytes.Equal(resp.Kvs[0].Value, resp.Kvs[1].Value) || resp.Kvs[0].ModRevision > resp.Header.Revision {
					errs <- fmt.Errorf("torn read: %v at %d", resp.Kvs, resp.Header.Revision)
					return
				}
			}
		}()
	}
	for i := range 300 {
		v := fmt.Sprint(i)
		mustApply(t, s, txn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("x", v), opPut("y", v)}}))
		switch i {
		case 100:
			if err := s.Defragment(); err != nil {
				t.Error(err)
			}
		case 200:
			if _, _, err := s.Snapshot(io.Discard); err != nil {
				t.Error(err)
			}
		case 250:
			mustApply(t, s, compact(s.Rev()-1))
		}
	}
	close(done)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestApplyBatchMatchesApply: a batch has exactly the effects and results
// of applying its entries one by one, and skips entries already applied.
func TestApplyBatchMatchesApply(t *testing.T) {
	opts := Options{UnsafeNoFsync: true}
	one, batched := openTestStore(t, opts), openTestStore(t, opts)
	ra, rb := rand.New(rand.NewPCG(9, 9)), rand.New(rand.NewPCG(9, 9))
	index := uint64(0)
	for round := range 200 {
		n := 1 + round%7
		var entries []Entry
		var want []*Result
		for range n {
			index++
			want = append(want, one.Apply(index, randomRequest(ra, 0)))
			entries = append(entries, Entry{Index: index, Req: randomRequest(rb, 0)})
		}
		got := batched.ApplyBatch(entries)
		for i := range want {
			if !errors.Is(got[i].Err, want[i].Err) || !proto.Equal(got[i].Resp, want[i].Resp) {
				t.Fatalf("round %d entry %d: batch %+v, one by one %+v", round, i, got[i], want[i])
			}
		}
		if ha, hb := mustHash(t, one), mustHash(t, batched); ha != hb {
			t.Fatalf("round %d: hash %x vs %x", round, ha, hb)
		}
	}
	if one.AppliedIndex() != batched.AppliedIndex() || one.Rev() != batched.Rev() {
		t.Fatalf("applied %d/%d rev %d/%d", one.AppliedIndex(), batched.AppliedIndex(), one.Rev(), batched.Rev())
	}
	// Entries at or below the applied index are skipped.
	res := batched.ApplyBatch([]Entry{{Index: index, Req: put("late", "x")}})
	if !res[0].Skipped {
		t.Fatalf("a replayed entry was applied again: %+v", res[0])
	}
}

// TestDatabaseStaysCompact: records are keyed by revision, which only
// grows, so pages split nearly full; with bbolt's default split (half
// full) the database was about twice the size of the data in it.
func TestDatabaseStaysCompact(t *testing.T) {
	s := openTestStore(t, Options{UnsafeNoFsync: true})
	value := []byte(strings.Repeat("v", 256))
	index := uint64(0)
	for batch := range 200 {
		entries := make([]Entry, 100)
		for i := range entries {
			index++
			entries[i] = Entry{Index: index, Req: &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: fmt.Appendf(nil, "key-%d-%d", batch%7, batch*100+i), Value: value}}}
		}
		for _, r := range s.ApplyBatch(entries) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
	}
	var used int64
	if err := s.db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	data := s.kvBytes
	t.Logf("%d bytes of records in %d bytes of database (%.2fx)", data, used, float64(used)/float64(data))
	if float64(used) > 1.4*float64(data) {
		t.Fatalf("20,000 puts: %d bytes of records take %d bytes of database (%.2fx); want under 1.4x", data, used, float64(used)/float64(data))
	}
}
