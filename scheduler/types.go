package scheduler

// Resources is an amount of CPU and memory. Host ports are tracked apart
// because they are not additive.
type Resources struct {
	MilliCPU    int64
	MemoryBytes int64
}

// Add returns r + o.
func (r Resources) Add(o Resources) Resources {
	return Resources{r.MilliCPU + o.MilliCPU, r.MemoryBytes + o.MemoryBytes}
}

// Sub returns r - o.
func (r Resources) Sub(o Resources) Resources {
	return Resources{r.MilliCPU - o.MilliCPU, r.MemoryBytes - o.MemoryBytes}
}

// Fits reports whether r fits inside free.
func (r Resources) Fits(free Resources) bool {
	return r.MilliCPU <= free.MilliCPU && r.MemoryBytes <= free.MemoryBytes
}

// Port is a host port. TCP and UDP share one namespace here: a port taken
// for either protocol counts as taken, which can only refuse a placement
// that would have been legal, never allow a clash.
type Port uint16

// TaintEffect says what a taint does to instances that do not tolerate it.
type TaintEffect string

const (
	// NoSchedule keeps instances that do not tolerate the taint off the node.
	NoSchedule TaintEffect = "NoSchedule"
	// NoExecute is NoSchedule for placement (evicting running instances is
	// the node controller's job, not the scheduler's).
	NoExecute TaintEffect = "NoExecute"
	// PreferNoSchedule only lowers the node's score.
	PreferNoSchedule TaintEffect = "PreferNoSchedule"
)

// Taint marks a node so that only instances with a matching toleration go there.
// The JSON tags on this and the other placement types below are the API's
// (api/types reuses these types rather than redefining them).
type Taint struct {
	Key    string      `json:"key"`
	Value  string      `json:"value,omitempty"`
	Effect TaintEffect `json:"effect"`
}

// Toleration lets an instance onto nodes with matching taints. With Exists
// the value is ignored; an empty Key with Exists tolerates every taint; an
// empty Effect matches every effect.
type Toleration struct {
	Key    string      `json:"key,omitempty"`
	Exists bool        `json:"exists,omitempty"`
	Value  string      `json:"value,omitempty"`
	Effect TaintEffect `json:"effect,omitempty"`
	// Seconds bounds how long an instance stays on a node after a
	// NoExecute taint it tolerates appears (the node lifecycle controller
	// evicts it then); nil tolerates it for ever. Placement ignores it.
	Seconds *int64 `json:"tolerationSeconds,omitempty"`
}

// Tolerates reports whether t tolerates taint.
func (t Toleration) Tolerates(taint Taint) bool {
	if t.Effect != "" && t.Effect != taint.Effect {
		return false
	}
	if t.Key == "" {
		return t.Exists
	}
	if t.Key != taint.Key {
		return false
	}
	return t.Exists || t.Value == taint.Value
}

// Node is one machine as the scheduler sees it.
type Node struct {
	ID       string
	Capacity Resources
	// Allocated is everything already taken on the node, including the
	// requests of the Allocations listed for it in the Snapshot (and
	// whatever else the node reserves, which cannot be preempted).
	Allocated Resources
	Labels    map[string]string
	Taints    []Taint
	Zone      string
	Rack      string
	Ready     bool
	// Tiers lists the isolation tiers the node can run ("container",
	// "sandbox", "vm"). An instance that names a tier needs it here.
	Tiers []string
	// Images are the image names or digests already present.
	Images []string
	// Generation is the version of the node's allocation record that this
	// snapshot saw; decisions carry it so the binder can compare-and-swap.
	Generation uint64
}

// Allocation is an instance already placed on a node.
type Allocation struct {
	InstanceID string
	NodeID     string
	Group      string
	Priority   int32
	Request    Resources
	Ports      []Port
}

// Spread asks for instances of a group to be spread over a topology.
type Spread struct {
	// Topology is "zone", "rack" or a node label key.
	Topology string `json:"topology"`
	// MaxSkew bounds count(domain)-min(count) after a placement; 0 means 1.
	MaxSkew int `json:"maxSkew,omitempty"`
	// Hard makes the bound a filter; otherwise it is a score.
	Hard bool `json:"hard,omitempty"`
	// Weight of the soft version (0..100); 0 means 50.
	Weight int `json:"weight,omitempty"`
}

// AntiAffinity keeps an instance away from instances of a group.
type AntiAffinity struct {
	// Group to avoid; empty means the instance's own group. In the API it
	// is written as the name of a workload in the same namespace.
	Group string `json:"workload,omitempty"`
	// Topology is "" for the node (distinct hosts), or "zone", "rack" or a
	// label key: at most one such instance per domain when Hard.
	Topology string `json:"topology,omitempty"`
	Hard     bool   `json:"hard,omitempty"`
	// Weight (1..100) of the soft version.
	Weight int `json:"weight,omitempty"`
}

// Affinity is a soft preference for nodes matching a constraint. Negative
// weights repel.
type Affinity struct {
	Constraint Constraint
	Weight     int // -100..100
}

// Instance is one thing to place.
type Instance struct {
	ID string
	// Group is the workload the instance belongs to; anti-affinity and
	// spread count instances per group.
	Group        string
	Request      Resources
	HostPorts    []Port
	Constraints  []Constraint
	Affinities   []Affinity
	AntiAffinity []AntiAffinity
	Spread       *Spread
	Tolerations  []Toleration
	Priority     int32
	// Tier is the isolation tier required; empty accepts any node.
	Tier  string
	Image string
	// Batch work is placed with power-of-two choices instead of scoring a
	// larger sample.
	Batch bool
}

// Victim is an allocation a decision evicts. It lives on the decision's
// node, so the decision's NodeGeneration covers it too.
type Victim struct {
	InstanceID string
	Group      string
	Priority   int32
	Request    Resources
}

// Decision is a successful placement.
type Decision struct {
	InstanceID string
	NodeID     string
	// NodeGeneration is the node generation the decision assumed; the
	// binder writes only if the node record still has it (compare-and-swap).
	// After applying the decision the scheduler's state holds
	// NodeGeneration+1.
	NodeGeneration uint64
	Preempt        []Victim
	// Score of the chosen node, and Sampled how many feasible nodes were
	// scored to choose it (the ScoreLimit sample; 0 when preempting).
	Score   float64
	Sampled int
}

// Unplaceable explains why an instance could not be placed.
type Unplaceable struct {
	// Reason is a one-line summary, e.g. "cpu exhausted on 8,112 nodes;
	// constraint zone=eu filtered 1,800; port 80 taken on 88".
	Reason string
	// Filtered counts the nodes each filter removed (each node counted once,
	// by the first filter that refused it), largest first.
	Filtered []FilterCount
}

// FilterCount is how many nodes one filter removed.
type FilterCount struct {
	Filter string
	Nodes  int
}

// Result is the outcome for one instance: exactly one of Decision and
// Unplaceable is set.
type Result struct {
	InstanceID  string
	Decision    *Decision
	Unplaceable *Unplaceable
}
