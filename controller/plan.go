package controller

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/scheduler"
)

// Condition types and reasons on a workload's status, as Kubernetes names
// them for Deployments and Jobs.
const (
	ConditionAvailable   = "Available"
	ConditionProgressing = "Progressing"
	ConditionComplete    = "Complete"
	ConditionFailed      = "Failed"

	ReasonRolloutComplete        = "RolloutComplete"
	ReasonRollingOut             = "RollingOut"
	ReasonScaling                = "Scaling"
	ReasonMinimumAvailable       = "MinimumReplicasAvailable"
	ReasonMinimumUnavailable     = "MinimumReplicasUnavailable"
	ReasonCompletionsReached     = "CompletionsReached"
	ReasonBackoffLimitExceeded   = "BackoffLimitExceeded"
	conditionScheduled           = "Scheduled"
	reasonUnschedulable          = "Unschedulable"
	reasonScheduled              = "Scheduled"
	daemonNodeConstraintKey      = "node.id"
	defaultDaemonMaxUnavailable  = 1
	defaultServiceMaxUnavailable = 1
)

// view is what a workload's reconcile looks at: the workload, the hash of
// its template, the instances it owns and (for a daemon) the nodes.
type view struct {
	w         *types.Workload
	hash      string
	instances []*types.Instance
	nodes     []*types.Node
	now       time.Time
}

// plan is what a reconcile does: instances to make (for a daemon, the node
// each is for; "" otherwise), instances to delete, and the status to write
// (without history, which the caller records).
type plan struct {
	create []string
	delete []*types.Instance
	status types.WorkloadStatus
}

func terminal(p types.InstancePhase) bool {
	return p == types.PhaseSucceeded || p == types.PhaseFailed || p == types.PhaseStopped
}

func ready(i *types.Instance) bool {
	return !terminal(i.Status.Phase) && i.Status.Ready
}

// deletionOrder sorts instances to remove first before the others: not
// yet bound, then not ready, then the newest (the one that has done the
// least work), as Kubernetes picks pods to scale down.
func deletionOrder(a, b *types.Instance) int {
	rank := func(i *types.Instance) int {
		switch {
		case i.Spec.NodeName == "":
			return 0
		case !ready(i):
			return 1
		}
		return 2
	}
	return cmp.Or(cmp.Compare(rank(a), rank(b)),
		b.CreationTimestamp.Compare(a.CreationTimestamp),
		cmp.Compare(b.Name, a.Name))
}

// decide plans a workload of any kind.
func decide(v view) plan {
	var p plan
	switch v.w.Spec.Kind {
	case types.KindJob:
		p = decideJob(v)
	case types.KindDaemon:
		p = decideDaemon(v)
	default:
		p = decideService(v)
	}
	p.status.ObservedGeneration = v.w.Generation
	p.status.Revision = v.hash
	return p
}

func deref(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}

// rollingBounds resolves maxSurge and maxUnavailable against n instances
// (surge rounded up, unavailable down, as Kubernetes does); when both come
// to 0 one instance may be unavailable, or a rollout could never move.
func rollingBounds(s types.UpdateStrategy, n int32, defUnavailable int32) (surge, unavailable int32) {
	surge, unavailable = s.MaxSurge.Of(n, true), s.MaxUnavailable.Of(n, false)
	if surge == 0 && unavailable == 0 {
		unavailable = defUnavailable
	}
	return surge, unavailable
}

// decideService keeps replicas instances of the current template: failed
// and stopped instances are replaced, extra ones removed, and a changed
// template rolled out so that at most replicas+maxSurge instances exist and
// at least replicas-maxUnavailable are ready at every step.
func decideService(v view) plan {
	var p plan
	want := deref(v.w.Spec.Replicas, types.DefaultReplicas)
	surge, unavailable := rollingBounds(v.w.Spec.Strategy, want, defaultServiceMaxUnavailable)
	minReady := max(want-unavailable, 0)
	var cur, old []*types.Instance
	var readyCur, readyOld int32
	for _, i := range v.instances {
		switch {
		case terminal(i.Status.Phase):
			p.delete = append(p.delete, i)
		case i.Spec.Revision == v.hash:
			cur = append(cur, i)
			if ready(i) {
				readyCur++
			}
		default:
			old = append(old, i)
			if ready(i) {
				readyOld++
			}
		}
	}
	p.status = types.WorkloadStatus{Replicas: int32(len(cur) + len(old)), ReadyReplicas: readyCur + readyOld,
		UpdatedReplicas: int32(len(cur)), DesiredReplicas: want}

	slices.SortFunc(cur, deletionOrder)
	slices.SortFunc(old, deletionOrder)
	readyNow := readyCur + readyOld
	// Scale down the current revision first: its extra instances go, the
	// least advanced first.
	for int32(len(cur)) > want {
		if ready(cur[0]) {
			readyNow--
		}
		p.delete, cur = append(p.delete, cur[0]), cur[1:]
	}
	// Old instances go when that keeps minReady ready: the unready ones
	// always, ready ones while more than minReady are ready.
	for len(old) > 0 {
		if ready(old[0]) {
			if readyNow <= minReady {
				break
			}
			readyNow--
		}
		p.delete, old = append(p.delete, old[0]), old[1:]
	}
	total := int32(len(cur) + len(old))
	n := want - int32(len(cur))
	if len(old) > 0 {
		n = min(n, want+surge-total)
	}
	for range max(n, 0) {
		p.create = append(p.create, "")
	}
	p.status.Conditions = availability(v, p.status, minReady)
	return p
}

