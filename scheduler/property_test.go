package scheduler

import (
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"sort"
	"testing"
)

// randomCluster builds a small cluster with every feature the checks look
// at, plus existing allocations at random priorities.
func randomCluster(r *rand.Rand, n int) Snapshot {
	var snap Snapshot
	zones := 3 + r.IntN(2)
	for i := range n {
		nd := Node{
			ID:       fmt.Sprintf("n%03d", i),
			Capacity: Resources{int64(2000 + 1000*r.IntN(7)), int64(2+r.IntN(15)) * gib},
			Labels:   map[string]string{"arch": []string{"amd64", "arm64"}[r.IntN(2)], "kernel": []string{"5.4.0", "5.15.1", "6.1.0", "6.8.0-rc.1"}[r.IntN(4)]},
			Ready:    r.IntN(15) != 0,
			Zone:     fmt.Sprint("z", r.IntN(zones)),
			Rack:     fmt.Sprint("r", r.IntN(12)),
			Tiers:    []string{"container"},
			Images:   []string{fmt.Sprint("img", r.IntN(4))},
		}
		if r.IntN(4) == 0 {
			nd.Labels["ssd"] = "true"
		}
		if r.IntN(3) == 0 {
			nd.Tiers = append(nd.Tiers, "vm")
		}
		switch r.IntN(10) {
		case 0:
			nd.Taints = []Taint{{"dedicated", "db", NoSchedule}}
		case 1:
			nd.Taints = []Taint{{"maint", "", NoExecute}, {"slow", "", PreferNoSchedule}}
		case 2:
			nd.Taints = []Taint{{"slow", "", PreferNoSchedule}}
		}
		for j := range r.IntN(4) {
			a := Allocation{InstanceID: fmt.Sprintf("old-%d-%d", i, j), NodeID: nd.ID, Group: fmt.Sprint("old", r.IntN(5)), Priority: int32(r.IntN(4) * 25), Request: Resources{int64(100 * (1 + r.IntN(8))), gib / 4 * int64(1+r.IntN(4))}}
			if r.IntN(4) == 0 {
				a.Ports = []Port{Port(80 + r.IntN(3))}
				if !noDup(snap.Allocations, nd.ID, a.Ports[0]) {
					a.Ports = nil
				}
			}
			if !a.Request.Fits(nd.Capacity.Sub(nd.Allocated)) {
				continue
			}
			nd.Allocated = nd.Allocated.Add(a.Request)
			snap.Allocations = append(snap.Allocations, a)
		}
		snap.Nodes = append(snap.Nodes, nd)
	}
	return snap
}

func noDup(as []Allocation, node string, p Port) bool {
	for _, a := range as {
		if a.NodeID == node {
			for _, q := range a.Ports {
				if q == p {
					return false
				}
			}
		}
	}
	return true
}

var constraintPool = []Constraint{
	{Key: "arch", Op: OpEqual, Values: []string{"amd64"}},
	{Key: "arch", Op: OpNotEqual, Values: []string{"amd64"}},
	{Key: "node.zone", Op: OpIn, Values: []string{"z0", "z1"}},
	{Key: "node.rack", Op: OpNotIn, Values: []string{"r1", "r2", "r3"}},
	{Key: "kernel", Op: OpVersion, Values: []string{">=5.10, <6.5"}},
	{Key: "kernel", Op: OpRegexp, Values: []string{`^6\.`}},
	{Key: "ssd", Op: OpExists},
	{Key: "ssd", Op: OpNotExists},
}

func randomWorkload(r *rand.Rand, prefix string, n int) []Instance {
	out := make([]Instance, 0, n)
	for len(out) < n {
		g := fmt.Sprintf("%s-g%d", prefix, len(out))
		base := Instance{Group: g, Priority: int32(r.IntN(5) * 25), Request: Resources{int64(100 * (1 + r.IntN(10))), gib / 4 * int64(1+r.IntN(6))}, Batch: r.IntN(3) == 0, Image: fmt.Sprint("img", r.IntN(5))}
		for range r.IntN(3) {
			base.Constraints = append(base.Constraints, constraintPool[r.IntN(len(constraintPool))])
		}
		if r.IntN(3) == 0 {
			base.Affinities = []Affinity{{Constraint: constraintPool[r.IntN(len(constraintPool))], Weight: r.IntN(201) - 100}}
		}
		switch r.IntN(6) {
		case 0:
			base.Tolerations = []Toleration{{Key: "dedicated", Value: "db"}}
		case 1:
			base.Tolerations = []Toleration{{Exists: true}}
		}
		if r.IntN(6) == 0 {
			base.Tier = "vm"
		}
		if r.IntN(5) == 0 {
			base.HostPorts = []Port{Port(80 + r.IntN(3))}
		}
		switch r.IntN(8) {
		case 0:
			base.AntiAffinity = []AntiAffinity{{Hard: true}}
		case 1:
			base.AntiAffinity = []AntiAffinity{{Hard: true, Topology: "rack", Group: fmt.Sprint("old", r.IntN(5))}}
		case 2:
			base.AntiAffinity = []AntiAffinity{{Weight: 60}}
		case 3:
			base.Spread = &Spread{Topology: "zone", MaxSkew: 1 + r.IntN(2), Hard: true}
		case 4:
			base.Spread = &Spread{Topology: "rack", Hard: false}
		}
		for i := range 1 + r.IntN(30) {
			in := base
			in.ID = fmt.Sprintf("%s-%d", g, i)
			out = append(out, in)
		}
	}
	return out[:n]
}

