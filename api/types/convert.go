package types

import (
	"fmt"
	"slices"

	"nexus.dev/nexus/scheduler"
)

// SchedulerInstance converts an instance to what the scheduler places: the
// one place where API placement meets scheduler placement. The group is
// namespace/workload, so anti-affinity and spread count per workload.
func SchedulerInstance(inst *Instance) (scheduler.Instance, error) {
	t, pl := &inst.Spec.Template, &inst.Spec.Placement
	group := func(w string) string { return inst.Namespace + "/" + w }
	si := scheduler.Instance{
		ID:          inst.Namespace + "/" + inst.Name,
		Group:       group(inst.Spec.Workload),
		Request:     scheduler.Resources{MilliCPU: int64(t.Resources.Requests.CPU), MemoryBytes: int64(t.Resources.Requests.Memory)},
		Tolerations: pl.Tolerations,
		Priority:    pl.Priority,
		Image:       t.Image,
	}
	if t.Isolation != "" && t.Isolation != IsolationContainer {
		si.Tier = string(t.Isolation)
	}
	for _, p := range t.Ports {
		if p.HostPort != 0 {
			si.HostPorts = append(si.HostPorts, scheduler.Port(p.HostPort))
		}
	}
	for i, c := range pl.Constraints {
		pc, err := scheduler.ParseConstraint(c)
		if err != nil {
			return scheduler.Instance{}, fmt.Errorf("spec.placement.constraints[%d]: %w", i, err)
		}
		si.Constraints = append(si.Constraints, pc)
	}
	for i, a := range pl.Affinities {
		pc, err := scheduler.ParseConstraint(a.Constraint)
		if err != nil {
			return scheduler.Instance{}, fmt.Errorf("spec.placement.affinities[%d].constraint: %w", i, err)
		}
		si.Affinities = append(si.Affinities, scheduler.Affinity{Constraint: pc, Weight: a.Weight})
	}
	for _, a := range pl.AntiAffinity {
		if a.Group == "" {
			a.Group = inst.Spec.Workload
		}
		a.Group = group(a.Group)
		si.AntiAffinity = append(si.AntiAffinity, a)
	}
	if pl.Spread != nil {
		s := *pl.Spread
		si.Spread = &s
	} else {
		si.Spread = &scheduler.Spread{Topology: DefaultSpreadTopology}
	}
	return si, nil
}

// DefaultSpreadTopology is what a workload's instances spread over, softly,
// when its placement names no spread: the nodes. Without it the default
// binpack strategy stacked replicas on the nodes placed first (6 replicas on
// 3 equal nodes went 3, 2, 1), so losing one node lost most of a service;
// Kubernetes spreads a workload's pods over nodes by default (its default
// topology spread constraints) and Nomad scores a job's allocations apart
// (job anti-affinity).
const DefaultSpreadTopology = "node.id"

// Node labels that give the scheduler a node's zone and rack (the
// topologies "zone" and "rack" of spread and anti-affinity).
const (
	LabelZone = "topology.nexus.dev/zone"
	LabelRack = "topology.nexus.dev/rack"
	// TaintUnschedulable is the taint a cordoned node (spec.unschedulable)
	// carries for the scheduler, as Kubernetes does: an instance that
	// tolerates it may still go there.
	TaintUnschedulable = "node.nexus.dev/unschedulable"
)

// SchedulerNode converts a node to what the scheduler places on: Ready
// when its Ready condition is True, capacity its allocatable (its capacity
// when the agent reports no allocatable), a cordoned node tainted
// NoSchedule. Allocated and Generation are the caller's: they come from
// the instances bound to it.
func SchedulerNode(n *Node) scheduler.Node {
	capacity := n.Status.Allocatable
	if capacity == (ResourceList{}) {
		capacity = n.Status.Capacity
	}
	sn := scheduler.Node{
		ID:       n.Name,
		Capacity: scheduler.Resources{MilliCPU: int64(capacity.CPU), MemoryBytes: int64(capacity.Memory)},
		Labels:   n.Labels,
		Taints:   n.Spec.Taints,
		Zone:     n.Labels[LabelZone],
		Rack:     n.Labels[LabelRack],
		Images:   n.Status.Images,
	}
	if c := FindCondition(n.Status.Conditions, "Ready"); c != nil && c.Status == ConditionTrue {
		sn.Ready = true
	}
	if n.Spec.Unschedulable {
		sn.Taints = append(slices.Clone(sn.Taints), scheduler.Taint{Key: TaintUnschedulable, Effect: scheduler.NoSchedule})
	}
	for _, t := range n.Status.Tiers {
		sn.Tiers = append(sn.Tiers, string(t))
	}
	return sn
}
