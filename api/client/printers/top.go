package printers

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"

	"nexus.dev/nexus/api/types"
)

// TopSort orders the rows of `nexus top`.
type TopSort string

const (
	TopByName   TopSort = ""       // namespace, then name
	TopByCPU    TopSort = "cpu"    // most CPU first
	TopByMemory TopSort = "memory" // most memory first
)

// ParseTopSort reads a --sort-by value.
func ParseTopSort(s string) (TopSort, error) {
	switch TopSort(s) {
	case TopByName, TopByCPU, TopByMemory:
		return TopSort(s), nil
	case "name":
		return TopByName, nil
	}
	return "", fmt.Errorf("cannot sort by %q: use cpu, memory or name", s)
}

// Measured returns the instances whose status has a measurement of their
// resource use (running, or run before on a node).
func Measured(insts []*types.Instance) []*types.Instance {
	var out []*types.Instance
	for _, i := range insts {
		if i.Status.Resources != nil {
			out = append(out, i)
		}
	}
	return out
}

// TopInstances writes what each measured instance uses, as `nexus top`
// lists it: CPU in millicores, memory (the working set), memory as a
// percentage of the instance's limit, and the OOM kills of its containers.
// Instances without a measurement are left out.
func TopInstances(w io.Writer, insts []*types.Instance, by TopSort, o Options) error {
	insts = Measured(insts)
	slices.SortFunc(insts, func(a, b *types.Instance) int {
		ra, rb := a.Status.Resources, b.Status.Resources
		byName := cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
		switch by {
		case TopByCPU:
			return cmp.Or(cmp.Compare(rb.CPUMillicores, ra.CPUMillicores), byName)
		case TopByMemory:
			return cmp.Or(cmp.Compare(rb.MemoryBytes, ra.MemoryBytes), byName)
		}
		return byName
	})
	t := newTable(topColumns, o.AllNamespaces, false)
	for _, i := range insts {
		t.add(t.row("", i, rowEnv{}))
	}
	return t.flush(w, o.NoHeaders)
}

var topColumns = []column{
	nameCol(), instanceWorkloadCol, instanceNodeCol,
	usageCol("CPU(m)", func(r *types.InstanceUsage) string { return strconv.FormatInt(r.CPUMillicores, 10) }),
	usageCol("MEMORY", func(r *types.InstanceUsage) string { return memoryAmount(r.MemoryBytes) }),
	usageCol("MEM%", func(r *types.InstanceUsage) string { return percent(r.MemoryBytes, r.MemoryLimitBytes) }),
	usageCol("OOM", func(r *types.InstanceUsage) string { return strconv.FormatInt(r.OOMKills, 10) }),
}

// usageCol is a column of an instance's measured use (top's rows are
// measured instances only).
func usageCol(name string, f func(*types.InstanceUsage) string) column {
	return typed(name, func(i *types.Instance) string { return f(i.Status.Resources) })
}

// TopNodes writes what the measured instances on each node use together,
// and how much of the node's capacity that is: a node with no measured
// instance shows zero. Nodes are sorted as by says (CPU or memory use,
// else name).
func TopNodes(w io.Writer, nodes []*types.Node, insts []*types.Instance, by TopSort, o Options) error {
	type sum struct {
		cpu, mem, oom int64
		n             int
	}
	sums := map[string]*sum{}
	for _, n := range nodes {
		sums[n.Name] = &sum{}
	}
	for _, i := range Measured(insts) {
		s := sums[i.Spec.NodeName]
		if s == nil {
			continue // bound to a node that is gone
		}
		r := i.Status.Resources
		s.cpu += r.CPUMillicores
		s.mem += r.MemoryBytes
		s.oom += r.OOMKills
		s.n++
	}
	nodes = slices.Clone(nodes)
	slices.SortFunc(nodes, func(a, b *types.Node) int {
		sa, sb := sums[a.Name], sums[b.Name]
		switch by {
		case TopByCPU:
			return cmp.Or(cmp.Compare(sb.cpu, sa.cpu), cmp.Compare(a.Name, b.Name))
		case TopByMemory:
			return cmp.Or(cmp.Compare(sb.mem, sa.mem), cmp.Compare(a.Name, b.Name))
		}
		return cmp.Compare(a.Name, b.Name)
	})
	t := &table{header: []string{"NODE", "CPU(m)", "CPU%", "MEMORY", "MEM%", "INSTANCES", "OOM"}}
	for _, n := range nodes {
		s := sums[n.Name]
		c := n.Status.Capacity
		t.add([]string{n.Name, strconv.FormatInt(s.cpu, 10), percent(s.cpu, int64(c.CPU)), memoryAmount(s.mem),
			percent(s.mem, int64(c.Memory)), strconv.Itoa(s.n), strconv.FormatInt(s.oom, 10)})
	}
	return t.flush(w, o.NoHeaders)
}

// memoryAmount writes bytes as kubectl top does: whole MiB ("52Mi"),
// KiB below one MiB.
func memoryAmount(b int64) string {
	switch {
	case b == 0:
		return "0"
	case b < 1<<20:
		return strconv.FormatInt((b+1<<9)>>10, 10) + "Ki"
	}
	return strconv.FormatInt((b+1<<19)>>20, 10) + "Mi"
}

// percent is part of whole in whole percent, or none when whole is not
// known (no limit, no capacity reported).
func percent(part, whole int64) string {
	if whole <= 0 {
		return none
	}
	return strconv.FormatInt((part*100+whole/2)/whole, 10) + "%"
}
