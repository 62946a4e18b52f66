// Package controller holds the control plane's reconcile loops: the
// workload controller (a service keeps its replicas, a job runs to its
// completions, a daemon runs on every eligible node; rolling updates,
// rollout history, garbage collection of orphaned instances) and the
// scheduler's wiring (pending instances placed by the pure scheduler
// package and bound with a compare-and-swap).
//
// Controllers reach state only through the API with api/client, as the
// server's own identity, so validation, RBAC and audit apply to them as to
// anyone. The one exception is the node-IPAM controller (nodeipam.go),
// which claims each Node's container prefixes in the store through
// networking.IPAM before it writes them into the Node through the API. Each kind they read is mirrored into a local cache by a list and
// a watch (client.Follow, which resumes across dropped connections and
// lists again after a 410); changes put keys on work queues; a worker
// reconciles one key at a time from the cache, level-triggered (it looks at
// the whole state, not at the event), so a missed or repeated event costs
// nothing, and every key is requeued on a periodic resync.
//
// The node-IPAM controller (Config.NodeIPAM) gives every Node its
// container prefixes and releases those of deleted Nodes.
//
// The endpoints controller (endpoints.go, decisions in endpointsplan.go)
// keeps one Endpoints per Service: the instances of its namespace its
// selector matches, with node, addresses and readiness. A change of an
// instance queues the Services that select it, so a readiness change
// reaches the Endpoints in one reconcile (milliseconds), and the Service's
// Endpoints condition says when nothing matches or nothing is ready. The
// Endpoints of a deleted Service are deleted.
//
// The decisions themselves are pure functions (plan.go: instances and a
// workload in, creations, deletions and a status out; snapshot.go: nodes
// and instances in, a scheduler snapshot out), tested by tables; the I/O
// is in workload.go and schedule.go.
//
// What a controller writes goes into its cache at once, ordered by
// resourceVersion against the watch's events (a deleted object leaves a
// tombstone so that an older event cannot bring it back), so the next
// reconcile sees its own writes without waiting for the watch and never
// creates an instance twice.
//
// The node lifecycle controller (nodelifecycle.go, decisions in
// nodeplan.go) watches the nodes' heartbeat leases in the store
// (types.NodeLeasePrefix): a node whose lease runs out is NotReady
// (reason NodeLeaseExpired) and tainted node.nexus.dev/unreachable:
// NoExecute at once, and each of its instances is deleted, for its
// workload to replace elsewhere, once the node has been unreachable for
// as long as the instance tolerates (tolerationSeconds, default 10 s;
// a daemon's for ever). Drain (drain.go) empties a node without taking a
// workload below replicas - maxUnavailable ready.
//
// Controllers.Run runs everything until its context ends. Only one copy
// should run in a cluster: RunElected (leader.go) runs it on the server
// that holds the election on ElectionKey, and stops it the moment that
// server may no longer be the leader.
package controller
