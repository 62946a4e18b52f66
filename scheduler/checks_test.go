package scheduler

import (
	"fmt"
	"strings"
	"testing"
)

const gib = int64(1) << 30

func node(id string, mods ...func(*Node)) Node {
	n := Node{ID: id, Capacity: Resources{4000, 8 * gib}, Ready: true, Zone: "z1", Tiers: []string{"container"}, Labels: map[string]string{}}
	for _, m := range mods {
		m(&n)
	}
	return n
}

func mustState(t testing.TB, snap Snapshot) *State {
	t.Helper()
	s, err := NewState(snap)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func small(id string) Instance {
	return Instance{ID: id, Group: "g", Request: Resources{100, gib / 8}}
}

// placeOn returns the node an instance lands on, or "" with the reason.
func placeOn(t *testing.T, sch *Scheduler, in Instance) (string, string) {
	t.Helper()
	r := sch.Place(&in)
	if r.Decision != nil {
		return r.Decision.NodeID, ""
	}
	return "", r.Unplaceable.Reason
}

func TestChecks(t *testing.T) {
	tests := []struct {
		name  string
		nodes []Node
		inst  func(*Instance)
		want  string // node id, or "" for unplaceable
		why   string // substring of the reason when unplaceable
	}{
		{"ready", []Node{node("a", func(n *Node) { n.Ready = false }), node("b")}, nil, "b", ""},
		{"not ready anywhere", []Node{node("a", func(n *Node) { n.Ready = false })}, nil, "", "not ready on 1 node"},
		{"cpu", []Node{node("a", func(n *Node) { n.Allocated.MilliCPU = 3950 }), node("b", func(n *Node) { n.Allocated.MilliCPU = 3900 })}, nil, "b", ""},
		{"memory", []Node{node("a", func(n *Node) { n.Allocated.MemoryBytes = 8*gib - 1 })}, nil, "", "memory exhausted on 1 node"},
		{"tier", []Node{node("a"), node("b", func(n *Node) { n.Tiers = append(n.Tiers, "vm") })}, func(i *Instance) { i.Tier = "vm" }, "b", ""},
		{"tier nowhere", []Node{node("a")}, func(i *Instance) { i.Tier = "sandbox" }, "", "tier sandbox unavailable on 1 node"},
		{"equal", []Node{node("a", label("zone", "us")), node("b", label("zone", "eu"))}, constrain("zone=eu"), "b", ""},
		{"not equal", []Node{node("a", label("zone", "eu")), node("b", label("zone", "us"))}, constrain("zone!=eu"), "b", ""},
		{"in", []Node{node("a", label("gpu", "t4")), node("b", label("gpu", "h100"))}, constrain("gpu in (a100,h100)"), "b", ""},
		{"not in", []Node{node("a", label("gpu", "t4")), node("b")}, constrain("gpu not in (t4)"), "b", ""},
		{"regexp", []Node{node("a", label("os", "darwin")), node("b", label("os", "linux"))}, constrain("os =~ ^lin"), "b", ""},
		{"version", []Node{node("a", label("kernel", "5.4.0")), node("b", label("kernel", "6.1.2")), node("c", label("kernel", "7.0"))}, constrain("kernel version >=5.15, <7.0"), "b", ""},
		{"exists", []Node{node("a"), node("b", label("ssd", "yes"))}, constrain("ssd exists"), "b", ""},
		{"node field", []Node{node("a"), node("b")}, constrain("node.id=b"), "b", ""},
		{"constraint nowhere", []Node{node("a", label("zone", "us"))}, constrain("zone=eu"), "", "constraint zone=eu filtered 1"},
		{"unknown label", []Node{node("a")}, constrain("rack=r9"), "", "constraint rack=r9 filtered 1"},
		{"taint untolerated", []Node{node("a", taint("gpu", "true", NoSchedule)), node("b")}, nil, "b", ""},
		{"taint NoExecute", []Node{node("a", taint("gpu", "true", NoExecute))}, nil, "", "untolerated taint on 1 node"},
		{"taint tolerated", []Node{node("a", taint("gpu", "true", NoSchedule))}, tolerate(Toleration{Key: "gpu", Value: "true"}), "a", ""},
		{"taint tolerated by exists", []Node{node("a", taint("gpu", "x", NoSchedule))}, tolerate(Toleration{Key: "gpu", Exists: true}), "a", ""},
		{"toleration wrong value", []Node{node("a", taint("gpu", "x", NoSchedule))}, tolerate(Toleration{Key: "gpu", Value: "y"}), "", "untolerated taint"},
		{"toleration wrong effect", []Node{node("a", taint("gpu", "x", NoSchedule))}, tolerate(Toleration{Key: "gpu", Exists: true, Effect: NoExecute}), "", "untolerated taint"},
		{"tolerate everything", []Node{node("a", taint("gpu", "x", NoSchedule), taint("d", "y", NoExecute))}, tolerate(Toleration{Exists: true}), "a", ""},
		{"prefer no schedule only scores", []Node{node("a", taint("slow", "1", PreferNoSchedule))}, nil, "a", ""},
		{"prefer no schedule avoided", []Node{node("a", taint("slow", "1", PreferNoSchedule)), node("b", taint("slow", "1", PreferNoSchedule)), node("c")}, nil, "c", ""},
		{"port", []Node{node("a"), node("b")}, func(i *Instance) { i.HostPorts = []Port{80} }, "b", ""},
		{"distinct hosts", []Node{node("a"), node("b")}, func(i *Instance) { i.AntiAffinity = []AntiAffinity{{Hard: true}} }, "b", ""},
		{"anti-affinity other group per zone", []Node{node("a"), node("b", func(n *Node) { n.Zone = "z2" })}, func(i *Instance) {
			i.Group = "web"
			i.AntiAffinity = []AntiAffinity{{Group: "g", Topology: "zone", Hard: true}}
		}, "b", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Node a holds one instance of group g on port 80, unless the
			// case needs it empty.
			snap := Snapshot{Nodes: tt.nodes}
			if strings.Contains(tt.name, "port") || strings.Contains(tt.name, "anti") || tt.name == "distinct hosts" {
				snap.Nodes[0].Allocated = snap.Nodes[0].Allocated.Add(Resources{100, gib / 8})
				snap.Allocations = []Allocation{{InstanceID: "old", NodeID: "a", Group: "g", Request: Resources{100, gib / 8}, Ports: []Port{80}}}
			}
			sch := New(Config{Seed: 1}, mustState(t, snap))
			in := small("new")
			if tt.inst != nil {
				tt.inst(&in)
			}
			got, why := placeOn(t, sch, in)
			if got != tt.want {
				t.Fatalf("placed on %q (%s), want %q", got, why, tt.want)
			}
			if tt.want == "" && !strings.Contains(why, tt.why) {
				t.Fatalf("reason %q does not mention %q", why, tt.why)
			}
		})
	}
}

