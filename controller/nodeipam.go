package controller

import (
	"context"
	"slices"
	"time"

	"nexus.dev/nexus/api/types"
)

// NodeIPAM hands out the nodes' container prefixes; networking.IPAM
// implements it over the store. The prefix claims live in the store beside
// the API's keyspace (no client edits them), so this is the one controller
// that reaches state other than through the API.
type NodeIPAM interface {
	// NodeSpec returns node's prefixes, allocating them if it has none
	// (asking again returns the same), and the cluster's, as a Node's
	// spec.containerPrefixes and spec.clusterPrefixes list them.
	NodeSpec(ctx context.Context, node string) (containerPrefixes, clusterPrefixes []string, err error)
	// ReleaseNode frees node's prefixes; releasing none is no error.
	ReleaseNode(ctx context.Context, node string) error
	// Allocations returns every node's prefixes by node name, in one read.
	Allocations(ctx context.Context) (map[string][]string, error)
}

// onNodeForPrefixes queues a node whose prefixes may need work: a new or
// deleted one, or one whose prefixes changed. A status update (every
// heartbeat) changes neither and is not queued.
func (c *Controllers) onNodeForPrefixes(old, nw types.Object) {
	switch {
	case nw == nil:
		c.iq.add(keyOf(old))
	case old == nil:
		c.iq.add(keyOf(nw))
	default:
		o, n := old.(*types.Node), nw.(*types.Node)
		if !slices.Equal(o.Spec.ContainerPrefixes, n.Spec.ContainerPrefixes) || !slices.Equal(o.Spec.ClusterPrefixes, n.Spec.ClusterPrefixes) {
			c.iq.add(keyOf(nw))
		}
	}
}

// reconcileNodePrefixes gives a queued Node the prefixes IPAM holds for
// it, and releases those of a Node that is gone.
func (c *Controllers) reconcileNodePrefixes(ctx context.Context, name string) error {
	o := c.nodes.get(name)
	if o == nil {
		// The prefixes are free for the next node. The node's containers
		// went with its Node (its instances are rescheduled), and an
		// agent that comes back registers anew and gets prefixes again.
		if err := c.cfg.NodeIPAM.ReleaseNode(ctx, name); err != nil {
			return err
		}
		c.log.Debug("released the prefixes of a deleted node", "node", name)
		return nil
	}
	n := o.(*types.Node)
	node, cluster, err := c.cfg.NodeIPAM.NodeSpec(ctx, name)
	if err != nil {
		return err
	}
	if slices.Equal(n.Spec.ContainerPrefixes, node) && slices.Equal(n.Spec.ClusterPrefixes, cluster) {
		return nil
	}
	upd := *n
	upd.Spec.ContainerPrefixes, upd.Spec.ClusterPrefixes = node, cluster
	// The update carries the cached resourceVersion: a Node changed
	// meanwhile is a conflict, retried from the newer state.
	got, err := c.c.Update(ctx, &upd)
	if err != nil {
		return err
	}
	c.nodes.observe(got, false)
	if len(n.Spec.ContainerPrefixes) == 0 {
		c.log.Info("allocated node prefixes", "node", name, "prefixes", node)
	} else {
		c.log.Warn("replaced node prefixes that were not the allocated ones", "node", name, "had", n.Spec.ContainerPrefixes, "prefixes", node)
	}
	return nil
}

// sweepNodePrefixes queues every Node whose prefixes differ from IPAM's and
// every allocation whose Node is gone (deleted while no controller ran),
// from one read of the allocations.
func (c *Controllers) sweepNodePrefixes(ctx context.Context) {
	allocs, err := c.cfg.NodeIPAM.Allocations(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("node prefixes: list the allocations", "err", err)
		}
		return
	}
	for _, o := range c.nodes.list(nil) {
		n := o.(*types.Node)
		if have, ok := allocs[n.Name]; !ok || have == nil || !slices.Equal(have, n.Spec.ContainerPrefixes) || len(n.Spec.ClusterPrefixes) == 0 {
			c.iq.add(n.Name)
		}
		delete(allocs, n.Name)
	}
	for name := range allocs {
		c.iq.add(name)
	}
}

// sweepNodePrefixesEvery sweeps at once and then every period until ctx
// ends.
func (c *Controllers) sweepNodePrefixesEvery(ctx context.Context, period time.Duration) {
	c.sweepNodePrefixes(ctx)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.sweepNodePrefixes(ctx)
		}
	}
}
