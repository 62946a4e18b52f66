package main

import (
	"fmt"
	"io"
	"slices"
	"time"
)

// column is one figure of the table: how to read it from figures, and
// whether more is better (rates) or worse (latencies).
type column struct {
	head   string
	value  func(*figures) float64
	higher bool // more is better
	// tolerance is how much worse than direct the ebpf mode may be
	// (issue #16's targets), 0 for a figure without a target.
	tolerance float64
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

var columns = []column{
	{"conn/s", func(f *figures) float64 { return f.connRate }, true, 0.10},
	{"ka req/s", func(f *figures) float64 { return f.kaRate }, true, 0.05},
	{"ka p50 µs", func(f *figures) float64 { return micros(f.kaP50) }, false, 0.05},
	{"ka p99 µs", func(f *figures) float64 { return micros(f.kaP99) }, false, 0.05},
	{"new p50 µs", func(f *figures) float64 { return micros(f.newP50) }, false, 0.10},
	{"new p99 µs", func(f *figures) float64 { return micros(f.newP99) }, false, 0.10},
	{"bulk MiB/s", func(f *figures) float64 { return f.bulk }, true, 0.05},
}

func printHeader(w io.Writer, indent string) {
	fmt.Fprintf(w, "%s%-9s", indent, "mode")
	for _, c := range columns {
		fmt.Fprintf(w, " %11s", c.head)
	}
	fmt.Fprintln(w)
}

func printRow(w io.Writer, indent, mode string, f *figures) {
	fmt.Fprintf(w, "%s%-9s", indent, mode)
	for _, c := range columns {
		fmt.Fprintf(w, " %11.1f", c.value(f))
	}
	fmt.Fprintln(w)
}

// print writes one round's table, the modes in the order given.
func (r roundResult) print(w io.Writer, modes []string, indent string) {
	printHeader(w, indent)
	for _, m := range modes {
		if f := r[m]; f != nil {
			printRow(w, indent, m, f)
		}
	}
}

// median of the rounds' values of one figure of one mode.
func median(rounds []roundResult, mode string, value func(*figures) float64) float64 {
	var vs []float64
	for _, r := range rounds {
		if f := r[mode]; f != nil {
			vs = append(vs, value(f))
		}
	}
	if len(vs) == 0 {
		return 0
	}
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}

// summarize prints the medians over the rounds, each mode's ratio to
// direct, and issue #16's targets.
func summarize(w io.Writer, rounds []roundResult, o options) {
	fmt.Fprintf(w, "medians over %d rounds (conn/s: new connections per second, %d workers, connect + GET /healthz + close;\n", len(rounds), o.workers)
	fmt.Fprintf(w, "ka req/s: GET /healthz per second over %d kept-alive connections; ka/new p50/p99: one GET /healthz at a time,\n", o.workers)
	fmt.Fprintf(w, "over a kept-alive connection / over a new connection from connect to the whole answer; bulk: %d MiB answers, one at a time):\n", o.bulkMiB)
	med := map[string][]float64{}
	printHeader(w, "")
	for _, m := range o.modes {
		fmt.Fprintf(w, "%-9s", m)
		for _, c := range columns {
			v := median(rounds, m, c.value)
			med[m] = append(med[m], v)
			fmt.Fprintf(w, " %11.1f", v)
		}
		fmt.Fprintln(w)
	}
	if _, ok := med[modeDirect]; ok {
		fmt.Fprintln(w, "\nratio to direct (above 1: more, for rates; slower, for latencies):")
		for _, m := range o.modes {
			if m == modeDirect {
				continue
			}
			fmt.Fprintf(w, "%-9s", m)
			for i := range columns {
				fmt.Fprintf(w, " %11.2f", ratio(med[m][i], med[modeDirect][i]))
			}
			fmt.Fprintln(w)
		}
	}
	checkTargets(w, med)
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// checkTargets prints issue #16's targets, each met or not: the eBPF
// service path within 5 % of direct on kept-alive latency and throughput
// and within 10 % on new connections; faster than haproxy on every
// figure; under 1 ms of local latency.
func checkTargets(w io.Writer, med map[string][]float64) {
	ebpf, ok := med[modeEBPF]
	if !ok {
		fmt.Fprintln(w, "\ntargets: not checked (they are about mode ebpf, not measured)")
		return
	}
	fmt.Fprintln(w, "\ntargets (issue #16):")
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT MET"
	}
	if direct, ok := med[modeDirect]; ok {
		for i, c := range columns {
			change := ratio(ebpf[i], direct[i]) - 1
			worse := change // a latency: slower by
			if c.higher {
				worse = -change // a rate: less by
			}
			fmt.Fprintf(w, "  ebpf within %2.0f %% of direct on %-10s: %+6.1f %% %s\n", c.tolerance*100, c.head, change*100, verdict(worse <= c.tolerance))
		}
	}
	if hap, ok := med[modeHAProxy]; ok {
		for i, c := range columns {
			faster := ebpf[i] < hap[i]
			if c.higher {
				faster = ebpf[i] > hap[i]
			}
			fmt.Fprintf(w, "  ebpf better than haproxy on %-10s: %.1f against %.1f %s\n", c.head, ebpf[i], hap[i], verdict(faster))
		}
	}
	for i, c := range columns {
		if c.higher {
			continue
		}
		fmt.Fprintf(w, "  ebpf local latency under 1 ms, %-10s: %.0f µs %s\n", c.head, ebpf[i], verdict(ebpf[i] < 1000))
	}
}
