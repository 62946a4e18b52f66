package controller

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/scheduler"
)

// schedulerWorker places pending instances: it takes every key queued,
// builds one snapshot from the caches and places the instances in it
// highest priority first, each decision applied before the next.
func (c *Controllers) schedulerWorker(ctx context.Context) {
	for {
		keys, ok := c.sq.drain()
		if !ok {
			return
		}
		c.scheduleRound(ctx, keys)
		for _, k := range keys {
			c.sq.done(k)
		}
	}
}

func (c *Controllers) scheduleRound(ctx context.Context, keys []string) {
	var todo []*types.Instance
	for _, k := range keys {
		if i, ok := c.instances.get(k).(*types.Instance); ok && pending(i) {
			todo = append(todo, i)
		} else {
			c.sq.forget(k)
		}
	}
	if len(todo) == 0 {
		return
	}
	var nodes []*types.Node
	for _, o := range c.nodes.list(nil) {
		nodes = append(nodes, o.(*types.Node))
	}
	var all []*types.Instance
	for _, o := range c.instances.list(nil) {
		all = append(all, o.(*types.Instance))
	}
	st, err := scheduler.NewState(snapshot(nodes, all))
	if err != nil {
		// The snapshot is built to be consistent; a failure is a bug, and
		// retrying with the next change is all there is to do.
		c.log.Error("scheduler snapshot", "err", err)
		for _, i := range todo {
			c.sq.retry(ctx, keyOf(i))
		}
		return
	}
	sch := scheduler.New(scheduler.Config{Seed: c.cfg.Seed + c.round.Add(1)}, st)
	slices.SortFunc(todo, func(a, b *types.Instance) int {
		return cmp.Or(cmp.Compare(b.Spec.Placement.Priority, a.Spec.Placement.Priority),
			a.CreationTimestamp.Compare(b.CreationTimestamp), cmp.Compare(keyOf(a), keyOf(b)))
	})
	for _, i := range todo {
		if ctx.Err() != nil {
			return
		}
		key := keyOf(i)
		si, err := types.SchedulerInstance(i)
		var res scheduler.Result
		if err != nil {
			res = scheduler.Result{InstanceID: si.ID, Unplaceable: &scheduler.Unplaceable{Reason: err.Error()}}
		} else {
			res = sch.Place(&si)
		}
		if res.Unplaceable != nil {
			c.stats.unplaceable.Add(1)
			c.markUnschedulable(ctx, i, res.Unplaceable.Reason)
			c.sq.retry(ctx, key)
			continue
		}
		if err := c.bind(ctx, i, res.Decision); err != nil {
			c.log.Warn("bind instance", "instance", key, "node", res.Decision.NodeID, "err", err)
			// This round's state assumed the bind: the next round starts
			// from the caches again.
			c.sq.retry(ctx, key)
			continue
		}
		c.sq.forget(key)
	}
}

// bind evicts the decision's victims, then sets the instance's node with
// a compare-and-swap on the resourceVersion the scheduler read: if anyone
// changed the instance in between (another scheduler bound it), the bind
// fails with a conflict and nothing is written.
func (c *Controllers) bind(ctx context.Context, i *types.Instance, d *scheduler.Decision) error {
	for _, v := range d.Preempt {
		victim, ok := c.instances.get(v.InstanceID).(*types.Instance)
		if !ok {
			continue
		}
		c.log.Info("preempting instance", "victim", v.InstanceID, "priority", v.Priority, "for", keyOf(i), "node", d.NodeID)
		if err := c.deleteInstance(ctx, victim); err != nil {
			return fmt.Errorf("preempt %s: %w", v.InstanceID, err)
		}
		c.stats.preempted.Add(1)
	}
	upd := *i
	upd.Spec.NodeName = d.NodeID
	got, err := c.c.Update(ctx, &upd)
	if client.IsConflict(err) {
		c.stats.conflicts.Add(1)
		return fmt.Errorf("bind to %s: the instance changed since it was read (bound elsewhere?): %w", d.NodeID, err)
	}
	if err != nil {
		return fmt.Errorf("bind to %s: %w", d.NodeID, err)
	}
	c.stats.bound.Add(1)
	c.instances.observe(got, false)
	c.log.Debug("bound instance", "instance", keyOf(i), "node", d.NodeID)
	bound := got.(*types.Instance)
	for attempt := 0; attempt < 3; attempt++ {
		st := *bound
		st.Status.Conditions = append([]types.Condition(nil), bound.Status.Conditions...)
		changed := types.SetCondition(&st.Status.Conditions, types.Condition{Type: conditionScheduled, Status: types.ConditionTrue, Reason: reasonScheduled,
			Message: "bound to " + d.NodeID, LastTransitionTime: time.Now().UTC().Truncate(time.Second)})
		if st.Status.Phase == types.PhasePending {
			st.Status.Phase, changed = types.PhaseScheduled, true
		}
		if strings.HasPrefix(st.Status.Message, unschedulablePrefix) {
			st.Status.Message, changed = "", true
		}
		if !changed {
			return nil
		}
		got, err := c.c.UpdateStatus(ctx, &st)
		if err == nil {
			c.instances.observe(got, false)
			return nil
		}
		if !client.IsConflict(err) {
			return fmt.Errorf("mark %s scheduled: %w", keyOf(i), err)
		}
		// The agent reported meanwhile: keep what it wrote.
		o, err := c.c.Get(ctx, c.instRes, i.Namespace, i.Name)
		if err != nil {
			return fmt.Errorf("mark %s scheduled: %w", keyOf(i), err)
		}
		bound = o.(*types.Instance)
	}
	return nil
}

// markUnschedulable records why an instance waits: its status message and
// a Scheduled=False condition, which `nexus describe instance` shows.
func (c *Controllers) markUnschedulable(ctx context.Context, i *types.Instance, reason string) {
	st := *i
	st.Status.Conditions = append([]types.Condition(nil), i.Status.Conditions...)
	msg := unschedulableMessage(reason)
	changed := types.SetCondition(&st.Status.Conditions, types.Condition{Type: conditionScheduled, Status: types.ConditionFalse,
		Reason: reasonUnschedulable, Message: reason, LastTransitionTime: time.Now().UTC().Truncate(time.Second)})
	if !changed && i.Status.Message == msg {
		return
	}
	st.Status.Message = msg
	got, err := c.c.UpdateStatus(ctx, &st)
	if err != nil {
		if !client.IsConflict(err) && !client.IsNotFound(err) && ctx.Err() == nil {
			c.log.Warn("record why an instance cannot be scheduled", "instance", keyOf(i), "err", err)
		}
		return
	}
	c.instances.observe(got, false)
}
