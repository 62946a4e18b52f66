package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/proc"
	"nexus.dev/nexus/runtime/image/builtin"
)

// roundResult is one round of the start-latency phase.
type roundResult struct {
	nexus     []timeline
	podman    []podmanSample
	conmons   int
	conmonMiB float64
}

// latencyRound starts o.n instances one at a time, each after the one
// before it is running, ready and serving, and as many podman containers,
// the two taking turns (which goes first alternates). Everything stays
// running until the round ends, as in Kubernetes' density tests.
func latencyRound(ctx context.Context, o options, up *nexusUp, pm *podman, r int) (roundResult, error) {
	var res roundResult
	nexusOne := func(i int) error {
		tl, err := up.startOne(ctx, fmt.Sprintf("bench-r%d-%03d", r+1, i), o.probePeriod)
		if err != nil {
			return err
		}
		res.nexus = append(res.nexus, tl)
		return nil
	}
	podmanOne := func(i int) error {
		if pm == nil {
			return nil
		}
		s, err := pm.startOne(ctx, fmt.Sprintf("nxb-r%d-%03d", r+1, i), fmt.Sprintf("10.88.%d.%d", r+1, i+1))
		if err != nil {
			return err
		}
		res.podman = append(res.podman, s)
		return nil
	}
	for i := range o.n {
		first, second := nexusOne, podmanOne
		if i%2 == 1 {
			first, second = podmanOne, nexusOne
		}
		if err := first(i); err != nil {
			return res, err
		}
		if err := second(i); err != nil {
			return res, err
		}
		if (i+1)%10 == 0 {
			fmt.Fprintf(os.Stderr, "  round %d: %d/%d\n", r+1, i+1, o.n)
		}
	}
	if pm != nil {
		res.conmons, res.conmonMiB = conmons()
	}
	return res, nil
}

// A row of the result table: one measure of each start, in ms from the
// create request (nexus) or the command's start (podman).
type row struct {
	name string
	ms   []float64
}

func since(t0, t time.Time) float64 { return float64(t.Sub(t0).Microseconds()) / 1000 }

func (res roundResult) rows() []row {
	var rows []row
	add := func(name string, f func(t *timeline) time.Time) {
		r := row{name: name}
		for i := range res.nexus {
			t := &res.nexus[i]
			r.ms = append(r.ms, since(t.t0, f(t)))
		}
		rows = append(rows, r)
	}
	add("nexus  create request answered", func(t *timeline) time.Time { return t.created })
	add("nexus  bound (client saw)", func(t *timeline) time.Time { return t.bound })
	add("nexus  running (agent: startedAt)", func(t *timeline) time.Time { return t.started })
	add("nexus  running (client saw)", func(t *timeline) time.Time { return t.running })
	add("nexus  answers HTTP", func(t *timeline) time.Time { return t.serving })
	add("nexus  ready (client saw)", func(t *timeline) time.Time { return t.ready })
	if len(res.podman) > 0 {
		ret, srv := row{name: "podman run -d returned"}, row{name: "podman answers HTTP"}
		for _, s := range res.podman {
			ret.ms = append(ret.ms, since(s.t0, s.returned))
			srv.ms = append(srv.ms, since(s.t0, s.serving))
		}
		rows = append(rows, ret, srv)
	}
	return rows
}

// steps are the parts of a nexus start, each the median over the round of
// its own duration.
func (res roundResult) steps() []row {
	var rows []row
	add := func(name string, from, to func(t *timeline) time.Time) {
		r := row{name: name}
		for i := range res.nexus {
			t := &res.nexus[i]
			r.ms = append(r.ms, since(from(t), to(t)))
		}
		rows = append(rows, r)
	}
	t0 := func(t *timeline) time.Time { return t.t0 }
	bound := func(t *timeline) time.Time { return t.bound }
	started := func(t *timeline) time.Time { return t.started }
	running := func(t *timeline) time.Time { return t.running }
	add("create request -> bound seen (API, store, scheduler, bind)", t0, bound)
	add("bound seen -> agent's Start returned (agent: prepare, create, network, start)", bound, started)
	add("Start returned -> running seen (status write, watch)", started, running)
	return rows
}

func (res roundResult) print(w io.Writer) {
	fmt.Fprintf(w, "  %-36s %9s %9s %9s %9s   (ms, %d starts each)\n", "", "p50", "p90", "p99", "max", len(res.nexus))
	for _, r := range res.rows() {
		fmt.Fprintf(w, "  %-36s %9.1f %9.1f %9.1f %9.1f\n", r.name, percentile(r.ms, 50), percentile(r.ms, 90), percentile(r.ms, 99), percentile(r.ms, 100))
	}
	fmt.Fprintln(w, "  where the time to running goes (median of each step):")
	for _, r := range res.steps() {
		fmt.Fprintf(w, "    %-78s %7.1f ms\n", r.name, percentile(r.ms, 50))
	}
	if len(res.podman) > 0 {
		fmt.Fprintf(w, "  podman: %d conmon processes for its %d containers, %.1f MiB resident each\n",
			res.conmons, len(res.podman), res.conmonMiB/math.Max(1, float64(res.conmons)))
	}
}

// percentile is the nearest-rank percentile of ms (100: the maximum).
func percentile(ms []float64, p float64) float64 {
	if len(ms) == 0 {
		return math.NaN()
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(k, len(s)-1))]
}

func median(v []float64) float64 { return percentile(v, 50) }

