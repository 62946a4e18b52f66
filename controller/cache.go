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
	tombs map[string]int64 // key -> resourceVersion of our delete
	// onChange is called (outside the lock) with the old and new object of
	// every change: old nil for an addition, new nil for a deletion.
	onChange []func(old, new types.Object)
	synced   chan struct{}
	once     sync.Once
}

func newCache(c *client.Client, r *types.Resource, log *slog.Logger) *cache {
	return &cache{c: c, r: r, log: log, objs: map[string]types.Object{}, tombs: map[string]int64{}, synced: make(chan struct{})}
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
		if rv <= t {
			if deleted {
				delete(c.tombs, k)
			}
			c.mu.Unlock()
			return
		}
		delete(c.tombs, k)
	}
	if deleted {
		delete(c.objs, k)
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
	c.tombs[k] = rv
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
