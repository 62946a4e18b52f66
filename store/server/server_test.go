package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/store/storetest"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestEtcdClient drives the store with etcd's own Go client.
func TestEtcdClient(t *testing.T) {
	ts := startStore(t, 3)
	cli := ts.client()
	ctx := ctxT(t, 30*time.Second)

	put, err := cli.Put(ctx, "app/a", "1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "app/b", "2"); err != nil {
		t.Fatal(err)
	}
	get, err := cli.Get(ctx, "app/", clientv3.WithPrefix())
	if err != nil || len(get.Kvs) != 2 || string(get.Kvs[0].Value) != "1" {
		t.Fatalf("get --prefix: %v %v", get, err)
	}
	// A serializable read is answered from whichever member the client
	// picked, which may not have applied the put yet (etcd allows that):
	// it must catch up, not necessarily be current.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ser, err := cli.Get(ctx, "app/a", clientv3.WithSerializable())
		if err == nil && len(ser.Kvs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serializable get still without app/a after 5s: %v %v", ser, err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Txn: compare-and-swap.
	txn, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("app/a"), "=", "1")).
		Then(clientv3.OpPut("app/a", "10")).Else(clientv3.OpGet("app/a")).Commit()
	if err != nil || !txn.Succeeded {
		t.Fatalf("txn: %v %v", txn, err)
	}
	txn, err = cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("app/a"), "=", "1")).
		Then(clientv3.OpPut("app/a", "11")).Commit()
	if err != nil || txn.Succeeded {
		t.Fatalf("txn with a failing compare: %v %v", txn, err)
	}

	// Watch from an old revision replays, then follows.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wch := cli.Watch(wctx, "app/", clientv3.WithPrefix(), clientv3.WithRev(put.Header.Revision))
	if _, err := cli.Delete(ctx, "app/b"); err != nil {
		t.Fatal(err)
	}
	var events []string
	for len(events) < 4 {
		select {
		case resp := <-wch:
			if err := resp.Err(); err != nil {
				t.Fatal(err)
			}
			for _, ev := range resp.Events {
				events = append(events, fmt.Sprintf("%s %s", ev.Type, ev.Kv.Key))
			}
		case <-ctx.Done():
			t.Fatalf("watch got %v", events)
		}
	}
	want := []string{"PUT app/a", "PUT app/b", "PUT app/a", "DELETE app/b"}
	if fmt.Sprint(events) != fmt.Sprint(want) {
		t.Fatalf("watch events %v, want %v", events, want)
	}

	// Compaction: old revisions are gone.
	last, _ := cli.Get(ctx, "app/a")
	if _, err := cli.Compact(ctx, last.Header.Revision); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Get(ctx, "app/a", clientv3.WithRev(put.Header.Revision)); !errors.Is(err, rpctypes.ErrCompacted) {
		t.Fatalf("read below the compaction: %v", err)
	}

	// Leases: attached keys go with the lease.
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "app/leased", "x", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.KeepAliveOnce(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	ttl, err := cli.TimeToLive(ctx, lease.ID, clientv3.WithAttachedKeys())
	if err != nil || ttl.GrantedTTL != 60 || len(ttl.Keys) != 1 {
		t.Fatalf("time to live: %+v %v", ttl, err)
	}
	if _, err := cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := cli.Get(ctx, "app/leased"); len(got.Kvs) != 0 {
		t.Fatal("a key of a revoked lease remains")
	}
	// A short lease expires by itself.
	short, err := cli.Grant(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "app/short", "x", clientv3.WithLease(short.ID)); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		got, err := cli.Get(ctx, "app/short")
		if err == nil && len(got.Kvs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a key with an expired lease was not deleted")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Bad input: an oversized request, a watch below the compaction.
	if _, err := cli.Put(ctx, "app/huge", strings.Repeat("x", 1700<<10)); !errors.Is(err, rpctypes.ErrRequestTooLarge) {
		t.Fatalf("a 1.7 MiB put: %v, want request too large", err)
	}
	cwch := cli.Watch(ctx, "app/", clientv3.WithPrefix(), clientv3.WithRev(put.Header.Revision))
	if resp := <-cwch; !errors.Is(resp.Err(), rpctypes.ErrCompacted) || resp.CompactRevision == 0 {
		t.Fatalf("watch from a compacted revision: %v (compact revision %d)", resp.Err(), resp.CompactRevision)
	}

	// Cluster and maintenance.
	ml, err := cli.MemberList(ctx)
	if err != nil || len(ml.Members) != 3 {
		t.Fatalf("member list: %v %v", ml, err)
	}
	st, err := cli.Status(ctx, ts.endpoints()[0])
	if err != nil || st.Leader == 0 || st.Version == "" {
		t.Fatalf("status: %+v %v", st, err)
	}
}

// TestLinearizableUnderLeaderFailure runs concurrent clients while the
// leader is killed and restarted, and checks the history with porcupine
// and the watch stream for gaps.
func TestLinearizableUnderLeaderFailure(t *testing.T) {
	ts := startStore(t, 3)
	ctx := ctxT(t, 2*time.Minute)
	watcher := ts.client()
	start, err := watcher.Get(ctx, "lin/")
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wch := watcher.Watch(wctx, "lin/", clientv3.WithPrefix(), clientv3.WithRev(start.Header.Revision+1))

	go func() {
		time.Sleep(200 * time.Millisecond)
		l := ts.waitLeader()
		ts.kill(l)
		time.Sleep(300 * time.Millisecond)
		ts.start(l)
	}()
	history, stats, err := storetest.Run(ctx, storetest.Workload{Endpoints: ts.endpoints(), Clients: 4, OpsPerClient: 500, Keys: 8, Prefix: "lin/", Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d operations, %d failed, %d with unknown outcome", stats.Ops, stats.Failed, stats.Unknown)
	if err := storetest.Check(history, time.Minute); err != nil {
		t.Fatal(err)
	}
	end, err := watcher.Get(ctx, "lin/")
	if err != nil {
		t.Fatal(err)
	}
	revs, err := storetest.WatchRevisions(wch, end.Header.Revision, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := storetest.CheckWatchRevisions(start.Header.Revision+1, revs); err != nil {
		t.Fatal(err)
	}
}

// TestDurabilityWhenEveryMemberDies: every acknowledged write survives all
// members being stopped abruptly at once and restarted.
func TestDurabilityWhenEveryMemberDies(t *testing.T) {
	ts := startStore(t, 3)
	ctx := ctxT(t, time.Minute)
	cli := ts.client()
	acked := make(chan string, 10000)
	writeCtx, stopWriting := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; writeCtx.Err() == nil; i++ {
				k := fmt.Sprintf("dur/%d/%d", c, i)
				if _, err := cli.Put(writeCtx, k, k); err == nil {
					acked <- k
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	for _, m := range ts.members { // all at once, mid-load
		ts.kill(m)
	}
	stopWriting()
	wg.Wait()
	close(acked)
	for _, m := range ts.members {
		ts.start(m)
	}
	ts.waitLeader()
	fresh := ts.client()
	n := 0
	for k := range acked {
		resp, err := fresh.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != k {
			t.Fatalf("acknowledged write %s lost after every member died", k)
		}
		n++
	}
	if n < 50 {
		t.Fatalf("only %d writes were acknowledged before the crash: the test proves little", n)
	}
	t.Logf("%d acknowledged writes, all present after the restart", n)
}

// TestFullDiskFailsWritesCleanly: when the disk fills, writes fail with an
// error (no hang, no crash), and after space is freed and the member
// restarts, every acknowledged write is there and writes work again.
func TestFullDiskFailsWritesCleanly(t *testing.T) {
	testutil.RequireRoot(t)
	disk := t.TempDir()
	if err := unix.Mount("tmpfs", disk, "tmpfs", 0, "size=160m"); err != nil {
		testutil.Missing(t, "cannot mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(disk, unix.MNT_DETACH) })
	ts := startStoreIn(t, 1, disk)
	ctx := ctxT(t, 2*time.Minute)
	cli := ts.client()

	// Leave about 2 MiB free. The member may still be preparing its next
	// WAL segment in the background; if that takes space the filler
	// counted on, measure again.
	filler := filepath.Join(disk, "filler")
	for try := 0; ; try++ {
		var st unix.Statfs_t
		if err := unix.Statfs(disk, &st); err != nil {
			t.Fatal(err)
		}
		free := int64(st.Bavail) * st.Bsize
		err := os.WriteFile(filler, make([]byte, free-(2<<20)), 0o600)
		if err == nil {
			break
		}
		os.Remove(filler)
		if !errors.Is(err, unix.ENOSPC) || try == 20 {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	value := strings.Repeat("v", 64<<10)
	var acked []string
	var failure error
	for i := 0; i < 200 && failure == nil; i++ {
		k := fmt.Sprintf("full/%d", i)
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := cli.Put(pctx, k, value)
		cancel()
		if err != nil {
			failure = err
			break
		}
		acked = append(acked, k)
	}
	if failure == nil {
		t.Fatal("200 writes of 64 KiB succeeded on a disk with 2 MiB free")
	}
	t.Logf("after %d acknowledged writes the next one failed: %v", len(acked), failure)

	// Free the space, restart, and find everything acknowledged.
	ts.kill(ts.members[0])
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	ts.start(ts.members[0])
	ts.waitLeader()
	fresh := ts.client()
	for _, k := range acked {
		resp, err := fresh.Get(ctx, k)
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != value {
			t.Fatalf("acknowledged write %s after the disk filled: %v %v", k, resp, err)
		}
	}
	if _, err := fresh.Put(ctx, "full/after", "ok"); err != nil {
		t.Fatalf("write after freeing space: %v", err)
	}
}

// TestDatabaseRebuiltAfterMachineCrash: the database commits without
// fsync; after a reboot that may have torn it, the member moves it aside
// and rebuilds the state from raft's WAL and snapshots.
func TestDatabaseRebuiltAfterMachineCrash(t *testing.T) {
	for _, snapshotEvery := range []uint64{0, 7} { // WAL only; snapshot + WAL
		t.Run(fmt.Sprintf("snapshot every %d", snapshotEvery), func(t *testing.T) {
			ts := startStore(t, 1)
			m := ts.members[0]
			if snapshotEvery > 0 {
				ts.kill(m)
				m.snapshotEvery = snapshotEvery
				ts.start(m)
				ts.waitLeader()
			}
			ctx := ctxT(t, time.Minute)
			cli := ts.client()
			for i := range 30 {
				if _, err := cli.Put(ctx, fmt.Sprintf("crash/%d", i), fmt.Sprint(i)); err != nil {
					t.Fatal(err)
				}
			}
			ts.kill(m)
			// As if the machine lost power: garbage in the database, and a
			// marker from another boot saying it had unsynced commits.
			db := filepath.Join(m.dir, "db")
			if err := os.WriteFile(db, []byte("torn by a power failure"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(db+unsyncedSuffix, []byte("some-earlier-boot\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			ts.start(m)
			ts.waitLeader()
			fresh := ts.client()
			for i := range 30 {
				resp, err := fresh.Get(ctx, fmt.Sprintf("crash/%d", i))
				if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != fmt.Sprint(i) {
					t.Fatalf("crash/%d after the rebuild: %v %v", i, resp, err)
				}
			}
			aside, _ := filepath.Glob(db + ".unsynced-*")
			if len(aside) != 1 {
				t.Fatalf("the suspect database was not kept aside: %v", aside)
			}
		})
	}
}

// TestMembershipThroughTheEtcdAPI adds a learner with etcd's client, starts
// it, promotes it and removes an original member.
func TestMembershipThroughTheEtcdAPI(t *testing.T) {
	ts := startStore(t, 3)
	ctx := ctxT(t, time.Minute)
	cli := ts.client()
	if _, err := cli.Put(ctx, "members/before", "1"); err != nil {
		t.Fatal(err)
	}
	m3 := ts.newMember("m3")
	added, err := cli.MemberAddAsLearner(ctx, []string{"https://m3@" + m3.peer.Addr})
	if err != nil {
		t.Fatal(err)
	}
	if added.Member.ID != m3.peer.ID || !added.Member.IsLearner {
		t.Fatalf("added %+v, want learner with ID %x", added.Member, m3.peer.ID)
	}
	m3.join = true
	ts.peers = append(ts.peers, m3.peer)
	ts.members = append(ts.members, m3)
	ts.start(m3)

	// The learner catches up: a serializable read on it sees the data.
	learner, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + m3.clientAddr}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer learner.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := learner.Get(ctx, "members/before", clientv3.WithSerializable())
		if err == nil && len(resp.Kvs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the learner did not catch up: %v %v", resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := cli.MemberPromote(ctx, m3.peer.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.MemberRemove(ctx, ts.members[0].peer.ID); err != nil {
		t.Fatal(err)
	}
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range list.Members {
		if m.IsLearner {
			t.Fatalf("%s is still a learner", m.Name)
		}
		names = append(names, m.Name)
	}
	sort.Strings(names)
	if fmt.Sprint(names) != "[m1 m2 m3]" {
		t.Fatalf("members %v, want [m1 m2 m3]", names)
	}
	if _, err := learner.Put(ctx, "members/after", "1"); err != nil {
		t.Fatalf("write through the promoted member: %v", err)
	}
}
