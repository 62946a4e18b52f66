package scheduler

import (
	"cmp"
	"slices"
)

// victimOrder is a sort key for one candidate victim on a node.
type victimOrder struct {
	prio int32
	size float64 // negated share of the largest node, so larger sorts first
	idx  int32   // position in the node's allocations
}

// preempt looks for a node where evicting strictly lower-priority
// instances makes room, and leaves the chosen victims in sch.best.
//
// Candidate nodes are those that pass every check evicting cannot change
// (readiness, tier, constraints, taints, anti-affinity, spread). On each,
// victims are chosen greedily: holders of a requested port first (they
// must go), then lowest priority first, largest first within a priority,
// until the request fits; then victims that turned out unnecessary are
// dropped again, last added first. Among nodes, the smallest victim set
// wins, compared by (highest victim priority, number of victims, share of
// the node freed). The walk starts at a seeded node and stops after
// PreemptionLimit workable nodes, so on large clusters the choice is the
// best of a sample. Victims are not counted as gone for anti-affinity and
// spread, which can only make preemption refuse a node it could have used.
//
// No ping-pong: a victim always has a strictly lower priority than the
// preemptor, so when the victim is placed again it can never preempt the
// preemptor back (that would need its priority to be strictly higher).
// Equal priorities never preempt each other.
func (sch *Scheduler) preempt(p *prepared) (int32, bool) {
	s := sch.s
	prio := p.inst.Priority
	if !s.anyBelow(prio) {
		return 0, false
	}
	nn := len(s.nodes)
	off := int(sch.rng.Uint32() % uint32(nn))
	var (
		bestNode = int32(-1)
		bestKey  victimKey
		workable int
	)
	sch.best = sch.best[:0]
nodes:
	for i := range nn {
		n := int32((off + i) % nn)
		for _, c := range p.chain {
			if !c.evictable() && !c.feasible(n) {
				continue nodes
			}
		}
		key, ok := sch.victimsOn(n, p)
		if !ok {
			continue
		}
		workable++
		if bestNode < 0 || key.less(bestKey) {
			bestNode, bestKey = n, key
			sch.best = append(sch.best[:0], sch.victims...)
		}
		if workable >= sch.cfg.PreemptionLimit {
			break
		}
	}
	return bestNode, bestNode >= 0
}

type victimKey struct {
	maxPrio int32
	count   int
	freed   float64
}

func (a victimKey) less(b victimKey) bool {
	if a.maxPrio != b.maxPrio {
		return a.maxPrio < b.maxPrio
	}
	if a.count != b.count {
		return a.count < b.count
	}
	return a.freed < b.freed
}

// victimsOn computes the victim set for node n into sch.victims.
func (sch *Scheduler) victimsOn(n int32, p *prepared) (victimKey, bool) {
	ns := &sch.s.nodes[n]
	inst := p.inst
	need := inst.Request.Sub(ns.capacity.Sub(ns.used))
	sch.victims = sch.victims[:0]
	var freed Resources
	mandatory := 0
	for _, a := range ns.allocs {
		if !holdsAny(a.ports, inst.HostPorts) {
			continue
		}
		if a.prio >= inst.Priority {
			return victimKey{}, false
		}
		sch.victims = append(sch.victims, a)
		freed = freed.Add(a.req)
	}
	mandatory = len(sch.victims)
	if !need.Fits(freed) {
		// Candidates beyond the mandatory ones, cheapest to lose first:
		// lowest priority, then largest (fewest victims), then position.
		var avail Resources
		order := sch.order[:0]
		maxC, maxM := sch.s.maxCap.MilliCPU, sch.s.maxCap.MemoryBytes
		for i, a := range ns.allocs {
			if a.prio < inst.Priority && !holdsAny(a.ports, inst.HostPorts) {
				order = append(order, victimOrder{a.prio, -(frac(a.req.MilliCPU, maxC) + frac(a.req.MemoryBytes, maxM)), int32(i)})
				avail = avail.Add(a.req)
			}
		}
		sch.order = order
		if !need.Fits(freed.Add(avail)) {
			return victimKey{}, false
		}
		slices.SortFunc(order, func(a, b victimOrder) int {
			if a.prio != b.prio {
				return cmp.Compare(a.prio, b.prio)
			}
			if a.size != b.size {
				return cmp.Compare(a.size, b.size)
			}
			return cmp.Compare(a.idx, b.idx)
		})
		for k := 0; k < len(order) && !need.Fits(freed); k++ {
			a := ns.allocs[order[k].idx]
			sch.victims = append(sch.victims, a)
			freed = freed.Add(a.req)
		}
		for i := len(sch.victims) - 1; i >= mandatory; i-- {
			if without := freed.Sub(sch.victims[i].req); need.Fits(without) {
				freed = without
				sch.victims = slices.Delete(sch.victims, i, i+1)
			}
		}
	}
	key := victimKey{maxPrio: -1 << 31, count: len(sch.victims)}
	for _, v := range sch.victims {
		key.maxPrio = max(key.maxPrio, v.prio)
	}
	key.freed = frac(freed.MilliCPU, ns.capacity.MilliCPU) + frac(freed.MemoryBytes, ns.capacity.MemoryBytes)
	return key, true
}

func holdsAny(have, want []Port) bool {
	for _, h := range have {
		for _, w := range want {
			if h == w {
				return true
			}
		}
	}
	return false
}
