package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/prometheus/client_golang/prometheus"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/runtime"
	"nexus.dev/nexus/runtime/cgroups"
)

// Resource use of the node's containers: every StatsInterval one pass
// reads each running container's cgroup counters (its state file and
// about ten small cgroup files, no process), keeps the latest
// reading for /metrics and puts a summary in the Instance's status.
//
// The status is an object in the replicated store, so every rewrite costs
// a consensus round and wakes every watcher of Instances. A summary is
// therefore rewritten only when a number moved by more than what a person
// would act on, and only once per statsPublishGap intervals; an OOM kill,
// a changed limit and the first measurement go out at once.

// DefaultStatsInterval is how often the agent reads its containers'
// cgroups unless Config.StatsInterval says otherwise.
const DefaultStatsInterval = 10 * time.Second

// Thresholds of a "noticeable" change. A 10 % or 5 millicore move in CPU
// is below what a dashboard or a scaling decision resolves (an idle HTTP
// server wobbles by 1-2 millicores between intervals); 5 % or 1 MiB of
// memory is finer than a limit is ever set, and a Go or JVM heap moves
// by more than that only when its use really changes.
const (
	cpuChangeMillicores = 5
	cpuChangePercent    = 10
	memChangeBytes      = 1 << 20
	memChangePercent    = 5
	pidsChange          = 2
	pidsChangePercent   = 10
	// statsPublishGap is how many sampling intervals pass at least between
	// two rewrites for ordinary changes: with the default interval an
	// instance whose load keeps moving costs one write per 30 s, 33
	// writes/s for 1,000 such instances, instead of 100.
	statsPublishGap = 3
)

// reading is one read of a container's cgroup counters.
type reading struct {
	at         time.Time
	cpuNanos   uint64
	workingSet uint64
	limit      uint64
	oomKills   uint64
	pids       uint64
}

func readingOf(s *cgroups.Stats, at time.Time) reading {
	ws := s.Memory.Usage
	if s.Memory.InactiveFile < ws {
		ws -= s.Memory.InactiveFile
	} else {
		ws = 0
	}
	return reading{at: at, cpuNanos: s.CPU.UsageNanos, workingSet: ws, limit: s.Memory.Limit,
		oomKills: s.Memory.OOMKills, pids: s.Pids.Current}
}

// usageTracker turns one instance's readings into the summary its status
// shows and decides when that summary is worth a write. It is pure: the
// caller reads the cgroups and publishes.
type usageTracker struct {
	// last is the current container's latest reading (nil before the
	// first and after the container ended); cpu is the CPU rate between
	// the last two readings.
	last *reading
	cpu  int64
	// Counters of the instance's earlier containers (ended and deleted),
	// so the instance's totals do not start over at a restart.
	oomBase, cpuBase uint64
	// seedKills is the OOM kill count an earlier agent published, not yet
	// split into the current container's and its predecessors'.
	seedKills *uint64
	// published is what the status says; publishedAt when the tracker
	// published it (zero: the next summary goes out at once).
	published   *types.InstanceUsage
	publishedAt time.Time
	// gen counts the instance's ended containers: a reading taken before
	// an end is not applied after it.
	gen int
}

// newUsageTracker starts tracking an instance whose status says prev
// (from an earlier agent, or nil).
func newUsageTracker(prev *types.InstanceUsage) *usageTracker {
	t := &usageTracker{published: prev}
	if prev != nil {
		// Not a first report: a restarted agent does not rewrite every
		// instance's status at once.
		t.publishedAt = prev.SampledAt
		k := uint64(prev.OOMKills)
		t.seedKills = &k
	}
	return t
}

// resolveSeed splits the kills an earlier agent counted, now that the
// current container's own count is known: the rest were its
// predecessors', which only the status still remembers.
func (t *usageTracker) resolveSeed(current uint64) {
	if t.seedKills != nil {
		t.oomBase += *t.seedKills - min(*t.seedKills, current)
		t.seedKills = nil
	}
}

// observe takes a reading of the current container and returns the
// summary, and whether it should be published now (interval is the
// sampling interval).
func (t *usageTracker) observe(r reading, interval time.Duration) (types.InstanceUsage, bool) {
	t.resolveSeed(r.oomKills)
	hasRate := false
	if p := t.last; p != nil && r.cpuNanos >= p.cpuNanos && r.at.After(p.at) {
		t.cpu = int64((r.cpuNanos - p.cpuNanos) * 1000 / uint64(r.at.Sub(p.at)))
		hasRate = true
	}
	t.last = &r
	u := types.InstanceUsage{
		CPUMillicores:    t.cpu,
		MemoryBytes:      int64(r.workingSet),
		MemoryLimitBytes: int64(r.limit),
		OOMKills:         int64(t.oomBase + r.oomKills),
		Pids:             int64(r.pids),
		SampledAt:        r.at.UTC().Truncate(time.Second),
	}
	if !hasRate {
		// Without a rate the CPU figure would be a guess: wait for the
		// next reading, unless an OOM kill must be told now.
		if t.published == nil || u.OOMKills == t.published.OOMKills {
			return u, false
		}
		u.CPUMillicores = t.published.CPUMillicores
	}
	return u, t.worthPublishing(u, r.at, interval)
}

