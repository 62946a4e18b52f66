package storage

import (
	"context"
	"errors"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api/types"
)

// EventType, its values and Event are the API's watch vocabulary
// (api/types), named here too so callers of this package need no other.
type (
	EventType = types.EventType
	Event     = types.Event
)

const (
	Added    = types.Added
	Modified = types.Modified
	Deleted  = types.Deleted
	Bookmark = types.Bookmark
)

// WatchOptions say where a watch starts and what it sees.
type WatchOptions struct {
	// ResourceVersion: changes after it are delivered. Empty means "now":
	// the objects that exist are delivered first as Added, then changes.
	ResourceVersion string
	Labels, Fields  types.Selector
	// BookmarkInterval, when set, sends a Bookmark after that long without
	// an event, so a client can resume from the latest revision it saw.
	BookmarkInterval time.Duration
}

// Watcher delivers events until its context ends or the store fails it.
type Watcher struct {
	events chan Event
	err    error
	done   chan struct{}
}

// Events is closed when the watch ends; Err then says why (nil when the
// context ended).
func (w *Watcher) Events() <-chan Event { return w.events }

// Err is the reason the watch ended, after Events is closed: a Gone error
// when the store compacted revisions the watch still needed.
func (w *Watcher) Err() error {
	<-w.done
	return w.err
}

// Watch follows objects of r in ns (every namespace when empty).
func (s *Store) Watch(ctx context.Context, r *types.Resource, ns string, opts WatchOptions) (*Watcher, error) {
	ref := objectRef{r: r, ns: ns}
	listOpts := ListOptions{Labels: opts.Labels, Fields: opts.Fields}
	var initial []types.Object
	var rev int64
	if opts.ResourceVersion == "" {
		l, err := s.List(ctx, r, ns, listOpts)
		if err != nil {
			return nil, err
		}
		initial, rev = l.Items, l.Revision
	} else {
		v, err := strconv.ParseInt(opts.ResourceVersion, 10, 64)
		if err != nil || v < 0 {
			return nil, errorf(Invalid, ref, "resourceVersion %q is not a revision: pass one from an object or list", opts.ResourceVersion)
		}
		rev = v
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	prefix := s.listPrefix(r, ns)
	wch := s.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithPrevKV())
	w := &Watcher{events: make(chan Event), done: make(chan struct{})}
	go func() {
		defer cancel()
		defer close(w.done)
		defer close(w.events)
		err := w.pump(wctx, s, ref, opts, listOpts, initial, rev, wch)
		if ctx.Err() == nil {
			w.err = err
		}
	}()
	return w, nil
}

func (w *Watcher) send(ctx context.Context, ev Event) bool {
	select {
	case w.events <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

func (w *Watcher) pump(ctx context.Context, s *Store, ref objectRef, opts WatchOptions, lo ListOptions, initial []types.Object, rev int64, wch clientv3.WatchChan) error {
	for _, o := range initial {
		if !w.send(ctx, Event{Type: Added, Object: o}) {
			return nil
		}
	}
	var tick <-chan time.Time
	if opts.BookmarkInterval > 0 {
		t := time.NewTicker(opts.BookmarkInterval)
		defer t.Stop()
		tick = t.C
	}
	idle := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
			if !idle {
				idle = true
				continue
			}
			b := ref.r.New()
			b.GetObjectMeta().ResourceVersion = strconv.FormatInt(rev, 10)
			if !w.send(ctx, Event{Type: Bookmark, Object: b}) {
				return nil
			}
		case resp, ok := <-wch:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errorf(Unavailable, ref, "the store closed the watch")
			}
			if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
				e := errorf(Gone, ref, "resourceVersion %d is too old: the store compacted revisions up to %d; list again and watch from the list's resourceVersion", rev, resp.CompactRevision)
				e.CurrentRevision = s.currentRevision(ctx)
				if e.CurrentRevision == 0 {
					e.CurrentRevision = resp.Header.Revision
				}
				return e
			}
			if err := resp.Err(); err != nil {
				return storeError(ref, err)
			}
			for _, ev := range resp.Events {
				out, ok, err := s.translate(ref.r, ev, lo)
				if err != nil {
					return err
				}
				rev = ev.Kv.ModRevision
				if !ok {
					continue
				}
				idle = false
				if !w.send(ctx, out) {
					return nil
				}
			}
		}
	}
}

// translate turns a store event into an API event for a watcher with
// selectors: an object that starts matching is Added, one that stops
// matching is Deleted, as Kubernetes does.
func (s *Store) translate(r *types.Resource, ev *clientv3.Event, lo ListOptions) (Event, bool, error) {
	var prev, cur types.Object
	var err error
	if ev.PrevKv != nil {
		if prev, err = s.decode(r, ev.PrevKv); err != nil {
			return Event{}, false, err
		}
	}
	if ev.Type == mvccpb.DELETE {
		if prev == nil || !matches(prev, lo) {
			return Event{}, false, nil
		}
		prev.GetObjectMeta().ResourceVersion = strconv.FormatInt(ev.Kv.ModRevision, 10)
		return Event{Type: Deleted, Object: prev}, true, nil
	}
	if cur, err = s.decode(r, ev.Kv); err != nil {
		return Event{}, false, err
	}
	was := prev != nil && matches(prev, lo)
	is := matches(cur, lo)
	switch {
	case is && was:
		return Event{Type: Modified, Object: cur}, true, nil
	case is:
		return Event{Type: Added, Object: cur}, true, nil
	case was:
		return Event{Type: Deleted, Object: cur}, true, nil
	}
	return Event{}, false, nil
}
