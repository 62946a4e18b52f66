package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api/types"
)

func startCache(t *testing.T, s *Store, r *types.Resource) *Cache {
	t.Helper()
	c := NewCache(s, r, ProgressIsOrdered(context.Background(), s.cli), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

// TestCacheReadsAreCurrent: a read from the cache right after a write (by
// anyone, through the store) sees it, including a delete, while other
// resources' writes move the store's revision on; nothing is read stale.
func TestCacheReadsAreCurrent(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Store, cli *clientv3.Client) {
		ctx := ctxT(t)
		wl, ns := res(t, "workloads"), res(t, "namespaces")
		c := startCache(t, s, wl)
		if !c.progress {
			// etcd 3.4.23 (Debian's) can send progress ahead of events: the
			// cache must refuse to answer, and the API reads the store.
			if _, _, err := c.Get(ctx, "default", "w0"); !errors.Is(err, ErrNotCurrent) {
				t.Fatalf("a cache that cannot prove it is current answered: %v", err)
			}
			return
		}
		for i := range 30 {
			w := workload(fmt.Sprintf("w%d", i%5), int32(i+1))
			if i < 5 {
				if _, err := s.Create(ctx, w); err != nil {
					t.Fatal(err)
				}
			} else if _, err := s.Update(ctx, w, UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			// Another resource moves the store's revision on.
			n := &types.Namespace{}
			n.Name = fmt.Sprintf("ns%d", i)
			if _, err := s.Create(ctx, n); err != nil {
				t.Fatal(err)
			}
			o, _, err := c.Get(ctx, "default", fmt.Sprintf("w%d", i%5))
			if err != nil || *o.(*types.Workload).Spec.Replicas != int32(i+1) {
				t.Fatalf("write %d not seen by the next read: %v", i, err)
			}
		}
		if _, err := s.Delete(ctx, wl, "default", "w0", DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Get(ctx, "default", "w0"); !IsNotFound(err) {
			t.Fatalf("a deleted object read back: %v", err)
		}
		items, at, err := c.List(ctx, "default", ListOptions{})
		if err != nil || len(items) != 4 {
			t.Fatalf("list: %d items, %v", len(items), err)
		}
		l, _ := s.List(ctx, ns, "", ListOptions{})
		if at < l.Revision-1 {
			t.Fatalf("the list's revision %d lags the store's %d", at, l.Revision)
		}
	})
}

// TestCacheWatchReplaysAndEndsSlowWatchers: a watch from a revision replays
// the history after it from memory, a compacted revision is Gone, and a
// watcher that stops reading is ended rather than holding the cache back.
func TestCacheWatchReplaysAndEndsSlowWatchers(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Store, cli *clientv3.Client) {
		ctx := ctxT(t)
		wl := res(t, "workloads")
		c := startCache(t, s, wl)
		first, err := s.Create(ctx, workload("a", 1))
		if err != nil {
			t.Fatal(err)
		}
		from, _ := strconv.ParseInt(first.GetObjectMeta().ResourceVersion, 10, 64)
		var want []string
		for i := range 5 {
			o, err := s.Update(ctx, workload("a", int32(i+2)), UpdateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, o.GetObjectMeta().ResourceVersion)
		}
		lastWant, _ := strconv.ParseInt(want[len(want)-1], 10, 64)
		for c.Revision() < lastWant { // the events arrive through the watch
			if ctx.Err() != nil {
				t.Fatal("the cache never saw the writes")
			}
			time.Sleep(time.Millisecond)
		}
		w, err := c.Watch(ctx, from, "default", ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, line := range w.Replay() {
			var ev struct {
				Type   string
				Object struct {
					Metadata struct{ ResourceVersion string }
				}
			}
			if err := json.Unmarshal(line, &ev); err != nil || ev.Type != "MODIFIED" {
				t.Fatalf("replayed %s: %v", line, err)
			}
			got = append(got, ev.Object.Metadata.ResourceVersion)
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("replayed %v, want %v", got, want)
		}
		// A watcher that reads nothing is ended once its buffer is full.
		slow, err := c.Watch(ctx, 0, "default", ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range watcherBuffer + 10 {
			if _, err := s.Update(ctx, workload("a", int32(100+i%50)), UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		deadline := time.After(30 * time.Second)
		for {
			select {
			case _, ok := <-slow.Lines():
				if ok {
					continue
				}
				if err := slow.Err(); err != errTooSlow {
					t.Fatalf("the slow watcher ended with %v", err)
				}
			case <-deadline:
				t.Fatal("a watcher that reads nothing was not ended")
			}
			break
		}
		// Compacted: Gone, though the cache's history has it.
		last := c.Revision()
		if _, err := cli.Compact(ctx, last); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Watch(ctx, from, "default", ListOptions{}); !IsGone(err) {
			t.Fatalf("watch from a compacted revision: %v", err)
		}
	})
}
