package types

import (
	"time"

	"nexus.dev/nexus/scheduler"
)

// A node's heartbeat is a lease in the store, not a write of its Node:
// the agent calls POST /v1/nodes/{name}/heartbeat every second, and the
// server keeps the key NodeLeasePrefix+name attached to a store lease of
// the node's lease duration, granted when the key is missing and kept
// alive otherwise. The store deletes the key when the lease runs out, so
// a node that stopped heartbeating is seen by a watch at once, without
// polling, and any server can renew any node's lease (it keeps nothing
// in memory).

// NodeLeasePrefix is where the store keeps the nodes' heartbeat leases:
// one key per node, NodeLeasePrefix + node name.
const NodeLeasePrefix = "/nexus/leases/nodes/"

// DefaultNodeLeaseSeconds is how long a node's lease lives after its last
// heartbeat unless the server is told otherwise. Leases count in whole
// seconds (the store's granularity).
const DefaultNodeLeaseSeconds = 3

// Node condition and taint names the node lifecycle controller uses.
const (
	// NodeReady is the condition that says whether a node runs instances.
	NodeReady = "Ready"
	// ReasonNodeLeaseExpired is the reason of a Ready=False condition set
	// because the node's heartbeat lease ran out.
	ReasonNodeLeaseExpired = "NodeLeaseExpired"
	// ReasonNodeLeaseRenewed is the reason of the Ready=True condition
	// the controller sets back when the lease of such a node is renewed.
	ReasonNodeLeaseRenewed = "NodeLeaseRenewed"
	// TaintUnreachable (effect NoExecute) is on a node whose lease ran
	// out, as Kubernetes' node.kubernetes.io/unreachable: new instances
	// go elsewhere, and the instances on it are evicted after their
	// toleration of it (tolerationSeconds; by default
	// DefaultEvictionSeconds).
	TaintUnreachable = "node.nexus.dev/unreachable"
	// DefaultEvictionSeconds is how long an instance stays bound to an
	// unreachable node when it has no toleration for TaintUnreachable.
	DefaultEvictionSeconds = 10
)

// NodeHeartbeat is the answer to a node's heartbeat: the lease the server
// renewed (or granted) for it.
type NodeHeartbeat struct {
	Node string `json:"node"`
	// LeaseDurationSeconds is how long the lease lives without another
	// heartbeat.
	LeaseDurationSeconds int64 `json:"leaseDurationSeconds"`
	// EvictionSeconds is how long the cluster leaves an instance without
	// a toleration on a node whose lease ran out before replacing it
	// (DefaultEvictionSeconds when 0). An agent cut off from the servers
	// stops its stopOnDisconnect instances half-way through their
	// eviction time, counted from the lease's end.
	EvictionSeconds int64 `json:"evictionSeconds,omitempty"`
	// Acquired is true when this heartbeat granted a new lease: the node
	// had none (its first heartbeat, or it was away longer than a lease).
	Acquired bool `json:"acquired,omitempty"`
}

// NodeLeaseKey is the store key of node's heartbeat lease.
func NodeLeaseKey(node string) string { return NodeLeasePrefix + node }

// MaxTolerationSeconds caps a tolerationSeconds so that its Duration
// cannot overflow: a century is for ever.
const MaxTolerationSeconds = 100 * 365 * 24 * 3600

// UnreachableToleration is how long an instance with tolerations tols
// stays bound to an unreachable node, as Kubernetes reads
// tolerationSeconds: the least tolerationSeconds of the tolerations that
// match the unreachable taint; forever when some match and none bounds it;
// def (the eviction grace) when none match. The node lifecycle controller
// evicts by it, and an agent cut off from the servers fences by it.
func UnreachableToleration(tols []scheduler.Toleration, def time.Duration) (d time.Duration, forever bool) {
	taint := scheduler.Taint{Key: TaintUnreachable, Effect: scheduler.NoExecute}
	matched, bounded := false, false
	for _, t := range tols {
		if !t.Tolerates(taint) {
			continue
		}
		matched = true
		if t.Seconds == nil {
			continue
		}
		s := time.Duration(min(max(*t.Seconds, 0), MaxTolerationSeconds)) * time.Second
		if !bounded || s < d {
			d, bounded = s, true
		}
	}
	switch {
	case bounded:
		return d, false
	case matched:
		return 0, true
	}
	return def, false
}
