// Command storebench drives an etcd-compatible cluster with etcd's own
// client and prints latency and throughput, so bench/store can run the same
// workload against Nexus's store and against etcd in one run.
//
// Workloads (256-byte values): sequential puts from one client (p50/p99),
// puts from many concurrent clients (throughput), linearizable reads from
// many clients (throughput). With -pids it also reports the CPU time the
// servers (and this client) spent per operation of each throughput run,
// which tells a CPU-bound cluster from one that waits.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	endpoints := flag.String("endpoints", "", "comma-separated client URLs")
	label := flag.String("label", "store", "name printed with the results")
	seq := flag.Int("seq", 2000, "sequential puts from one client")
	conc := flag.Int("clients", 64, "concurrent clients for the throughput runs")
	dur := flag.Duration("duration", 5*time.Second, "length of each throughput run")
	size := flag.Int("size", 256, "value size in bytes")
	pidList := flag.String("pids", "", "comma-separated server process IDs whose CPU time to report per operation")
	flag.Parse()
	if *endpoints == "" {
		fmt.Fprintln(os.Stderr, "storebench: -endpoints is required")
		os.Exit(2)
	}
	eps := strings.Split(*endpoints, ",")
	var pids []int
	for _, p := range strings.Split(*pidList, ",") {
		if p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			fmt.Fprintf(os.Stderr, "storebench: -pids: %q is not a process ID\n", p)
			os.Exit(2)
		}
		pids = append(pids, n)
	}
	if err := run(*label, eps, *seq, *conc, *dur, *size, pids); err != nil {
		fmt.Fprintln(os.Stderr, "storebench:", err)
		os.Exit(1)
	}
}

func run(label string, eps []string, seq, conc int, dur time.Duration, size int, pids []int) error {
	ctx := context.Background()
	value := strings.Repeat("v", size)
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer cli.Close()

	// Sequential puts: latency.
	lat := make([]time.Duration, 0, seq)
	for i := 0; i < seq; i++ {
		t0 := time.Now()
		if _, err := cli.Put(ctx, fmt.Sprintf("bench/seq/%d", i%1000), value); err != nil {
			return fmt.Errorf("sequential put: %w", err)
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[int(float64(len(lat)-1)*p)] }
	fmt.Printf("%-8s put latency, 1 client, %d puts: p50 %.2f ms  p99 %.2f ms  max %.2f ms\n", label, seq,
		ms(pct(0.50)), ms(pct(0.99)), ms(lat[len(lat)-1]))

	// Concurrent puts and linearizable reads: throughput.
	clients := make([]*clientv3.Client, conc)
	for i := range clients {
		if clients[i], err = clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second}); err != nil {
			return err
		}
		defer clients[i].Close()
	}
	for _, w := range []struct {
		name string
		op   func(c *clientv3.Client, i int) error
	}{
		{"put", func(c *clientv3.Client, i int) error {
			_, err := c.Put(ctx, fmt.Sprintf("bench/conc/%d", i%10000), value)
			return err
		}},
		{"get (linearizable)", func(c *clientv3.Client, i int) error {
			_, err := c.Get(ctx, fmt.Sprintf("bench/seq/%d", i%1000))
			return err
		}},
	} {
		var n, failed atomic.Int64
		servers0, self0 := cpuTime(pids), cpuTime([]int{os.Getpid()})
		deadline := time.Now().Add(dur)
		var wg sync.WaitGroup
		for i, c := range clients {
			wg.Add(1)
			go func(i int, c *clientv3.Client) {
				defer wg.Done()
				for j := 0; time.Now().Before(deadline); j++ {
					if err := w.op(c, i*1_000_000+j); err != nil {
						failed.Add(1)
						continue
					}
					n.Add(1)
				}
			}(i, c)
		}
		wg.Wait()
		fmt.Printf("%-8s %s, %d clients, %v: %.0f ops/s (%d failed)\n", label, w.name, conc, dur, float64(n.Load())/dur.Seconds(), failed.Load())
		if len(pids) > 0 && n.Load() > 0 {
			servers, self := cpuTime(pids)-servers0, cpuTime([]int{os.Getpid()})-self0
			fmt.Printf("%-8s   CPU per %s: servers %.0f µs, client %.0f µs (servers busy %.2f of %d CPUs)\n", label, w.name,
				float64(servers.Microseconds())/float64(n.Load()), float64(self.Microseconds())/float64(n.Load()),
				servers.Seconds()/dur.Seconds(), runtime.NumCPU())
		}
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// cpuTime is the user plus system time the processes have used so far,
// from /proc/PID/stat (in clock ticks of 1/100 s, as Linux reports them).
func cpuTime(pids []int) time.Duration {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The command name (field 2) may hold spaces; fields after it are plain.
		rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
		f := strings.Fields(rest)
		if len(f) < 13 {
			continue
		}
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += utime + stime
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}
