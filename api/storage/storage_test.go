package storage

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/types"
)

// eachBackend runs f against the embedded nexus store and against etcd.
func eachBackend(t *testing.T, f func(t *testing.T, s *Store, cli *clientv3.Client)) {
	for _, b := range apitest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			cli := b.Client(t)
			prefix := fmt.Sprintf("/%s/", strings.ReplaceAll(t.Name(), "/", "-"))
			f(t, New(Config{Client: cli, Prefix: prefix}), cli)
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func res(t *testing.T, name string) *types.Resource {
	r, ok := types.LookupResource(name)
	if !ok {
		t.Fatalf("no resource %s", name)
	}
	return r
}

func workload(name string, replicas int32) *types.Workload {
	w := &types.Workload{}
	w.Name, w.Namespace = name, "default"
	w.Labels = map[string]string{"app": name}
	w.Spec.Replicas = &replicas
	w.Spec.Template.Image = "nexus.local/hello"
	types.Default(w)
	return w
}

func TestCreateGetUpdateDelete(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Store, cli *clientv3.Client) {
		ctx := ctxT(t)
		wl := res(t, "workloads")
		created, err := s.Create(ctx, workload("web", 1))
		if err != nil {
			t.Fatal(err)
		}
		m := created.GetObjectMeta()
		if m.UID == "" || m.CreationTimestamp.IsZero() || m.Generation != 1 || m.ResourceVersion == "" {
			t.Fatalf("created metadata: %+v", m)
		}
		if _, err := s.Create(ctx, workload("web", 1)); !IsAlreadyExists(err) {
			t.Fatalf("second create: %v", err)
		}
		got, err := s.Get(ctx, wl, "default", "web")
		if err != nil || got.GetObjectMeta().ResourceVersion != m.ResourceVersion || got.GetObjectMeta().UID != m.UID {
			t.Fatalf("get: %+v %v", got, err)
		}
		if _, err := s.Get(ctx, wl, "default", "nope"); !IsNotFound(err) || !strings.Contains(err.Error(), "workloads/nope in namespace default: not found") {
			t.Fatalf("get missing: %v", err)
		}

		// The status written through /status survives an update of the object,
		// and the spec written through the object survives a status update.
		st := got.(*types.Workload)
		st.Status.ReadyReplicas = 1
		afterStatus, err := s.Update(ctx, st, UpdateOptions{Status: true})
		if err != nil {
			t.Fatal(err)
		}
		if afterStatus.GetObjectMeta().Generation != 1 {
			t.Fatalf("a status update changed the generation: %d", afterStatus.GetObjectMeta().Generation)
		}
		upd := afterStatus.(*types.Workload)
		upd.Spec.Replicas = ptr[int32](3)
		upd.Status = types.WorkloadStatus{} // ignored: the stored status stays
		upd.UID = ""                        // identity is the store's
		after, err := s.Update(ctx, upd, UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		aw := after.(*types.Workload)
		if aw.Generation != 2 || *aw.Spec.Replicas != 3 || aw.Status.ReadyReplicas != 1 || aw.UID != m.UID {
			t.Fatalf("after update: gen %d replicas %d ready %d uid %s", aw.Generation, *aw.Spec.Replicas, aw.Status.ReadyReplicas, aw.UID)
		}
		// The old resourceVersion is stale now.
		stale := *after.(*types.Workload)
		stale.ResourceVersion = m.ResourceVersion
		if _, err := s.Update(ctx, &stale, UpdateOptions{}); !IsConflict(err) {
			t.Fatalf("stale update: %v", err)
		}
		if _, err := s.Delete(ctx, wl, "default", "web", DeleteOptions{ResourceVersion: m.ResourceVersion}); !IsConflict(err) {
			t.Fatalf("stale delete: %v", err)
		}
		// A label change is not a spec change; an update that changes
		// nothing writes nothing.
		lab := after.(*types.Workload)
		lab.Labels["tier"] = "front"
		after2, err := s.Update(ctx, lab, UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if after2.GetObjectMeta().Generation != 2 {
			t.Fatalf("label update: gen %d, %v", after2.GetObjectMeta().Generation, err)
		}
		same, err := s.Update(ctx, after2, UpdateOptions{})
		if err != nil || same.GetObjectMeta().ResourceVersion != after2.GetObjectMeta().ResourceVersion {
			t.Fatalf("no-op update wrote: %v -> %v (%v)", after2.GetObjectMeta().ResourceVersion, same.GetObjectMeta().ResourceVersion, err)
		}
		deleted, err := s.Delete(ctx, wl, "default", "web", DeleteOptions{ResourceVersion: after2.GetObjectMeta().ResourceVersion})
		if err != nil || deleted.GetObjectMeta().UID != m.UID {
			t.Fatalf("delete: %v", err)
		}
		if _, err := s.Delete(ctx, wl, "default", "web", DeleteOptions{}); !IsNotFound(err) {
			t.Fatalf("delete again: %v", err)
		}
		// Stored under the documented key, as JSON.
		if _, err := s.Create(ctx, workload("api", 1)); err != nil {
			t.Fatal(err)
		}
		raw, err := cli.Get(ctx, s.Key(wl, "default", "api"))
		if err != nil || len(raw.Kvs) != 1 || !strings.Contains(string(raw.Kvs[0].Value), `"kind":"Workload"`) {
			t.Fatalf("raw: %v %v", raw, err)
		}
	})
}

func ptr[T any](v T) *T { return &v }

// TestConcurrentUpdatesWithOneResourceVersion: 50 writers with the same
// resourceVersion; exactly one wins, the rest get Conflict.
func TestConcurrentUpdatesWithOneResourceVersion(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Store, _ *clientv3.Client) {
		ctx := ctxT(t)
		o, err := s.Create(ctx, workload("web", 1))
		if err != nil {
			t.Fatal(err)
		}
		rv := o.GetObjectMeta().ResourceVersion
		var wg sync.WaitGroup
		results := make(chan error, 50)
		for i := range 50 {
			wg.Go(func() {
				w := workload("web", int32(i+2))
				w.ResourceVersion = rv
				_, err := s.Update(ctx, w, UpdateOptions{})
				results <- err
			})
		}
		wg.Wait()
		close(results)
		ok, conflicts := 0, 0
		for err := range results {
			switch {
			case err == nil:
				ok++
			case IsConflict(err):
				conflicts++
			default:
				t.Fatalf("unexpected error: %v", err)
			}
		}
		if ok != 1 || conflicts != 49 {
			t.Fatalf("%d succeeded, %d conflicts; want 1 and 49", ok, conflicts)
		}
	})
}