func label(k, v string) func(*Node) { return func(n *Node) { n.Labels[k] = v } }
func taint(k, v string, e TaintEffect) func(*Node) {
	return func(n *Node) { n.Taints = append(n.Taints, Taint{k, v, e}) }
}
func constrain(s string) func(*Instance) {
	return func(i *Instance) {
		c, err := ParseConstraint(s)
		if err != nil {
			panic(err)
		}
		i.Constraints = append(i.Constraints, c)
	}
}
func tolerate(t Toleration) func(*Instance) {
	return func(i *Instance) { i.Tolerations = append(i.Tolerations, t) }
}

func TestDistinctHostsFillsEveryNodeOnce(t *testing.T) {
	var snap Snapshot
	for i := range 10 {
		snap.Nodes = append(snap.Nodes, node(fmt.Sprint(i)))
	}
	sch := New(Config{Seed: 3}, mustState(t, snap))
	seen := map[string]bool{}
	for i := range 11 {
		in := small(fmt.Sprint("i", i))
		in.AntiAffinity = []AntiAffinity{{Hard: true}}
		got, why := placeOn(t, sch, in)
		if i == 10 {
			if got != "" || !strings.Contains(why, "distinct hosts) filtered 10") {
				t.Fatalf("11th of a distinct-hosts group on 10 nodes: %q %q", got, why)
			}
			continue
		}
		if got == "" || seen[got] {
			t.Fatalf("instance %d on %q (%s), already used: %v", i, got, why, seen[got])
		}
		seen[got] = true
	}
}

func TestAffinityAndImage(t *testing.T) {
	snap := Snapshot{Nodes: []Node{node("a"), node("b", label("disk", "ssd")), node("c", func(n *Node) { n.Images = []string{"img"} })}}
	// Image locality is a score among the sampled nodes; sample them all.
	sch := New(Config{Seed: 1, ScoreLimit: 3}, mustState(t, snap))
	in := small("x")
	in.Affinities = []Affinity{{Constraint: Constraint{Key: "disk", Op: OpEqual, Values: []string{"ssd"}}, Weight: 80}}
	if got, _ := placeOn(t, sch, in); got != "b" {
		t.Fatalf("affinity: placed on %q, want b", got)
	}
	in = small("y")
	in.Image = "img"
	if got, _ := placeOn(t, sch, in); got != "c" {
		t.Fatalf("image locality: placed on %q, want c", got)
	}
	in = small("z")
	in.Affinities = []Affinity{{Constraint: Constraint{Key: "disk", Op: OpEqual, Values: []string{"ssd"}}, Weight: -80}}
	if got, _ := placeOn(t, sch, in); got == "b" {
		t.Fatalf("negative affinity: placed on b")
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[int]string{0: "0", 7: "7", 999: "999", 1000: "1,000", 8112: "8,112", 1234567: "1,234,567", -1800: "-1,800"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestNewStateRejects(t *testing.T) {
	for name, snap := range map[string]Snapshot{
		"duplicate node":    {Nodes: []Node{node("a"), node("a")}},
		"unknown node":      {Nodes: []Node{node("a")}, Allocations: []Allocation{{InstanceID: "i", NodeID: "b"}}},
		"allocated too low": {Nodes: []Node{node("a")}, Allocations: []Allocation{{InstanceID: "i", NodeID: "a", Request: Resources{1, 1}}}},
		"duplicate alloc":   {Nodes: []Node{node("a", func(n *Node) { n.Allocated = Resources{2, 2} })}, Allocations: []Allocation{{InstanceID: "i", NodeID: "a", Request: Resources{1, 1}}, {InstanceID: "i", NodeID: "a", Request: Resources{1, 1}}}},
	} {
		if _, err := NewState(snap); err == nil {
			t.Errorf("%s: NewState succeeded", name)
		}
	}
}
