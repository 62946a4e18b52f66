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
// Fencing: when no renewal has succeeded for a lease duration, the lease
// has run out (it was renewed, at the latest, when the last successful
// request was sent) and the node's instances are about to be replaced, so
// the agent stops those of workloads marked stopOnDisconnect: a healed
// partition then never runs more copies than asked. It stops them with
// their grace period, as at removal, reports them Stopped once a server
// answers again (their workloads replace them), and keeps the others
// running: the instance watch reconciles them when it resumes. The stop
// begins at most a LeaseInterval after the lease ran out, well inside the
// default 10 s eviction grace; an instance whose termination grace is
// longer than that grace may still be stopping when its replacement
// starts.
func (a *Agent) keepLease(ctx context.Context) {
	leaseFor := types.DefaultNodeLeaseSeconds * time.Second
	renewed := time.Now() // registering just reached a server
	away, fenced := false, false
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
			if away {
				a.log.Info("the node's heartbeat reaches a server again", "fenced", fenced)
				// Ready at once, not at the next status publish.
				pctx, cancel := context.WithTimeout(ctx, leaseFor)
				if err := a.publishNode(pctx); err != nil && ctx.Err() == nil {
					a.log.Warn("publish the node's status", "err", err)
				}
				cancel()
			}
			away, fenced = false, false
		default:
			if !away {
				a.log.Warn("node heartbeat failed", "err", err)
			}
			away = true
			if gone := time.Since(renewed); !fenced && gone >= leaseFor {
				fenced = true
				a.fence(gone, leaseFor)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// fence stops the instances marked stopOnDisconnect: the node has reached
// no server for gone, longer than its lease.
func (a *Agent) fence(gone, lease time.Duration) {
	msg := fmt.Sprintf("stopped by the node: it reached no server for %v, longer than its %v heartbeat lease, and the instance's workload is marked stopOnDisconnect (it is replaced elsewhere)",
		gone.Round(time.Second), lease)
	a.mu.Lock()
	var fenced []*supervisor
	for _, s := range a.sups {
		if s.instance().Spec.StopOnDisconnect {
			fenced = append(fenced, s)
		}
	}
	a.mu.Unlock()
	a.log.Warn("no server reached for longer than the node's lease: stopping the instances marked stopOnDisconnect", "for", gone.Round(time.Millisecond), "instances", len(fenced))
	for _, s := range fenced {
		s.fence(msg)
	}
}
