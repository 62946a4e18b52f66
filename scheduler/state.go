package scheduler

import (
	"fmt"
	"math/bits"
	"slices"
	"sort"
)

// Snapshot is the cluster as one read of the store saw it.
type Snapshot struct {
	Nodes       []Node
	Allocations []Allocation
}

// Free capacity is measured in units of 2^-20 of the largest node and
// bucketed on a log scale with 16 steps per doubling (below 16 units, one
// bucket per unit), so a bucket's nodes are within about 6 % of each
// other at every scale. Fine resolution near zero matters most: on a full
// cluster almost every node has little left, and a scan for a small
// request must skip those that cannot hold it without visiting them.
const (
	freeScaleBits = 20
	numBuckets    = 16*(freeScaleBits-4) + 17 // bucketOf(2^20) = 272
)

// State is a snapshot plus the indexes placement needs, updated in place as
// decisions are applied. Nodes are int32 indexes; label values are interned
// per key; counts per group per node and per topology domain are kept so
// that anti-affinity and spread are O(1)-ish per node. It is not safe for
// concurrent use: one Scheduler owns one State.
type State struct {
	nodes  []nodeState
	byID   map[string]int32
	maxCap Resources

	// Ready nodes bucketed by free capacity (see bucketOf); pos is each
	// node's index inside its bucket, bucket is -1 for nodes not in any.
	buckets [numBuckets][]int32
	bucket  []int16
	pos     []int32

	columns   map[string]*labelColumn
	tiers     map[string]uint64
	images    map[string]int32
	taintSets [][]Taint
	notReady  int

	groups     map[string]int32
	groupNames []string
	topologies map[string]*topology
	topoList   []*topology
	where      map[string]int32 // instance -> node
	priorities map[int32]int    // allocations per priority

	compiled map[string]*compiledConstraint
	eligible map[string][]bool
}

type nodeState struct {
	node       *Node
	capacity   Resources
	used       Resources
	generation uint64
	ready      bool
	tiers      uint64
	taintSet   int32
	images     []int32 // sorted
	allocs     []alloc
	ports      []Port
	groups     []groupCount
}

type alloc struct {
	id    string
	gid   int32
	prio  int32
	req   Resources
	ports []Port
}

type groupCount struct{ gid, n int32 }

// labelColumn is one node attribute across all nodes: vals[node] is the
// interned value or -1 when the node lacks it.
type labelColumn struct {
	vals []int32
	dict map[string]int32
	strs []string
}

// newLabelColumn returns a column over n nodes, none of which has the
// attribute yet.
func newLabelColumn(n int) *labelColumn {
	c := &labelColumn{vals: make([]int32, n), dict: map[string]int32{}}
	for i := range c.vals {
		c.vals[i] = -1
	}
	return c
}

func (c *labelColumn) set(n int32, v string) {
	id, ok := c.dict[v]
	if !ok {
		id = int32(len(c.strs))
		c.dict[v] = id
		c.strs = append(c.strs, v)
	}
	c.vals[n] = id
}

// topology counts instances per group per domain of one attribute.
type topology struct {
	key    string
	col    *labelColumn
	counts [][]int32 // [group][domain]
}

func (t *topology) groupCounts(gid int32) []int32 {
	for int(gid) >= len(t.counts) {
		t.counts = append(t.counts, nil)
	}
	if t.counts[gid] == nil {
		t.counts[gid] = make([]int32, len(t.col.strs))
	}
	return t.counts[gid]
}

// compiledConstraint answers a constraint per label value id.
type compiledConstraint struct {
	key      string // the State.compiled key; unlike name, unique per constraint
	name     string
	col      *labelColumn
	ok       []bool
	absentOK bool
}

func (c *compiledConstraint) match(n int32) bool {
	if c.col == nil {
		return c.absentOK
	}
	v := c.col.vals[n]
	if v < 0 {
		return c.absentOK
	}
	return c.ok[v]
}

