// Package scheduler decides where instances run: a pure function from a
// cluster snapshot and instances to placement decisions, with no I/O, no
// clock and all randomness from one seeded PCG, so a decision can be
// replayed and tested (the way etcd's raft is a pure state machine).
//
// # Shape
//
// NewState indexes a Snapshot once: nodes become int32 indexes, every node
// attribute (labels, node.id, node.zone, node.rack) becomes a column of
// interned values, and counts per group per node and per topology domain
// are kept. A Scheduler owns a State and applies each Decision to it before
// the next placement, so PlaceBatch sees its own earlier choices
// (incremental updates, O(1)-ish per allocation).
//
// Placement reads like Nomad's iterator chain: a feasibility chain of small
// checks (checks.go), each with one job, cheapest first — ready, cpu,
// memory, host ports, isolation tier, constraints (=, !=, in, not in,
// regexp, version range, exists), taints, hard anti-affinity (distinct
// hosts or per domain), hard topology spread — then a scorer (binpack or
// spread fit, weighted affinities, soft anti-affinity, soft spread, image
// locality, PreferNoSchedule), then a limit on how many feasible nodes get
// scored.
//
// # Why it is fast enough for 10,000 nodes
//
// Constraints are compiled once per distinct constraint into a table over
// the interned values of one column (a regexp or version range runs once
// per distinct label value, not per node), so a check is an array lookup.
// Ready nodes sit in buckets by the scarcer of their free cpu and free
// memory, on a log scale (16 steps per doubling, so about 6 % apart at
// every level, which matters on a full cluster where most nodes have
// little left). A scan starts at the lowest bucket that can hold the
// request (every skipped node provably lacks cpu or memory) and walks up
// for binpack (fullest first, which is what packs a uniform workload onto
// the lower bound of nodes) or down from the emptiest for SpreadLoad.
// Inside a bucket it starts at a seeded offset. It stops once ScoreLimit
// feasible nodes were found (log2(n) like Nomad, 2 for Batch instances —
// power of two choices — and a wider PreferenceScoreLimit for instances
// with soft preferences, which need to see more of the cluster). Nodes are
// int32 indexes into slices, the per-node loop touches no maps, and
// scratch slices are reused, so a placement allocates little more than its
// Decision.
//
// The limit only bounds scoring: the scan keeps going until it has found
// that many feasible nodes or has visited every node that could hold the
// request, and every candidate passed the whole chain. So sampling never
// admits a node that breaks a hard rule, and never reports "unplaceable"
// while a feasible node exists.
//
// # Explanations
//
// When nothing fits, the scan has run the chain over every node that could
// hold the request, counting which check refused each; nodes outside the
// buckets are counted as not ready and nodes below the start bucket as cpu
// or memory exhausted. The result reads "cpu exhausted on 8,112 nodes;
// constraint zone=eu filtered 1,800; port 80 taken on 88".
//
// # Preemption
//
// Only when nothing fits, and only strictly lower priorities are evicted;
// see preempt.go for the victim choice and why it cannot ping-pong.
//
// # Several schedulers
//
// A Decision carries the node Generation it assumed and the State bumps the
// generation once per applied decision (and per Release). The binder writes
// the node's allocation record with a compare-and-swap on that generation;
// a conflict means another scheduler placed there first, and the instance
// is retried against a fresh snapshot. Victims live on the decision's node,
// so the same generation covers them.
//
// # Hard spread semantics
//
// As in kube-scheduler's topology spread, skew is measured over eligible
// domains: those holding at least one node the instance's static checks
// (readiness, tier, constraints, taints) accept, so a zone the instance may
// never use does not pin the minimum at zero.
package scheduler
