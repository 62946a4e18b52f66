package mvcc

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"
)

// WatchResponse is a batch of events. A batch holds whole revisions, in
// order; events must not be modified, they are shared between watchers.
type WatchResponse struct {
	// Revision is the highest revision the batch covers.
	Revision int64
	Events   []*mvccpb.Event
}

var (
	// ErrWatcherTooSlow cancels a watcher whose buffer was full when a new
	// revision had to be delivered: Apply never waits for watchers.
	ErrWatcherTooSlow = errors.New("mvcc: watcher too slow: its buffer filled up; watch again from the last revision received + 1")
	// ErrRestored cancels every watcher when the store is replaced by a
	// snapshot, because the history they follow may have jumped.
	ErrRestored = errors.New("mvcc: store restored from a snapshot: read the current state and watch again from its revision")
	// ErrWatchCanceled is the reason of a watcher stopped by Cancel.
	ErrWatchCanceled = errors.New("mvcc: watcher cancelled")
)

// CompactedError reports that a watch needs history that was compacted.
// It matches rpctypes.ErrGRPCCompacted with errors.Is.
type CompactedError struct {
	// CompactRevision is the oldest revision still available.
	CompactRevision int64
}

func (e *CompactedError) Error() string {
	return fmt.Sprintf("mvcc: required revision has been compacted (oldest available: %d); read the current state and watch from there", e.CompactRevision)
}

func (e *CompactedError) Is(target error) bool { return target == rpctypes.ErrGRPCCompacted }

// Watcher delivers the events of a key range. Receive from Events until it is
// closed, then Err tells why.
type Watcher struct {
	s                *Store
	key, end         []byte
	noPut, noDelete  bool
	prevKV           bool
	ch               chan WatchResponse
	stop             chan struct{}
	stopAfterCtx     func() bool
	replayBatchLimit int

	// Guarded by s.watchMu.
	canceled  bool
	replaying bool // a replay goroutine owns ch and nextRev
	err       error
	nextRev   int64 // first revision not yet delivered
}

// Replay reads at most replayChunk records of history per pass, and cuts
// batches of about replayBatch events, never inside a revision.
const (
	replayChunk = 1024
	replayBatch = 256
)

// Watch starts a watcher for req's key range. With a start revision at or
// below the current one, history is replayed from the database first, then
// live events follow; a start revision below the compacted one fails with a
// *CompactedError. The watcher stops when ctx is done, on Cancel, on Close,
// or when it falls too far behind.
func (s *Store) Watch(ctx context.Context, req *etcdserverpb.WatchCreateRequest) (*Watcher, error) {
	w := &Watcher{
		s:                s,
		key:              bytes.Clone(req.Key),
		end:              bytes.Clone(req.RangeEnd),
		prevKV:           req.PrevKv,
		ch:               make(chan WatchResponse, s.opts.WatchBuffer),
		stop:             make(chan struct{}),
		replayBatchLimit: replayBatch,
	}
	for _, f := range req.Filters {
		switch f {
		case etcdserverpb.WatchCreateRequest_NOPUT:
			w.noPut = true
		case etcdserverpb.WatchCreateRequest_NODELETE:
			w.noDelete = true
		}
	}
	s.mu.RLock()
	closed, compactRev := s.closed, s.compactRev
	s.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}

	s.watchMu.Lock()
	start := req.StartRevision
	if start <= 0 {
		start = s.notifiedRev + 1
	}
	w.nextRev = start
	if start > s.notifiedRev {
		s.synced[w] = struct{}{}
	} else {
		if start < compactRev {
			s.watchMu.Unlock()
			return nil, &CompactedError{CompactRevision: compactRev}
		}
		s.unsynced[w] = struct{}{}
		w.replaying = true
		s.watchWG.Add(1)
		go w.replay()
	}
	s.watchMu.Unlock()
	// The callback may run at once (ctx already done), so the field it
	// reads (cancelLocked) is set under the lock it takes.
	stop := context.AfterFunc(ctx, func() { w.cancel(ctx.Err()) })
	s.watchMu.Lock()
	w.stopAfterCtx = stop
	s.watchMu.Unlock()
	return w, nil
}