// TestPaginationIsOneSnapshot: paging through while writers add, change and
// delete objects returns exactly the objects that existed at the first
// page's revision, each once.
func TestPaginationIsOneSnapshot(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Store, cli *clientv3.Client) {
		ctx := ctxT(t)
		wl := res(t, "workloads")
		for i := range 120 {
			if _, err := s.Create(ctx, workload(fmt.Sprintf("w%03d", i), 1)); err != nil {
				t.Fatal(err)
			}
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = s.Create(ctx, workload(fmt.Sprintf("n%03d", i), 1))
				_, _ = s.Delete(ctx, wl, "default", fmt.Sprintf("w%03d", (i*7)%120), DeleteOptions{})
			}
		})
		defer func() { close(stop); wg.Wait() }()
		time.Sleep(20 * time.Millisecond)
		var names []string
		var rev int64
		cont := ""
		pages := 0
		for {
			l, err := s.List(ctx, wl, "default", ListOptions{Limit: 25, Continue: cont})
			if err != nil {
				t.Fatal(err)
			}
			if rev == 0 {
				rev = l.Revision
			} else if l.Revision != rev {
				t.Fatalf("page %d read at revision %d, the first at %d", pages, l.Revision, rev)
			}
			pages++
			for _, o := range l.Items {
				names = append(names, o.GetObjectMeta().Name)
			}
			if l.Continue == "" {
				break
			}
			cont = l.Continue
			time.Sleep(5 * time.Millisecond) // let the writers move on between pages
		}
		snap, err := cli.Get(ctx, s.listPrefix(wl, "default"), clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, kv := range snap.Kvs {
			want = append(want, string(kv.Key[strings.LastIndexByte(string(kv.Key), '/')+1:]))
		}
		if !slices.Equal(names, want) {
			t.Fatalf("%d pages gave %d names, the snapshot at %d holds %d:\n%v\n%v", pages, len(names), rev, len(want), names, want)
		}
		if pages < 5 {
			t.Fatalf("only %d pages", pages)
		}
	})
}

