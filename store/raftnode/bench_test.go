package raftnode

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkPropose measures Propose through the leader of a three-member
// cluster on loopback (QUIC, mTLS, WAL fsync on every member), one at a time
// and with 64 proposals in flight, and reports latency percentiles.
func BenchmarkPropose(b *testing.B) {
	for _, conc := range []int{1, 64} {
		name := "sequential"
		if conc > 1 {
			name = fmt.Sprintf("concurrent%d", conc)
		}
		b.Run(name, func(b *testing.B) {
			c := newCluster(b, 3, Config{}, false, nil)
			lead := c.waitLeader(10 * time.Second)
			ctx := context.Background()
			data := make([]byte, 256)
			var mu sync.Mutex
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			var wg sync.WaitGroup
			work := make(chan struct{})
			for range conc {
				wg.Go(func() {
					for range work {
						start := time.Now()
						if _, err := lead.node.Propose(ctx, data); err != nil {
							b.Error(err)
							return
						}
						d := time.Since(start)
						mu.Lock()
						lat = append(lat, d)
						mu.Unlock()
					}
				})
			}
			for range b.N {
				work <- struct{}{}
			}
			close(work)
			wg.Wait()
			b.StopTimer()
			slices.Sort(lat)
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "proposals/s")
			c.stopAll()
		})
	}
}