// worthPublishing applies the thresholds and the gap between writes, and
// records u as published when it says yes.
func (t *usageTracker) worthPublishing(u types.InstanceUsage, now time.Time, interval time.Duration) bool {
	p := t.published
	urgent := p == nil || t.publishedAt.IsZero() || u.OOMKills != p.OOMKills || u.MemoryLimitBytes != p.MemoryLimitBytes
	if !urgent {
		if !changed(p.CPUMillicores, u.CPUMillicores, cpuChangeMillicores, cpuChangePercent) &&
			!changed(p.MemoryBytes, u.MemoryBytes, memChangeBytes, memChangePercent) &&
			!changed(p.Pids, u.Pids, pidsChange, pidsChangePercent) {
			return false
		}
		if now.Sub(t.publishedAt) < statsPublishGap*interval {
			return false
		}
	}
	t.published, t.publishedAt = &u, now
	return true
}

// changed says whether v moved from old by at least abs or pct percent of
// old, whichever is more.
func changed(old, v, abs, pct int64) bool {
	d := v - old
	if d < 0 {
		d = -d
	}
	return d >= max(abs, old*pct/100)
}

// ended folds the final reading of a container that exited (taken before
// it is deleted, nil if it failed) into the instance's totals; oomKilled
// is what its exit status says. It returns the summary to publish: the
// container uses nothing now.
func (t *usageTracker) ended(final *reading, oomKilled bool, at time.Time) types.InstanceUsage {
	if final == nil {
		final = t.last
	}
	var kills, cpu uint64
	if final != nil {
		kills, cpu = final.oomKills, final.cpuNanos
	}
	t.resolveSeed(kills)
	if oomKilled && kills == 0 {
		kills = 1
	}
	t.oomBase += kills
	t.cpuBase += cpu
	t.last, t.cpu = nil, 0
	t.gen++
	u := types.InstanceUsage{OOMKills: int64(t.oomBase), SampledAt: at.UTC().Truncate(time.Second)}
	switch {
	case final != nil:
		u.MemoryLimitBytes = int64(final.limit)
	case t.published != nil:
		u.MemoryLimitBytes = t.published.MemoryLimitBytes
	}
	// The next container's first summary goes out at once.
	t.published, t.publishedAt = &u, time.Time{}
	return u
}

// usageStats samples the node's containers and serves their metrics.
type usageStats struct {
	a        *Agent
	interval time.Duration
	descs    usageDescs

	mu       sync.Mutex
	trackers map[string]*usageTracker // by instance UID
}

func newUsageStats(a *Agent, interval time.Duration) *usageStats {
	return &usageStats{a: a, interval: interval, descs: newUsageDescs(a.cfg.NodeName), trackers: map[string]*usageTracker{}}
}

