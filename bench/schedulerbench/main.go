// Command schedulerbench places a simulated mixed workload on a simulated
// cluster with the scheduler package (single-threaded) and prints one table
// row: nodes, instances, placements per second, what happened to the
// instances, and memory. bench/scheduler runs it once per cluster size, each
// in a fresh process so that peak RSS belongs to one run.
//
// Instances arrive in chunks (default 10,000) placed with PlaceBatch, so
// later high-priority chunks preempt earlier batch work once the cluster
// fills. Only PlaceBatch is timed; generating the chunk is not. Afterwards
// every node's allocations are re-added and checked against its capacity
// and for duplicate host ports; a failure exits non-zero.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	"nexus.dev/nexus/internal/proc"
	"nexus.dev/nexus/scheduler"
	"nexus.dev/nexus/scheduler/simulate"
)

func main() {
	nodes := flag.Int("nodes", 10000, "simulated nodes")
	instances := flag.Int("instances", 100000, "instances to place")
	chunk := flag.Int("chunk", 10000, "instances per PlaceBatch call")
	seed := flag.Uint64("seed", 1, "cluster, workload and scheduler seed")
	header := flag.Bool("header", false, "print the table header and exit")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "schedulerbench:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "schedulerbench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if *header {
		fmt.Println("| nodes | instances | placements/s | placed | unplaceable | by preempting (victims) | place time | heap after | peak RSS |")
		fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		return
	}
	if err := run(*nodes, *instances, *chunk, *seed); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "schedulerbench:", err)
		os.Exit(1)
	}
}

func run(nodes, instances, chunk int, seed uint64) error {
	st, err := scheduler.NewState(simulate.Cluster(seed, nodes))
	if err != nil {
		return fmt.Errorf("build cluster state: %w", err)
	}
	runtime.GC()
	sch := scheduler.New(scheduler.Config{Seed: seed}, st)
	gen := simulate.NewGenerator(seed + 1)
	var (
		elapsed                             time.Duration
		placed, unplaceable, preempt, evict int
		buf                                 []scheduler.Instance
	)
	for done := 0; done < instances; {
		k := min(chunk, instances-done)
		buf = gen.Next(buf[:0], k)
		start := time.Now()
		res := sch.PlaceBatch(buf)
		elapsed += time.Since(start)
		for _, r := range res {
			switch {
			case r.Decision == nil:
				unplaceable++
			case len(r.Decision.Preempt) > 0:
				placed++
				preempt++
				evict += len(r.Decision.Preempt)
			default:
				placed++
			}
		}
		done += k
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss := peakRSS() // before verify, which builds its own copy
	if err := verify(st.Snapshot()); err != nil {
		return err
	}
	fmt.Printf("| %s | %s | %s | %s | %s | %s (%s) | %.2f s | %d MiB | %s |\n",
		thousands(nodes), thousands(instances), thousands(int(float64(instances)/elapsed.Seconds())),
		thousands(placed), thousands(unplaceable), thousands(preempt), thousands(evict),
		elapsed.Seconds(), ms.HeapAlloc>>20, rss)
	return nil
}

// verify re-adds every allocation's request per node (the simulated nodes
// start empty) and checks capacity and host ports, independently of the
// scheduler's own accounting.
func verify(snap scheduler.Snapshot) error {
	caps := map[string]scheduler.Resources{}
	for _, n := range snap.Nodes {
		caps[n.ID] = n.Capacity
	}
	used := map[string]scheduler.Resources{}
	ports := map[string]bool{}
	for _, a := range snap.Allocations {
		used[a.NodeID] = used[a.NodeID].Add(a.Request)
		if !used[a.NodeID].Fits(caps[a.NodeID]) {
			return fmt.Errorf("node %s over-committed: %+v > %+v", a.NodeID, used[a.NodeID], caps[a.NodeID])
		}
		for _, p := range a.Ports {
			k := fmt.Sprint(a.NodeID, "/", p)
			if ports[k] {
				return fmt.Errorf("node %s: host port %d given twice", a.NodeID, p)
			}
			ports[k] = true
		}
	}
	return nil
}

// peakRSS is the most resident memory this process has had (VmHWM).
func peakRSS() string {
	m, err := proc.ReadMemory(os.Getpid())
	if err != nil {
		return "n/a"
	}
	return fmt.Sprintf("%d MiB", m.PeakRSS>>20)
}

func thousands(k int) string {
	s := fmt.Sprint(k)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
