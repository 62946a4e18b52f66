package controller

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
)

// NodeLeases mirrors which nodes hold a heartbeat lease, from a list and
// a watch of types.NodeLeasePrefix in the store: the store deletes a
// node's key when its lease runs out, so a node that stops heartbeating
// is seen at once, without polling.
//
// A server runs one for as long as it runs and hands it to the
// Controllers of each term it leads (Config.Leases): a term that follows
// a brief loss of leadership (keep-alive answers late on a busy machine)
// still knows when a node's lease went, where a view of its own would
// count the node's grace again from the new term's start.
type NodeLeases struct {
	cli *clientv3.Client
	log *slog.Logger

	mu     sync.Mutex
	held   map[string]bool
	lostAt map[string]time.Time // when a held lease was seen to go
	// subs are called (outside the lock) with a node whose lease came or
	// went.
	subs    map[int]func(node string)
	nextSub int
	synced  chan struct{}
	once    sync.Once
	// start is when the view first synced: the time from which a node
	// never seen with a lease counts.
	start time.Time
}

// NewNodeLeases makes a view of the nodes' leases in cli's store; Run
// fills and follows it.
func NewNodeLeases(cli *clientv3.Client, log *slog.Logger) *NodeLeases {
	if log == nil {
		log = slog.Default()
	}
	return &NodeLeases{cli: cli, log: log, held: map[string]bool{}, lostAt: map[string]time.Time{}, subs: map[int]func(string){}, synced: make(chan struct{})}
}

// subscribe calls f with every node whose lease comes or goes from now
// on, until the returned cancel is called.
func (l *NodeLeases) subscribe(f func(node string)) (cancel func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id := l.nextSub
	l.nextSub++
	l.subs[id] = f
	return func() {
		l.mu.Lock()
		delete(l.subs, id)
		l.mu.Unlock()
	}
}

func (l *NodeLeases) notify(nodes ...string) {
	l.mu.Lock()
	subs := make([]func(string), 0, len(l.subs))
	for _, f := range l.subs {
		subs = append(subs, f)
	}
	l.mu.Unlock()
	for _, n := range nodes {
		for _, f := range subs {
			f(n)
		}
	}
}

// state says whether node holds a lease, and when it lost one (zero when
// it was never seen with one).
func (l *NodeLeases) state(node string) (held bool, lostAt time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held[node], l.lostAt[node]
}

func (l *NodeLeases) waitSynced(ctx context.Context) bool {
	select {
	case <-l.synced:
		return true
	case <-ctx.Done():
		return false
	}
}

