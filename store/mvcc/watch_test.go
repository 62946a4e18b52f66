package mvcc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// evString renders an event as TYPE:key=value@rev[<prev].
func evString(ev *mvccpb.Event) string {
	s := fmt.Sprintf("%s:%s=%s@%d", ev.Type, ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision)
	if ev.PrevKv != nil {
		s += "<" + string(ev.PrevKv.Value)
	}
	return s
}

// collect receives events until it has n or the watcher stops.
func collect(t *testing.T, w *Watcher, n int) []string {
	t.Helper()
	var got []string
	lastRev := int64(0)
	timeout := time.After(5 * time.Second)
	for len(got) < n {
		select {
		case b, ok := <-w.Events():
			if !ok {
				t.Fatalf("watcher stopped after %q: %v", got, w.Err())
			}
			for _, ev := range b.Events {
				if ev.Kv.ModRevision < lastRev {
					t.Fatalf("event %s out of order after revision %d", evString(ev), lastRev)
				}
				lastRev = ev.Kv.ModRevision
				got = append(got, evString(ev))
			}
			if b.Revision != lastRev {
				t.Errorf("batch revision %d, last event at %d", b.Revision, lastRev)
			}
		case <-timeout:
			t.Fatalf("timed out with %q", got)
		}
	}
	return got
}

func TestWatchReplayThenLive(t *testing.T) {
	s := rangeFixture(t)
	tests := []struct {
		name string
		req  *pb.WatchCreateRequest
		want []string
	}{
		{
			name: "all from start",
			req:  &pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: 1},
			want: []string{"PUT:a=3@2", "PUT:b=2@3", "PUT:c=1@4", "PUT:a=1@5", "PUT:d=0@6", "PUT:b=5@7", "DELETE:d=@8", "PUT:e=9@9", "PUT:a=live@10", "PUT:d=again@11", "DELETE:d=@12"},
		},
		{
			name: "one key with prev kv",
			req:  &pb.WatchCreateRequest{Key: []byte("a"), StartRevision: 3, PrevKv: true},
			want: []string{"PUT:a=1@5<3", "PUT:a=live@10<1"},
		},
		{
			name: "range without puts",
			req:  &pb.WatchCreateRequest{Key: []byte("c"), RangeEnd: []byte("e"), StartRevision: 1, Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}, PrevKv: true},
			want: []string{"DELETE:d=@8<0", "DELETE:d=@12<again"},
		},
		{
			name: "prefix without deletes from the middle",
			req:  &pb.WatchCreateRequest{Key: []byte("a"), RangeEnd: []byte("c"), StartRevision: 6, Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NODELETE}},
			want: []string{"PUT:b=5@7", "PUT:a=live@10"},
		},
		{
			name: "future start",
			req:  &pb.WatchCreateRequest{Key: []byte("d"), StartRevision: 11},
			want: []string{"PUT:d=again@11", "DELETE:d=@12"},
		},
	}
	var watchers []*Watcher
	for _, tt := range tests {
		w, err := s.Watch(t.Context(), tt.req)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		watchers = append(watchers, w)
	}
	mustApply(t, s, put("a", "live"))
	mustApply(t, s, put("d", "again"))
	mustApply(t, s, del("d", ""))
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			if got := collect(t, watchers[i], len(want)); !slices.Equal(got, want) {
				t.Errorf("events = %q, want %q", got, want)
			}
			if rev, ok := watchers[i].Progress(); !ok || rev != 12 {
				t.Errorf("progress = %d, %v; want 12, true", rev, ok)
			}
		})
	}
}

func TestWatchLongReplay(t *testing.T) {
	s := openTestStore(t, Options{UnsafeNoFsync: true})
	const n = 3 * replayChunk
	for i := range n {
		mustApply(t, s, put(fmt.Sprintf("k%04d", i%50), fmt.Sprint(i)))
	}
	w, err := s.Watch(t.Context(), &pb.WatchCreateRequest{Key: []byte("k"), RangeEnd: []byte("l"), StartRevision: 2})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for i := n; i < n+100; i++ {
			s.Apply(s.AppliedIndex()+1, put(fmt.Sprintf("k%04d", i%50), fmt.Sprint(i)))
		}
	}()
	got := collect(t, w, n+100)
	for i, ev := range got {
		want := fmt.Sprintf("PUT:k%04d=%d@%d", i%50, i, i+2)
		if ev != want {
			t.Fatalf("event %d = %s, want %s", i, ev, want)
		}
	}
}

