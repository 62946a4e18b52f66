package server

import (
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestProgressNeverPassesAnEvent: a progress notification (RequestProgress)
// reaches a watcher only after every event up to its revision, so a client
// that takes it as "I have seen everything up to R" is right, as with etcd.
// Before, the store answered at once with its current revision, ahead of
// events still queued for the watcher.
func TestProgressNeverPassesAnEvent(t *testing.T) {
	ts := startStore(t, 1)
	cli := ts.client()
	ctx := ctxT(t, 60*time.Second)
	wctx := clientv3.WithRequireLeader(ctx)
	wch := cli.Watch(wctx, "p/", clientv3.WithPrefix())
	type seen struct {
		progress bool
		rev      int64
	}
	var mu sync.Mutex
	var order []seen
	got := make(chan struct{})
	go func() {
		defer close(got)
		for resp := range wch {
			mu.Lock()
			if resp.IsProgressNotify() {
				order = append(order, seen{true, resp.Header.Revision})
			}
			for _, ev := range resp.Events {
				order = append(order, seen{false, ev.Kv.ModRevision})
			}
			mu.Unlock()
		}
	}()
	var puts []int64
	var pmu sync.Mutex
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Go(func() {
			for i := range 50 {
				r, err := cli.Put(ctx, fmt.Sprintf("p/%d/%d", c, i), "v")
				if err != nil {
					t.Error(err)
					return
				}
				pmu.Lock()
				puts = append(puts, r.Header.Revision)
				pmu.Unlock()
				_ = cli.RequestProgress(wctx)
			}
		})
	}
	wg.Wait()
	_ = cli.RequestProgress(wctx)
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	progress := 0
	for i, s := range order {
		if !s.progress {
			continue
		}
		progress++
		before := 0
		for _, e := range order[:i] {
			if !e.progress && e.rev <= s.rev {
				before++
			}
		}
		want := 0
		for _, r := range puts {
			if r <= s.rev {
				want++
			}
		}
		if before != want {
			t.Fatalf("progress at revision %d came after %d of the %d events up to it", s.rev, before, want)
		}
	}
	if progress == 0 {
		t.Fatal("no progress notification arrived")
	}
}