// NewState indexes a snapshot. Node IDs must be unique; every allocation
// must name a known node, and a node's Allocated must include its listed
// allocations.
func NewState(snap Snapshot) (*State, error) {
	s := &State{
		nodes:      make([]nodeState, len(snap.Nodes)),
		byID:       make(map[string]int32, len(snap.Nodes)),
		bucket:     make([]int16, len(snap.Nodes)),
		pos:        make([]int32, len(snap.Nodes)),
		columns:    map[string]*labelColumn{},
		tiers:      map[string]uint64{},
		images:     map[string]int32{},
		groups:     map[string]int32{},
		topologies: map[string]*topology{},
		where:      make(map[string]int32, len(snap.Allocations)),
		priorities: map[int32]int{},
		compiled:   map[string]*compiledConstraint{},
		eligible:   map[string][]bool{},
	}
	taintSets := map[string]int32{}
	col := func(key string) *labelColumn {
		c := s.columns[key]
		if c == nil {
			c = newLabelColumn(len(snap.Nodes))
			s.columns[key] = c
		}
		return c
	}
	for i := range snap.Nodes {
		nd := &snap.Nodes[i]
		n := int32(i)
		if _, dup := s.byID[nd.ID]; dup {
			return nil, fmt.Errorf("index snapshot: node %q listed twice", nd.ID)
		}
		s.byID[nd.ID] = n
		ns := &s.nodes[i]
		ns.node = nd
		ns.capacity, ns.used, ns.generation, ns.ready = nd.Capacity, nd.Allocated, nd.Generation, nd.Ready
		s.maxCap.MilliCPU = max(s.maxCap.MilliCPU, nd.Capacity.MilliCPU)
		s.maxCap.MemoryBytes = max(s.maxCap.MemoryBytes, nd.Capacity.MemoryBytes)
		col("node.id").set(n, nd.ID)
		if nd.Zone != "" {
			col("node.zone").set(n, nd.Zone)
		}
		if nd.Rack != "" {
			col("node.rack").set(n, nd.Rack)
		}
		for k, v := range nd.Labels {
			col(k).set(n, v)
		}
		for _, t := range nd.Tiers {
			bit, ok := s.tiers[t]
			if !ok {
				if len(s.tiers) == 64 {
					return nil, fmt.Errorf("index snapshot: more than 64 isolation tiers")
				}
				bit = 1 << len(s.tiers)
				s.tiers[t] = bit
			}
			ns.tiers |= bit
		}
		for _, im := range nd.Images {
			id, ok := s.images[im]
			if !ok {
				id = int32(len(s.images))
				s.images[im] = id
			}
			ns.images = append(ns.images, id)
		}
		slices.Sort(ns.images)
		ns.taintSet = -1
		if len(nd.Taints) > 0 {
			key := fmt.Sprint(nd.Taints)
			id, ok := taintSets[key]
			if !ok {
				id = int32(len(s.taintSets))
				taintSets[key] = id
				s.taintSets = append(s.taintSets, nd.Taints)
			}
			ns.taintSet = id
		}
		if !nd.Ready {
			s.notReady++
		}
	}
	var listed = make([]Resources, len(snap.Nodes))
	for _, a := range snap.Allocations {
		n, ok := s.byID[a.NodeID]
		if !ok {
			return nil, fmt.Errorf("index snapshot: allocation %q is on unknown node %q", a.InstanceID, a.NodeID)
		}
		if _, dup := s.where[a.InstanceID]; dup {
			return nil, fmt.Errorf("index snapshot: instance %q allocated twice", a.InstanceID)
		}
		listed[n] = listed[n].Add(a.Request)
		s.addAlloc(n, alloc{id: a.InstanceID, gid: s.groupID(a.Group), prio: a.Priority, req: a.Request, ports: slices.Clone(a.Ports)}, false)
	}
	for i := range s.nodes {
		if !listed[i].Fits(snap.Nodes[i].Allocated) {
			return nil, fmt.Errorf("index snapshot: node %q: Allocated %+v is less than its allocations' requests %+v", snap.Nodes[i].ID, snap.Nodes[i].Allocated, listed[i])
		}
		s.bucket[i] = -1
		s.rebucket(int32(i))
	}
	return s, nil
}

