package scheduler

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestExplanation builds 2,000 nodes: 1,200 with no cpu left, 700 in the
// wrong zone and 100 with port 80 taken, and expects each counted.
func TestExplanation(t *testing.T) {
	var snap Snapshot
	for i := range 2000 {
		nd := node(fmt.Sprintf("n%d", i), label("zone", "eu"))
		switch {
		case i < 1200:
			nd.Allocated = Resources{4000, gib}
		case i < 1900:
			nd.Labels["zone"] = "us"
		default:
			nd.Allocated = Resources{100, gib}
			snap.Allocations = append(snap.Allocations, Allocation{InstanceID: fmt.Sprint("p", i), NodeID: nd.ID, Request: Resources{100, gib}, Ports: []Port{80}})
		}
		snap.Nodes = append(snap.Nodes, nd)
	}
	in := small("x")
	in.HostPorts = []Port{80}
	constrain("zone=eu")(&in)
	r := New(Config{Seed: 9}, mustState(t, snap)).Place(&in)
	if r.Unplaceable == nil {
		t.Fatalf("placed: %+v", r.Decision)
	}
	want := "cpu exhausted on 1,200 nodes; constraint zone=eu filtered 700; port 80 taken on 100"
	if r.Unplaceable.Reason != want {
		t.Fatalf("reason\n got %q\nwant %q", r.Unplaceable.Reason, want)
	}
	if len(r.Unplaceable.Filtered) != 3 || r.Unplaceable.Filtered[0].Nodes != 1200 {
		t.Fatalf("filtered = %+v", r.Unplaceable.Filtered)
	}
}

func TestPreemptionChoosesSmallestVictimSet(t *testing.T) {
	full := func(id string, allocs ...Allocation) (Node, []Allocation) {
		nd := node(id)
		for i := range allocs {
			allocs[i].NodeID = id
			nd.Allocated = nd.Allocated.Add(allocs[i].Request)
		}
		return nd, allocs
	}
	a := func(id string, prio int32, cpu int64) Allocation {
		return Allocation{InstanceID: id, Group: "low", Priority: prio, Request: Resources{cpu, gib}}
	}
	var snap Snapshot
	add := func(nd Node, as []Allocation) {
		snap.Nodes = append(snap.Nodes, nd)
		snap.Allocations = append(snap.Allocations, as...)
	}
	// n1: needs evicting a priority-20 instance; n2: three priority-10s;
	// n3: one priority-10 of 2 cores (the smallest set); n4: only equal
	// priority (50), never evicted; n5: one priority-10 but port 443 is
	// held by priority 60.
	add(full("n1", a("n1-a", 20, 2000), a("n1-b", 60, 2000)))
	add(full("n2", a("n2-a", 10, 700), a("n2-b", 10, 700), a("n2-c", 10, 700), a("n2-d", 60, 1900)))
	add(full("n3", a("n3-a", 10, 2000), a("n3-b", 10, 1000), a("n3-c", 70, 1000)))
	add(full("n4", a("n4-a", 50, 4000)))
	n5, n5a := full("n5", a("n5-a", 10, 3000), Allocation{InstanceID: "n5-port", Group: "low", Priority: 60, Request: Resources{1000, gib}, Ports: []Port{443}})
	add(n5, n5a)
	sch := New(Config{Seed: 1}, mustState(t, snap))
	in := Instance{ID: "hi", Group: "hi", Priority: 50, Request: Resources{2000, gib}, HostPorts: []Port{443}}
	r := sch.Place(&in)
	if r.Decision == nil {
		t.Fatalf("not placed: %s", r.Unplaceable.Reason)
	}
	if r.Decision.NodeID != "n3" || len(r.Decision.Preempt) != 1 || r.Decision.Preempt[0].InstanceID != "n3-a" {
		t.Fatalf("decision %+v, want n3 evicting n3-a only", r.Decision)
	}
	// Equal priority is never preempted: only n4 (priority 50) is left
	// with enough evictable... nothing at priority < 50 fits.
	eq := Instance{ID: "eq", Group: "hi", Priority: 50, Request: Resources{4000, gib}}
	r = sch.Place(&eq)
	if r.Decision != nil {
		for _, v := range r.Decision.Preempt {
			if v.Priority >= 50 {
				t.Fatalf("evicted %+v for an instance of priority 50", v)
			}
		}
	}
}