// availability sets the Available and Progressing conditions of a service
// or daemon from its counts.
func availability(v view, st types.WorkloadStatus, minReady int32) []types.Condition {
	conds := slices.Clone(v.w.Status.Conditions)
	now := v.now.UTC().Truncate(time.Second)
	if st.ReadyReplicas >= minReady {
		types.SetCondition(&conds, types.Condition{Type: ConditionAvailable, Status: types.ConditionTrue, Reason: ReasonMinimumAvailable,
			Message: fmt.Sprintf("%d of %d instances ready (at least %d needed)", st.ReadyReplicas, st.DesiredReplicas, minReady), LastTransitionTime: now})
	} else {
		types.SetCondition(&conds, types.Condition{Type: ConditionAvailable, Status: types.ConditionFalse, Reason: ReasonMinimumUnavailable,
			Message: fmt.Sprintf("%d of %d instances ready (at least %d needed)", st.ReadyReplicas, st.DesiredReplicas, minReady), LastTransitionTime: now})
	}
	prog := types.Condition{Type: ConditionProgressing, Status: types.ConditionTrue, LastTransitionTime: now}
	switch {
	case st.UpdatedReplicas == st.DesiredReplicas && st.Replicas == st.DesiredReplicas && st.ReadyReplicas == st.DesiredReplicas:
		prog.Reason, prog.Message = ReasonRolloutComplete, fmt.Sprintf("revision %s is rolled out: %d instances ready", v.hash, st.ReadyReplicas)
	case st.UpdatedReplicas < st.Replicas:
		prog.Reason, prog.Message = ReasonRollingOut, fmt.Sprintf("rolling out revision %s: %d of %d instances updated, %d ready", v.hash, st.UpdatedReplicas, st.DesiredReplicas, st.ReadyReplicas)
	default:
		prog.Reason, prog.Message = ReasonScaling, fmt.Sprintf("%d instances, %d ready, %d wanted", st.Replicas, st.ReadyReplicas, st.DesiredReplicas)
	}
	types.SetCondition(&conds, prog)
	return conds
}

// decideJob runs instances until completions have succeeded, parallelism
// at a time. Failed instances are kept (they count against backoffLimit
// and show what went wrong); stopped ones are replaced. Once complete or
// failed, a job stays so.
func decideJob(v view) plan {
	var p plan
	s := &v.w.Spec
	completions := deref(s.Completions, types.DefaultCompletions)
	parallelism := deref(s.Parallelism, types.DefaultParallelism)
	backoff := deref(s.BackoffLimit, types.DefaultBackoffLimit)
	var active []*types.Instance
	var succeeded, failed, readyN int32
	for _, i := range v.instances {
		switch i.Status.Phase {
		case types.PhaseSucceeded:
			succeeded++
		case types.PhaseFailed:
			failed++
		case types.PhaseStopped:
			p.delete = append(p.delete, i)
		default:
			active = append(active, i)
			if ready(i) {
				readyN++
			}
		}
	}
	conds := slices.Clone(v.w.Status.Conditions)
	st := types.WorkloadStatus{Replicas: int32(len(active)), ReadyReplicas: readyN, UpdatedReplicas: int32(len(active)),
		Succeeded: succeeded, Failed: failed, CompletionTime: v.w.Status.CompletionTime}
	now := v.now.UTC().Truncate(time.Second)
	finished := isTrue(conds, ConditionComplete) || isTrue(conds, ConditionFailed)
	switch {
	case finished:
	case succeeded >= completions:
		types.SetCondition(&conds, types.Condition{Type: ConditionComplete, Status: types.ConditionTrue, Reason: ReasonCompletionsReached,
			Message: fmt.Sprintf("%d of %d completions succeeded", succeeded, completions), LastTransitionTime: now})
		st.CompletionTime, finished = now, true
	case failed > backoff:
		types.SetCondition(&conds, types.Condition{Type: ConditionFailed, Status: types.ConditionTrue, Reason: ReasonBackoffLimitExceeded,
			Message: fmt.Sprintf("%d instances failed, more than the backoff limit of %d", failed, backoff), LastTransitionTime: now})
		st.CompletionTime, finished = now, true
	}
	want := min(parallelism, completions-succeeded)
	if finished {
		want = 0
	}
	st.DesiredReplicas = want
	slices.SortFunc(active, deletionOrder)
	for int32(len(active)) > want {
		p.delete, active = append(p.delete, active[0]), active[1:]
	}
	for range max(want-int32(len(active)), 0) {
		p.create = append(p.create, "")
	}
	st.Conditions = conds
	p.status = st
	return p
}