func TestListSelectorsAndNamespaces(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Store, _ *clientv3.Client) {
		ctx := ctxT(t)
		wl := res(t, "workloads")
		for i, ns := range []string{"default", "default", "prod", "prodx"} {
			w := workload(fmt.Sprintf("w%d", i), 1)
			w.Namespace = ns
			w.Labels["tier"] = []string{"front", "back"}[i%2]
			if _, err := s.Create(ctx, w); err != nil {
				t.Fatal(err)
			}
		}
		names := func(l *List) (out []string) {
			for _, o := range l.Items {
				out = append(out, o.GetObjectMeta().Namespace+"/"+o.GetObjectMeta().Name)
			}
			return out
		}
		all, err := s.List(ctx, wl, "", ListOptions{})
		if err != nil || !slices.Equal(names(all), []string{"default/w0", "default/w1", "prod/w2", "prodx/w3"}) {
			t.Fatalf("all namespaces: %v %v", names(all), err)
		}
		prod, _ := s.List(ctx, wl, "prod", ListOptions{})
		if !slices.Equal(names(prod), []string{"prod/w2"}) {
			t.Fatalf("namespace prod (not prodx): %v", names(prod))
		}
		sel, _ := types.ParseLabelSelector("tier=front")
		front, _ := s.List(ctx, wl, "", ListOptions{Labels: sel, Limit: 1})
		if !slices.Equal(names(front), []string{"default/w0"}) || front.Continue == "" {
			t.Fatalf("tier=front limit 1: %v %q", names(front), front.Continue)
		}
		rest, _ := s.List(ctx, wl, "", ListOptions{Labels: sel, Limit: 1, Continue: front.Continue})
		if !slices.Equal(names(rest), []string{"prod/w2"}) {
			t.Fatalf("tier=front page 2: %v", names(rest))
		}
		fs, _ := types.ParseFieldSelector("metadata.name=w1")
		one, _ := s.List(ctx, wl, "", ListOptions{Fields: fs})
		if !slices.Equal(names(one), []string{"default/w1"}) {
			t.Fatalf("field selector: %v", names(one))
		}
		if _, err := s.List(ctx, wl, "", ListOptions{Continue: "garbage"}); ReasonOf(err) != Invalid {
			t.Fatalf("bad continue: %v", err)
		}
	})
}

// collect reads n events or fails.
func collect(t *testing.T, w *Watcher, n int) []Event {
	t.Helper()
	var evs []Event
	timeout := time.After(20 * time.Second)
	for len(evs) < n {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatalf("watch ended after %d of %d events: %v", len(evs), n, w.Err())
			}
			if ev.Type != Bookmark {
				evs = append(evs, ev)
			}
		case <-timeout:
			t.Fatalf("only %d of %d events", len(evs), n)
		}
	}
	return evs
}