// TestNoPingPong: a high-priority instance evicts a low one; the victim
// then cannot evict it back, and neither can an equal-priority instance.
func TestNoPingPong(t *testing.T) {
	snap := Snapshot{Nodes: []Node{node("a")}}
	sch := New(Config{Seed: 1}, mustState(t, snap))
	low := Instance{ID: "low", Group: "l", Priority: 10, Request: Resources{3000, gib}}
	high := Instance{ID: "high", Group: "h", Priority: 20, Request: Resources{3000, gib}}
	peer := Instance{ID: "peer", Group: "h", Priority: 20, Request: Resources{3000, gib}}
	if r := sch.Place(&low); r.Decision == nil {
		t.Fatal("low not placed")
	}
	r := sch.Place(&high)
	if r.Decision == nil || len(r.Decision.Preempt) != 1 || r.Decision.Preempt[0].InstanceID != "low" {
		t.Fatalf("high: %+v %+v", r.Decision, r.Unplaceable)
	}
	for _, again := range []Instance{low, peer} {
		r = sch.Place(&again)
		if r.Decision != nil {
			t.Fatalf("%s placed by %+v: ping-pong", again.ID, r.Decision)
		}
		if !strings.Contains(r.Unplaceable.Reason, "cpu exhausted on 1 node") {
			t.Fatalf("%s: reason %q", again.ID, r.Unplaceable.Reason)
		}
	}
	if u, _ := sch.State().Node("a"); len(u.Allocations) != 1 || u.Allocations[0].InstanceID != "high" {
		t.Fatalf("node a holds %+v", u.Allocations)
	}
}

// TestOptimisticConcurrency runs two schedulers on the same snapshot
// against a fake store that binds with compare-and-swap on the node
// generation.
func TestOptimisticConcurrency(t *testing.T) {
	snap := Snapshot{Nodes: []Node{node("a", func(n *Node) { n.Generation = 7 }), node("b", func(n *Node) { n.Generation = 3; n.Allocated = Resources{3500, gib} })}}
	store := map[string]uint64{"a": 7, "b": 3}
	committed := []Allocation{}
	bind := func(in Instance, d *Decision) bool {
		if store[d.NodeID] != d.NodeGeneration {
			return false
		}
		store[d.NodeID]++
		committed = append(committed, Allocation{InstanceID: in.ID, NodeID: d.NodeID, Group: in.Group, Request: in.Request})
		return true
	}
	s1 := New(Config{Seed: 1}, mustState(t, snap))
	s2 := New(Config{Seed: 2}, mustState(t, snap))
	i1 := Instance{ID: "one", Group: "g", Request: Resources{3000, gib}}
	i2 := Instance{ID: "two", Group: "g", Request: Resources{3000, gib}}
	d1, d2 := s1.Place(&i1).Decision, s2.Place(&i2).Decision
	if d1 == nil || d2 == nil || d1.NodeID != "a" || d2.NodeID != "a" || d1.NodeGeneration != 7 || d2.NodeGeneration != 7 {
		t.Fatalf("decisions %+v %+v, want both on a assuming generation 7", d1, d2)
	}
	if g, _ := s1.State().Node("a"); g.Generation != 8 {
		t.Fatalf("state generation after placing = %d, want 8", g.Generation)
	}
	if !bind(i1, d1) {
		t.Fatal("first bind failed")
	}
	if bind(i2, d2) {
		t.Fatal("second bind succeeded: over-commit")
	}
	// Retry on a fresh snapshot from the store.
	fresh := Snapshot{Nodes: slices.Clone(snap.Nodes)}
	for i := range fresh.Nodes {
		fresh.Nodes[i].Generation = store[fresh.Nodes[i].ID]
	}
	for _, a := range committed {
		for i := range fresh.Nodes {
			if fresh.Nodes[i].ID == a.NodeID {
				fresh.Nodes[i].Allocated = fresh.Nodes[i].Allocated.Add(a.Request)
			}
		}
	}
	fresh.Allocations = committed
	r := New(Config{Seed: 2}, mustState(t, fresh)).Place(&i2)
	if r.Decision != nil {
		t.Fatalf("retry placed %+v but no node has 3 cores free", r.Decision)
	}
	i2.Request.MilliCPU = 500
	r = New(Config{Seed: 2}, mustState(t, fresh)).Place(&i2)
	if r.Decision == nil || !bind(i2, r.Decision) {
		t.Fatalf("retry of a smaller instance: %+v %+v", r.Decision, r.Unplaceable)
	}
}

