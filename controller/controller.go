package controller

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
)

// Config configures the controllers.
type Config struct {
	// Client talks to the API, as the server's identity.
	Client *client.Client
	Logger *slog.Logger
	// Workers is how many workloads are reconciled at once (default 4).
	Workers int
	// Resync is how often every workload and pending instance is looked at
	// again even without a change (default 30 s): a safety net for a
	// decision that depended on something no event reports.
	Resync time.Duration
	// Seed seeds the scheduler's random choices.
	Seed uint64
	// NoWorkloads and NoScheduler leave out one of the two (tests run
	// several schedulers side by side).
	NoWorkloads, NoScheduler bool
	// NodeIPAM, when set, gives every Node its container prefixes
	// (spec.containerPrefixes, spec.clusterPrefixes) and releases those
	// of deleted Nodes (nodeipam.go).
	NodeIPAM NodeIPAM
}

// Controllers runs the workload controller and the scheduler.
type Controllers struct {
	cfg Config
	log *slog.Logger
	c   *client.Client

	workloads, instances, nodes *cache
	wq, sq                      *queue
	iq                          *queue // node names, for NodeIPAM

	wlRes, instRes, nodeRes *types.Resource

	round atomic.Uint64
	stats struct {
		bound, conflicts, unplaceable, preempted atomic.Int64
	}
}

// SchedulerStats count what the scheduler did.
type SchedulerStats struct {
	// Bound counts instances this scheduler bound; Conflicts the binds
	// that lost a compare-and-swap (someone changed the instance first).
	Bound, Conflicts int64
	// Unplaceable counts placements that found no node; Preempted the
	// instances evicted to make room.
	Unplaceable, Preempted int64
}

func mustResource(name string) *types.Resource {
	r, ok := types.LookupResource(name)
	if !ok {
		panic("controller: no resource " + name)
	}
	return r
}

// New makes the controllers; Run runs them.
func New(cfg Config) (*Controllers, error) {
	if cfg.Client == nil {
		return nil, errors.New("controllers: no API client")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	c := &Controllers{cfg: cfg, log: cfg.Logger, c: cfg.Client, wq: newQueue(), sq: newQueue(), iq: newQueue(),
		wlRes: mustResource("workloads"), instRes: mustResource("instances"), nodeRes: mustResource("nodes")}
	c.workloads = newCache(cfg.Client, c.wlRes, c.log)
	c.instances = newCache(cfg.Client, c.instRes, c.log)
	c.nodes = newCache(cfg.Client, c.nodeRes, c.log)
	if !cfg.NoWorkloads {
		c.workloads.onChange = append(c.workloads.onChange, func(old, nw types.Object) { c.wq.add(keyOf(firstNonNil(nw, old))) })
		c.instances.onChange = append(c.instances.onChange, func(old, nw types.Object) {
			for _, o := range []types.Object{old, nw} {
				if o != nil {
					if k, ok := ownerKey(o.(*types.Instance)); ok {
						c.wq.add(k)
					}
				}
			}
		})
		c.nodes.onChange = append(c.nodes.onChange, func(_, _ types.Object) { c.enqueueDaemons() })
	}
	if !cfg.NoScheduler {
		c.instances.onChange = append(c.instances.onChange, func(old, nw types.Object) {
			if nw != nil && pending(nw.(*types.Instance)) {
				c.sq.add(keyOf(nw))
			}
			if old != nil && holdsResources(old.(*types.Instance)) && (nw == nil || !holdsResources(nw.(*types.Instance))) {
				c.enqueuePending()
			}
		})
		c.nodes.onChange = append(c.nodes.onChange, func(_, _ types.Object) { c.enqueuePending() })
	}
	if cfg.NodeIPAM != nil {
		c.nodes.onChange = append(c.nodes.onChange, c.onNodeForPrefixes)
	}
	return c, nil
}

func firstNonNil(a, b types.Object) types.Object {
	if a != nil {
		return a
	}
	return b
}

// Run runs the controllers until ctx ends. It returns once every goroutine
// it started has stopped. It runs once: a server that becomes leader again
// makes new Controllers.
func (c *Controllers) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	goRun := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}
	defer wg.Wait()
	defer c.wq.close()
	defer c.sq.close()
	defer c.iq.close()
	for _, ca := range []*cache{c.workloads, c.instances, c.nodes} {
		goRun(func() { ca.run(ctx) })
	}
	for _, ca := range []*cache{c.workloads, c.instances, c.nodes} {
		if !ca.waitSynced(ctx) {
			return nil
		}
	}
	c.log.Info("controllers running", "workloads", !c.cfg.NoWorkloads, "scheduler", !c.cfg.NoScheduler, "nodeIPAM", c.cfg.NodeIPAM != nil)
	if !c.cfg.NoWorkloads {
		for range c.cfg.Workers {
			goRun(func() { c.workloadWorker(ctx) })
		}
	}
	if !c.cfg.NoScheduler {
		goRun(func() { c.schedulerWorker(ctx) })
	}
	if c.cfg.NodeIPAM != nil {
		goRun(func() { c.nodeIPAMWorker(ctx) })
		goRun(func() { c.sweepNodePrefixesEvery(ctx, c.cfg.Resync) })
	}
	c.resync()
	t := time.NewTicker(c.cfg.Resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			c.resync()
		}
	}
}

// resync puts every workload, every owner of an instance and every
// pending instance on the queues.
func (c *Controllers) resync() {
	if !c.cfg.NoWorkloads {
		for _, w := range c.workloads.list(nil) {
			c.wq.add(keyOf(w))
		}
		for _, o := range c.instances.list(nil) {
			if k, ok := ownerKey(o.(*types.Instance)); ok {
				c.wq.add(k)
			}
		}
	}
	if !c.cfg.NoScheduler {
		c.enqueuePending()
	}
}

func (c *Controllers) enqueuePending() {
	for _, o := range c.instances.list(func(o types.Object) bool { return pending(o.(*types.Instance)) }) {
		c.sq.add(keyOf(o))
	}
}

func (c *Controllers) enqueueDaemons() {
	for _, w := range c.workloads.list(func(o types.Object) bool { return o.(*types.Workload).Spec.Kind == types.KindDaemon }) {
		c.wq.add(keyOf(w))
	}
}

// SchedulerStats returns what the scheduler has done so far.
func (c *Controllers) SchedulerStats() SchedulerStats {
	return SchedulerStats{Bound: c.stats.bound.Load(), Conflicts: c.stats.conflicts.Load(),
		Unplaceable: c.stats.unplaceable.Load(), Preempted: c.stats.preempted.Load()}
}
