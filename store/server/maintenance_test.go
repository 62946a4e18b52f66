package server

import (
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestAnswersLikeEtcd runs the same requests against etcd and Nexus and
// compares the answers: time-to-live of a revoked lease, HashKV (hash,
// revision hashed, compacted revision) at given revisions, before and
// after a compaction, and the errors for revisions out of range.
func TestAnswersLikeEtcd(t *testing.T) {
	ctx := ctxT(t, time.Minute)
	both := startBoth(t, nil)
	var transcripts [2][]string
	hashRevs := map[string][2]int64{} // what each HashKV answer says it hashed
	for i, r := range both {
		say := func(format string, args ...any) {
			transcripts[i] = append(transcripts[i], fmt.Sprintf(format, args...))
		}
		lease, err := r.cli.Grant(ctx, 60)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.cli.Revoke(ctx, lease.ID); err != nil {
			t.Fatal(err)
		}
		ttl, err := r.cli.TimeToLive(ctx, lease.ID, clientv3.WithAttachedKeys())
		if err != nil {
			say("time to live of a revoked lease: %v", err)
		} else {
			say("time to live of a revoked lease: ID same %v, TTL %d, granted %d, keys %d", ttl.ID == lease.ID, ttl.TTL, ttl.GrantedTTL, len(ttl.Keys))
		}

		var revs []int64
		for _, op := range []clientv3.Op{
			clientv3.OpPut("a", "1"), clientv3.OpPut("b", "2"), clientv3.OpPut("a", "3"),
			clientv3.OpDelete("b"), clientv3.OpPut("c", "4", clientv3.WithPrevKV()),
		} {
			resp, err := r.cli.Do(ctx, op)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case resp.Put() != nil:
				revs = append(revs, resp.Put().Header.Revision)
			case resp.Del() != nil:
				revs = append(revs, resp.Del().Header.Revision)
			}
		}
		hashKV := func(what string, rev int64) {
			h, err := r.cli.HashKV(ctx, r.endpoint, rev)
			if err != nil {
				say("%s: %v", what, err)
				return
			}
			say("%s: hash %08x, compacted at %d, answered at revision %d", what, h.Hash, h.CompactRevision, h.Header.Revision)
			got := hashRevs[what]
			got[i] = h.HashRevision
			hashRevs[what] = got
		}
		hashKV("HashKV of the first put", revs[0])
		hashKV("HashKV after the delete", revs[3])
		hashKV("HashKV now", 0)
		hashKV("HashKV of a future revision", revs[4]+1)
		if _, err := r.cli.Compact(ctx, revs[2]); err != nil {
			t.Fatal(err)
		}
		hashKV("after compacting, HashKV below the compaction", revs[1])
		hashKV("after compacting, HashKV after it", revs[3])
	}
	// etcd 3.4 does not answer with the revision it hashed (HashRevision
	// came with etcd 3.5.5, the API this store implements): Nexus's answer
	// must be the revision asked for, or the current one for 0.
	for what, want := range map[string]int64{"HashKV of the first put": 3, "HashKV after the delete": 6, "HashKV now": 7, "after compacting, HashKV after it": 6} {
		if got := hashRevs[what]; got[1] != want {
			t.Errorf("%s: nexus says it hashed revision %d, want %d (etcd 3.4: %d)", what, got[1], want, got[0])
		}
	}
	// StorageVersion: etcd 3.4 and 3.5 leave it empty, 3.6 reports its
	// database schema version. Nexus reports the format recorded in its
	// database file, which is not etcd's.
	for i, r := range both {
		st, err := r.cli.Status(ctx, r.endpoint)
		if err != nil {
			t.Fatal(err)
		}
		want := ""
		if i == 1 {
			kst, err := r.store.members[0].srv.KV().Status()
			if err != nil || kst.StorageVersion == "" {
				t.Fatalf("the database records no format: %+v %v", kst, err)
			}
			want = kst.StorageVersion
		}
		if st.StorageVersion != want {
			t.Errorf("%s: StorageVersion %q, want %q", r.name, st.StorageVersion, want)
		}
	}
	etcd, nexus := transcripts[0], transcripts[1]
	t.Logf("etcd:\n  %s", strings.Join(etcd, "\n  "))
	for i := range etcd {
		if i >= len(nexus) || nexus[i] != etcd[i] {
			t.Errorf("etcd:  %s\nnexus: %s", etcd[i], nexus[min(i, len(nexus)-1)])
		}
	}
}
