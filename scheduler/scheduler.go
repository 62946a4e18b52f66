package scheduler

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
)

// Strategy is how feasible nodes are ranked.
type Strategy int

const (
	// Binpack fills the fullest feasible nodes first (the default).
	Binpack Strategy = iota
	// SpreadLoad fills the emptiest feasible nodes first.
	SpreadLoad
)

// Weights scale the score components. Zero fields take the defaults.
type Weights struct {
	Fit              float64 // binpack or spread utilisation, default 1
	Affinity         float64 // default 1
	AntiAffinity     float64 // soft anti-affinity, default 1
	Spread           float64 // soft topology spread, default 1
	Image            float64 // image already on the node, default 0.2
	PreferNoSchedule float64 // untolerated PreferNoSchedule taint, default 0.5
}

// Config configures a Scheduler.
type Config struct {
	// Seed drives every random choice; the same seed, state and input give
	// the same decisions.
	Seed     uint64
	Strategy Strategy
	// ScoreLimit is how many feasible nodes a service placement scores;
	// 0 means max(2, ceil(log2(nodes))), as Nomad does.
	ScoreLimit int
	// PreferenceScoreLimit replaces ScoreLimit for instances with soft
	// preferences (affinities, soft anti-affinity, soft spread), which need
	// a wider look; 0 means 64.
	PreferenceScoreLimit int
	// BatchChoices is how many feasible nodes a Batch instance compares
	// (power of two choices); 0 means 2.
	BatchChoices int
	// PreemptionLimit bounds how many nodes with a workable victim set are
	// compared when preempting; 0 means 64.
	PreemptionLimit int
	// NoPreemption turns preemption off.
	NoPreemption bool
	Weights      Weights
}

// Scheduler places instances on the nodes of a State and applies each
// decision to that State before the next placement. It is a pure state
// machine: no I/O, no clock, randomness only from its seeded PCG.
type Scheduler struct {
	cfg   Config
	s     *State
	rng   *rand.Rand
	w     Weights
	limit int

	// scratch reused across placements
	p       prepared
	cands   []int32
	counts  []int
	victims []alloc
	best    []alloc
	order   []victimOrder
}

// New returns a scheduler that owns st.
func New(cfg Config, st *State) *Scheduler {
	w := cfg.Weights
	def := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&w.Fit, 1)
	def(&w.Affinity, 1)
	def(&w.AntiAffinity, 1)
	def(&w.Spread, 1)
	def(&w.Image, 0.2)
	def(&w.PreferNoSchedule, 0.5)
	limit := cfg.ScoreLimit
	if limit <= 0 {
		limit = max(2, bits.Len(uint(max(len(st.nodes)-1, 0))))
	}
	if cfg.PreferenceScoreLimit <= 0 {
		cfg.PreferenceScoreLimit = 64
	}
	if cfg.BatchChoices <= 0 {
		cfg.BatchChoices = 2
	}
	if cfg.PreemptionLimit <= 0 {
		cfg.PreemptionLimit = 64
	}
	return &Scheduler{cfg: cfg, s: st, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)), w: w, limit: limit}
}

// State returns the state the scheduler owns.
func (sch *Scheduler) State() *State { return sch.s }

// prepared is an instance compiled against the state: its filter chain and
// what scoring needs, built once per placement.
type prepared struct {
	inst  *Instance
	gid   int32
	chain []check
	err   error

	ready    readyCheck
	cpu      cpuCheck
	mem      memoryCheck
	tier     tierCheck
	taint    taintCheck
	ports    []portCheck
	cons     []constraintCheck
	distinct []distinctHostsCheck
	anti     []antiAffinityCheck
	spread   spreadCheck

	preferTaint []bool // per taint set: an untolerated PreferNoSchedule taint
	affinities  []scoredAffinity
	affinityAbs float64
	softAnti    []softAnti
	softSpread  *softSpread
	image       int32
	limit       int
}

type scoredAffinity struct {
	c      *compiledConstraint
	weight float64
}

