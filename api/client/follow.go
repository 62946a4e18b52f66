package client

import (
	"cmp"
	"context"
	"maps"
	"slices"

	"nexus.dev/nexus/api/types"
)

// FollowOptions narrow what Follow delivers.
type FollowOptions struct {
	LabelSelector, FieldSelector string
	// SkipInitial leaves out the objects that exist at the start: only
	// changes are delivered.
	SkipInitial bool
	// Initial, when set, receives the objects that exist at the start in
	// one call (a table prints them aligned) instead of as Added events.
	Initial func(objs []types.Object) error
	// OnResume: see WatchOptions.
	OnResume func(err error)
}

// Follow delivers the objects of r in ns (every namespace when empty), as
// Added, then every change to them, to handle, until ctx ends (nil) or
// handle fails (its error). Unlike a bare Watch it survives Gone: it lists
// again and delivers the difference from what it had delivered (Added,
// Modified, Deleted), so the caller's view ends up exact even though the
// changes in between are lost. Bookmarks are not delivered.
func (c *Client) Follow(ctx context.Context, r *types.Resource, ns string, opts FollowOptions, handle func(Event) error) error {
	type key struct{ ns, name string }
	keyOf := func(o types.Object) key { m := o.GetObjectMeta(); return key{m.Namespace, m.Name} }
	known := map[key]types.Object{}
	first := true
	for {
		objs, rv, err := c.List(ctx, r, ns, ListOptions{LabelSelector: opts.LabelSelector, FieldSelector: opts.FieldSelector})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		now := make(map[key]types.Object, len(objs))
		batch := first && (opts.SkipInitial || opts.Initial != nil)
		if first && opts.Initial != nil && !opts.SkipInitial {
			if err := opts.Initial(objs); err != nil {
				return err
			}
		}
		for _, o := range objs {
			k := keyOf(o)
			now[k] = o
			old, ok := known[k]
			var ev Event
			switch {
			case !ok:
				ev = Event{Type: Added, Object: o}
			case old.GetObjectMeta().ResourceVersion != o.GetObjectMeta().ResourceVersion:
				ev = Event{Type: Modified, Object: o}
			default:
				continue
			}
			if batch {
				continue
			}
			if err := handle(ev); err != nil {
				return err
			}
		}
		gone := slices.SortedFunc(maps.Keys(known), func(a, b key) int {
			return cmp.Or(cmp.Compare(a.ns, b.ns), cmp.Compare(a.name, b.name))
		})
		for _, k := range gone {
			if _, ok := now[k]; !ok {
				if err := handle(Event{Type: Deleted, Object: known[k]}); err != nil {
					return err
				}
			}
		}
		known, first = now, false

		w, err := c.Watch(ctx, r, ns, WatchOptions{LabelSelector: opts.LabelSelector, FieldSelector: opts.FieldSelector, ResourceVersion: rv, OnResume: opts.OnResume})
		if IsGone(err) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for ev := range w.Events() {
			switch ev.Type {
			case Bookmark:
				continue
			case Deleted:
				delete(known, keyOf(ev.Object))
			default:
				known[keyOf(ev.Object)] = ev.Object
			}
			if err := handle(ev); err != nil {
				w.Stop()
				return err
			}
		}
		if err := w.Err(); !IsGone(err) {
			return err
		}
	}
}
