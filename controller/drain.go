package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
)

// Draining a node (nexus node drain) is cordoning it, then deleting its
// instances for their workloads to replace elsewhere, in steps that never
// take a service below replicas - maxUnavailable ready instances: each
// step deletes what the budget allows, and the next waits until the
// replacements are ready. Drain cannot surge (the workload controller
// replaces an instance once it is deleted), so a service whose
// maxUnavailable comes to 0 is drained one instance at a time, as a
// rollout with both bounds at 0 is.

// drainView is what a drain step looks at: every instance (the ready
// count of a workload is cluster-wide) and the workloads by
// namespace/name.
type drainView struct {
	node      string
	instances []*types.Instance
	workloads map[string]*types.Workload
	force     bool
}

// drainPlan is one drain step: the instances to delete now, what waits
// and why, the instances no workload owns that only force deletes, and
// how many instances are still on the node (daemons, which the workload
// controller removes from a cordoned node itself, and finished instances
// not counted).
type drainPlan struct {
	evict     []*types.Instance
	waiting   []string
	unowned   []string
	remaining int
}

// planDrain decides one drain step.
func planDrain(v drainView) drainPlan {
	var p drainPlan
	byWorkload := map[string][]*types.Instance{}
	for _, i := range v.instances {
		if i.Spec.NodeName != v.node || terminal(i.Status.Phase) {
			continue
		}
		ref := controllerRef(i)
		var w *types.Workload
		if ref != nil {
			if w = v.workloads[i.Namespace+"/"+ref.Name]; w != nil && w.UID != ref.UID {
				w = nil
			}
		}
		switch {
		case w == nil:
			p.remaining++
			if v.force {
				p.evict = append(p.evict, i)
			} else {
				p.unowned = append(p.unowned, keyOf(i))
			}
		case w.Spec.Kind == types.KindDaemon:
		case w.Spec.Kind == types.KindJob:
			p.remaining++
			p.evict = append(p.evict, i)
		default:
			p.remaining++
			byWorkload[keyOf(w)] = append(byWorkload[keyOf(w)], i)
		}
	}
	keys := make([]string, 0, len(byWorkload))
	for k := range byWorkload {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		w := v.workloads[k]
		want := deref(w.Spec.Replicas, types.DefaultReplicas)
		_, unavailable := rollingBounds(w.Spec.Strategy, want, defaultServiceMaxUnavailable)
		minReady := want - max(unavailable, 1)
		var readyNow int32
		for _, i := range v.instances {
			if ref := controllerRef(i); ref != nil && ref.UID == w.UID && ready(i) {
				readyNow++
			}
		}
		mine := byWorkload[k]
		// The unready first: deleting them costs no ready instance.
		slices.SortFunc(mine, func(a, b *types.Instance) int {
			return cmp.Or(cmp.Compare(boolRank(ready(a)), boolRank(ready(b))), cmp.Compare(a.Name, b.Name))
		})
		held := 0
		for _, i := range mine {
			if ready(i) {
				if readyNow <= minReady {
					held++
					continue
				}
				readyNow--
			}
			p.evict = append(p.evict, i)
		}
		if held > 0 {
			p.waiting = append(p.waiting, fmt.Sprintf("workload %s: %d instance(s) wait: %d of %d ready, at least %d must stay ready (replicas %d - maxUnavailable %d)",
				k, held, readyNow, want, minReady, want, want-minReady))
		}
	}
	return p
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Cordon marks node unschedulable (on) or schedulable again (off):
// spec.unschedulable, written with a compare-and-swap and tried again on
// a conflict (the node's agent and the node lifecycle controller write
// the node too). changed is false when it already was so.
func Cordon(ctx context.Context, c *client.Client, node string, on bool) (changed bool, err error) {
	nodes := mustResource("nodes")
	for attempt := 0; ; attempt++ {
		o, err := c.Get(ctx, nodes, "", node)
		if err != nil {
			return false, err
		}
		n := o.(*types.Node)
		if n.Spec.Unschedulable == on {
			return false, nil
		}
		n.Spec.Unschedulable = on
		_, err = c.Update(ctx, n)
		if client.IsConflict(err) && attempt < 10 {
			continue
		}
		return err == nil, err
	}
}

// DrainOptions adjust Drain.
type DrainOptions struct {
	// Force also deletes instances that no workload owns, which nothing
	// replaces (without it Drain refuses them).
	Force bool
	// Poll is how often Drain looks again while instances wait (default
	// 1 s).
	Poll time.Duration
	// Progress, when set, is told each step.
	Progress func(DrainProgress)
}

// DrainProgress is one step of a drain.
type DrainProgress struct {
	// Deleted are the instances (namespace/name) this step deleted.
	Deleted []string
	// Remaining counts the instances still on the node.
	Remaining int
	// Waiting says which workloads hold instances back, and why.
	Waiting []string
}

// ErrUnownedInstances is what Drain returns when instances that no
// workload owns are on the node and DrainOptions.Force is not set.
var ErrUnownedInstances = errors.New("instances that no workload owns are on the node")

// Drain cordons node and deletes its instances for their workloads to
// replace elsewhere, never taking a service below replicas -
// maxUnavailable ready instances; it returns once none is left (daemons
// aside: the workload controller removes them from a cordoned node) or
// ctx ends (the caller's timeout), saying what was left.
func Drain(ctx context.Context, c *client.Client, node string, opts DrainOptions) error {
	if opts.Poll <= 0 {
		opts.Poll = time.Second
	}
	if _, err := Cordon(ctx, c, node, true); err != nil {
		return fmt.Errorf("cordon node %s: %w", node, err)
	}
	instRes, wlRes := mustResource("instances"), mustResource("workloads")
	for {
		objs, _, err := c.List(ctx, instRes, "", client.ListOptions{})
		if err != nil {
			return fmt.Errorf("list instances: %w", err)
		}
		v := drainView{node: node, workloads: map[string]*types.Workload{}, force: opts.Force}
		for _, o := range objs {
			v.instances = append(v.instances, o.(*types.Instance))
		}
		wls, _, err := c.List(ctx, wlRes, "", client.ListOptions{})
		if err != nil {
			return fmt.Errorf("list workloads: %w", err)
		}
		for _, o := range wls {
			v.workloads[keyOf(o)] = o.(*types.Workload)
		}
		p := planDrain(v)
		if len(p.unowned) > 0 {
			return fmt.Errorf("drain node %s: %w: %s; nothing would replace them: delete them yourself, or drain with --force", node, ErrUnownedInstances, strings.Join(p.unowned, ", "))
		}
		step := DrainProgress{Remaining: p.remaining, Waiting: p.waiting}
		for _, i := range p.evict {
			_, err := c.Delete(ctx, instRes, i.Namespace, i.Name, client.DeleteOptions{ResourceVersion: i.ResourceVersion})
			switch {
			case client.IsNotFound(err), client.IsConflict(err):
				// Gone or changed meanwhile: the next step decides again.
			case err != nil:
				return fmt.Errorf("drain node %s: delete instance %s: %w", node, keyOf(i), err)
			default:
				step.Deleted = append(step.Deleted, keyOf(i))
			}
		}
		if opts.Progress != nil {
			opts.Progress(step)
		}
		if p.remaining == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			msg := fmt.Sprintf("%d instance(s) still on node %s", p.remaining, node)
			if len(p.waiting) > 0 {
				msg += ": " + strings.Join(p.waiting, "; ")
			}
			return fmt.Errorf("drain node %s: %w: %s (it stays cordoned; nexus node drain %s again goes on)", node, ctx.Err(), msg, node)
		case <-time.After(opts.Poll):
		}
	}
}