func (s *State) groupID(g string) int32 {
	id, ok := s.groups[g]
	if !ok {
		id = int32(len(s.groups))
		s.groups[g] = id
		s.groupNames = append(s.groupNames, g)
	}
	return id
}

// bucketOf orders nodes by the scarcer of their free cpu and memory,
// relative to the largest node. A node with at least r free in both lands
// in a bucket >= bucketOf(r), so scans may skip lower buckets exactly.
func (s *State) bucketOf(free Resources) int {
	x := int64(1) << freeScaleBits
	if s.maxCap.MilliCPU > 0 {
		x = min(x, scaled(free.MilliCPU, s.maxCap.MilliCPU))
	}
	if s.maxCap.MemoryBytes > 0 {
		x = min(x, scaled(free.MemoryBytes, s.maxCap.MemoryBytes))
	}
	if x < 16 {
		return int(x)
	}
	e := bits.Len64(uint64(x)) - 5 // x>>e is in [16, 32)
	return 16*e + int(x>>e)
}

// scaled is v in units of 2^-20 of capacity, clamped to [0, 2^20].
func scaled(v, capacity int64) int64 {
	if v <= 0 {
		return 0
	}
	if v >= capacity {
		return 1 << freeScaleBits
	}
	if v < (1<<63-1)>>freeScaleBits {
		return v << freeScaleBits / capacity
	}
	return int64(float64(v) / float64(capacity) * (1 << freeScaleBits))
}

func (s *State) rebucket(n int32) {
	ns := &s.nodes[n]
	want := int16(-1)
	if ns.ready {
		want = int16(s.bucketOf(ns.capacity.Sub(ns.used)))
	}
	old := s.bucket[n]
	if old == want {
		return
	}
	if old >= 0 {
		b := s.buckets[old]
		p := s.pos[n]
		last := b[len(b)-1]
		b[p] = last
		s.pos[last] = p
		s.buckets[old] = b[:len(b)-1]
	}
	if want >= 0 {
		s.pos[n] = int32(len(s.buckets[want]))
		s.buckets[want] = append(s.buckets[want], n)
	}
	s.bucket[n] = want
}

// topology returns the counts for a spread or anti-affinity key ("zone",
// "rack" or a label key), building them from the current allocations the
// first time.
func (s *State) topology(key string) *topology {
	if t := s.topologies[key]; t != nil {
		return t
	}
	ck := key
	switch key {
	case "zone":
		ck = "node.zone"
	case "rack":
		ck = "node.rack"
	}
	c := s.columns[ck]
	if c == nil {
		c = newLabelColumn(len(s.nodes))
	}
	t := &topology{key: key, col: c}
	for n := range s.nodes {
		d := c.vals[n]
		if d < 0 {
			continue
		}
		for _, a := range s.nodes[n].allocs {
			t.groupCounts(a.gid)[d]++
		}
	}
	s.topologies[key] = t
	s.topoList = append(s.topoList, t)
	return t
}

func (s *State) addAlloc(n int32, a alloc, charge bool) {
	ns := &s.nodes[n]
	ns.allocs = append(ns.allocs, a)
	ns.ports = append(ns.ports, a.ports...)
	found := false
	for i := range ns.groups {
		if ns.groups[i].gid == a.gid {
			ns.groups[i].n++
			found = true
			break
		}
	}
	if !found {
		ns.groups = append(ns.groups, groupCount{a.gid, 1})
	}
	for _, t := range s.topoList {
		if d := t.col.vals[n]; d >= 0 {
			t.groupCounts(a.gid)[d]++
		}
	}
	s.where[a.id] = n
	s.priorities[a.prio]++
	if charge {
		ns.used = ns.used.Add(a.req)
		s.rebucket(n)
	}
}