// Events is closed when the watcher stops.
func (w *Watcher) Events() <-chan WatchResponse { return w.ch }

// Err is why the watcher stopped, or nil while it runs.
func (w *Watcher) Err() error {
	w.s.watchMu.Lock()
	defer w.s.watchMu.Unlock()
	return w.err
}

// Cancel stops the watcher.
func (w *Watcher) Cancel() { w.cancel(ErrWatchCanceled) }

func (w *Watcher) cancel(reason error) {
	w.s.watchMu.Lock()
	defer w.s.watchMu.Unlock()
	w.s.cancelLocked(w, reason)
}

// Progress returns the revision up to which every event has been queued on
// Events, for progress notifications; ok is false while history is still
// being replayed or after the watcher stopped.
func (w *Watcher) Progress() (rev int64, ok bool) {
	w.s.watchMu.Lock()
	defer w.s.watchMu.Unlock()
	if w.canceled || w.replaying {
		return 0, false
	}
	return w.s.notifiedRev, true
}

// RequestProgress queues, behind every event already queued, a batch with
// no events at the revision up to which the watcher has been offered every
// event: a progress notification, delivered in order with the events, so a
// client that sees it knows it has seen everything up to that revision (as
// etcd's RequestProgress). It reports false when it cannot now: the watcher
// is still replaying history, has stopped, or its buffer is full.
func (w *Watcher) RequestProgress() bool {
	w.s.watchMu.Lock()
	defer w.s.watchMu.Unlock()
	if w.canceled || w.replaying {
		return false
	}
	select {
	case w.ch <- WatchResponse{Revision: w.s.notifiedRev}:
		return true
	default:
		return false
	}
}

func (s *Store) cancelLocked(w *Watcher, reason error) {
	if w.canceled {
		return
	}
	w.canceled = true
	w.err = reason
	close(w.stop)
	delete(s.synced, w)
	delete(s.unsynced, w)
	if w.stopAfterCtx != nil {
		w.stopAfterCtx()
	}
	if !w.replaying {
		close(w.ch)
	}
}

func (s *Store) cancelAllWatchers(reason error) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	for w := range s.synced {
		s.cancelLocked(w, reason)
	}
	for w := range s.unsynced {
		s.cancelLocked(w, reason)
	}
}

// match filters events for w; events are shared, so one without PrevKv is
// copied rather than modified.
func (w *Watcher) match(evs []*mvccpb.Event) []*mvccpb.Event {
	var out []*mvccpb.Event
	for _, ev := range evs {
		if !inRange(ev.Kv.Key, w.key, w.end) {
			continue
		}
		if (ev.Type == mvccpb.Event_PUT && w.noPut) || (ev.Type == mvccpb.Event_DELETE && w.noDelete) {
			continue
		}
		if !w.prevKV && ev.PrevKv != nil {
			ev = &mvccpb.Event{Type: ev.Type, Kv: ev.Kv}
		}
		out = append(out, ev)
	}
	return out
}

// notify offers the events of revision rev to the synced watchers without
// ever blocking: a watcher with a full buffer is cancelled.
func (s *Store) notify(rev int64, events []*mvccpb.Event) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	s.notifiedRev = rev
	for w := range s.synced {
		if rev < w.nextRev {
			continue
		}
		evs := w.match(events)
		if len(evs) == 0 {
			continue
		}
		select {
		case w.ch <- WatchResponse{Revision: rev, Events: evs}:
			w.nextRev = rev + 1
		default:
			s.cancelLocked(w, ErrWatcherTooSlow)
		}
	}
}

