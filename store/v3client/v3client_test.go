package v3client_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/store/embed/embedtest"
)

// TestClientOfMemberInProcess drives the etcd client API over a member in
// the same process, as the API server does: reads, conditional writes,
// watches with progress notifications, leases, status, members, snapshots.
func TestClientOfMemberInProcess(t *testing.T) {
	m := embedtest.Member(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := m.Client(ctx)
	defer cli.Close()
	for {
		if _, err := cli.Put(ctx, "/ready", "1"); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("the member never took a write: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	start, err := cli.Get(ctx, "/k/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	wch := cli.Watch(wctx, "/k/", clientv3.WithPrefix(), clientv3.WithRev(start.Header.Revision+1), clientv3.WithPrevKV(), clientv3.WithProgressNotify())

	if _, err := cli.Put(ctx, "/k/a", "1"); err != nil {
		t.Fatal(err)
	}
	// Create if absent: the second one must fail.
	for i, want := range []bool{true, false} {
		resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision("/k/b"), "=", 0)).Then(clientv3.OpPut("/k/b", fmt.Sprint(i))).Commit()
		if err != nil || resp.Succeeded != want {
			t.Fatalf("create-if-absent #%d: succeeded %v (want %v), %v", i+1, resp != nil && resp.Succeeded, want, err)
		}
	}
	if _, err := cli.Delete(ctx, "/k/a"); err != nil {
		t.Fatal(err)
	}
	got, err := cli.Get(ctx, "/k/", clientv3.WithPrefix())
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Key) != "/k/b" || string(got.Kvs[0].Value) != "0" {
		t.Fatalf("get /k/: %v %v", got, err)
	}

	// The watch sees the three changes in order, then a progress
	// notification at the current revision when asked.
	var seen []string
	for len(seen) < 3 {
		wr, ok := <-wch
		if !ok || wr.Err() != nil {
			t.Fatalf("watch ended after %v: %v", seen, wr.Err())
		}
		for _, ev := range wr.Events {
			seen = append(seen, fmt.Sprintf("%s %s", ev.Type, ev.Kv.Key))
		}
	}
	if want := "PUT /k/a,PUT /k/b,DELETE /k/a"; strings.Join(seen, ",") != want {
		t.Fatalf("watch events %v, want %s", seen, want)
	}
	if err := cli.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	for wr := range wch {
		if wr.IsProgressNotify() {
			if wr.Header.Revision != got.Header.Revision {
				t.Fatalf("progress at %d, want %d", wr.Header.Revision, got.Header.Revision)
			}
			break
		}
	}
	wcancel()
	for range wch { // closed once cancelled
	}

	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.KeepAliveOnce(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/leased", "x", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	if r, err := cli.Get(ctx, "/leased"); err != nil || len(r.Kvs) != 0 {
		t.Fatalf("a key of a revoked lease: %v %v", r, err)
	}

	st, err := cli.Status(ctx, "")
	if err != nil || !strings.HasPrefix(st.StorageVersion, "nexus-") {
		t.Fatalf("status: %v %v", st, err)
	}
	ms, err := cli.MemberList(ctx)
	if err != nil || len(ms.Members) != 1 || ms.Members[0].Name != "m1" {
		t.Fatalf("members: %v %v", ms, err)
	}
	snap, err := cli.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, snap)
	snap.Close()
	if err != nil || n == 0 {
		t.Fatalf("snapshot: %d bytes, %v", n, err)
	}
}

// TestClientContextEnds: a request whose context ends returns, and so do
// the client's watches when it is closed.
func TestClientContextEnds(t *testing.T) {
	m := embedtest.Member(t)
	cli := m.Client(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := cli.Get(ctx, "/x"); err == nil {
		t.Fatal("a get with a cancelled context succeeded")
	}
	wch := cli.Watch(context.Background(), "/x")
	cli.Close()
	select {
	case <-wch:
	case <-time.After(10 * time.Second):
		t.Fatal("a watch stayed open after the client closed")
	}
}
