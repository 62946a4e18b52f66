package printers

import (
	"bytes"
	"strings"
	"testing"

	"nexus.dev/nexus/api/types"
)

func topInstance(ns, name, node string, u *types.InstanceUsage) *types.Instance {
	i := &types.Instance{Spec: types.InstanceSpec{Workload: "web", NodeName: node}, Status: types.InstanceStatus{Resources: u}}
	i.Name, i.Namespace = name, ns
	return i
}

func topInstances() []*types.Instance {
	return []*types.Instance{
		topInstance("default", "web-b", "n1", &types.InstanceUsage{CPUMillicores: 250, MemoryBytes: 52<<20 + 300<<10, MemoryLimitBytes: 128 << 20, SampledAt: now}),
		topInstance("default", "web-a", "n2", &types.InstanceUsage{CPUMillicores: 3, MemoryBytes: 900 << 20, OOMKills: 2, SampledAt: now}),
		topInstance("prod", "api-x", "n1", &types.InstanceUsage{CPUMillicores: 1200, MemoryBytes: 512 << 10, MemoryLimitBytes: 1 << 30, SampledAt: now}),
		topInstance("default", "pending", "", nil), // not measured: left out
	}
}

func TestTopInstances(t *testing.T) {
	for _, tc := range []struct {
		name string
		by   TopSort
		o    Options
		want string
	}{
		{"by name", TopByName, Options{}, `
NAME    WORKLOAD   NODE   CPU(m)   MEMORY   MEM%     OOM
web-a   web        n2     3        900Mi    <none>   2
web-b   web        n1     250      52Mi     41%      0
api-x   web        n1     1200     512Ki    0%       0
`},
		{"by cpu, all namespaces", TopByCPU, Options{AllNamespaces: true}, `
NAMESPACE   NAME    WORKLOAD   NODE   CPU(m)   MEMORY   MEM%     OOM
prod        api-x   web        n1     1200     512Ki    0%       0
default     web-b   web        n1     250      52Mi     41%      0
default     web-a   web        n2     3        900Mi    <none>   2
`},
		{"by memory, no headers", TopByMemory, Options{NoHeaders: true}, `
web-a   web   n2   3      900Mi   <none>   2
web-b   web   n1   250    52Mi    41%      0
api-x   web   n1   1200   512Ki   0%       0
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := TopInstances(&b, topInstances(), tc.by, tc.o); err != nil {
				t.Fatal(err)
			}
			want := strings.TrimPrefix(tc.want, "\n")
			if b.String() != want {
				t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
			}
		})
	}
}

func TestTopNodes(t *testing.T) {
	n1 := &types.Node{Status: types.NodeStatus{Capacity: types.ResourceList{CPU: 2000, Memory: 4 << 30}}}
	n1.Name = "n1"
	n2 := &types.Node{Status: types.NodeStatus{Capacity: types.ResourceList{CPU: 4000, Memory: 8 << 30}}}
	n2.Name = "n2"
	n3 := &types.Node{} // registered, no capacity reported yet
	n3.Name = "n3"
	insts := append(topInstances(), topInstance("default", "orphan", "gone", &types.InstanceUsage{CPUMillicores: 99, SampledAt: now}))
	var b bytes.Buffer
	if err := TopNodes(&b, []*types.Node{n3, n2, n1}, insts, TopByCPU, Options{}); err != nil {
		t.Fatal(err)
	}
	want := `NODE   CPU(m)   CPU%     MEMORY   MEM%     INSTANCES   OOM
n1     1450     73%      53Mi     1%       2           0
n2     3        0%       900Mi    11%      1           2
n3     0        <none>   0        <none>   0           0
`
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestParseTopSort(t *testing.T) {
	for in, want := range map[string]TopSort{"": TopByName, "name": TopByName, "cpu": TopByCPU, "memory": TopByMemory} {
		if got, err := ParseTopSort(in); err != nil || got != want {
			t.Errorf("ParseTopSort(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseTopSort("mem"); err == nil || !strings.Contains(err.Error(), "use cpu, memory or name") {
		t.Errorf("ParseTopSort(mem) error %v", err)
	}
}