// summarize prints, for each measure, the median over the rounds of its
// per-round p50 and p99, and the verdict on the targets.
func summarize(w io.Writer, rounds []roundResult, o options) {
	fmt.Fprintf(w, "medians over %d rounds of each round's p50 and p99 (%d starts per round, one at a time):\n", len(rounds), o.n)
	fmt.Fprintf(w, "  %-36s %9s %9s   %s\n", "", "p50", "p99", "p50 of each round")
	get := func(name string, p float64) (float64, []string) {
		var v []float64
		var each []string
		for _, res := range rounds {
			for _, r := range res.rows() {
				if r.name == name {
					v = append(v, percentile(r.ms, p))
					each = append(each, strconv.FormatFloat(percentile(r.ms, p), 'f', 1, 64))
				}
			}
		}
		return median(v), each
	}
	for _, r := range rounds[0].rows() {
		p50, each := get(r.name, 50)
		p99, _ := get(r.name, 99)
		fmt.Fprintf(w, "  %-36s %9.1f %9.1f   %s\n", r.name, p50, p99, strings.Join(each, " "))
	}
	verdict := func(v, target float64) string {
		if v < target {
			return "met"
		}
		return "NOT met"
	}
	a50, _ := get("nexus  running (agent: startedAt)", 50)
	a99, _ := get("nexus  running (agent: startedAt)", 99)
	c50, _ := get("nexus  running (client saw)", 50)
	c99, _ := get("nexus  running (client saw)", 99)
	fmt.Fprintf(w, "API create -> running, agent's record: p50 %.1f ms (target < 50: %s), p99 %.1f ms (target < 150: %s)\n",
		a50, verdict(a50, 50), a99, verdict(a99, 150))
	fmt.Fprintf(w, "API create -> running, as the client saw it: p50 %.1f ms (%s), p99 %.1f ms (%s)\n",
		c50, verdict(c50, 50), c99, verdict(c99, 150))
	if len(rounds[0].podman) > 0 {
		p50, _ := get("podman run -d returned", 50)
		fmt.Fprintf(w, "reference: podman run -d (crun) p50 %.1f ms; nexus running (client saw) / podman run -d: %.2f\n", p50, c50/p50)
	}
	fmt.Fprintln(w)
}

// idlePhase puts o.idle idle containers of the built-in image on the node
// (a service workload, as a user would) and reports nexus up's memory
// before and after, and every process that is not a container's own.
func idlePhase(ctx context.Context, o options, up *nexusUp, skip []int) error {
	perContainer := 12.0 // MiB: a `nexus hello` process and its kernel state, with room
	if avail := memAvailableMiB(); avail < float64(o.idle)*perContainer+2048 {
		fmt.Printf("idle containers: skipped: %.0f MiB available, %d containers need about %.0f MiB\n", avail, o.idle, float64(o.idle)*perContainer+2048)
		return nil
	}
	fmt.Printf("idle containers: %d of %s, nothing else deployed\n", o.idle, builtin.Reference)
	if !sleep(ctx, o.settle) {
		return ctx.Err()
	}
	before := up.memory(ctx)
	fmt.Printf("  before (%s after the warm-up's containers were removed): %s\n", o.settle, before)
	replicas, grace := int32(o.idle), int64(5)
	w := &types.Workload{
		TypeMeta:   types.TypeMeta{APIVersion: types.APIVersion, Kind: "Workload"},
		ObjectMeta: types.ObjectMeta{Name: "idle", Namespace: namespace, Labels: map[string]string{labelKey: labelIdle}},
		Spec: types.WorkloadSpec{Kind: types.KindService, Replicas: &replicas, Template: types.InstanceTemplate{
			Image: builtin.Reference, Labels: map[string]string{labelKey: labelIdle}, TerminationGracePeriodSeconds: &grace,
		}},
	}
	t0 := time.Now()
	if _, err := up.c.Create(ctx, w); err != nil {
		return fmt.Errorf("create workload idle: %w", err)
	}
	deadline := t0.Add(30 * time.Minute)
	lastReport := t0
	for {
		running, total, why := up.tr.count("idle-")
		if running >= o.idle {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after 30 minutes %d of %d idle instances run (%d exist; %s)", running, o.idle, total, why)
		}
		if time.Since(lastReport) > 10*time.Second {
			fmt.Fprintf(os.Stderr, "  idle: %d/%d running\n", running, o.idle)
			lastReport = time.Now()
		}
		select {
		case <-up.tr.changes():
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	took := time.Since(t0)
	fmt.Printf("  %d instances running %.1f s after the workload was created (all at once; load average %s)\n", o.idle, took.Seconds(), loadAvg())
	if !sleep(ctx, o.settle) {
		return ctx.Err()
	}
	after := up.memory(ctx)
	c := takeCensus(up.pid, up.containers(), skip...)
	fmt.Printf("  after (%s later): %s\n", o.settle, after)
	n := float64(o.idle)
	fmt.Printf("  growth per container: RSS %.0f KiB (anonymous %.0f KiB), %.2f goroutines, %.2f threads (target RSS < 1024 KiB)\n",
		(after.rssMiB-before.rssMiB)*1024/n, (after.anonMiB-before.anonMiB)*1024/n,
		float64(after.goroutines-before.goroutines)/n, float64(after.threads-before.threads)/n)
	fmt.Printf("  processes: %s\n", c)
	if k := len(c.containers); k > 0 {
		fmt.Printf("  the containers' own processes: %.1f MiB resident per container on average (file pages of the nexus binary, shared by all, counted in each)\n", c.rssKiB/float64(k)/1024)
	}
	t1 := time.Now()
	if err := up.removeAll(ctx); err != nil {
		return err
	}
	took = time.Since(t1)
	if !sleep(ctx, o.settle) {
		return ctx.Err()
	}
	fmt.Printf("  removed in %.1f s; nexus up %s later: %s\n\n", took.Seconds(), o.settle, up.memory(ctx))
	return nil
}

func memAvailableMiB() float64 {
	m, _ := proc.ReadSystemMemory()
	return float64(m.Available) / (1 << 20)
}