func isTrue(conds []types.Condition, t string) bool {
	c := types.FindCondition(conds, t)
	return c != nil && c.Status == types.ConditionTrue
}

// DaemonNode is the node a daemon's instance is for: where it is bound, or
// the node.id constraint it was made with.
func DaemonNode(i *types.Instance) string {
	if i.Spec.NodeName != "" {
		return i.Spec.NodeName
	}
	for _, c := range i.Spec.Placement.Constraints {
		if pc, err := scheduler.ParseConstraint(c); err == nil && pc.Key == daemonNodeConstraintKey && pc.Op == scheduler.OpEqual && len(pc.Values) == 1 {
			return pc.Values[0]
		}
	}
	return ""
}

// eligible reports whether a daemon should run on node n: it is not
// cordoned, matches every placement constraint and every NoSchedule or
// NoExecute taint but the unreachable one is tolerated. Readiness does not matter: an instance
// for a node that is not ready waits in Pending until it is.
func eligible(w *types.Workload, n *types.Node) bool {
	if n.Spec.Unschedulable {
		return false
	}
	sn := types.SchedulerNode(n)
	attr := func(k string) (string, bool) {
		switch k {
		case "node.id":
			return sn.ID, true
		case "node.zone":
			return sn.Zone, sn.Zone != ""
		case "node.rack":
			return sn.Rack, sn.Rack != ""
		}
		v, ok := n.Labels[k]
		return v, ok
	}
	for _, c := range w.Spec.Placement.Constraints {
		pc, err := scheduler.ParseConstraint(c)
		if err != nil {
			return false
		}
		if !pc.Matches(attr(pc.Key)) {
			return false
		}
	}
	for _, t := range n.Spec.Taints {
		// A daemon stays with its node while the node is unreachable
		// (Kubernetes' DaemonSet pods tolerate that taint too): the node
		// is the same machine when it comes back.
		if t.Effect == scheduler.PreferNoSchedule || isUnreachableTaint(t) {
			continue
		}
		if !slices.ContainsFunc(w.Spec.Placement.Tolerations, func(tol scheduler.Toleration) bool { return tol.Tolerates(t) }) {
			return false
		}
	}
	return true
}

// decideDaemon keeps one instance on every eligible node, removes those on
// nodes that are no longer eligible (or gone), and rolls a changed
// template out node by node, at most maxUnavailable (default 1) nodes
// without a ready instance at a time.
func decideDaemon(v view) plan {
	var p plan
	byNode := map[string][]*types.Instance{}
	for _, i := range v.instances {
		if terminal(i.Status.Phase) {
			p.delete = append(p.delete, i)
			continue
		}
		n := DaemonNode(i)
		byNode[n] = append(byNode[n], i)
	}
	var nodes []*types.Node
	for _, n := range v.nodes {
		if eligible(v.w, n) {
			nodes = append(nodes, n)
		}
	}
	slices.SortFunc(nodes, func(a, b *types.Node) int { return cmp.Compare(a.Name, b.Name) })
	desired := int32(len(nodes))
	_, maxUnavailable := rollingBounds(v.w.Spec.Strategy, desired, defaultDaemonMaxUnavailable)
	want := map[string]bool{}
	var kept []*types.Instance
	var readyN, updated, unavailable int32
	for _, n := range nodes {
		want[n.Name] = true
		insts := byNode[n.Name]
		if len(insts) == 0 {
			p.create = append(p.create, n.Name)
			unavailable++
			continue
		}
		// Keep the best one: current revision, then ready, then oldest.
		slices.SortFunc(insts, func(a, b *types.Instance) int {
			score := func(i *types.Instance) int {
				s := 0
				if i.Spec.Revision == v.hash {
					s += 2
				}
				if ready(i) {
					s++
				}
				return -s
			}
			return cmp.Or(cmp.Compare(score(a), score(b)), a.CreationTimestamp.Compare(b.CreationTimestamp), cmp.Compare(a.Name, b.Name))
		})
		p.delete = append(p.delete, insts[1:]...)
		k := insts[0]
		kept = append(kept, k)
		if ready(k) {
			readyN++
		} else {
			unavailable++
		}
		if k.Spec.Revision == v.hash {
			updated++
		}
	}
	for n, insts := range byNode {
		if !want[n] {
			p.delete = append(p.delete, insts...)
		}
	}
	// Roll out: an old instance that is not ready goes at once; a ready one
	// only while fewer than maxUnavailable nodes lack a ready instance.
	slices.SortFunc(kept, deletionOrder)
	for _, k := range kept {
		if k.Spec.Revision == v.hash {
			continue
		}
		if ready(k) {
			if unavailable >= maxUnavailable {
				continue
			}
			unavailable++
		}
		p.delete = append(p.delete, k)
	}
	p.status = types.WorkloadStatus{Replicas: int32(len(kept)), ReadyReplicas: readyN, UpdatedReplicas: updated, DesiredReplicas: desired}
	p.status.Conditions = availability(v, p.status, max(desired-maxUnavailable, 0))
	return p
}
