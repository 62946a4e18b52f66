package controller

import (
	"fmt"
	"slices"
	"time"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/scheduler"
)

// unreachableTaint is what the node lifecycle controller puts on a node
// whose heartbeat lease ran out.
var unreachableTaint = scheduler.Taint{Key: types.TaintUnreachable, Effect: scheduler.NoExecute}

// nodeView is what a node's lifecycle decision looks at.
type nodeView struct {
	node *types.Node
	// held says whether the node holds a heartbeat lease now; lostAt is
	// when it lost it (or, for a node that never had one since this
	// controller started, when it would have run out).
	held   bool
	lostAt time.Time
	// instances are the live instances bound to the node; tolerates says
	// for how long one stays on an unreachable node (forever false: it is
	// never evicted, as a daemon's).
	instances []*types.Instance
	tolerates func(*types.Instance) (d time.Duration, forever bool)
	now       time.Time
}

// nodePlan is what the node lifecycle controller does to one node: the
// Ready condition to set (nil: leave it), whether to add or remove the
// unreachable taint, the instances to evict now, and when to look again
// for the next eviction (0: no need).
type nodePlan struct {
	ready       *types.Condition
	addTaint    bool
	removeTaint bool
	evict       []*types.Instance
	requeue     time.Duration
}

// decideNode is the node lifecycle decision, as Kubernetes' node
// lifecycle controller makes it: a node without a lease is NotReady
// (reason NodeLeaseExpired) and tainted unreachable:NoExecute at once;
// each of its instances is evicted once the node has been unreachable for
// as long as the instance tolerates. A node whose lease is back loses the
// taint, and the controller's own NotReady verdict is lifted (the agent's
// status publish keeps Ready current from then on).
func decideNode(v nodeView) nodePlan {
	var p nodePlan
	ready := types.FindCondition(v.node.Status.Conditions, types.NodeReady)
	tainted := slices.ContainsFunc(v.node.Spec.Taints, isUnreachableTaint)
	now := v.now.UTC().Truncate(time.Second)
	if v.held {
		p.removeTaint = tainted
		if ready != nil && ready.Status == types.ConditionFalse && ready.Reason == types.ReasonNodeLeaseExpired {
			p.ready = &types.Condition{Type: types.NodeReady, Status: types.ConditionTrue, Reason: types.ReasonNodeLeaseRenewed,
				Message: "the node's agent heartbeats again", LastTransitionTime: now}
		}
		return p
	}
	if v.now.Before(v.lostAt) {
		p.requeue = v.lostAt.Sub(v.now)
		return p
	}
	if ready == nil || ready.Status != types.ConditionFalse || ready.Reason != types.ReasonNodeLeaseExpired {
		p.ready = &types.Condition{Type: types.NodeReady, Status: types.ConditionFalse, Reason: types.ReasonNodeLeaseExpired,
			Message: fmt.Sprintf("no heartbeat since %s: the node's lease ran out, so its agent reaches no server (or is down); its instances are evicted after their toleration of %s (default %d s)",
				v.lostAt.UTC().Format(time.RFC3339), types.TaintUnreachable, types.DefaultEvictionSeconds),
			LastTransitionTime: now}
	}
	p.addTaint = !tainted
	for _, i := range v.instances {
		d, forever := v.tolerates(i)
		if forever {
			continue
		}
		due := v.lostAt.Add(d)
		if !v.now.Before(due) {
			p.evict = append(p.evict, i)
			continue
		}
		if wait := due.Sub(v.now); p.requeue == 0 || wait < p.requeue {
			p.requeue = wait
		}
	}
	return p
}

func isUnreachableTaint(t scheduler.Taint) bool {
	return t.Key == unreachableTaint.Key && t.Effect == unreachableTaint.Effect
}
