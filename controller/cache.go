package controller

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
)

// cache mirrors the objects of one resource, in every namespace, from a
// list and a watch, plus the controllers' own writes.
type cache struct {
	c   *client.Client
	r   *types.Resource
	log *slog.Logger

	mu    sync.RWMutex
	objs  map[string]types.Object
	tombs map[string]tomb // deleted objects, see bury
	// pruned is when tombs were last pruned.
	pruned time.Time
	// onChange is called (outside the lock) with the old and new object of
	// every change: old nil for an addition, new nil for a deletion.
	onChange []func(old, new types.Object)
	synced   chan struct{}
	once     sync.Once
}

// tomb is a deleted object's last resourceVersion, and when it was buried.
type tomb struct {
	rv int64
	at time.Time
}

// tombTTL is how long a deletion is remembered: longer than any write of
// the controllers takes, whose answer may reach observe after the
// deletion's watch event did.
const tombTTL = 5 * time.Minute

func newCache(c *client.Client, r *types.Resource, log *slog.Logger) *cache {
	return &cache{c: c, r: r, log: log, objs: map[string]types.Object{}, tombs: map[string]tomb{}, synced: make(chan struct{})}
}

// bury records that the object at k is deleted as of rv, so that a state
// from before the delete (a controller's write answered late, a watch
// event from before its own delete) does not bring it back. Call with
// mu held.
func (c *cache) bury(k string, rv int64) {
	now := time.Now()
	if t, ok := c.tombs[k]; ok {
		rv = max(rv, t.rv)
	}
	c.tombs[k] = tomb{rv: rv, at: now}
	if now.Sub(c.pruned) > tombTTL/5 {
		c.pruned = now
		for k, t := range c.tombs {
			if now.Sub(t.at) > tombTTL {
				delete(c.tombs, k)
			}
		}
	}
}

// keyOf is namespace/name, or name for a cluster-scoped object.
func keyOf(o types.Object) string {
	m := o.GetObjectMeta()
	if m.Namespace == "" {
		return m.Name
	}
	return m.Namespace + "/" + m.Name
}

func rvOf(o types.Object) int64 {
	v, _ := strconv.ParseInt(o.GetObjectMeta().ResourceVersion, 10, 64)
	return v
}

// run follows the resource until ctx ends, starting again (list and watch)
// after a failure.
func (c *cache) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := c.c.Follow(ctx, c.r, "", client.FollowOptions{Initial: c.initial}, c.event)
		if ctx.Err() != nil {
			return
		}
		c.log.Warn("following "+c.r.Plural+" failed; starting again", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// initial replaces the cache with a list. Objects gone from it are
// delivered as deletions; Follow lists only once per run, so this is the
// start or a restart after a failure.
func (c *cache) initial(objs []types.Object) error {
	seen := make(map[string]bool, len(objs))
	for _, o := range objs {
		seen[keyOf(o)] = true
		c.observe(o, false)
	}
	c.mu.RLock()
	var gone []types.Object
	for k, o := range c.objs {
		if !seen[k] {
			gone = append(gone, o)
		}
	}
	c.mu.RUnlock()
	for _, o := range gone {
		c.observe(o, true)
	}
	c.once.Do(func() { close(c.synced) })
	return nil
}

func (c *cache) event(ev client.Event) error {
	c.observe(ev.Object, ev.Type == client.Deleted)
	return nil
}

// observe applies a change seen by the watch or made by a controller,
// unless the cache already holds a newer state of the object.
func (c *cache) observe(o types.Object, deleted bool) {
	k, rv := keyOf(o), rvOf(o)
	c.mu.Lock()
	old := c.objs[k]
	if old != nil && rvOf(old) > rv {
		c.mu.Unlock()
		return
	}
	if t, ok := c.tombs[k]; ok {
		if rv <= t.rv {
			c.mu.Unlock()
			return
		}
		delete(c.tombs, k)
	}
	if deleted {
		// The watch's delete: a controller's write answered before it
		// but observed after it must not bring the object back (a
		// deleted workload did, and its instances lived on until the
		// resync).
		delete(c.objs, k)
		c.bury(k, rv)
	} else {
		c.objs[k] = o
	}
	c.mu.Unlock()
	if deleted && old == nil {
		return
	}
	var nw types.Object
	if !deleted {
		nw = o
	}
	for _, f := range c.onChange {
		f(old, nw)
	}
}

// deleted records a delete this process made: the object is gone from the
// cache at once, and watch events from before the delete are ignored.
func (c *cache) deleted(o types.Object) {
	k := keyOf(o)
	c.mu.Lock()
	old := c.objs[k]
	rv := rvOf(o)
	if old != nil {
		rv = max(rv, rvOf(old))
	}
	c.bury(k, rv)
	delete(c.objs, k)
	c.mu.Unlock()
	if old != nil {
		for _, f := range c.onChange {
			f(old, nil)
		}
	}
}

func (c *cache) get(key string) types.Object {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.objs[key]
}

// list returns the objects that match keep (all when nil).
func (c *cache) list(keep func(types.Object) bool) []types.Object {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]types.Object, 0, len(c.objs))
	for _, o := range c.objs {
		if keep == nil || keep(o) {
			out = append(out, o)
		}
	}
	return out
}

func (c *cache) waitSynced(ctx context.Context) bool {
	select {
	case <-c.synced:
		return true
	case <-ctx.Done():
		return false
	}
}
