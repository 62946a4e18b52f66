package scheduler

import (
	"fmt"
	"strconv"
)

// check is one feasibility filter. A placement runs a chain of them, cheap
// ones first, and stops at the first that refuses a node; explanations count
// refusals per check.
type check interface {
	// feasible reports whether node n passes.
	feasible(n int32) bool
	// explain says what the check did to count nodes, for an Unplaceable.
	explain(count int) string
	// evictable reports whether evicting lower-priority instances can make
	// a refused node pass (resources and ports), for preemption.
	evictable() bool
}

type readyCheck struct{ s *State }

func (c *readyCheck) feasible(n int32) bool { return c.s.nodes[n].ready }
func (c *readyCheck) explain(k int) string  { return "not ready on " + nodes(k) }
func (c *readyCheck) evictable() bool       { return false }

type cpuCheck struct {
	s   *State
	req int64
}

func (c *cpuCheck) feasible(n int32) bool {
	ns := &c.s.nodes[n]
	return ns.capacity.MilliCPU-ns.used.MilliCPU >= c.req
}
func (c *cpuCheck) explain(k int) string { return "cpu exhausted on " + nodes(k) }
func (c *cpuCheck) evictable() bool      { return true }

type memoryCheck struct {
	s   *State
	req int64
}

func (c *memoryCheck) feasible(n int32) bool {
	ns := &c.s.nodes[n]
	return ns.capacity.MemoryBytes-ns.used.MemoryBytes >= c.req
}
func (c *memoryCheck) explain(k int) string { return "memory exhausted on " + nodes(k) }
func (c *memoryCheck) evictable() bool      { return true }

type portCheck struct {
	s    *State
	port Port
}

func (c *portCheck) feasible(n int32) bool { return c.s.nodes[n].portFree(c.port) }
func (c *portCheck) explain(k int) string {
	return "port " + strconv.Itoa(int(c.port)) + " taken on " + thousands(k)
}
func (c *portCheck) evictable() bool { return true }

type tierCheck struct {
	s    *State
	tier string
	bit  uint64 // 0 when no node offers the tier
}

func (c *tierCheck) feasible(n int32) bool { return c.s.nodes[n].tiers&c.bit != 0 }
func (c *tierCheck) explain(k int) string {
	return "tier " + c.tier + " unavailable on " + nodes(k)
}
func (c *tierCheck) evictable() bool { return false }

type constraintCheck struct{ c *compiledConstraint }

func (c *constraintCheck) feasible(n int32) bool { return c.c.match(n) }
func (c *constraintCheck) explain(k int) string {
	return "constraint " + c.c.name + " filtered " + thousands(k)
}
func (c *constraintCheck) evictable() bool { return false }

type taintCheck struct {
	s         *State
	tolerated []bool // per taint set
}

func (c *taintCheck) feasible(n int32) bool {
	t := c.s.nodes[n].taintSet
	return t < 0 || c.tolerated[t]
}
func (c *taintCheck) explain(k int) string { return "untolerated taint on " + nodes(k) }
func (c *taintCheck) evictable() bool      { return false }

// distinctHostsCheck is hard anti-affinity at node level: no instance of
// the group may already run on the node.
type distinctHostsCheck struct {
	s     *State
	gid   int32
	group string
}

func (c *distinctHostsCheck) feasible(n int32) bool { return c.s.nodes[n].groupCount(c.gid) == 0 }
func (c *distinctHostsCheck) explain(k int) string {
	return "anti-affinity with " + c.group + " (distinct hosts) filtered " + thousands(k)
}
func (c *distinctHostsCheck) evictable() bool { return false }

// antiAffinityCheck is hard anti-affinity per topology domain: no instance
// of the group may already run in the node's zone (rack, label value).
// Nodes outside every domain conflict with nothing.
type antiAffinityCheck struct {
	topo   *topology
	counts []int32
	group  string
}

func (c *antiAffinityCheck) feasible(n int32) bool {
	d := c.topo.col.vals[n]
	return d < 0 || c.counts[d] == 0
}
func (c *antiAffinityCheck) explain(k int) string {
	return "anti-affinity with " + c.group + " per " + c.topo.key + " filtered " + thousands(k)
}
func (c *antiAffinityCheck) evictable() bool { return false }

// spreadCheck is hard topology spread: placing in the node's domain must
// keep count-min <= maxSkew, min taken over the eligible domains (those
// with a node the instance's static checks accept). Nodes outside every
// domain are refused, as kube-scheduler does.
type spreadCheck struct {
	topo    *topology
	counts  []int32
	min     int32
	maxSkew int32
}

func (c *spreadCheck) feasible(n int32) bool {
	d := c.topo.col.vals[n]
	return d >= 0 && c.counts[d]+1-c.min <= c.maxSkew
}
func (c *spreadCheck) explain(k int) string {
	return fmt.Sprintf("spread over %s (max skew %d) filtered %s", c.topo.key, c.maxSkew, thousands(k))
}
func (c *spreadCheck) evictable() bool { return false }

func nodes(k int) string {
	if k == 1 {
		return "1 node"
	}
	return thousands(k) + " nodes"
}

// thousands formats 8112 as "8,112".
func thousands(k int) string {
	s := strconv.Itoa(k)
	neg := ""
	if k < 0 {
		neg, s = "-", s[1:]
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return neg + s
}
