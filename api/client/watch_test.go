package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/servertest"
	"nexus.dev/nexus/api/types"
)

// next returns the watch's next event that is not a bookmark.
func next(t *testing.T, w *client.Watcher) client.Event {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatalf("the watch ended: %v", w.Err())
			}
			if ev.Type != client.Bookmark {
				return ev
			}
		case <-timeout:
			t.Fatal("no event within 30 s")
		}
	}
}

// TestWatchResumesAfterLostConnections: the connections under a watch are
// killed again and again while objects are created; the watch resumes by
// itself and delivers every change exactly once, in order.
func TestWatchResumesAfterLostConnections(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	wl := res(t, "wl")
	for _, p := range protos {
		t.Run(p.name, func(t *testing.T) {
			ctx := context.Background()
			writer := newClient(t, settings(t, c, false, "admin"))
			watcher := newClient(t, settings(t, c, p.h3, "admin"))
			ns := fmt.Sprintf("resume-%v", p.h3)
			mustCreate(t, writer, namespace(ns))
			var resumes atomic.Int32
			w, err := watcher.Watch(ctx, wl, ns, client.WatchOptions{OnResume: func(error) { resumes.Add(1) }})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Stop()
			// Batches of creates; each batch starts, and while its changes
			// are on their way the connections are killed.
			const batches, size, n = 8, 5, 40
			want := make(chan string, n)
			var wg sync.WaitGroup
			var got []string
			for b := range batches {
				wg.Go(func() {
					for i := range size {
						o := mustCreate(t, writer, workload(ns, fmt.Sprintf("w%d-%d", b, i), "a", nil))
						want <- o.GetObjectMeta().ResourceVersion
					}
				})
				watcher.CloseConnections()
				for range size {
					ev := next(t, w)
					if ev.Type != client.Added {
						t.Fatalf("event %s, want ADDED", ev.Type)
					}
					got = append(got, ev.Object.GetObjectMeta().ResourceVersion)
				}
				wg.Wait()
			}
			wg.Wait()
			close(want)
			var wantRVs []string
			for rv := range want {
				wantRVs = append(wantRVs, rv)
			}
			if !slices.Equal(got, wantRVs) {
				t.Fatalf("events lost or repeated:\ngot  %v\nwant %v", got, wantRVs)
			}
			// Events that arrived before a kill are still read, so two
			// kills can fall into one resume; but there must be some.
			if resumes.Load() < 2 {
				t.Fatalf("the watch resumed %d times: the connections were not killed", resumes.Load())
			}
			// Nothing more comes: no event was repeated after the last one.
			writer.Patch(ctx, wl, ns, "w0-0", []byte(`{"spec":{"replicas":2}}`))
			if ev := next(t, w); ev.Type != client.Modified || ev.Object.GetObjectMeta().Name != "w0-0" {
				t.Fatalf("after the last create: %s %s", ev.Type, ev.Object.GetObjectMeta().Name)
			}
		})
	}
}

