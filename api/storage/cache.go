package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api/types"
)

// Cache keeps every object of one resource in memory, current through one
// store watch, so that reads and watches cost no store round trip each (as
// Kubernetes' watch cache does):
//
//   - Get and List answer from memory once the cache has caught up with the
//     store's state at the time of the request (Sync: one probe of the store
//     shared by concurrent requests), so they are as current as a read from
//     the store, for a fraction of its cost;
//   - Watch replays recent history from memory and then delivers live
//     events, each encoded once for every watcher. A watcher that falls too
//     far behind is ended, and resumes from the last resourceVersion it saw,
//     as after any dropped connection.
//
// Objects and events keep their JSON, so a response copies bytes instead of
// encoding the object again.
type Cache struct {
	store *Store
	r     *types.Resource
	log   *slog.Logger

	mu      sync.RWMutex
	changed *sync.Cond // broadcast when rev advances or the cache stops
	objects map[string]*cached
	rev     int64
	history []*cachedEvent // the last historyLen events, oldest first
	// since: the history holds every change after this revision.
	since    int64
	watchers map[*cacheWatcher]struct{}
	probes   prober
	// progress says the store's progress notifications come behind the
	// events they cover (Nexus's store; etcd from 3.4.31 and 3.5.13:
	// earlier ones could send one ahead of events still on their way).
	// Without it, reads that must be current go to the store.
	progress bool
	// lastProgress is when a progress notification was last asked for
	// (unix nanoseconds): concurrent Syncs share the requests.
	lastProgress atomic.Int64
	ready        bool
	stopped      bool
}

type cached struct {
	obj  types.Object
	json []byte
	rev  int64
	err  error // the object could not be read; obj and json are nil
}

// cachedEvent is one change with its watch-stream line already encoded.
type cachedEvent struct {
	typ     EventType
	obj     types.Object
	prevObj types.Object // for selector transitions; nil for Added
	rev     int64
	line    []byte // {"type":...,"object":...}\n
}

const (
	historyLen = 4096
	// watcherBuffer events may wait for a slow watcher before it is ended.
	watcherBuffer = 1024
)

// NewCache returns a cache of r; Run fills it and keeps it current.
// progress says whether the store's progress notifications can be trusted
// (ProgressIsOrdered); without them Get and List fail with ErrNotCurrent
// and the caller reads the store.
func NewCache(s *Store, r *types.Resource, progress bool, log *slog.Logger) *Cache {
	if log == nil {
		log = slog.Default()
	}
	c := &Cache{store: s, r: r, log: log, progress: progress, objects: map[string]*cached{}, watchers: map[*cacheWatcher]struct{}{}}
	c.changed = sync.NewCond(c.mu.RLocker())
	c.probes.probe = c.probeStore
	return c
}

func cacheKey(ns, name string) string { return ns + "/" + name }

