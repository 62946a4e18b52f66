// Command runtimestart is the timing driver of bench/runtime-start: it runs
// one bundle through `nexus-runtime run` (the lean program OCI tools call),
// `crun run` and `runc run`, interleaved, and prints the wall-clock
// distribution of each and the ratios. Every run is a fresh container id and
// is timed from fork to reaping the runtime process, so the harness cost is
// the same for all. With -nexus-full it also times `nexus runtime run`
// through the whole nexus binary.
//
// It also reports the package-initialisation time of nexus-runtime
// (GODEBUG=inittrace=1), which `nexus-runtime run` pays (the init stage is
// the smaller nexus-init program, embedded in it), and,
// for comparison, that of the whole nexus binary.
//
// The bench/runtime-start script prepares the bundle, the state directories
// and the host; run that rather than this program directly.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// runtimeCmd is one runtime under test: how to invoke it and its results.
type runtimeCmd struct {
	name   string
	argv   []string // binary and the arguments before the OCI subcommand
	root   string   // --root state directory, private to this runtime
	times  []time.Duration
	noisy  int    // successful runs that wrote to stderr
	sample string // stderr of the first such run
}

func (r *runtimeCmd) command(ctx context.Context, args ...string) *exec.Cmd {
	full := append(append(append([]string{}, r.argv[1:]...), "--root", r.root), args...)
	return exec.CommandContext(ctx, r.argv[0], full...)
}

func main() {
	var (
		iters     = flag.Int("n", 100, "timed runs per runtime")
		warmup    = flag.Int("warmup", 3, "untimed runs per runtime before timing (page cache, dentries)")
		bundle    = flag.String("bundle", "", "OCI bundle directory shared by all runtimes")
		stateDir  = flag.String("state", "", "directory that holds one --root per runtime")
		prefix    = flag.String("prefix", fmt.Sprintf("nxb-%d", os.Getpid()), "container id prefix")
		nexusBin  = flag.String("nexus", "bin/nexus-runtime", "the nexus-runtime program")
		fullBin   = flag.String("nexus-full", "", "also time `nexus runtime run` through this nexus binary")
		crunBin   = flag.String("crun", "crun", "crun binary")
		runcBin   = flag.String("runc", "runc", "runc binary")
		timeout   = flag.Duration("timeout", 30*time.Second, "limit for one run")
		initRuns  = flag.Int("inittrace-runs", 20, "runs of `nexus-runtime --version` (and `nexus --version`) with GODEBUG=inittrace=1")
		initTopN  = flag.Int("inittrace-top", 5, "packages to list by init time")
		skipStart = flag.Bool("inittrace-only", false, "only measure package initialisation")
		rawFile   = flag.String("raw", "", "also write every timed run (runtime, round, ms) to this file")
	)
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	if !*skipStart {
		if *bundle == "" || *stateDir == "" {
			fmt.Fprintln(os.Stderr, "runtimestart: -bundle and -state are required")
			os.Exit(2)
		}
		rts := []*runtimeCmd{
			{name: "nexus", argv: []string{*nexusBin}},
			{name: "crun", argv: []string{*crunBin}},
			{name: "runc", argv: []string{*runcBin}},
		}
		if *fullBin != "" {
			rts = append(rts, &runtimeCmd{name: "nexus-full", argv: []string{*fullBin, "runtime"}})
		}
		for _, r := range rts {
			r.root = *stateDir + "/" + r.name
			if err := os.MkdirAll(r.root, 0o700); err != nil {
				fail("create state dir: %v", err)
			}
		}
		if err := startBench(ctx, rts, *bundle, *prefix, *iters, *warmup, *timeout); err != nil {
			fail("%v", err)
		}
		printStart(rts, *iters, *warmup)
		if *rawFile != "" {
			if err := writeRaw(*rawFile, rts); err != nil {
				fail("%v", err)
			}
		}
	}
	if *initRuns > 0 {
		if err := initBench(ctx, *nexusBin, "nexus-runtime package initialisation (paid by `nexus-runtime run`; the init stage is the smaller nexus-init program)", *initRuns, *initTopN); err != nil {
			fail("%v", err)
		}
		if *fullBin != "" {
			if err := initBench(ctx, *fullBin, "nexus package initialisation (paid by `nexus runtime run`; for comparison)", *initRuns, *initTopN); err != nil {
				fail("%v", err)
			}
		}
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "runtimestart: "+format+"\n", args...)
	os.Exit(1)
}

// startBench runs warmup+iters rounds; each round runs every runtime once,
// starting with a different runtime each round so none always follows the
// same neighbour.
func startBench(ctx context.Context, rts []*runtimeCmd, bundle, prefix string, iters, warmup int, timeout time.Duration) error {
	total := warmup + iters
	for i := 0; i < total; i++ {
		for k := range rts {
			r := rts[(i+k)%len(rts)]
			id := fmt.Sprintf("%s-%s-%d", prefix, r.name, i)
			d, stderr, err := runOnce(ctx, r, bundle, id, timeout)
			if err != nil {
				return fmt.Errorf("%s run %s (round %d): %w\n%s", r.name, id, i, err, stderr)
			}
			if i < warmup {
				continue
			}
			r.times = append(r.times, d)
			if len(bytes.TrimSpace(stderr)) > 0 {
				if r.noisy == 0 {
					r.sample = string(stderr)
				}
				r.noisy++
			}
		}
		if (i+1)%25 == 0 {
			fmt.Fprintf(os.Stderr, "  %d/%d rounds\n", i+1, total)
		}
	}
	return nil
}

