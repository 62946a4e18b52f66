package agent

import (
	"testing"
	"time"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/runtime/cgroups"
)

const interval = 10 * time.Second

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// at is the reading n intervals after t0 with cpu seconds of CPU used so
// far and mem MiB of working set.
func at(n int, cpu float64, mem int64, oom uint64) reading {
	return reading{at: t0.Add(time.Duration(n) * interval), cpuNanos: uint64(cpu * 1e9), workingSet: uint64(mem << 20),
		limit: 64 << 20, oomKills: oom, pids: 4}
}

type step struct {
	r       reading
	publish bool
	cpu     int64 // millicores, when published
	mem     int64 // MiB, when published
	oom     int64
}

func run(t *testing.T, tr *usageTracker, steps []step) {
	t.Helper()
	for i, s := range steps {
		u, pub := tr.observe(s.r, interval)
		if pub != s.publish {
			t.Fatalf("reading %d (%+v): publish %v, want %v (summary %+v)", i, s.r, pub, s.publish, u)
		}
		if pub && (u.CPUMillicores != s.cpu || u.MemoryBytes != s.mem<<20 || u.OOMKills != s.oom) {
			t.Fatalf("reading %d: summary cpu %dm, memory %d, oom %d; want %dm, %d MiB, %d", i, u.CPUMillicores, u.MemoryBytes, u.OOMKills, s.cpu, s.mem, s.oom)
		}
	}
}

// TestUsageTrackerPublishesNoticeableChanges: the CPU rate needs two
// readings; small moves are not written; a noticeable one is, but not
// sooner than statsPublishGap intervals after the last write, unless it is
// an OOM kill.
func TestUsageTrackerPublishesNoticeableChanges(t *testing.T) {
	tr := newUsageTracker(nil)
	run(t, tr, []step{
		{r: at(0, 0, 20, 0)}, // no rate yet
		{r: at(1, 1, 20, 0), publish: true, cpu: 100, mem: 20},           // 1 s of CPU in 10 s, first report
		{r: at(2, 2.03, 20, 0)},                                          // 103m: less than 10 %
		{r: at(3, 3.5, 21, 0)},                                           // 147m: noticeable, but 2 intervals after the write
		{r: at(4, 5.0, 21, 0), publish: true, cpu: 150, mem: 21},         // the gap has passed
		{r: at(5, 6.5, 21, 1), publish: true, cpu: 150, mem: 21, oom: 1}, // an OOM kill: at once
		{r: at(6, 8.0, 21, 1)},                                           // nothing new
		{r: at(7, 9.5, 21, 1)},
		{r: at(8, 11.0, 21, 1)},
		{r: at(9, 12.5, 30, 1), publish: true, cpu: 150, mem: 30, oom: 1}, // +9 MiB, gap passed
	})
}

func TestChangedThresholds(t *testing.T) {
	for _, tc := range []struct {
		old, v, abs, pct int64
		want             bool
	}{
		{0, 4, 5, 10, false}, {0, 5, 5, 10, true}, {100, 104, 5, 10, false}, {100, 110, 5, 10, true},
		{1000, 1090, 5, 10, false}, {1000, 900, 5, 10, true}, {20 << 20, 21 << 20, 1 << 20, 5, true},
		{100 << 20, 104 << 20, 1 << 20, 5, false}, {100 << 20, 95 << 20, 1 << 20, 5, true},
	} {
		if got := changed(tc.old, tc.v, tc.abs, tc.pct); got != tc.want {
			t.Errorf("changed(%d -> %d, %d or %d%%) = %v", tc.old, tc.v, tc.abs, tc.pct, got)
		}
	}
}

// TestUsageTrackerAcrossRestarts: an OOM-killed container's kills and CPU
// count on in the next container's totals; the summary after the exit says
// nothing runs; the next container's first summary goes out at once.
func TestUsageTrackerAcrossRestarts(t *testing.T) {
	tr := newUsageTracker(nil)
	run(t, tr, []step{
		{r: at(0, 0, 20, 0)},
		{r: at(1, 1, 20, 0), publish: true, cpu: 100, mem: 20},
	})
	final := at(1, 1.2, 64, 1) // killed between readings
	u := tr.ended(&final, true, t0.Add(15*time.Second))
	if u.OOMKills != 1 || u.CPUMillicores != 0 || u.MemoryBytes != 0 || u.MemoryLimitBytes != 64<<20 || u.SampledAt.IsZero() {
		t.Fatalf("after the OOM kill: %+v", u)
	}
	// The next container: counters from zero again, a reading without a
	// rate (its CPU counter is below the last one's) is not written.
	run(t, tr, []step{
		{r: at(2, 0.1, 5, 0)},
		{r: at(3, 0.2, 5, 0), publish: true, cpu: 10, mem: 5, oom: 1},
		{r: at(4, 0.3, 5, 0)},
	})
	// An exit whose final reading failed still counts the kill its exit
	// status reports.
	u = tr.ended(nil, true, t0.Add(50*time.Second))
	if u.OOMKills != 2 {
		t.Fatalf("after a second OOM-killed container: %d kills, want 2", u.OOMKills)
	}
	tr2 := newUsageTracker(nil)
	if u := tr2.ended(nil, true, t0); u.OOMKills != 1 {
		t.Fatalf("an OOM kill before any reading: %d kills, want 1", u.OOMKills)
	}
	if u := tr2.ended(nil, false, t0); u.OOMKills != 1 {
		t.Fatalf("a plain exit after it: %d kills, want 1", u.OOMKills)
	}
}

// TestUsageTrackerAfterAgentRestart: a new agent starts from the status an
// earlier one wrote: its first readings are not a burst of writes, and the
// OOM kills of containers before the adopted one are kept.
func TestUsageTrackerAfterAgentRestart(t *testing.T) {
	prev := &types.InstanceUsage{CPUMillicores: 100, MemoryBytes: 20 << 20, MemoryLimitBytes: 64 << 20, OOMKills: 3, Pids: 4, SampledAt: t0}
	tr := newUsageTracker(prev)
	// The adopted container has 1 kill of its own: 2 were its
	// predecessors'.
	run(t, tr, []step{
		{r: at(10, 50, 20, 1)},
		{r: at(11, 51, 20, 1)}, // 100m, 20 MiB: as the status says
		{r: at(12, 52, 20, 2), publish: true, cpu: 100, mem: 20, oom: 4},
	})
	// Adopted, but it had exited while no agent ran, with 2 kills.
	tr = newUsageTracker(prev)
	final := at(10, 50, 0, 2)
	if u := tr.ended(&final, true, t0); u.OOMKills != 3 {
		t.Fatalf("an adopted container that ended with 2 of the 3 kills: %d, want 3", u.OOMKills)
	}
}

func TestReadingWorkingSet(t *testing.T) {
	var s cgroups.Stats
	s.Memory.Usage, s.Memory.InactiveFile, s.Memory.Limit = 100<<20, 30<<20, 256<<20
	s.CPU.UsageNanos, s.Memory.OOMKills, s.Pids.Current = 5e9, 2, 7
	r := readingOf(&s, t0)
	if r.workingSet != 70<<20 || r.limit != 256<<20 || r.cpuNanos != 5e9 || r.oomKills != 2 || r.pids != 7 {
		t.Fatalf("reading %+v", r)
	}
	s.Memory.InactiveFile = 200 << 20 // counters read at slightly different times
	if r := readingOf(&s, t0); r.workingSet != 0 {
		t.Fatalf("working set %d with more inactive file than usage, want 0", r.workingSet)
	}
}