type softAnti struct {
	topo   *topology // nil: per node
	counts []int32
	gid    int32
	weight float64
}

type softSpread struct {
	topo     *topology
	counts   []int32
	min, max int32
	weight   float64
}

// Place places one instance and applies the decision to the state.
func (sch *Scheduler) Place(inst *Instance) Result {
	if n, dup := sch.s.where[inst.ID]; dup {
		return unplaceable(inst.ID, fmt.Sprintf("instance %s is already placed on %s; release it first", inst.ID, sch.s.nodes[n].node.ID))
	}
	p := sch.prepare(inst)
	if p.err != nil {
		return unplaceable(inst.ID, p.err.Error())
	}
	if len(sch.s.nodes) == 0 {
		return unplaceable(inst.ID, "no nodes")
	}
	start := sch.scan(p)
	if len(sch.cands) > 0 {
		best, bestScore := sch.cands[0], math.Inf(-1)
		for _, n := range sch.cands {
			if sc := sch.score(n, p); sc > bestScore {
				best, bestScore = n, sc
			}
		}
		d := sch.apply(best, p, nil)
		d.Score, d.Sampled = bestScore, len(sch.cands)
		return Result{InstanceID: inst.ID, Decision: d}
	}
	reason := sch.explain(p, start)
	if !sch.cfg.NoPreemption {
		if n, ok := sch.preempt(p); ok {
			d := sch.apply(n, p, sch.best)
			d.Score = sch.score(n, p)
			return Result{InstanceID: inst.ID, Decision: d}
		}
		if sch.s.anyBelow(inst.Priority) {
			reason.Reason += "; preempting lower-priority instances would not make room"
		}
	}
	return Result{InstanceID: inst.ID, Unplaceable: reason}
}

// PlaceBatch places instances highest priority first (stable for equal
// priorities), each decision applied before the next placement. Results
// are in input order.
func (sch *Scheduler) PlaceBatch(insts []Instance) []Result {
	order := make([]int, len(insts))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return insts[order[a]].Priority > insts[order[b]].Priority })
	res := make([]Result, len(insts))
	for _, i := range order {
		res[i] = sch.Place(&insts[i])
	}
	return res
}

func unplaceable(id, reason string) Result {
	return Result{InstanceID: id, Unplaceable: &Unplaceable{Reason: reason}}
}

func (s *State) anyBelow(prio int32) bool {
	for p := range s.priorities {
		if p < prio {
			return true
		}
	}
	return false
}