func TestBinpackQuality(t *testing.T) {
	var snap Snapshot
	for i := range 1000 {
		snap.Nodes = append(snap.Nodes, node(fmt.Sprint(i), func(n *Node) { n.Capacity = Resources{8000, 32 * gib} }))
	}
	sch := New(Config{Seed: 5}, mustState(t, snap))
	insts := make([]Instance, 4800) // 60 % of 1,000 nodes at 8 per node
	for i := range insts {
		insts[i] = Instance{ID: fmt.Sprint(i), Group: fmt.Sprint("g", i%13), Request: Resources{1000, 4 * gib}}
	}
	used := map[string]bool{}
	for _, r := range sch.PlaceBatch(insts) {
		if r.Decision == nil {
			t.Fatalf("unplaced: %s", r.Unplaceable.Reason)
		}
		used[r.Decision.NodeID] = true
	}
	lower := 4800 / 8
	if limit := (lower*105 + 99) / 100; len(used) > limit {
		t.Fatalf("binpack used %d nodes, lower bound %d, allowed %d", len(used), lower, limit)
	}
	t.Logf("binpack used %d nodes for a lower bound of %d", len(used), lower)
}

func TestSpreadQuality(t *testing.T) {
	for _, zones := range []int{3, 4, 5} {
		for _, strategy := range []Strategy{Binpack, SpreadLoad} {
			var snap Snapshot
			for i := range 97 {
				snap.Nodes = append(snap.Nodes, node(fmt.Sprint(i), func(n *Node) { n.Zone = fmt.Sprint("z", i%zones) }))
			}
			sch := New(Config{Seed: uint64(zones), Strategy: strategy}, mustState(t, snap))
			counts := map[string]int{}
			for i := range 301 {
				in := small(fmt.Sprint(i))
				in.Spread = &Spread{Topology: "zone", MaxSkew: 1, Hard: true}
				r := sch.Place(&in)
				if r.Decision == nil {
					t.Fatalf("unplaced: %s", r.Unplaceable.Reason)
				}
				counts[snap.Nodes[mustAtoi(r.Decision.NodeID)].Zone]++
				lo, hi := 1<<30, 0
				for z := range zones {
					c := counts[fmt.Sprint("z", z)]
					lo, hi = min(lo, c), max(hi, c)
				}
				if hi-lo > 1 {
					t.Fatalf("zones=%d strategy=%d after %d: counts %v", zones, strategy, i+1, counts)
				}
			}
		}
	}
}

func mustAtoi(s string) int {
	var n int
	fmt.Sscan(s, &n)
	return n
}

// TestSoftSpreadBalances: without a hard rule, the soft spread score still
// keeps zones within a few instances of each other.
func TestSoftSpreadBalances(t *testing.T) {
	var snap Snapshot
	for i := range 60 {
		snap.Nodes = append(snap.Nodes, node(fmt.Sprint(i), func(n *Node) { n.Zone = fmt.Sprint("z", i%3) }))
	}
	sch := New(Config{Seed: 2}, mustState(t, snap))
	counts := map[string]int{}
	for i := range 90 {
		in := small(fmt.Sprint(i))
		in.Spread = &Spread{Topology: "zone", Weight: 100}
		r := sch.Place(&in)
		counts[snap.Nodes[mustAtoi(r.Decision.NodeID)].Zone]++
	}
	for z, c := range counts {
		if c < 28 || c > 32 {
			t.Fatalf("soft spread: zone %s got %d of 90: %v", z, c, counts)
		}
	}
}

func TestReleaseAndInvalidSpec(t *testing.T) {
	sch := New(Config{Seed: 1}, mustState(t, Snapshot{Nodes: []Node{node("a")}}))
	big := Instance{ID: "big", Group: "g", Request: Resources{4000, gib}, HostPorts: []Port{80}}
	if r := sch.Place(&big); r.Decision == nil || r.Decision.NodeGeneration != 0 {
		t.Fatalf("big: %+v %+v", r.Decision, r.Unplaceable)
	}
	if r := sch.Place(&big); r.Unplaceable == nil || !strings.Contains(r.Unplaceable.Reason, "already placed") {
		t.Fatalf("placing twice: %+v", r)
	}
	other := Instance{ID: "other", Group: "g", Request: Resources{1000, gib}, HostPorts: []Port{80}}
	if r := sch.Place(&other); r.Unplaceable == nil || r.Unplaceable.Reason != "cpu exhausted on 1 node" {
		t.Fatalf("other before release: %+v", r)
	}
	if !sch.State().Release("big") || sch.State().Release("big") {
		t.Fatal("Release should succeed once")
	}
	r := sch.Place(&other)
	if r.Decision == nil || r.Decision.NodeGeneration != 2 {
		t.Fatalf("after release: %+v %+v, want generation 2 (place, release)", r.Decision, r.Unplaceable)
	}
	bad := Instance{ID: "bad", Constraints: []Constraint{{Key: "os", Op: OpRegexp, Values: []string{"("}}}}
	if r := sch.Place(&bad); r.Unplaceable == nil || !strings.Contains(r.Unplaceable.Reason, "missing closing") {
		t.Fatalf("invalid regexp: %+v", r)
	}
	unknown := Instance{ID: "unknown", Constraints: []Constraint{{Key: "os", Op: "~~"}}}
	if r := sch.Place(&unknown); r.Unplaceable == nil || !strings.Contains(r.Unplaceable.Reason, "unknown operator") {
		t.Fatalf("unknown operator: %+v", r)
	}
}