func TestWatchCompacted(t *testing.T) {
	s := rangeFixture(t)
	mustApply(t, s, compact(6))
	_, err := s.Watch(t.Context(), &pb.WatchCreateRequest{Key: []byte("a"), StartRevision: 5})
	var ce *CompactedError
	if !errors.As(err, &ce) || ce.CompactRevision != 6 || !errors.Is(err, rpctypes.ErrGRPCCompacted) {
		t.Fatalf("watch below compaction: %v", err)
	}
	// The compacted revision itself is still watchable, deletes included.
	w, err := s.Watch(t.Context(), &pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: 6})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"PUT:d=0@6", "PUT:b=5@7", "DELETE:d=@8", "PUT:e=9@9"}
	if got := collect(t, w, len(want)); !slices.Equal(got, want) {
		t.Errorf("events = %q, want %q", got, want)
	}
}

func TestWatchCompactedDuringReplay(t *testing.T) {
	s := openTestStore(t, Options{UnsafeNoFsync: true, WatchBuffer: 1})
	for i := range 3 * replayChunk {
		mustApply(t, s, put("k", fmt.Sprint(i)))
	}
	w, err := s.Watch(t.Context(), &pb.WatchCreateRequest{Key: []byte("k"), StartRevision: 2})
	if err != nil {
		t.Fatal(err)
	}
	// The receiver is not reading: replay is stuck on the first batches.
	time.Sleep(20 * time.Millisecond)
	mustApply(t, s, compact(s.Rev()))
	for range w.Events() {
	}
	if !errors.Is(w.Err(), rpctypes.ErrGRPCCompacted) {
		t.Fatalf("err = %v, want compacted", w.Err())
	}
}

func TestWatchSlowWatcherDoesNotBlockApply(t *testing.T) {
	s := openTestStore(t, Options{WatchBuffer: 4})
	slow, err := s.Watch(t.Context(), &pb.WatchCreateRequest{Key: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	fast, err := s.Watch(t.Context(), &pb.WatchCreateRequest{Key: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	var fastGot int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for b := range fast.Events() {
			fastGot += len(b.Events)
		}
	}()
	const n = 50
	var worst time.Duration
	for i := range n {
		start := time.Now()
		mustApply(t, s, put("k", fmt.Sprint(i)))
		worst = max(worst, time.Since(start))
	}
	// Nobody reads slow: it must have been dropped, not waited for.
	for range slow.Events() {
	}
	if !errors.Is(slow.Err(), ErrWatcherTooSlow) {
		t.Fatalf("slow watcher err = %v", slow.Err())
	}
	if worst > 2*time.Second {
		t.Errorf("an Apply took %v with a stuck watcher", worst)
	}
	fast.Cancel()
	<-done
	if fastGot != n && !errors.Is(fast.Err(), ErrWatcherTooSlow) {
		t.Errorf("fast watcher got %d events, want %d", fastGot, n)
	}
}

func TestWatchCancel(t *testing.T) {
	s := rangeFixture(t)
	ctx, cancel := context.WithCancel(t.Context())
	byCtx, err := s.Watch(ctx, &pb.WatchCreateRequest{Key: []byte("a")})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	for range byCtx.Events() {
	}
	if !errors.Is(byCtx.Err(), context.Canceled) {
		t.Errorf("ctx cancel: %v", byCtx.Err())
	}

	// A replaying watcher blocked on a full buffer is stopped by Close.
	blocked, err := s.Watch(t.Context(), &pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: 1})
	if err != nil {
		t.Fatal(err)
	}
	explicit, err := s.Watch(t.Context(), &pb.WatchCreateRequest{Key: []byte("a"), StartRevision: 1})
	if err != nil {
		t.Fatal(err)
	}
	explicit.Cancel()
	for range explicit.Events() {
	}
	if !errors.Is(explicit.Err(), ErrWatchCanceled) {
		t.Errorf("Cancel: %v", explicit.Err())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range blocked.Events() {
	}
	if !errors.Is(blocked.Err(), ErrClosed) {
		t.Errorf("Close: %v", blocked.Err())
	}
	if _, err := s.Watch(t.Context(), &pb.WatchCreateRequest{Key: []byte("a")}); !errors.Is(err, ErrClosed) {
		t.Errorf("Watch after Close: %v", err)
	}
}
