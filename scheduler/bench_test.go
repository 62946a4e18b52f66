package scheduler_test

import (
	"fmt"
	"testing"

	"nexus.dev/nexus/scheduler"
	"nexus.dev/nexus/scheduler/simulate"
)

// BenchmarkPlace places the mixed simulate.Workload (batch with power of
// two choices, services with constraints, affinity, distinct hosts and
// hard zone spread, host ports, high-priority work that preempts) one
// instance per iteration, filling the cluster to about half (50 instances
// per node) and starting over on a fresh state when the workload runs out.
func BenchmarkPlace(b *testing.B) {
	for _, nodes := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			snap := simulate.Cluster(1, nodes)
			work := simulate.Workload(2, nodes*50)
			fresh := func() *scheduler.Scheduler {
				st, err := scheduler.NewState(snap)
				if err != nil {
					b.Fatal(err)
				}
				return scheduler.New(scheduler.Config{Seed: 3}, st)
			}
			sch := fresh()
			placed, next := 0, 0
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if next == len(work) {
					b.StopTimer()
					sch, next = fresh(), 0
					b.StartTimer()
				}
				if r := sch.Place(&work[next]); r.Decision != nil {
					placed++
				}
				next++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "placements/s")
			b.ReportMetric(float64(placed)/float64(b.N), "placed/op")
		})
	}
}