// start registers the metrics (when the agent has a registry) and samples
// every interval until ctx ends; stop waits for the sampler and takes the
// metrics away.
func (u *usageStats) start(ctx context.Context) (stop func(), err error) {
	reg := u.a.cfg.Metrics
	if reg != nil {
		if err := reg.Register(u); err != nil {
			return nil, fmt.Errorf("agent: register the instance metrics of node %s: %w", u.a.cfg.NodeName, err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(u.interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				u.sample()
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() {
		<-done
		if reg != nil {
			reg.Unregister(u)
		}
	}, nil
}

// supervisors returns the agent's supervisors.
func (a *Agent) supervisors() []*supervisor {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*supervisor, 0, len(a.sups))
	for _, s := range a.sups {
		out = append(out, s)
	}
	return out
}

// tracker returns the tracker of instance uid, making it on first use
// from what the status says (prev). The caller holds u.mu.
func (u *usageStats) tracker(uid string, prev *types.InstanceUsage) *usageTracker {
	t := u.trackers[uid]
	if t == nil {
		t = newUsageTracker(prev)
		u.trackers[uid] = t
	}
	return t
}

// usageState is what the stats need of the supervisor's instance.
func (s *supervisor) usageState() (uid string, phase types.InstancePhase, prev *types.InstanceUsage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inst.UID, s.status.Phase, s.status.Resources
}

// sample is one pass over the node's running containers.
func (u *usageStats) sample() {
	sups := u.a.supervisors()
	live := make(map[string]bool, len(sups))
	for _, s := range sups {
		uid, phase, prev := s.usageState()
		live[uid] = true
		if phase != types.PhaseRunning {
			continue
		}
		u.mu.Lock()
		t := u.tracker(uid, prev)
		gen := t.gen
		u.mu.Unlock()
		// Checked after gen was read: a container that ended before is
		// not read as if it were the next one.
		if st, err := u.a.cfg.Runtime.State(s.c.id); err != nil || st.Status != specs.StateRunning {
			continue
		}
		raw, err := u.a.cfg.Runtime.Stats(s.c.id)
		if raw == nil {
			if !errors.Is(err, runtime.ErrNotExist) {
				s.log().Debug("read the container's cgroup counters", "err", err)
			}
			continue
		}
		// A partial read (err with raw) still has the counters that could
		// be read.
		r := readingOf(raw, time.Now())
		u.mu.Lock()
		if t.gen != gen {
			u.mu.Unlock()
			continue // the container ended while it was read
		}
		sum, publish := t.observe(r, u.interval)
		u.mu.Unlock()
		if publish {
			s.setStatus(func(st *types.InstanceStatus) { st.Resources = &sum })
		}
	}
	u.mu.Lock()
	for uid := range u.trackers {
		if !live[uid] {
			delete(u.trackers, uid)
		}
	}
	u.mu.Unlock()
}

// containerExited is called by the supervisor when its container has
// exited and before it is deleted: the cgroup still holds the final
// counters (an OOM kill of the init is counted only there).
func (s *supervisor) containerExited(es runtime.ExitStatus) {
	u := s.a.stats
	uid, _, prev := s.usageState()
	var final *reading
	if raw, _ := s.a.cfg.Runtime.Stats(s.c.id); raw != nil {
		r := readingOf(raw, time.Now())
		final = &r
	}
	u.mu.Lock()
	sum := u.tracker(uid, prev).ended(final, es.OOMKilled, time.Now())
	u.mu.Unlock()
	s.setStatus(func(st *types.InstanceStatus) { st.Resources = &sum })
}

// Metric names: one series per instance on this node, labelled with its
// namespace, name and workload (the node is a constant label).
const (
	metricCPU      = "nexus_instance_cpu_seconds_total"
	metricMemory   = "nexus_instance_memory_working_set_bytes"
	metricLimit    = "nexus_instance_memory_limit_bytes"
	metricOOM      = "nexus_instance_oom_kills_total"
	metricRestarts = "nexus_instance_restarts_total"
	metricPids     = "nexus_instance_pids"
)

type usageDescs struct {
	cpu, memory, limit, oom, restarts, pids *prometheus.Desc
}

func newUsageDescs(node string) usageDescs {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"namespace", "instance", "workload"}, prometheus.Labels{"node": node})
	}
	return usageDescs{
		cpu:      d(metricCPU, "CPU time used by the instance's containers since this agent took the instance over."),
		memory:   d(metricMemory, "Memory the instance's container uses, minus the page cache the kernel reclaims first (the working set)."),
		limit:    d(metricLimit, "The memory limit of the instance's container (absent without one)."),
		oom:      d(metricOOM, "Processes of the instance's containers killed by the kernel's OOM killer."),
		restarts: d(metricRestarts, "Times the instance's container was started again after it exited."),
		pids:     d(metricPids, "Processes and threads in the instance's container."),
	}
}

// Describe implements prometheus.Collector.
func (u *usageStats) Describe(ch chan<- *prometheus.Desc) {
	d := &u.descs
	for _, x := range []*prometheus.Desc{d.cpu, d.memory, d.limit, d.oom, d.restarts, d.pids} {
		ch <- x
	}
}

// Collect implements prometheus.Collector: it reports the latest readings,
// taken at most an interval ago, without reading any cgroup, so a scrape
// costs the same however often it comes. An instance's series go when its
// supervisor does.
func (u *usageStats) Collect(ch chan<- prometheus.Metric) {
	d := &u.descs
	for _, s := range u.a.supervisors() {
		inst := s.instance()
		s.mu.Lock()
		restarts := s.status.Restarts
		s.mu.Unlock()
		labels := []string{inst.Namespace, inst.Name, inst.Spec.Workload}
		ch <- prometheus.MustNewConstMetric(d.restarts, prometheus.CounterValue, float64(restarts), labels...)
		u.mu.Lock()
		t := u.trackers[inst.UID]
		var last *reading
		var oom, cpu uint64
		if t != nil {
			last, oom, cpu = t.last, t.oomBase, t.cpuBase
			if t.seedKills != nil {
				oom = *t.seedKills
			}
		}
		u.mu.Unlock()
		if last != nil {
			oom += last.oomKills
			cpu += last.cpuNanos
		}
		ch <- prometheus.MustNewConstMetric(d.oom, prometheus.CounterValue, float64(oom), labels...)
		if t == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(d.cpu, prometheus.CounterValue, float64(cpu)/1e9, labels...)
		if last == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(d.memory, prometheus.GaugeValue, float64(last.workingSet), labels...)
		ch <- prometheus.MustNewConstMetric(d.pids, prometheus.GaugeValue, float64(last.pids), labels...)
		if last.limit > 0 {
			ch <- prometheus.MustNewConstMetric(d.limit, prometheus.GaugeValue, float64(last.limit), labels...)
		}
	}
}