// prepare compiles the instance's chain. Order: cheapest and most often
// decisive first (ready, cpu, memory, ports, tier), then constraints,
// taints, anti-affinity and spread, which need the instance's own data.
func (sch *Scheduler) prepare(inst *Instance) *prepared {
	s := sch.s
	p := &sch.p
	*p = prepared{
		inst: inst, chain: p.chain[:0], ports: p.ports[:0], cons: p.cons[:0], distinct: p.distinct[:0],
		anti: p.anti[:0], affinities: p.affinities[:0], softAnti: p.softAnti[:0],
		taint: taintCheck{s: s, tolerated: p.taint.tolerated[:0]}, preferTaint: p.preferTaint[:0],
	}
	if inst.Request.MilliCPU < 0 || inst.Request.MemoryBytes < 0 {
		p.err = fmt.Errorf("instance %s: negative request %+v; ask for zero or more cpu and memory", inst.ID, inst.Request)
		return p
	}
	p.gid = s.groupID(inst.Group)
	p.ready = readyCheck{s}
	p.cpu = cpuCheck{s, inst.Request.MilliCPU}
	p.mem = memoryCheck{s, inst.Request.MemoryBytes}
	p.chain = append(p.chain, &p.ready, &p.cpu, &p.mem)
	for _, port := range inst.HostPorts {
		p.ports = append(p.ports, portCheck{s, port})
	}
	for i := range p.ports {
		p.chain = append(p.chain, &p.ports[i])
	}
	if inst.Tier != "" {
		p.tier = tierCheck{s, inst.Tier, s.tiers[inst.Tier]}
		p.chain = append(p.chain, &p.tier)
	}
	for _, c := range inst.Constraints {
		cc, err := s.compile(c)
		if err != nil {
			p.err = fmt.Errorf("instance %s: %w", inst.ID, err)
			return p
		}
		p.cons = append(p.cons, constraintCheck{cc})
	}
	for i := range p.cons {
		p.chain = append(p.chain, &p.cons[i])
	}
	if len(s.taintSets) > 0 {
		for _, set := range s.taintSets {
			ok, prefer := true, false
			for _, t := range set {
				if tolerated(inst.Tolerations, t) {
					continue
				}
				if t.Effect == PreferNoSchedule {
					prefer = true
				} else {
					ok = false
				}
			}
			p.taint.tolerated = append(p.taint.tolerated, ok)
			p.preferTaint = append(p.preferTaint, prefer)
		}
		p.chain = append(p.chain, &p.taint)
	}
	for _, a := range inst.AntiAffinity {
		g := a.Group
		if g == "" {
			g = inst.Group
		}
		gid := s.groupID(g)
		switch {
		case a.Hard && a.Topology == "":
			p.distinct = append(p.distinct, distinctHostsCheck{s, gid, g})
		case a.Hard:
			t := s.topology(a.Topology)
			p.anti = append(p.anti, antiAffinityCheck{t, t.groupCounts(gid), g})
		default:
			sa := softAnti{gid: gid, weight: float64(clamp(a.Weight, 1, 100)) / 100}
			if a.Topology != "" {
				sa.topo = s.topology(a.Topology)
				sa.counts = sa.topo.groupCounts(gid)
			}
			p.softAnti = append(p.softAnti, sa)
		}
	}
	for i := range p.distinct {
		p.chain = append(p.chain, &p.distinct[i])
	}
	for i := range p.anti {
		p.chain = append(p.chain, &p.anti[i])
	}
	if sp := inst.Spread; sp != nil {
		t := s.topology(sp.Topology)
		counts := t.groupCounts(p.gid)
		if sp.Hard {
			elig := s.eligibleDomains(p, t)
			lo := int32(math.MaxInt32)
			for d, ok := range elig {
				if ok {
					lo = min(lo, counts[d])
				}
			}
			if lo == math.MaxInt32 {
				lo = 0
			}
			p.spread = spreadCheck{t, counts, lo, int32(max(sp.MaxSkew, 1))}
			p.chain = append(p.chain, &p.spread)
		} else if len(counts) > 0 {
			ss := &softSpread{topo: t, counts: counts, min: slices.Min(counts), max: slices.Max(counts), weight: float64(clamp(cmp.Or(sp.Weight, 50), 1, 100)) / 100}
			p.softSpread = ss
		}
	}
	for _, a := range inst.Affinities {
		cc, err := s.compile(a.Constraint)
		if err != nil {
			p.err = fmt.Errorf("instance %s: affinity: %w", inst.ID, err)
			return p
		}
		w := float64(clamp(a.Weight, -100, 100))
		p.affinities = append(p.affinities, scoredAffinity{cc, w})
		p.affinityAbs += math.Abs(w)
	}
	p.image = -1
	if inst.Image != "" {
		if id, ok := s.images[inst.Image]; ok {
			p.image = id
		}
	}
	switch {
	case inst.Batch:
		p.limit = sch.cfg.BatchChoices
	case len(p.affinities) > 0 || len(p.softAnti) > 0 || p.softSpread != nil:
		p.limit = max(sch.limit, sch.cfg.PreferenceScoreLimit)
	default:
		p.limit = sch.limit
	}
	return p
}

func clamp(v, lo, hi int) int { return min(max(v, lo), hi) }

func tolerated(ts []Toleration, t Taint) bool {
	for _, tol := range ts {
		if tol.Tolerates(t) {
			return true
		}
	}
	return false
}

