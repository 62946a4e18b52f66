package controller

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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
	// several schedulers side by side); NoEndpoints leaves out the
	// endpoints controller (endpoints.go).
	NoWorkloads, NoScheduler, NoEndpoints bool
	// Leases is the view of the nodes' heartbeat leases the node
	// lifecycle controller judges by (nodes without a lease are NotReady,
	// their instances evicted after a grace period); the caller runs it.
	// Without it, but with Store, the controllers follow the leases in
	// Store themselves, from when they start; without either, the node
	// lifecycle controller does not run.
	Leases *NodeLeases
	Store  *clientv3.Client
	// NodeLeaseDuration is the nodes' lease duration (default
	// types.DefaultNodeLeaseSeconds): a node never seen with a lease since
	// the controller started is judged once this has passed.
	NodeLeaseDuration time.Duration
	// EvictionGrace is how long an instance stays bound to an unreachable
	// node unless a toleration says otherwise (default
	// types.DefaultEvictionSeconds).
	EvictionGrace time.Duration
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
	services, endpoints         *cache // nil with Config.NoEndpoints
	wq, sq, lq                  *queue
	iq                          *queue      // node names, for NodeIPAM
	eq                          *queue      // services, for the endpoints controller
	leases                      *NodeLeases // nil without Config.Leases or Store
	ownLeases                   bool        // leases is this Controllers' own: Run runs it

	wlRes, instRes, nodeRes, svcRes, epRes *types.Resource

	round atomic.Uint64
	stats struct {
		bound, conflicts, unplaceable, preempted, evicted atomic.Int64
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
	// Evicted counts instances the node lifecycle controller deleted
	// from unreachable nodes.
	Evicted int64
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
	if cfg.NodeLeaseDuration <= 0 {
		cfg.NodeLeaseDuration = types.DefaultNodeLeaseSeconds * time.Second
	}
	if cfg.EvictionGrace <= 0 {
		cfg.EvictionGrace = types.DefaultEvictionSeconds * time.Second
	}
	c := &Controllers{cfg: cfg, log: cfg.Logger, c: cfg.Client, wq: newQueue(), sq: newQueue(), lq: newQueue(), iq: newQueue(), eq: newQueue(),
		wlRes: mustResource("workloads"), instRes: mustResource("instances"), nodeRes: mustResource("nodes"),
		svcRes: mustResource("services"), epRes: mustResource("endpoints")}
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
	c.leases = cfg.Leases
	if c.leases == nil && cfg.Store != nil {
		c.leases, c.ownLeases = NewNodeLeases(cfg.Store, c.log), true
	}
	if c.leases != nil {
		c.nodes.onChange = append(c.nodes.onChange, func(old, nw types.Object) { c.lq.add(keyOf(firstNonNil(nw, old))) })
		// An instance bound to a node that is unreachable already is
		// judged with the node.
		c.instances.onChange = append(c.instances.onChange, func(_, nw types.Object) {
			if i, ok := nw.(*types.Instance); ok && i.Spec.NodeName != "" {
				if held, _ := c.leases.state(i.Spec.NodeName); !held {
					c.lq.add(i.Spec.NodeName)
				}
			}
		})
	}
	if cfg.NodeIPAM != nil {
		c.nodes.onChange = append(c.nodes.onChange, c.onNodeForPrefixes)
	}
	if !cfg.NoEndpoints {
		c.services = newCache(cfg.Client, c.svcRes, c.log)
		c.endpoints = newCache(cfg.Client, c.epRes, c.log)
		byKey := func(old, nw types.Object) { c.eq.add(keyOf(firstNonNil(nw, old))) }
		c.services.onChange = append(c.services.onChange, byKey)
		// A changed or deleted Endpoints is put back as the Service says.
		c.endpoints.onChange = append(c.endpoints.onChange, byKey)
		c.instances.onChange = append(c.instances.onChange, c.enqueueServicesOf)
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
	defer c.lq.close()
	defer c.iq.close()
	defer c.eq.close()
	caches := []*cache{c.workloads, c.instances, c.nodes}
	if !c.cfg.NoEndpoints {
		caches = append(caches, c.services, c.endpoints)
	}
	for _, ca := range caches {
		goRun(func() { ca.run(ctx) })
	}
	if c.leases != nil {
		defer c.leases.subscribe(c.lq.add)()
		if c.ownLeases {
			goRun(func() { c.leases.Run(ctx) })
		}
	}
	for _, ca := range caches {
		if !ca.waitSynced(ctx) {
			return nil
		}
	}
	if c.leases != nil && !c.leases.waitSynced(ctx) {
		return nil
	}
	c.log.Info("controllers running", "workloads", !c.cfg.NoWorkloads, "scheduler", !c.cfg.NoScheduler, "node lifecycle", c.leases != nil, "nodeIPAM", c.cfg.NodeIPAM != nil, "endpoints", !c.cfg.NoEndpoints)
	if c.leases != nil {
		goRun(func() { c.lq.work(ctx, c.log, "node lifecycle", "node", c.reconcileNode) })
	}
	if !c.cfg.NoWorkloads {
		for range c.cfg.Workers {
			goRun(func() { c.wq.work(ctx, c.log, "reconcile workload", "workload", c.reconcileWorkload) })
		}
	}
	if !c.cfg.NoScheduler {
		goRun(func() { c.schedulerWorker(ctx) })
	}
	if !c.cfg.NoEndpoints {
		for range 2 {
			goRun(func() { c.eq.work(ctx, c.log, "reconcile endpoints", "service", c.reconcileEndpoints) })
		}
	}
	if c.cfg.NodeIPAM != nil {
		goRun(func() { c.iq.work(ctx, c.log, "node prefixes", "node", c.reconcileNodePrefixes) })
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
	if c.leases != nil {
		for _, n := range c.nodes.list(nil) {
			c.lq.add(keyOf(n))
		}
	}
	if !c.cfg.NoEndpoints {
		for _, ca := range []*cache{c.services, c.endpoints} {
			for _, o := range ca.list(nil) {
				c.eq.add(keyOf(o))
			}
		}
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
		Unplaceable: c.stats.unplaceable.Load(), Preempted: c.stats.preempted.Load(), Evicted: c.stats.evicted.Load()}
}