// model is the independent checker: plain maps rebuilt from the snapshot,
// none of the scheduler's indexes.
type model struct {
	matchers map[string]*matcher
	perInst  map[*Instance][]*matcher
	nodes    map[string]*Node
	order    []string
	allocs   map[string]map[string]Allocation // node -> instance -> alloc
}

func newModel(snap Snapshot) *model {
	m := &model{nodes: map[string]*Node{}, allocs: map[string]map[string]Allocation{}, matchers: map[string]*matcher{}, perInst: map[*Instance][]*matcher{}}
	for i := range snap.Nodes {
		nd := snap.Nodes[i]
		m.nodes[nd.ID] = &nd
		m.order = append(m.order, nd.ID)
		m.allocs[nd.ID] = map[string]Allocation{}
	}
	for _, a := range snap.Allocations {
		m.allocs[a.NodeID][a.InstanceID] = a
	}
	return m
}

func attr(nd *Node, key string) (string, bool) {
	switch key {
	case "node.id":
		return nd.ID, true
	case "node.zone":
		return nd.Zone, nd.Zone != ""
	case "node.rack":
		return nd.Rack, nd.Rack != ""
	}
	v, ok := nd.Labels[key]
	return v, ok
}

// domain is the node's value of a spread or anti-affinity topology: "zone"
// and "rack" name the node fields, anything else is a constraint key.
func domain(nd *Node, topo string) (string, bool) {
	switch topo {
	case "zone", "rack":
		topo = "node." + topo
	}
	return attr(nd, topo)
}

func (m *model) matcher(c Constraint) *matcher {
	key := fmt.Sprint(c.Key, c.Op, c.Values)
	mt := m.matchers[key]
	if mt == nil {
		x := newMatcher(c)
		mt = &x
		m.matchers[key] = mt
	}
	return mt
}

// static reports why the node fails readiness, tier, constraints or
// taints, or "" when it passes.
func (m *model) static(nd *Node, in *Instance) string {
	if !nd.Ready {
		return "not ready"
	}
	if in.Tier != "" && !contains(nd.Tiers, in.Tier) {
		return "tier"
	}
	ms := m.perInst[in]
	if ms == nil {
		for _, c := range in.Constraints {
			ms = append(ms, m.matcher(c))
		}
		m.perInst[in] = ms
	}
	for i, c := range in.Constraints {
		v, ok := attr(nd, c.Key)
		if !ms[i].match(v, ok) {
			return "constraint " + c.String()
		}
	}
	for _, t := range nd.Taints {
		if t.Effect == PreferNoSchedule {
			continue
		}
		ok := false
		for _, tol := range in.Tolerations {
			ok = ok || tol.Tolerates(t)
		}
		if !ok {
			return "taint"
		}
	}
	return ""
}

// violation returns why placing in on nd breaks a hard rule, ignoring
// resources and ports when evictable is set.
func (m *model) violation(nd *Node, in *Instance, evictable bool) string {
	if why := m.static(nd, in); why != "" {
		return why
	}
	if !evictable {
		used := nd.Allocated
		if !in.Request.Fits(nd.Capacity.Sub(used)) {
			return "over-commit"
		}
		for _, a := range m.allocs[nd.ID] {
			if len(in.HostPorts) == 0 {
				break
			}
			for _, p := range a.Ports {
				for _, q := range in.HostPorts {
					if p == q {
						return "port taken"
					}
				}
			}
		}
	}
	for _, aa := range in.AntiAffinity {
		if !aa.Hard {
			continue
		}
		g := aa.Group
		if g == "" {
			g = in.Group
		}
		dom, has := domain(nd, aa.Topology)
		for id, other := range m.nodes {
			if aa.Topology == "" && id != nd.ID {
				continue
			}
			if aa.Topology != "" {
				if od, ok := domain(other, aa.Topology); !has || !ok || od != dom {
					continue
				}
			}
			for _, a := range m.allocs[id] {
				if a.Group == g {
					return "anti-affinity " + g
				}
			}
		}
	}
	if sp := in.Spread; sp != nil && sp.Hard {
		dom, ok := domain(nd, sp.Topology)
		if !ok {
			return "spread: no domain"
		}
		counts, eligible := map[string]int{}, map[string]bool{}
		for _, id := range m.order {
			other := m.nodes[id]
			d, ok := domain(other, sp.Topology)
			if !ok {
				continue
			}
			if m.static(other, in) == "" {
				eligible[d] = true
			}
			for _, a := range m.allocs[id] {
				if a.Group == in.Group {
					counts[d]++
				}
			}
		}
		lo := -1
		for d := range eligible {
			if lo < 0 || counts[d] < lo {
				lo = counts[d]
			}
		}
		if counts[dom]+1-lo > max(sp.MaxSkew, 1) {
			return "spread skew"
		}
	}
	return ""
}

