package agent

import (
	"context"
	"fmt"
	"time"

	"nexus.dev/nexus/api/types"
)

// keepLease renews the node's heartbeat lease every LeaseInterval until
// ctx ends. The server keeps the lease in the store, where its expiry
// makes the node NotReady and, after a grace period, has its instances
// replaced elsewhere (controller/nodelifecycle.go).
//
// Fencing: an instance bound to a node whose lease ran out is replaced
// elsewhere once its toleration of the unreachable taint is over (the
// eviction grace, 10 s by default). So when no renewal has succeeded for
// the lease plus half that toleration, the agent stops the instance if
// its workload is marked stopOnDisconnect: a healed partition then never
// runs more copies than asked, and the copy stops a half-toleration
// before its replacement may start. Fencing at the lease's end instead
// would stop every workload whenever a failover of the store's leader
// (a few seconds without renewals) outlasted the 3 s lease. The agent
// stops fenced instances with their grace period, as at removal, reports
// them Stopped once a server answers again (their workloads replace
// them), and keeps the others running: the instance watch reconciles
// them when it resumes. An instance that tolerates the unreachable taint
// for ever is never replaced, so it is not fenced either; one whose
// termination grace is longer than half its toleration may still be
// stopping when its replacement starts.
func (a *Agent) keepLease(ctx context.Context) {
	leaseFor := types.DefaultNodeLeaseSeconds * time.Second
	evictFor := types.DefaultEvictionSeconds * time.Second
	renewed := time.Now() // registering just reached a server
	away, fenced := false, 0
	t := time.NewTicker(a.cfg.LeaseInterval)
	defer t.Stop()
	for {
		sent := time.Now()
		rctx, cancel := context.WithTimeout(ctx, a.cfg.LeaseInterval)
		hb, err := a.cfg.Client.NodeHeartbeat(rctx, a.cfg.NodeName)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			renewed, leaseFor = sent, time.Duration(hb.LeaseDurationSeconds)*time.Second
			if hb.EvictionSeconds > 0 {
				evictFor = time.Duration(hb.EvictionSeconds) * time.Second
			}
			if away {
				a.log.Info("the node's heartbeat reaches a server again", "fenced", fenced)
				// Ready at once, not at the next status publish.
				pctx, cancel := context.WithTimeout(ctx, leaseFor)
				if err := a.publishNode(pctx); err != nil && ctx.Err() == nil {
					a.log.Warn("publish the node's status", "err", err)
				}
				cancel()
			}
			away, fenced = false, 0
		default:
			if !away {
				a.log.Warn("node heartbeat failed", "err", err)
			}
			away = true
			fenced += a.fenceDue(time.Since(renewed), leaseFor, evictFor)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// fenceDue fences the instances marked stopOnDisconnect whose time has
// come: the node has reached no server for gone, and an instance is due
// at lease plus half its toleration of the unreachable taint (evict when
// it has none). It returns how many it fenced.
func (a *Agent) fenceDue(gone, lease, evict time.Duration) int {
	a.mu.Lock()
	var due []*supervisor
	for _, s := range a.sups {
		inst := s.instance()
		if !inst.Spec.StopOnDisconnect || s.isFenced() {
			continue
		}
		tol, forever := types.UnreachableToleration(inst.Spec.Placement.Tolerations, evict)
		if !forever && gone >= lease+tol/2 {
			due = append(due, s)
		}
	}
	a.mu.Unlock()
	if len(due) == 0 {
		return 0
	}
	msg := fmt.Sprintf("stopped by the node: it reached no server for %v, longer than its %v heartbeat lease, and the instance's workload is marked stopOnDisconnect (it is replaced elsewhere)",
		gone.Round(time.Second), lease)
	a.log.Warn("no server reached for longer than the node's lease: stopping the instances marked stopOnDisconnect before they are replaced elsewhere",
		"for", gone.Round(time.Millisecond), "instances", len(due))
	for _, s := range due {
		s.fence(msg)
	}
	return len(due)
}
