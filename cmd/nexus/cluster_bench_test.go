package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

// BenchmarkCluster is bench/cluster (run it with that script, which sets
// NEXUS_BENCH_CLUSTER=1; `make bench` leaves it out: it takes minutes). On
// six netns hosts it forms a cluster of three servers and three agents
// from the CLI, then, for NEXUS_BENCH_CLUSTER_ROUNDS rounds (default 3):
//   - the time from `nexus run NAME --replicas 30` to `nexus rollout
//     status` saying all 30 are ready, spread over the 3 agents;
//   - the time from an agent's kill -9 to all 30 being ready on the other
//     two (the agent is started again and cleans up before the next step);
//   - the API write availability gap when the server that leads the store
//     and the controllers is killed with SIGKILL: from the kill to the first
//     write through another server that succeeds (a write every 100 ms,
//     each in parallel), and when the controllers' leadership moved;
//
// and prints each round and the medians.
func BenchmarkCluster(b *testing.B) {
	if os.Getenv("NEXUS_BENCH_CLUSTER") != "1" {
		b.Skip("bench/cluster runs this (NEXUS_BENCH_CLUSTER=1): it takes minutes")
	}
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("NEXUS_BENCH_CLUSTER_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	e := formCluster(newClusterNet(b, 6, time.Duration(rounds)*10*time.Minute))
	var ready, resched, gap, moved []time.Duration
	for r := range rounds {
		name := fmt.Sprintf("bench%d", r)
		began := time.Now()
		e.ok("run", name, "--image", "nexus.local/hello", "--replicas", "30")
		e.ok("rollout", "status", name, "--timeout", "2m")
		ready = append(ready, time.Since(began))
		is, err := e.instances(name)
		if err != nil {
			b.Fatal(err)
		}
		on := readyOn(is)
		fmt.Printf("round %d: 30 ready in %v (per agent %v)\n", r+1, ready[r].Round(time.Millisecond), on)

		resched = append(resched, e.killAgent(e.agents[r%3], name, 30))
		fmt.Printf("round %d: %s killed, its instances ready elsewhere in %v\n", r+1, e.agents[r%3].name, resched[r].Round(time.Millisecond))

		g, m := e.killLeader()
		gap, moved = append(gap, g), append(moved, m)
		fmt.Printf("round %d: store and controllers leader killed: writes again after %v, controllers moved after %v\n", r+1, g.Round(time.Millisecond), m.Round(time.Millisecond))

		e.ok("delete", "workload", name)
		e.waitFor(name+"'s containers gone", func() (bool, string) {
			total, per := e.runningContainers()
			return total == 0, fmt.Sprintf("running %v", per)
		})
	}
	fmt.Printf("\nmedians over %d rounds (targets):\n", rounds)
	fmt.Printf("  nexus run --replicas 30 to all ready:       %v (under 5 s)\n", median(ready))
	fmt.Printf("  agent kill -9 to its instances ready again: %v (under 15 s, 10 s of it the grace period)\n", median(resched))
	fmt.Printf("  API write gap when the store leader dies:   %v (under 3 s)\n", median(gap))
	fmt.Printf("  controllers' leadership moved after:        %v\n", median(moved))
	b.ReportMetric(median(ready).Seconds(), "s/30-ready")
	b.ReportMetric(median(resched).Seconds(), "s/reschedule")
	b.ReportMetric(median(gap).Seconds(), "s/write-gap")
}

// median of ds, rounded to the millisecond.
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2].Round(time.Millisecond)
}