func (m *model) anyFeasible(in *Instance) string {
	for _, id := range m.order {
		if m.violation(m.nodes[id], in, false) == "" {
			return id
		}
	}
	return ""
}

// verify replays the results in placement order and fails on any broken
// rule.
func (m *model) verify(t *testing.T, insts []Instance, res []Result) {
	t.Helper()
	order := make([]int, len(insts))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return insts[order[a]].Priority > insts[order[b]].Priority })
	for _, i := range order {
		in, r := &insts[i], res[i]
		if r.InstanceID != in.ID {
			t.Fatalf("result %d is for %s, want %s", i, r.InstanceID, in.ID)
		}
		if r.Decision == nil {
			if r.Unplaceable == nil || r.Unplaceable.Reason == "" {
				t.Fatalf("%s: neither decision nor reason", in.ID)
			}
			if id := m.anyFeasible(in); id != "" {
				t.Fatalf("%s unplaceable (%s) but node %s fits", in.ID, r.Unplaceable.Reason, id)
			}
			continue
		}
		d := r.Decision
		nd := m.nodes[d.NodeID]
		if nd == nil {
			t.Fatalf("%s placed on unknown node %s", in.ID, d.NodeID)
		}
		if d.NodeGeneration != nd.Generation {
			t.Fatalf("%s: decision assumed generation %d, node is at %d", in.ID, d.NodeGeneration, nd.Generation)
		}
		if len(d.Preempt) > 0 {
			if id := m.anyFeasible(in); id != "" {
				t.Fatalf("%s preempted on %s although node %s fits", in.ID, d.NodeID, id)
			}
			for _, v := range d.Preempt {
				a, ok := m.allocs[nd.ID][v.InstanceID]
				if !ok {
					t.Fatalf("%s evicts %s which is not on %s", in.ID, v.InstanceID, nd.ID)
				}
				if a.Priority >= in.Priority {
					t.Fatalf("%s (priority %d) evicts %s of priority %d", in.ID, in.Priority, a.InstanceID, a.Priority)
				}
				delete(m.allocs[nd.ID], v.InstanceID)
				nd.Allocated = nd.Allocated.Sub(a.Request)
			}
		}
		if why := m.violation(nd, in, false); why != "" {
			t.Fatalf("%s on %s: %s (node %+v, request %+v)", in.ID, nd.ID, why, *nd, *in)
		}
		m.allocs[nd.ID][in.ID] = Allocation{InstanceID: in.ID, NodeID: nd.ID, Group: in.Group, Priority: in.Priority, Request: in.Request, Ports: in.HostPorts}
		nd.Allocated = nd.Allocated.Add(in.Request)
		nd.Generation++
	}
}

func TestPropertyRandomClusters(t *testing.T) {
	seeds, nodes, insts, batches := 50, 200, 2000, 4
	if testing.Short() {
		seeds = 10
	}
	if os.Getenv("NEXUS_SOAK") == "1" {
		seeds, nodes, insts = 100, 500, 10000
	}
	differ := 0
	for seed := range uint64(seeds) {
		r := rand.New(rand.NewPCG(seed, 77))
		snap := randomCluster(r, nodes)
		var work [][]Instance
		for b := range batches {
			work = append(work, randomWorkload(r, fmt.Sprintf("s%d-b%d", seed, b), insts/batches))
		}
		run := func(schedSeed uint64, check bool) [][]Result {
			st := mustState(t, snap)
			sch := New(Config{Seed: schedSeed, Strategy: Strategy(seed % 2)}, st)
			var m *model
			if check {
				m = newModel(snap)
			}
			var all [][]Result
			for _, w := range work {
				res := sch.PlaceBatch(w)
				if check {
					m.verify(t, w, res)
					// The state agrees with the checker's from-scratch model.
					for _, nd := range st.Snapshot().Nodes {
						if mn := m.nodes[nd.ID]; mn.Allocated != nd.Allocated || mn.Generation != nd.Generation {
							t.Fatalf("seed %d: node %s state %+v/%d, model %+v/%d", seed, nd.ID, nd.Allocated, nd.Generation, mn.Allocated, mn.Generation)
						}
					}
				}
				all = append(all, res)
			}
			return all
		}
		first := run(seed, true)
		if again := run(seed, false); !reflect.DeepEqual(first, again) {
			t.Fatalf("seed %d: same seed gave different decisions", seed)
		}
		if seed < 10 {
			if other := run(seed+1000, false); !reflect.DeepEqual(first, other) {
				differ++
			}
		}
	}
	t.Logf("%d of %d clusters placed differently with another scheduler seed", differ, min(seeds, 10))
}