// Run lists and watches the prefix until ctx ends, listing again after a
// failure (a compacted revision, a lost store).
func (l *NodeLeases) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := l.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		l.log.Warn("following the nodes' heartbeat leases failed; listing again", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (l *NodeLeases) follow(ctx context.Context) error {
	resp, err := l.cli.Get(ctx, types.NodeLeasePrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("list %s: %w", types.NodeLeasePrefix, err)
	}
	now := time.Now()
	present := map[string]bool{}
	for _, kv := range resp.Kvs {
		present[strings.TrimPrefix(string(kv.Key), types.NodeLeasePrefix)] = true
	}
	var changed []string
	l.mu.Lock()
	for n := range present {
		if !l.held[n] {
			l.held[n] = true
			delete(l.lostAt, n)
			changed = append(changed, n)
		}
	}
	for n := range l.held {
		if !present[n] {
			delete(l.held, n)
			l.lostAt[n] = now
			changed = append(changed, n)
		}
	}
	l.mu.Unlock()
	l.once.Do(func() {
		l.start = now
		close(l.synced)
	})
	l.notify(changed...)
	w := l.cli.Watch(clientv3.WithRequireLeader(ctx), types.NodeLeasePrefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for wr := range w {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			n := strings.TrimPrefix(string(ev.Kv.Key), types.NodeLeasePrefix)
			l.mu.Lock()
			if ev.Type == clientv3.EventTypeDelete {
				delete(l.held, n)
				l.lostAt[n] = time.Now()
			} else {
				l.held[n] = true
				delete(l.lostAt, n)
			}
			l.mu.Unlock()
			l.notify(n)
		}
	}
	return fmt.Errorf("the watch of %s ended", types.NodeLeasePrefix)
}

// reconcileNode applies decideNode to one node.
func (c *Controllers) reconcileNode(ctx context.Context, name string) error {
	n, ok := c.nodes.get(name).(*types.Node)
	if !ok {
		return nil
	}
	held, lostAt := c.leases.state(name)
	if !held && lostAt.IsZero() {
		// Never seen with a lease since this controller started (a new
		// leader, or a node that just registered): it counts as having
		// got one then, which runs out a lease duration later.
		since := c.leases.start
		if t := n.CreationTimestamp; t.After(since) {
			since = t
		}
		lostAt = since.Add(c.cfg.NodeLeaseDuration)
	}
	v := nodeView{node: n, held: held, lostAt: lostAt, now: time.Now(), tolerates: c.tolerates}
	if !held {
		for _, o := range c.instances.list(func(o types.Object) bool {
			i := o.(*types.Instance)
			return i.Spec.NodeName == name && !terminal(i.Status.Phase)
		}) {
			v.instances = append(v.instances, o.(*types.Instance))
		}
	}
	p := decideNode(v)
	if p.ready != nil {
		var err error
		if n, err = c.setNodeReady(ctx, n, *p.ready); n == nil || err != nil {
			return err
		}
	}
	if p.addTaint || p.removeTaint {
		if err := c.setUnreachableTaint(ctx, n, p.addTaint); err != nil {
			return err
		}
	}
	for _, i := range p.evict {
		c.log.Info("evicting an instance from an unreachable node", "instance", keyOf(i), "node", name, "unreachable since", lostAt.UTC().Format(time.RFC3339))
		if err := c.deleteInstance(ctx, i); err != nil {
			return err
		}
		c.stats.evicted.Add(1)
	}
	if p.requeue > 0 {
		c.lq.addAfter(ctx, name, p.requeue)
	}
	return nil
}

// tolerates is how long an instance stays bound to an unreachable node: a
// daemon's for ever (it belongs to its node, as Kubernetes' DaemonSet
// pods tolerate unreachable), others as their tolerations say.
func (c *Controllers) tolerates(i *types.Instance) (time.Duration, bool) {
	if ref := controllerRef(i); ref != nil {
		if w, ok := c.workloads.get(i.Namespace + "/" + ref.Name).(*types.Workload); ok && w.UID == ref.UID && w.Spec.Kind == types.KindDaemon {
			return 0, true
		}
	}
	return types.UnreachableToleration(i.Spec.Placement.Tolerations, c.cfg.EvictionGrace)
}

// setNodeReady writes the node's Ready condition, with a compare-and-swap:
// a node that changed meanwhile (nil, nil) is decided again from its event.
func (c *Controllers) setNodeReady(ctx context.Context, n *types.Node, cond types.Condition) (*types.Node, error) {
	upd := *n
	upd.Status.Conditions = slices.Clone(n.Status.Conditions)
	types.SetCondition(&upd.Status.Conditions, cond)
	got, err := c.c.UpdateStatus(ctx, &upd)
	switch {
	case client.IsConflict(err), client.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("set node %s Ready=%s: %w", n.Name, cond.Status, err)
	}
	c.log.Info("node readiness", "node", n.Name, "ready", cond.Status, "reason", cond.Reason)
	c.nodes.observe(got, false)
	return got.(*types.Node), nil
}

// setUnreachableTaint adds or removes the unreachable taint on the node's
// spec, with a compare-and-swap.
func (c *Controllers) setUnreachableTaint(ctx context.Context, n *types.Node, add bool) error {
	upd := *n
	upd.Spec.Taints = slices.DeleteFunc(slices.Clone(n.Spec.Taints), isUnreachableTaint)
	if add {
		upd.Spec.Taints = append(upd.Spec.Taints, unreachableTaint)
	}
	got, err := c.c.Update(ctx, &upd)
	switch {
	case client.IsConflict(err), client.IsNotFound(err):
		return nil // its event brings it back
	case err != nil:
		return fmt.Errorf("taint node %s %s: %w", n.Name, types.TaintUnreachable, err)
	}
	c.nodes.observe(got, false)
	return nil
}