// removeAlloc takes instance id off node n and returns it.
func (s *State) removeAlloc(n int32, id string) (alloc, bool) {
	ns := &s.nodes[n]
	i := slices.IndexFunc(ns.allocs, func(a alloc) bool { return a.id == id })
	if i < 0 {
		return alloc{}, false
	}
	a := ns.allocs[i]
	last := len(ns.allocs) - 1
	ns.allocs[i] = ns.allocs[last]
	ns.allocs[last] = alloc{}
	ns.allocs = ns.allocs[:last]
	for _, p := range a.ports {
		if j := slices.Index(ns.ports, p); j >= 0 {
			ns.ports[j] = ns.ports[len(ns.ports)-1]
			ns.ports = ns.ports[:len(ns.ports)-1]
		}
	}
	for j := range ns.groups {
		if ns.groups[j].gid == a.gid {
			ns.groups[j].n--
			if ns.groups[j].n == 0 {
				ns.groups[j] = ns.groups[len(ns.groups)-1]
				ns.groups = ns.groups[:len(ns.groups)-1]
			}
			break
		}
	}
	for _, t := range s.topoList {
		if d := t.col.vals[n]; d >= 0 {
			t.groupCounts(a.gid)[d]--
		}
	}
	delete(s.where, id)
	if s.priorities[a.prio]--; s.priorities[a.prio] == 0 {
		delete(s.priorities, a.prio)
	}
	ns.used = ns.used.Sub(a.req)
	s.rebucket(n)
	return a, true
}

func (ns *nodeState) groupCount(gid int32) int32 {
	for _, g := range ns.groups {
		if g.gid == gid {
			return g.n
		}
	}
	return 0
}

func (ns *nodeState) portFree(p Port) bool {
	for _, q := range ns.ports {
		if q == p {
			return false
		}
	}
	return true
}

func (ns *nodeState) hasImage(id int32) bool {
	_, ok := slices.BinarySearch(ns.images, id)
	return ok
}

// Release removes a placed instance (it finished, or the control plane
// evicted it) and bumps its node's generation, as the store's write would.
func (s *State) Release(instanceID string) bool {
	n, ok := s.where[instanceID]
	if !ok {
		return false
	}
	s.removeAlloc(n, instanceID)
	s.nodes[n].generation++
	return true
}

// NodeUsage is a node's current allocation record in a State.
type NodeUsage struct {
	ID          string
	Capacity    Resources
	Allocated   Resources
	Generation  uint64
	Allocations []Allocation
}

// Node returns the current allocation record of a node.
func (s *State) Node(id string) (NodeUsage, bool) {
	n, ok := s.byID[id]
	if !ok {
		return NodeUsage{}, false
	}
	ns := &s.nodes[n]
	u := NodeUsage{ID: id, Capacity: ns.capacity, Allocated: ns.used, Generation: ns.generation}
	for _, a := range ns.allocs {
		u.Allocations = append(u.Allocations, s.export(n, a))
	}
	sort.Slice(u.Allocations, func(i, j int) bool { return u.Allocations[i].InstanceID < u.Allocations[j].InstanceID })
	return u, true
}

func (s *State) export(n int32, a alloc) Allocation {
	return Allocation{InstanceID: a.id, NodeID: s.nodes[n].node.ID, Group: s.groupNames[a.gid], Priority: a.prio, Request: a.req, Ports: slices.Clone(a.ports)}
}

// Snapshot returns the state as a snapshot (nodes with their current
// Allocated and Generation, allocations sorted by node then instance), for
// handing to another scheduler or for checking.
func (s *State) Snapshot() Snapshot {
	var snap Snapshot
	for i := range s.nodes {
		ns := &s.nodes[i]
		nd := *ns.node
		nd.Allocated, nd.Generation = ns.used, ns.generation
		snap.Nodes = append(snap.Nodes, nd)
		start := len(snap.Allocations)
		for _, a := range ns.allocs {
			snap.Allocations = append(snap.Allocations, s.export(int32(i), a))
		}
		part := snap.Allocations[start:]
		sort.Slice(part, func(i, j int) bool { return part[i].InstanceID < part[j].InstanceID })
	}
	return snap
}