// compile returns the cached per-value answer table of a constraint.
func (s *State) compile(c Constraint) (*compiledConstraint, error) {
	key := c.Key + "\x00" + string(c.Op) + "\x00" + strings.Join(c.Values, "\x00")
	if cc := s.compiled[key]; cc != nil {
		return cc, nil
	}
	m := newMatcher(c)
	if m.err != nil {
		return nil, m.err
	}
	cc := &compiledConstraint{key: key, name: c.String(), col: s.columns[c.Key], absentOK: m.match("", false)}
	if cc.col != nil {
		cc.ok = make([]bool, len(cc.col.strs))
		for i, v := range cc.col.strs {
			cc.ok[i] = m.match(v, true)
		}
	}
	s.compiled[key] = cc
	return cc, nil
}

// eligibleDomains marks the domains of t holding at least one node that
// the instance's static checks (readiness, tier, constraints, taints)
// accept; hard spread measures skew over those only. Cached per topology
// and static requirements.
func (s *State) eligibleDomains(p *prepared, t *topology) []bool {
	var b strings.Builder
	b.WriteString(t.key)
	b.WriteByte(0)
	b.WriteString(p.inst.Tier)
	for _, c := range p.cons {
		b.WriteByte(0)
		b.WriteString(c.c.key)
	}
	b.WriteByte(1)
	for _, ok := range p.taint.tolerated {
		if ok {
			b.WriteByte('1')
		} else {
			b.WriteByte('0')
		}
	}
	key := b.String()
	if e, ok := s.eligible[key]; ok {
		return e
	}
	e := make([]bool, len(t.col.strs))
	static := []check{&p.ready}
	if p.inst.Tier != "" {
		static = append(static, &p.tier)
	}
	for i := range p.cons {
		static = append(static, &p.cons[i])
	}
	if len(s.taintSets) > 0 {
		static = append(static, &p.taint)
	}
nodes:
	for n := range s.nodes {
		d := t.col.vals[n]
		if d < 0 || e[d] {
			continue
		}
		for _, c := range static {
			if !c.feasible(int32(n)) {
				continue nodes
			}
		}
		e[d] = true
	}
	s.eligible[key] = e
	return e
}

// scan collects up to p.limit feasible nodes into sch.cands. Binpack walks
// the free-capacity buckets from the smallest that can hold the request
// upwards (fullest first); SpreadLoad walks from the emptiest down. Inside
// a bucket it starts at a seeded offset. The walk only stops early once
// limit feasible nodes are found, so if any feasible node exists it is
// found: the limit bounds scoring, never correctness. Returns the first
// bucket that can hold the request.
func (sch *Scheduler) scan(p *prepared) int {
	s := sch.s
	sch.cands = sch.cands[:0]
	sch.counts = slices.Grow(sch.counts[:0], len(p.chain))[:len(p.chain)]
	clear(sch.counts)
	start := s.bucketOf(p.inst.Request)
	r := int(sch.rng.Uint32())
	visit := func(b int) bool {
		nodes := s.buckets[b]
		if len(nodes) == 0 {
			return false
		}
		off := r % len(nodes)
	next:
		for i := range nodes {
			j := off + i
			if j >= len(nodes) {
				j -= len(nodes)
			}
			n := nodes[j]
			// Buckets hold only ready nodes, so the readiness check
			// (chain[0]) would always pass here.
			for ci := 1; ci < len(p.chain); ci++ {
				if !p.chain[ci].feasible(n) {
					sch.counts[ci]++
					continue next
				}
			}
			sch.cands = append(sch.cands, n)
			if len(sch.cands) >= p.limit {
				return true
			}
		}
		return false
	}
	if sch.cfg.Strategy == SpreadLoad {
		for b := numBuckets - 1; b >= start; b-- {
			if visit(b) {
				break
			}
		}
	} else {
		for b := start; b < numBuckets; b++ {
			if visit(b) {
				break
			}
		}
	}
	return start
}

