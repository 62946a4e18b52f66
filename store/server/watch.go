package server

import (
	"context"
	"errors"
	"sync"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc"

	"nexus.dev/nexus/store/mvcc"
)

type watchServer struct {
	etcdserverpb.UnimplementedWatchServer
	s *Server
}

// maxWatchResponse is the size a fragmenting watcher's responses are cut
// to, below gRPC's default 4 MiB message limit.
const maxWatchResponse = 1 << 20

// Watch serves one client stream carrying many watchers, as etcd does.
func (w *watchServer) Watch(stream grpc.BidiStreamingServer[etcdserverpb.WatchRequest, etcdserverpb.WatchResponse]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	var (
		sendMu  sync.Mutex
		mu      sync.Mutex
		nextID  int64
		cancels = map[int64]context.CancelFunc{}
		running = map[int64]*mvcc.Watcher{}
		wg      sync.WaitGroup
	)
	// Stop every watcher of the stream, then wait for their pumps.
	defer func() {
		cancel()
		wg.Wait()
	}()
	send := func(r *etcdserverpb.WatchResponse) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(r)
	}
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil // client closed the stream or went away
		}
		switch {
		case req.GetCreateRequest() != nil:
			cr := req.GetCreateRequest()
			mu.Lock()
			id := cr.WatchId // 0 asks the server to choose
			if id == 0 || cancels[id] != nil {
				for cancels[nextID] != nil {
					nextID++
				}
				id = nextID
				nextID++
			}
			wctx, wcancel := context.WithCancel(ctx)
			cancels[id] = wcancel
			mu.Unlock()
			watcher, err := w.s.kv.Watch(wctx, cr)
			if err != nil {
				// As etcd does: confirm the watch, then cancel it with the
				// reason (clients read CompactRevision from the cancel).
				if send(&etcdserverpb.WatchResponse{Header: w.s.header(), WatchId: id, Created: true}) != nil {
					return nil
				}
				resp := &etcdserverpb.WatchResponse{Header: w.s.header(), WatchId: id, Canceled: true, CancelReason: err.Error()}
				var ce *mvcc.CompactedError
				if errors.As(err, &ce) {
					resp.CompactRevision = ce.CompactRevision
				}
				mu.Lock()
				delete(cancels, id)
				mu.Unlock()
				wcancel()
				if send(resp) != nil {
					return nil
				}
				continue
			}
			if send(&etcdserverpb.WatchResponse{Header: w.s.header(), WatchId: id, Created: true}) != nil {
				return nil
			}
			mu.Lock()
			running[id] = watcher
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.pump(wctx, id, watcher, cr.Fragment, send)
				mu.Lock()
				if running[id] == watcher {
					delete(running, id)
				}
				mu.Unlock()
			}()
		case req.GetCancelRequest() != nil:
			id := req.GetCancelRequest().WatchId
			mu.Lock()
			c := cancels[id]
			delete(cancels, id)
			delete(running, id)
			mu.Unlock()
			if c != nil {
				c()
			}
		case req.GetProgressRequest() != nil:
			// Each watcher gets a notification queued behind its events (a
			// response with no events at the revision it has seen all of),
			// so a client never sees progress past an event still on its
			// way. With no watcher, the stream's answer is the current
			// revision, marked with watch ID -1 as etcd does.
			mu.Lock()
			ws := make([]*mvcc.Watcher, 0, len(running))
			for _, wt := range running {
				ws = append(ws, wt)
			}
			mu.Unlock()
			if len(ws) == 0 {
				if send(&etcdserverpb.WatchResponse{Header: w.s.header(), WatchId: -1}) != nil {
					return nil
				}
			}
			for _, wt := range ws {
				wt.RequestProgress()
			}
		}
	}
}

// pump forwards a watcher's batches until it ends, then reports why.
func (w *watchServer) pump(ctx context.Context, id int64, watcher *mvcc.Watcher, fragment bool, send func(*etcdserverpb.WatchResponse) error) {
	for batch := range watcher.Events() {
		h := w.s.header()
		h.Revision = batch.Revision
		for _, part := range split(batch.Events, fragment) {
			resp := &etcdserverpb.WatchResponse{Header: h, WatchId: id, Events: part.events, Fragment: part.more}
			if send(resp) != nil {
				return
			}
		}
	}
	if ctx.Err() != nil {
		// Cancelled by the client (or the stream ended): confirm it.
		_ = send(&etcdserverpb.WatchResponse{Header: w.s.header(), WatchId: id, Canceled: true})
		return
	}
	resp := &etcdserverpb.WatchResponse{Header: w.s.header(), WatchId: id, Canceled: true}
	if err := watcher.Err(); err != nil {
		resp.CancelReason = err.Error()
		var ce *mvcc.CompactedError
		if errors.As(err, &ce) {
			resp.CompactRevision = ce.CompactRevision
		}
	}
	_ = send(resp)
}

type fragmentPart struct {
	events []*mvccpb.Event
	more   bool
}

// split cuts a batch into responses below maxWatchResponse when the client
// asked for fragments; otherwise it is sent whole.
func split(events []*mvccpb.Event, fragment bool) []fragmentPart {
	if !fragment {
		return []fragmentPart{{events: events}}
	}
	var parts []fragmentPart
	start, size := 0, 0
	for i, ev := range events {
		n := len(ev.GetKv().GetKey()) + len(ev.GetKv().GetValue()) + len(ev.GetPrevKv().GetValue()) + 64
		if size+n > maxWatchResponse && i > start {
			parts = append(parts, fragmentPart{events: events[start:i], more: true})
			start, size = i, 0
		}
		size += n
	}
	return append(parts, fragmentPart{events: events[start:]})
}