// TestHardSpreadEligibilityPerConstraint: two constraints that print alike
// ("k in (a,b)") but match different nodes must not share the cached set
// of eligible domains, or the second one's skew is measured over the wrong
// zones.
func TestHardSpreadEligibilityPerConstraint(t *testing.T) {
	snap := Snapshot{Nodes: []Node{
		node("a", label("k", "a")),
		node("ab1", label("k", "a,b"), func(n *Node) { n.Zone = "z2" }),
		node("ab2", label("k", "a,b"), func(n *Node) { n.Zone = "z2" }),
	}}
	sch := New(Config{Seed: 1}, mustState(t, snap))
	spread := &Spread{Topology: "zone", MaxSkew: 1, Hard: true}
	first := small("set")
	first.Group = "other"
	first.Spread = spread
	first.Constraints = []Constraint{{Key: "k", Op: OpIn, Values: []string{"a", "b"}}}
	if got, why := placeOn(t, sch, first); got != "a" {
		t.Fatalf("k in {a, b}: placed on %q (%s), want a", got, why)
	}
	for i := range 2 {
		in := small(fmt.Sprint("comma", i))
		in.Spread = spread
		in.Constraints = []Constraint{{Key: "k", Op: OpIn, Values: []string{"a,b"}}}
		if got, why := placeOn(t, sch, in); got != "ab1" && got != "ab2" {
			t.Fatalf("k in {\"a,b\"} #%d: placed on %q (%s), want zone z2, its only eligible zone", i, got, why)
		}
	}
}

func TestInvalidRequests(t *testing.T) {
	for _, tt := range []struct {
		name string
		inst Instance
		why  string
	}{
		{"negative cpu", Instance{ID: "i", Request: Resources{-1, 0}}, "negative request"},
		{"negative memory", Instance{ID: "i", Request: Resources{0, -gib}}, "negative request"},
		{"equal without value", Instance{ID: "i", Constraints: []Constraint{{Key: "zone", Op: OpEqual}}}, "= takes one value"},
		{"not equal with two values", Instance{ID: "i", Constraints: []Constraint{{Key: "zone", Op: OpNotEqual, Values: []string{"a", "b"}}}}, "!= takes one value"},
		{"in without values", Instance{ID: "i", Constraints: []Constraint{{Key: "zone", Op: OpIn}}}, "in takes a non-empty set"},
		{"not in without values", Instance{ID: "i", Affinities: []Affinity{{Constraint: Constraint{Key: "zone", Op: OpNotIn}, Weight: 10}}}, "not in takes a non-empty set"},
		{"version without range", Instance{ID: "i", Constraints: []Constraint{{Key: "kernel", Op: OpVersion}}}, "version takes one range"},
		{"bad version range", Instance{ID: "i", Constraints: []Constraint{{Key: "kernel", Op: OpVersion, Values: []string{">=1.x"}}}}, "parse version range"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sch := New(Config{Seed: 1}, mustState(t, Snapshot{Nodes: []Node{node("a")}}))
			r := sch.Place(&tt.inst)
			if r.Decision != nil || r.Unplaceable == nil || !strings.Contains(r.Unplaceable.Reason, tt.why) {
				t.Fatalf("got %+v %+v, want unplaceable mentioning %q", r.Decision, r.Unplaceable, tt.why)
			}
			if u, _ := sch.State().Node("a"); len(u.Allocations) != 0 || u.Allocated != (Resources{}) {
				t.Fatalf("rejected instance changed the state: %+v", u)
			}
		})
	}
}