// explain turns a scan that found nothing into per-filter counts. The scan
// ran the chain on every ready node in buckets >= start; not-ready nodes
// and lower buckets (which cannot hold the request) are added here.
func (sch *Scheduler) explain(p *prepared, start int) *Unplaceable {
	s := sch.s
	sch.counts[0] += s.notReady
	for b := 0; b < start; b++ {
		for _, n := range s.buckets[b] {
			if !p.cpu.feasible(n) {
				sch.counts[1]++
			} else {
				sch.counts[2]++
			}
		}
	}
	u := &Unplaceable{}
	idx := make([]int, 0, len(p.chain))
	for i, k := range sch.counts {
		if k > 0 {
			idx = append(idx, i)
		}
	}
	sort.SliceStable(idx, func(a, b int) bool { return sch.counts[idx[a]] > sch.counts[idx[b]] })
	parts := make([]string, len(idx))
	for i, ci := range idx {
		parts[i] = p.chain[ci].explain(sch.counts[ci])
		u.Filtered = append(u.Filtered, FilterCount{Filter: parts[i], Nodes: sch.counts[ci]})
	}
	u.Reason = strings.Join(parts, "; ")
	return u
}

// score ranks a feasible node; higher is better.
func (sch *Scheduler) score(n int32, p *prepared) float64 {
	s, w := sch.s, &sch.w
	ns := &s.nodes[n]
	after := ns.used.Add(p.inst.Request)
	fit := (frac(after.MilliCPU, ns.capacity.MilliCPU) + frac(after.MemoryBytes, ns.capacity.MemoryBytes)) / 2
	if sch.cfg.Strategy == SpreadLoad {
		fit = 1 - fit
	}
	sc := w.Fit * fit
	if p.affinityAbs > 0 {
		sum := 0.0
		for _, a := range p.affinities {
			if a.c.match(n) {
				sum += a.weight
			}
		}
		sc += w.Affinity * sum / p.affinityAbs
	}
	for _, a := range p.softAnti {
		var c int32
		if a.topo == nil {
			c = ns.groupCount(a.gid)
		} else if d := a.topo.col.vals[n]; d >= 0 {
			c = a.counts[d]
		}
		sc -= w.AntiAffinity * a.weight * float64(c) / float64(c+1)
	}
	if ss := p.softSpread; ss != nil {
		if d := ss.topo.col.vals[n]; d < 0 {
			sc -= w.Spread * ss.weight
		} else {
			sc += w.Spread * ss.weight * float64(ss.max-ss.counts[d]) / float64(ss.max-ss.min+1)
		}
	}
	if p.image >= 0 && ns.hasImage(p.image) {
		sc += w.Image
	}
	if ns.taintSet >= 0 && p.preferTaint[ns.taintSet] {
		sc -= w.PreferNoSchedule
	}
	return sc
}

func frac(v, capacity int64) float64 {
	if capacity <= 0 {
		return 1
	}
	return float64(v) / float64(capacity)
}

// apply records the placement (after evicting victims) and bumps the
// node's generation once; the decision carries the generation it assumed.
func (sch *Scheduler) apply(n int32, p *prepared, victims []alloc) *Decision {
	s := sch.s
	ns := &s.nodes[n]
	d := &Decision{InstanceID: p.inst.ID, NodeID: ns.node.ID, NodeGeneration: ns.generation}
	for _, v := range victims {
		s.removeAlloc(n, v.id)
		d.Preempt = append(d.Preempt, Victim{InstanceID: v.id, Group: s.groupNames[v.gid], Priority: v.prio, Request: v.req})
	}
	var ports []Port
	if len(p.inst.HostPorts) > 0 {
		ports = slices.Clone(p.inst.HostPorts)
	}
	s.addAlloc(n, alloc{id: p.inst.ID, gid: p.gid, prio: p.inst.Priority, req: p.inst.Request, ports: ports}, true)
	ns.generation++
	return d
}
