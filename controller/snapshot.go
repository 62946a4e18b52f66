package controller

import (
	"cmp"
	"slices"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/scheduler"
)

// holdsResources reports whether an instance takes room on its node: it
// is bound and has not finished.
func holdsResources(i *types.Instance) bool {
	return i.Spec.NodeName != "" && !terminal(i.Status.Phase)
}

// pending reports whether an instance waits for the scheduler.
func pending(i *types.Instance) bool {
	return i.Spec.NodeName == "" && !terminal(i.Status.Phase)
}

// snapshot is the cluster as the scheduler sees it: every node with its
// allocatable capacity, and what the instances bound to it take, so that
// nothing is placed on room an instance already holds. Instances bound to
// a node that is gone hold nothing.
func snapshot(nodes []*types.Node, insts []*types.Instance) scheduler.Snapshot {
	var snap scheduler.Snapshot
	index := make(map[string]int, len(nodes))
	slices.SortFunc(nodes, func(a, b *types.Node) int { return cmp.Compare(a.Name, b.Name) })
	for _, n := range nodes {
		index[n.Name] = len(snap.Nodes)
		snap.Nodes = append(snap.Nodes, types.SchedulerNode(n))
	}
	for _, i := range insts {
		if !holdsResources(i) {
			continue
		}
		n, ok := index[i.Spec.NodeName]
		if !ok {
			continue
		}
		t := &i.Spec.Template
		a := scheduler.Allocation{
			InstanceID: instanceID(i),
			NodeID:     i.Spec.NodeName,
			Group:      i.Namespace + "/" + i.Spec.Workload,
			Priority:   i.Spec.Placement.Priority,
			Request:    scheduler.Resources{MilliCPU: int64(t.Resources.Requests.CPU), MemoryBytes: int64(t.Resources.Requests.Memory)},
		}
		for _, p := range t.Ports {
			if p.HostPort != 0 {
				a.Ports = append(a.Ports, scheduler.Port(p.HostPort))
			}
		}
		snap.Allocations = append(snap.Allocations, a)
		snap.Nodes[n].Allocated = snap.Nodes[n].Allocated.Add(a.Request)
	}
	return snap
}

// instanceID is how the scheduler names an instance (as
// types.SchedulerInstance does).
func instanceID(i *types.Instance) string { return i.Namespace + "/" + i.Name }

// unschedulableMessage is the instance status message for a placement
// that failed.
func unschedulableMessage(reason string) string {
	return unschedulablePrefix + reason
}

const unschedulablePrefix = "cannot be scheduled: "