// replay feeds w history from the database until it has caught up with the
// notified revision, then hands it over to notify. It may block on a slow
// receiver; Apply does not wait for it.
func (w *Watcher) replay() {
	s := w.s
	defer s.watchWG.Done()
	for {
		s.watchMu.Lock()
		if w.canceled {
			w.replaying = false
			close(w.ch)
			s.watchMu.Unlock()
			return
		}
		target := s.notifiedRev
		if w.nextRev > target {
			w.replaying = false
			delete(s.unsynced, w)
			s.synced[w] = struct{}{}
			s.watchMu.Unlock()
			return
		}
		s.watchMu.Unlock()

		batches, next, err := s.readHistory(w, w.nextRev, target)
		if err != nil {
			w.cancel(err)
			continue
		}
		for _, b := range batches {
			select {
			case w.ch <- b:
			case <-w.stop:
			}
		}
		w.nextRev = next
	}
}

// readHistory reads the events of revisions [from, to], or a prefix of them,
// and returns them in batches with the next revision to read. No database
// transaction stays open once it returns.
func (s *Store) readHistory(w *Watcher, from, to int64) ([]WatchResponse, int64, error) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, 0, ErrClosed
	}
	if from < s.compactRev {
		c := s.compactRev
		s.mu.RUnlock()
		return nil, 0, &CompactedError{CompactRevision: c}
	}
	tx, err := s.db.Begin(false)
	s.mu.RUnlock()
	if err != nil {
		return nil, 0, fmt.Errorf("mvcc: watch replay: %w", err)
	}
	defer tx.Rollback()
	b := tx.Bucket(keyBucket)

	next := to + 1
	var evs []*mvccpb.Event
	scanned, lastMain := 0, int64(0)
	c := b.Cursor()
	for k, v := c.Seek(revToBytes(revision{main: from}, false)); k != nil; k, v = c.Next() {
		rev, tomb, ok := bytesToRev(k)
		if !ok {
			return nil, 0, fmt.Errorf("mvcc: watch replay: key bucket holds %x", k)
		}
		if rev.main > to {
			break
		}
		if scanned >= replayChunk && rev.main != lastMain {
			next = rev.main
			break
		}
		scanned++
		lastMain = rev.main
		kv := new(mvccpb.KeyValue)
		if err := proto.Unmarshal(v, kv); err != nil {
			return nil, 0, fmt.Errorf("mvcc: watch replay: decode revision %d.%d: %w", rev.main, rev.sub, err)
		}
		ev := &mvccpb.Event{Type: mvccpb.Event_PUT, Kv: kv}
		if tomb {
			ev.Type = mvccpb.Event_DELETE
			kv.ModRevision = rev.main // tombstones store the key alone
		}
		evs = append(evs, w.match([]*mvccpb.Event{ev})...)
	}
	if w.prevKV && len(evs) > 0 {
		prevs := make([]revision, len(evs))
		s.mu.RLock()
		for i, ev := range evs {
			if ki := s.index.get(ev.Kv.Key); ki != nil {
				if kr, ok := ki.latest(ev.Kv.ModRevision - 1); ok && !kr.tomb {
					prevs[i] = kr.rev
				}
			}
		}
		s.mu.RUnlock()
		for i, ev := range evs {
			if prevs[i].main > 0 {
				// Absent when compacted since; the event goes without.
				ev.PrevKv, _ = getKV(b, prevs[i])
			}
		}
	}
	return cutBatches(evs, w.replayBatchLimit), next, nil
}

// cutBatches splits evs, in revision order, into batches of about limit
// events that never split a revision.
func cutBatches(evs []*mvccpb.Event, limit int) []WatchResponse {
	var out []WatchResponse
	for len(evs) > 0 {
		n := min(limit, len(evs))
		for n < len(evs) && evs[n].Kv.ModRevision == evs[n-1].Kv.ModRevision {
			n++
		}
		out = append(out, WatchResponse{Revision: evs[n-1].Kv.ModRevision, Events: evs[:n:n]})
		evs = evs[n:]
	}
	return out
}