// Run lists the resource and follows it until ctx ends, listing again when
// the store has compacted away revisions the watch still needed.
func (c *Cache) Run(ctx context.Context) {
	defer func() {
		c.mu.Lock()
		c.stopped = true
		for w := range c.watchers {
			delete(c.watchers, w)
			w.end(nil)
		}
		c.mu.Unlock()
		c.changed.Broadcast()
	}()
	for ctx.Err() == nil {
		if err := c.follow(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("watch cache: following the store failed; listing again", "resource", c.r.Plural, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// follow lists, replaces the cache's content, and applies the watch's
// events until it fails.
func (c *Cache) follow(ctx context.Context) error {
	resp, err := c.store.cli.Get(ctx, c.store.listPrefix(c.r, ""), clientv3.WithPrefix())
	if err != nil {
		return err
	}
	objects := make(map[string]*cached, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		objects[c.keyOf(kv.Key)] = c.newCached(kv)
	}
	l := struct{ Revision int64 }{resp.Header.Revision}
	c.mu.Lock()
	if c.ready {
		// Watchers cannot be told what changed between the old content and
		// this list: end them, they resume from their last revision.
		for w := range c.watchers {
			delete(c.watchers, w)
			w.end(errCacheReset)
		}
	}
	c.objects, c.rev, c.history, c.since, c.ready = objects, l.Revision, nil, l.Revision, true
	c.mu.Unlock()
	c.changed.Broadcast()

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := c.store.cli.Watch(clientv3.WithRequireLeader(wctx), c.store.listPrefix(c.r, ""), clientv3.WithPrefix(),
		clientv3.WithRev(l.Revision+1), clientv3.WithPrevKV(), clientv3.WithProgressNotify())
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return err
		}
		if resp.CompactRevision != 0 {
			return errors.New("the watch was compacted")
		}
		if resp.IsProgressNotify() {
			// Everything up to this revision has been delivered.
			c.mu.Lock()
			if resp.Header.Revision > c.rev {
				c.rev = resp.Header.Revision
			}
			c.mu.Unlock()
			c.changed.Broadcast()
			continue
		}
		for _, ev := range resp.Events {
			if err := c.apply(ev); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

var errCacheReset = errors.New("the watch cache listed the store again")

// keyOf is the cache key (namespace/name) of a store key.
func (c *Cache) keyOf(key []byte) string {
	rest := strings.TrimPrefix(string(key), c.store.listPrefix(c.r, ""))
	if c.r.Namespaced {
		return rest
	}
	return "/" + rest
}

// newCached decodes a stored value. One that cannot be read (a secret
// sealed with a key this server does not hold, say) is kept with its
// error, which reads of it report, rather than stopping the cache.
func (c *Cache) newCached(kv *mvccpb.KeyValue) *cached {
	o, err := c.store.decode(c.r, kv)
	if err != nil {
		c.log.Error("watch cache: a stored object cannot be read", "key", string(kv.Key), "err", err)
		return &cached{err: err, rev: kv.ModRevision}
	}
	js, err := json.Marshal(o)
	if err != nil {
		return &cached{err: err, rev: kv.ModRevision}
	}
	return &cached{obj: o, json: js, rev: kv.ModRevision}
}

// apply takes one store event into the cache and hands it to the watchers.
func (c *Cache) apply(ev *clientv3.Event) error {
	key := c.keyOf(ev.Kv.Key)
	rev := ev.Kv.ModRevision
	var prev types.Object
	if ev.PrevKv != nil {
		if p := c.newCached(ev.PrevKv); p.err == nil {
			prev = p.obj
		}
	}
	ce := &cachedEvent{rev: rev, prevObj: prev}
	var entry *cached
	if ev.Type == clientv3.EventTypeDelete {
		if prev != nil {
			prev.GetObjectMeta().ResourceVersion = strconv.FormatInt(rev, 10)
			ce.typ, ce.obj, ce.prevObj = Deleted, prev, nil
		}
	} else {
		entry = c.newCached(ev.Kv)
		if entry.err == nil {
			ce.typ, ce.obj = Modified, entry.obj
			if ev.IsCreate() {
				ce.typ = Added
			}
		}
	}
	if ce.obj != nil {
		objJSON := entry.jsonOr(ce.obj)
		ce.line = eventLine(ce.typ, objJSON)
	}
	c.mu.Lock()
	if entry == nil {
		delete(c.objects, key)
	} else {
		c.objects[key] = entry
	}
	c.rev = rev
	if ce.obj != nil {
		if len(c.history) == historyLen {
			c.since = c.history[historyLen/4-1].rev
			c.history = slices.Delete(c.history, 0, historyLen/4)
		}
		c.history = append(c.history, ce)
		for w := range c.watchers {
			if !w.offer(ce) {
				delete(c.watchers, w)
				w.end(errTooSlow)
			}
		}
	}
	c.mu.Unlock()
	c.changed.Broadcast()
	return nil
}

// jsonOr is the entry's JSON, or o's for a deletion (no entry).
func (e *cached) jsonOr(o types.Object) []byte {
	if e != nil {
		return e.json
	}
	js, _ := json.Marshal(o)
	return js
}

// eventLine is one line of a watch stream.
func eventLine(typ EventType, obj []byte) []byte {
	line := make([]byte, 0, len(obj)+32)
	line = append(line, `{"type":"`...)
	line = append(line, typ...)
	line = append(line, `","object":`...)
	line = append(line, obj...)
	return append(line, '}', '\n')
}

// WaitFor waits until the cache reflects revision rev (or later): a
// revision from an object or list of this API, which the store has reached.
func (c *Cache) WaitFor(ctx context.Context, rev int64) error {
	if c.Revision() >= rev {
		return nil
	}
	if err := c.Sync(ctx); err != nil {
		return err
	}
	return c.waitRev(ctx, rev)
}

// Peek returns an object as the cache holds it now, without making sure
// the cache is current: for checks that a stale answer cannot make unsafe
// (see the caller), at no store round trip.
func (c *Cache) Peek(ns, name string) (types.Object, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e := c.objects[cacheKey(ns, name)]
	if !c.ready || e == nil || e.err != nil {
		return nil, false
	}
	return e.obj, true
}

// Get returns an object and its JSON, as current as a read from the store.
func (c *Cache) Get(ctx context.Context, ns, name string) (types.Object, []byte, error) {
	if err := c.Sync(ctx); err != nil {
		return nil, nil, err
	}
	c.mu.RLock()
	e := c.objects[cacheKey(ns, name)]
	c.mu.RUnlock()
	if e == nil {
		return nil, nil, errorf(NotFound, objectRef{c.r, ns, name}, "not found")
	}
	if e.err != nil {
		return nil, nil, e.err
	}
	return e.obj, e.json, nil
}

// List returns the JSON of the objects in ns (all when empty) that match,
// in key order, as current as a read from the store, and the revision they
// are at.
func (c *Cache) List(ctx context.Context, ns string, opts ListOptions) ([][]byte, int64, error) {
	if err := c.Sync(ctx); err != nil {
		return nil, 0, err
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	keys := make([]string, 0, len(c.objects))
	for k, e := range c.objects {
		if e.err != nil {
			if ns == "" || strings.HasPrefix(k, ns+"/") {
				return nil, 0, e.err // as a list from the store would fail
			}
			continue
		}
		if (ns == "" || e.obj.GetObjectMeta().Namespace == ns) && matches(e.obj, opts) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = c.objects[k].json
	}
	return out, c.rev, nil
}

// CacheWatch is a watch served from the cache: events as encoded
// watch-stream lines.
type CacheWatch interface {
	// Replay is what happened before the watch went live: the current
	// objects (a watch without a revision) or the history after the
	// revision. Send it first.
	Replay() [][]byte
	// Lines delivers live events; it is closed when the watch ends, and
	// Err then says why (nil when ctx ended).
	Lines() <-chan []byte
	Err() error
}

type cacheWatcher struct {
	replay [][]byte
	ns     string
	opts   ListOptions
	ch     chan []byte
	mu     sync.Mutex
	err    error
	ended  bool
	done   chan struct{}
}

func (w *cacheWatcher) Replay() [][]byte     { return w.replay }
func (w *cacheWatcher) Lines() <-chan []byte { return w.ch }
func (w *cacheWatcher) Err() error {
	<-w.done
	return w.err
}

// wants says what line a watcher gets for an event, if any: selector
// transitions become Added or Deleted, as Kubernetes does.
func (w *cacheWatcher) wants(ev *cachedEvent) []byte {
	if w.ns != "" && ev.obj.GetObjectMeta().Namespace != w.ns {
		return nil
	}
	if w.opts.Labels.Empty() && w.opts.Fields.Empty() {
		return ev.line
	}
	is := matches(ev.obj, w.opts)
	was := ev.prevObj != nil && matches(ev.prevObj, w.opts)
	typ := ev.typ
	switch {
	case ev.typ == Deleted:
		if !is {
			return nil
		}
	case is && was:
	case is:
		typ = Added
	case was:
		typ = Deleted
	default:
		return nil
	}
	if typ == ev.typ {
		return ev.line
	}
	obj, _ := json.Marshal(ev.obj)
	return eventLine(typ, obj)
}

// offer hands an event to the watcher without waiting, and reports false
// when the watcher's buffer is full: the cache then ends it (it resumes
// from the last revision it saw). Called with the cache's lock held.
func (w *cacheWatcher) offer(ev *cachedEvent) bool {
	line := w.wants(ev)
	if line == nil {
		return true
	}
	select {
	case w.ch <- line:
		return true
	default:
		return false
	}
}

var errTooSlow = errors.New("the watcher fell too far behind: resume from the last resourceVersion seen")

func (w *cacheWatcher) end(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return
	}
	w.ended, w.err = true, err
	close(w.ch)
	close(w.done)
}

// ErrNotCurrent means the cache cannot prove it is current (the store's
// progress notifications cannot be trusted): read the store.
var ErrNotCurrent = errors.New("the watch cache cannot prove it is current")

// ErrTooOld means a watch asked for a revision older than the cache's
// history: the caller watches the store instead.
var ErrTooOld = errors.New("revision older than the watch cache's history")

// Watch delivers the changes after revision from (or, with from 0, the
// current objects as Added, then the changes), in ns (all when empty), that
// match opts, until ctx ends.
func (c *Cache) Watch(ctx context.Context, from int64, ns string, opts ListOptions) (CacheWatch, error) {
	if err := c.WaitFor(ctx, from); errors.Is(err, ErrNotCurrent) {
		return nil, ErrTooOld // beyond what the cache has seen: the store serves it
	} else if err != nil {
		return nil, err
	}
	// A revision the store has compacted away is Gone, as from the store,
	// even while the cache's history still holds it: clients rely on 410 to
	// tell a stale position, and all servers answer alike.
	if from > 0 && from < c.Revision() {
		_, err := c.store.cli.Get(ctx, c.store.listPrefix(c.r, ""), clientv3.WithRev(from+1), clientv3.WithCountOnly(), clientv3.WithLimit(1))
		if errors.Is(err, rpctypes.ErrCompacted) {
			e := errorf(Gone, objectRef{r: c.r, ns: ns}, "resourceVersion %d is too old: the store compacted it away; list again and watch from the list's resourceVersion", from)
			e.CurrentRevision = c.store.currentRevision(ctx)
			return nil, e
		}
		if err != nil {
			return nil, storeError(objectRef{r: c.r, ns: ns}, err)
		}
	}
	w := &cacheWatcher{ns: ns, opts: opts, ch: make(chan []byte, watcherBuffer), done: make(chan struct{})}
	c.mu.Lock()
	if from == 0 {
		keys := make([]string, 0, len(c.objects))
		for k, e := range c.objects {
			if e.err == nil && (ns == "" || e.obj.GetObjectMeta().Namespace == ns) && matches(e.obj, opts) {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			w.replay = append(w.replay, eventLine(Added, c.objects[k].json))
		}
	} else if from < c.rev {
		if from < c.since {
			c.mu.Unlock()
			return nil, ErrTooOld
		}
		i, _ := slices.BinarySearchFunc(c.history, from+1, func(e *cachedEvent, rev int64) int { return int(e.rev - rev) })
		for _, ev := range c.history[i:] {
			if line := w.wants(ev); line != nil {
				w.replay = append(w.replay, line)
			}
		}
	}
	c.watchers[w] = struct{}{}
	c.mu.Unlock()
	context.AfterFunc(ctx, func() {
		c.mu.Lock()
		delete(c.watchers, w)
		c.mu.Unlock()
		w.end(nil)
	})
	return w, nil
}

// Revision is the revision the cache reflects.
func (c *Cache) Revision() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.rev
}

// probeResult is what one probe of the store found: its revision.
type probeResult struct {
	rev int64
}

// prober coalesces probes: concurrent callers share one, and a caller waits
// for the first probe that starts after it asked, so it sees every write
// completed before it asked (one store round trip per batch of readers).
type prober struct {
	probe func(context.Context) (probeResult, error)

	mu      sync.Mutex
	next    *probeRound // the round later callers join; nil until one asks
	running bool
}

type probeRound struct {
	done chan struct{}
	res  probeResult
	err  error
}

func (p *prober) current(ctx context.Context) (probeResult, error) {
	p.mu.Lock()
	if p.next == nil {
		p.next = &probeRound{done: make(chan struct{})}
	}
	r := p.next
	if !p.running {
		p.running = true
		go p.loop()
	}
	p.mu.Unlock()
	select {
	case <-r.done:
		return r.res, r.err
	case <-ctx.Done():
		return probeResult{}, ctx.Err()
	}
}

func (p *prober) loop() {
	for {
		p.mu.Lock()
		r := p.next
		if r == nil {
			p.running = false
			p.mu.Unlock()
			return
		}
		p.next = nil // later callers wait for the next round
		p.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r.res, r.err = p.probe(ctx)
		cancel()
		close(r.done)
	}
}

// probeStore reads the store's current revision with a linearizable read
// of one key that never exists (constant cost, whatever the resource holds).
func (c *Cache) probeStore(ctx context.Context) (probeResult, error) {
	resp, err := c.store.cli.Get(ctx, DefaultPrefix+"_revision", clientv3.WithCountOnly())
	if err != nil {
		return probeResult{}, err
	}
	return probeResult{rev: resp.Header.Revision}, nil
}

// Sync brings the cache to a state at least as current as a read from the
// store made now: it reads the store's revision (one read shared with
// concurrent callers), then waits until the cache's watch has delivered
// everything up to it. The watch sees only this resource's changes, so when
// the store's revision moved on through other keys, the cache asks the
// store for a progress notification, which arrives behind every event up to
// the revision it names (etcd's RequestProgress; Nexus's store does the
// same).
func (c *Cache) Sync(ctx context.Context) error {
	if !c.progress {
		return ErrNotCurrent
	}
	p, err := c.probes.current(ctx)
	if err != nil {
		return err
	}
	if c.Revision() >= p.rev {
		return nil
	}
	done := make(chan struct{})
	defer close(done)
	go c.requestProgress(ctx, done)
	return c.waitRev(ctx, p.rev)
}

// requestProgress asks for progress notifications until done: every few
// milliseconds, as a request finds nothing when the watch is still
// catching up, or (with etcd) another member answered the read.
func (c *Cache) requestProgress(ctx context.Context, done <-chan struct{}) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if now := time.Now(); c.lastProgress.Load() < now.Add(-2*time.Millisecond).UnixNano() {
			c.lastProgress.Store(now.UnixNano())
			_ = c.store.cli.RequestProgress(clientv3.WithRequireLeader(ctx))
		}
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// waitRev waits until the cache reflects revision rev.
func (c *Cache) waitRev(ctx context.Context, rev int64) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	stop := context.AfterFunc(ctx, func() {
		// Broadcast under the lock: a waiter is either before its
		// check of ctx.Err or parked in Wait, never in between.
		c.mu.Lock()
		c.changed.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	for !(c.ready && c.rev >= rev) {
		if c.stopped {
			return errors.New("the watch cache stopped")
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		c.changed.Wait()
	}
	return nil
}

// ProgressIsOrdered reports whether every endpoint's progress notifications
// come behind the events they cover: Nexus's store (its storage version
// says so) and etcd 3.4.31+, 3.5.13+ and 3.6+, where etcd fixed
// notifications sent ahead of events (etcd-io/etcd#15220).
func ProgressIsOrdered(ctx context.Context, cli *clientv3.Client) bool {
	eps := cli.Endpoints()
	if len(eps) == 0 {
		// A client of a member in this process (store/v3client) has no
		// endpoints: its Status answers for that member.
		eps = []string{""}
	}
	for _, ep := range eps {
		st, err := cli.Status(ctx, ep)
		if err != nil {
			return false
		}
		if strings.HasPrefix(st.StorageVersion, "nexus-") {
			continue
		}
		var major, minor, patch int
		if _, err := fmt.Sscanf(st.Version, "%d.%d.%d", &major, &minor, &patch); err != nil {
			return false
		}
		switch {
		case major > 3 || (major == 3 && minor >= 6):
		case major == 3 && minor == 5 && patch >= 13:
		case major == 3 && minor == 4 && patch >= 31:
		default:
			return false
		}
	}
	return true
}