// runOnce times one `X run` from fork to reap. On failure it force-deletes
// the container so nothing is left behind.
func runOnce(ctx context.Context, r *runtimeCmd, bundle, id string, timeout time.Duration) (time.Duration, []byte, error) {
	if err := ctx.Err(); err != nil {
		return 0, nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := r.command(rctx, "run", "--bundle", bundle, id)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		} else if rctx.Err() != nil {
			err = fmt.Errorf("no exit after %v: %w", timeout, err)
		}
		del, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		_ = r.command(del, "delete", "--force", id).Run()
		return 0, stderr.Bytes(), err
	}
	return d, stderr.Bytes(), nil
}

func writeRaw(path string, rts []*runtimeCmd) error {
	var b strings.Builder
	b.WriteString("runtime\tround\tms\n")
	for _, r := range rts {
		for i, d := range r.times {
			fmt.Fprintf(&b, "%s\t%d\t%s\n", r.name, i, ms(d))
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write raw timings: %w", err)
	}
	return nil
}

type stats struct{ median, p90, mean, min, max time.Duration }

func summarise(ds []time.Duration) stats {
	s := append([]time.Duration{}, ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	// p90 by nearest rank.
	p90 := s[int(math.Ceil(0.9*float64(n)))-1]
	return stats{median: med, p90: p90, mean: sum / time.Duration(n), min: s[0], max: s[n-1]}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

func printStart(rts []*runtimeCmd, iters, warmup int) {
	fmt.Printf("\nwall-clock of `X run` of /bin/true, %d runs each, interleaved (after %d warm-up runs each), in ms:\n", iters, warmup)
	fmt.Printf("%-10s %9s %9s %9s %9s %9s\n", "runtime", "median", "p90", "mean", "min", "max")
	st := map[string]stats{}
	for _, r := range rts {
		s := summarise(r.times)
		st[r.name] = s
		fmt.Printf("%-10s %9s %9s %9s %9s %9s\n", r.name, ms(s.median), ms(s.p90), ms(s.mean), ms(s.min), ms(s.max))
	}
	ratio := func(a, b time.Duration) string { return fmt.Sprintf("%.2f", float64(a)/float64(b)) }
	n, c, u := st["nexus"], st["crun"], st["runc"]
	fmt.Printf("\nratios      median  p90   mean\n")
	fmt.Printf("nexus/crun  %-6s  %-5s %s\n", ratio(n.median, c.median), ratio(n.p90, c.p90), ratio(n.mean, c.mean))
	fmt.Printf("nexus/runc  %-6s  %-5s %s\n", ratio(n.median, u.median), ratio(n.p90, u.p90), ratio(n.mean, u.mean))
	if f, ok := st["nexus-full"]; ok {
		fmt.Printf("nexus-full/crun  %-6s  %-5s %s   (`nexus runtime run` through the whole nexus binary)\n", ratio(f.median, c.median), ratio(f.p90, c.p90), ratio(f.mean, c.mean))
	}
	for _, r := range rts {
		if r.noisy > 0 {
			fmt.Printf("\nnote: %s wrote to stderr in %d of %d successful runs; first:\n%s", r.name, r.noisy, len(r.times), indent(r.sample))
		}
	}
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// inittrace lines look like:
// init crypto/tls @1.2 ms, 0.041 ms clock, 4096 bytes, 12 allocs
var initLine = regexp.MustCompile(`^init (\S+) @[0-9.]+ ms, ([0-9.]+) ms clock`)

type pkgInit struct {
	pkg string
	ms  float64
}

func parseInittrace(out []byte) ([]pkgInit, float64) {
	var ps []pkgInit
	var total float64
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := initLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			continue
		}
		ps = append(ps, pkgInit{m[1], v})
		total += v
	}
	return ps, total
}

// initBench runs `bin --version` with inittrace several times and reports
// the median total and, from the run with the median total, the packages
// that take longest.
func initBench(ctx context.Context, bin, title string, runs, top int) error {
	type run struct {
		pkgs  []pkgInit
		total float64
	}
	var rs []run
	for i := 0; i < runs; i++ {
		cmd := exec.CommandContext(ctx, bin, "--version")
		cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("GODEBUG=inittrace=1 %s --version: %w\n%s", bin, err, out)
		}
		pkgs, total := parseInittrace(out)
		if len(pkgs) == 0 {
			return fmt.Errorf("no inittrace lines in the output of %s --version", bin)
		}
		rs = append(rs, run{pkgs, total})
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].total < rs[j].total })
	med := rs[len(rs)/2]
	fmt.Printf("\n%s (GODEBUG=inittrace=1 %s --version):\n", title, bin)
	fmt.Printf("  total init clock: median %.2f ms over %d runs (min %.2f, max %.2f), %d packages\n",
		med.total, len(rs), rs[0].total, rs[len(rs)-1].total, len(med.pkgs))
	sort.Slice(med.pkgs, func(i, j int) bool { return med.pkgs[i].ms > med.pkgs[j].ms })
	fmt.Printf("  top %d packages (median run):\n", top)
	for i := 0; i < top && i < len(med.pkgs); i++ {
		fmt.Printf("    %-50s %7.3f ms\n", med.pkgs[i].pkg, med.pkgs[i].ms)
	}
	return nil
}