// TestWatchResumesWithoutLossOrRepeat: a watch cut off half way and resumed
// from the last resourceVersion it saw delivers every change exactly once.
func TestWatchResumesWithoutLossOrRepeat(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Store, _ *clientv3.Client) {
		ctx := ctxT(t)
		wl := res(t, "workloads")
		start, err := s.List(ctx, wl, "default", ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// 60 changes: creates, updates, deletes.
		var wantRevs []string
		write := func(i int) {
			var o types.Object
			var err error
			switch i % 3 {
			case 0:
				o, err = s.Create(ctx, workload(fmt.Sprintf("w%d", i), 1))
			case 1:
				o, err = s.Update(ctx, workload(fmt.Sprintf("w%d", i-1), 5), UpdateOptions{})
			case 2:
				o, err = s.Delete(ctx, wl, "default", fmt.Sprintf("w%d", i-2), DeleteOptions{})
				if err == nil {
					wantRevs = append(wantRevs, "deleted")
					return
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			wantRevs = append(wantRevs, o.GetObjectMeta().ResourceVersion)
		}
		wctx, cancel := context.WithCancel(ctx)
		w, err := s.Watch(wctx, wl, "default", WatchOptions{ResourceVersion: strconv.FormatInt(start.Revision, 10)})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 30 {
			write(i)
		}
		first := collect(t, w, 17) // stop part way through
		cancel()
		for range w.Events() {
		}
		for i := 30; i < 60; i++ {
			write(i)
		}
		last := first[len(first)-1].Object.GetObjectMeta().ResourceVersion
		w2, err := s.Watch(ctx, wl, "default", WatchOptions{ResourceVersion: last})
		if err != nil {
			t.Fatal(err)
		}
		second := collect(t, w2, 60-17)
		all := append(first, second...)
		types_ := map[int]EventType{0: Added, 1: Modified, 2: Deleted}
		var prev int64
		for i, ev := range all {
			rv, _ := strconv.ParseInt(ev.Object.GetObjectMeta().ResourceVersion, 10, 64)
			if rv <= prev {
				t.Fatalf("event %d at revision %d after %d: repeated or out of order", i, rv, prev)
			}
			prev = rv
			if ev.Type != types_[i%3] {
				t.Fatalf("event %d is %s, want %s", i, ev.Type, types_[i%3])
			}
			if wantRevs[i] != "deleted" && wantRevs[i] != ev.Object.GetObjectMeta().ResourceVersion {
				t.Fatalf("event %d has resourceVersion %s, the write returned %s", i, ev.Object.GetObjectMeta().ResourceVersion, wantRevs[i])
			}
		}
	})
}

func TestWatchFromCompactedRevisionIsGone(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Store, cli *clientv3.Client) {
		ctx := ctxT(t)
		wl := res(t, "workloads")
		o, err := s.Create(ctx, workload("web", 1))
		if err != nil {
			t.Fatal(err)
		}
		old := o.GetObjectMeta().ResourceVersion
		var last types.Object
		for i := range 5 {
			if last, err = s.Update(ctx, workload("web", int32(i+2)), UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		rev, _ := strconv.ParseInt(last.GetObjectMeta().ResourceVersion, 10, 64)
		if _, err := cli.Compact(ctx, rev); err != nil {
			t.Fatal(err)
		}
		w, err := s.Watch(ctx, wl, "default", WatchOptions{ResourceVersion: old})
		if err == nil {
			for range w.Events() {
			}
			err = w.Err()
		}
		var se *Error
		if !IsGone(err) || !errorsAs(err, &se) || se.CurrentRevision < rev {
			t.Fatalf("watch from a compacted revision: %v (current %v)", err, se)
		}
		// Paging across a compaction is Gone too.
		for i := range 3 {
			if _, err := s.Create(ctx, workload(fmt.Sprintf("p%d", i), 1)); err != nil {
				t.Fatal(err)
			}
		}
		page, err := s.List(ctx, wl, "default", ListOptions{Limit: 1})
		if err != nil || page.Continue == "" {
			t.Fatalf("page: %v", err)
		}
		o2, _ := s.Update(ctx, workload("web", 9), UpdateOptions{})
		rev2, _ := strconv.ParseInt(o2.GetObjectMeta().ResourceVersion, 10, 64)
		if _, err := cli.Compact(ctx, rev2); err != nil {
			t.Fatal(err)
		}
		if _, err := s.List(ctx, wl, "default", ListOptions{Limit: 1, Continue: page.Continue}); !IsGone(err) {
			t.Fatalf("continue after compaction: %v", err)
		}
	})
}

func TestWatchSelectorTransitionsAndInitialState(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Store, _ *clientv3.Client) {
		ctx := ctxT(t)
		wl := res(t, "workloads")
		if _, err := s.Create(ctx, workload("a", 1)); err != nil {
			t.Fatal(err)
		}
		sel, _ := types.ParseLabelSelector("tier=front")
		// No resourceVersion: what exists now comes first, as ADDED.
		all, err := s.Watch(ctx, wl, "default", WatchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ev := collect(t, all, 1)[0]; ev.Type != Added || ev.Object.GetObjectMeta().Name != "a" {
			t.Fatalf("initial: %+v", ev)
		}
		w, err := s.Watch(ctx, wl, "default", WatchOptions{Labels: sel, BookmarkInterval: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		x := workload("a", 1)
		x.Labels["tier"] = "front"
		if _, err := s.Update(ctx, x, UpdateOptions{}); err != nil { // starts matching
			t.Fatal(err)
		}
		x.Spec.Replicas = ptr[int32](2)
		if _, err := s.Update(ctx, x, UpdateOptions{}); err != nil { // still matches
			t.Fatal(err)
		}
		x.Labels["tier"] = "back"
		if _, err := s.Update(ctx, x, UpdateOptions{}); err != nil { // stops matching
			t.Fatal(err)
		}
		evs := collect(t, w, 3)
		if evs[0].Type != Added || evs[1].Type != Modified || evs[2].Type != Deleted {
			t.Fatalf("transitions: %s %s %s", evs[0].Type, evs[1].Type, evs[2].Type)
		}
		// Idle: a bookmark at the last revision seen.
		select {
		case ev := <-w.Events():
			if ev.Type != Bookmark || ev.Object.GetObjectMeta().ResourceVersion != evs[2].Object.GetObjectMeta().ResourceVersion {
				t.Fatalf("want a bookmark at %s, got %s %s", evs[2].Object.GetObjectMeta().ResourceVersion, ev.Type, ev.Object.GetObjectMeta().ResourceVersion)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no bookmark while idle")
		}
	})
}

func errorsAs(err error, target **Error) bool {
	e, ok := err.(*Error)
	if ok {
		*target = e
	}
	return ok
}