// TestWatchListsFirst: without a resourceVersion, the objects that exist
// come first as ADDED, then the changes.
func TestWatchListsFirst(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	cl := newClient(t, settings(t, c, false, "admin"))
	wl := res(t, "wl")
	ctx := context.Background()
	mustCreate(t, cl, workload("default", "a", "a", map[string]string{"app": "x"}))
	mustCreate(t, cl, workload("default", "b", "a", map[string]string{"app": "y"}))
	w, err := cl.Watch(ctx, wl, "default", client.WatchOptions{LabelSelector: "app=x"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if ev := next(t, w); ev.Type != client.Added || ev.Object.GetObjectMeta().Name != "a" {
		t.Fatalf("first: %s %s", ev.Type, ev.Object.GetObjectMeta().Name)
	}
	// b starts matching the selector: it is ADDED for this watch.
	cl.Patch(ctx, wl, "default", "b", []byte(`{"metadata":{"labels":{"app":"x"}}}`))
	if ev := next(t, w); ev.Type != client.Added || ev.Object.GetObjectMeta().Name != "b" {
		t.Fatalf("second: %s %s", ev.Type, ev.Object.GetObjectMeta().Name)
	}
	cl.Delete(ctx, wl, "default", "a", client.DeleteOptions{})
	if ev := next(t, w); ev.Type != client.Deleted || ev.Object.GetObjectMeta().Name != "a" {
		t.Fatalf("third: %s %s", ev.Type, ev.Object.GetObjectMeta().Name)
	}
}

// compactNow compacts the store's history up to its current revision.
func compactNow(t *testing.T, b apitest.Backend) {
	t.Helper()
	cli := b.Client(t)
	resp, err := cli.Get(context.Background(), "/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(context.Background(), resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
}

// TestWatchIsGoneAfterCompaction: a watch that cannot resume because the
// store compacted the revisions it needs reports Gone, with the revision
// to list from; at the start as well as after a lost connection.
func TestWatchIsGoneAfterCompaction(t *testing.T) {
	b := apitest.NexusStore(t)
	c := servertest.StartServer(t, b, servertest.ServerOptions{})
	cl := newClient(t, settings(t, c, false, "admin"))
	writer := newClient(t, settings(t, c, false, "admin"))
	wl := res(t, "wl")
	ctx := context.Background()
	first := mustCreate(t, cl, workload("default", "a", "a", nil))
	mustCreate(t, cl, workload("default", "b", "a", nil))
	mustCreate(t, cl, workload("default", "x", "a", nil))
	// The store keeps the compaction revision itself: a watch from a's
	// revision needs b's, which is older than x's.
	compactNow(t, b)
	// The server answers 410, or, when the store says so only after it
	// started the stream, ends it with a 410 ERROR event: the same here.
	w, err := cl.Watch(ctx, wl, "default", client.WatchOptions{ResourceVersion: first.GetObjectMeta().ResourceVersion})
	if err == nil {
		for ev := range w.Events() {
			t.Errorf("event from a compacted revision: %s %s", ev.Type, ev.Object.GetObjectMeta().Name)
		}
		err = w.Err()
	}
	if !client.IsGone(err) {
		t.Fatalf("watch from a compacted revision: %v, want Gone", err)
	}

	// Mid-watch: while the stream is lost, the store moves on and compacts.
	var once sync.Once
	w, err = cl.Watch(ctx, wl, "default", client.WatchOptions{OnResume: func(error) {
		once.Do(func() {
			mustCreate(t, writer, workload("default", "c", "a", nil))
			mustCreate(t, writer, workload("default", "d", "a", nil))
			compactNow(t, b)
		})
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	next(t, w)
	next(t, w)
	next(t, w) // a, b and x
	cl.CloseConnections()
	for range w.Events() {
	}
	err = w.Err()
	var ae *client.APIError
	if !client.IsGone(err) || !errors.As(err, &ae) || ae.CurrentResourceVersion == "" {
		t.Fatalf("resumed after compaction: %v, want Gone with the current revision", err)
	}
	if rv, _ := strconv.Atoi(ae.CurrentResourceVersion); rv == 0 {
		t.Fatalf("current resourceVersion %q", ae.CurrentResourceVersion)
	}
}

// TestFollowSurvivesGone: Follow lists again after Gone and delivers the
// difference, so the caller's view matches the server's.
func TestFollowSurvivesGone(t *testing.T) {
	b := apitest.NexusStore(t)
	c := servertest.StartServer(t, b, servertest.ServerOptions{})
	cl := newClient(t, settings(t, c, false, "admin"))
	writer := newClient(t, settings(t, c, false, "admin"))
	wl := res(t, "wl")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mustCreate(t, writer, workload("default", "a", "a", nil))
	mustCreate(t, writer, workload("default", "b", "a", nil))
	var once sync.Once
	opts := client.FollowOptions{OnResume: func(error) {
		once.Do(func() {
			writer.Delete(ctx, wl, "default", "a", client.DeleteOptions{})
			writer.Patch(ctx, wl, "default", "b", []byte(`{"spec":{"replicas":4}}`))
			mustCreate(t, writer, workload("default", "d", "a", nil))
			compactNow(t, b)
		})
	}}
	events := make(chan client.Event, 100)
	done := make(chan error, 1)
	go func() {
		done <- cl.Follow(ctx, wl, "default", opts, func(ev client.Event) error { events <- ev; return nil })
	}()
	view := map[string]types.Object{}
	var seen []string
	apply := func() {
		select {
		case ev := <-events:
			name := ev.Object.GetObjectMeta().Name
			seen = append(seen, string(ev.Type)+" "+name)
			if ev.Type == client.Deleted {
				delete(view, name)
			} else {
				view[name] = ev.Object
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no event within 30 s; seen %v", seen)
		}
	}
	apply()
	apply() // a and b
	mustCreate(t, writer, workload("default", "c", "a", nil))
	apply()
	cl.CloseConnections()
	// Deleted a, Modified b, Added d: from the list after Gone.
	apply()
	apply()
	apply()
	slices.Sort(seen[3:])
	if want := []string{"ADDED a", "ADDED b", "ADDED c", "ADDED d", "DELETED a", "MODIFIED b"}; !slices.Equal(seen, want) {
		t.Fatalf("events %v, want %v", seen, want)
	}
	items, _, err := cl.List(ctx, wl, "default", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != len(view) {
		t.Fatalf("view has %d objects, the server %d", len(view), len(items))
	}
	for _, o := range items {
		v, ok := view[o.GetObjectMeta().Name]
		if !ok || v.GetObjectMeta().ResourceVersion != o.GetObjectMeta().ResourceVersion {
			t.Fatalf("view of %s is not the server's", o.GetObjectMeta().Name)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follow ended with %v after its context", err)
	}
}
