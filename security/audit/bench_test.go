package audit

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
)

// BenchmarkWrite measures one acknowledged (fdatasync'd) record per op with
// 1 writer and with 16 concurrent writers sharing fsyncs (group commit).
func BenchmarkWrite(b *testing.B) {
	for _, writers := range []int{1, 16} {
		b.Run(map[int]string{1: "writers=1", 16: "writers=16"}[writers], func(b *testing.B) {
			l, err := Open(Config{Dir: b.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			r := req("create", "workloads", "web")
			ctx := context.Background()
			next := make(chan struct{}, b.N)
			for range b.N {
				next <- struct{}{}
			}
			close(next)
			b.ResetTimer()
			var wg sync.WaitGroup
			for range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range next {
						if err := l.Write(ctx, r); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(l.Syncs())/float64(b.N), "syncs/op")
		})
	}
}
