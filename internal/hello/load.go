package hello

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Load the server puts on its container when asked, so that demos and
// tests of resource reporting, limits and OOM kills have a container whose
// use is known (`nexus hello --hold-memory 64Mi --burn-cpu 250m`).

// HoldMemory allocates n bytes and writes to every page of them, so that
// they count as resident memory of the process (a fresh allocation is
// mapped lazily and would not). The caller keeps the result alive for as
// long as the memory should be held. Under a memory limit below n the
// kernel's OOM killer ends the process here. More than the machine has is
// refused: without a limit the OOM killer would pick another process, and
// above 256 TiB make panics.
func HoldMemory(n int64) ([]byte, error) {
	if n <= 0 {
		return nil, nil
	}
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return nil, fmt.Errorf("hold %d bytes: read the machine's memory size: %w", n, err)
	}
	if total := uint64(si.Totalram) * uint64(si.Unit); uint64(n) > total {
		return nil, fmt.Errorf("cannot hold %d MiB: the machine has %d MiB of memory (to see an OOM kill, hold more than the container's memory limit and less than that)", n>>20, total>>20)
	}
	b := make([]byte, n)
	page := os.Getpagesize()
	for i := 0; i < len(b); i += page {
		b[i] = 1
	}
	return b, nil
}

// burnWindow is the period in which BurnCPU keeps its share of CPU busy:
// short enough that a sampler reading every few seconds sees a steady rate.
const burnWindow = 100 * time.Millisecond

// BurnCPU keeps millicores thousandths of a CPU busy until ctx ends: each
// of ceil(millicores/1000) goroutines spins for its share of every
// burnWindow and sleeps the rest. On a busy machine it gets less, never
// more. More CPU than the machine's cores is refused.
func BurnCPU(ctx context.Context, millicores int64) error {
	if millicores <= 0 {
		return nil
	}
	if cpus := runtime.NumCPU(); millicores > int64(cpus)*1000 {
		return fmt.Errorf("cannot keep %d millicores busy: the machine has %d CPUs (%dm)", millicores, cpus, cpus*1000)
	}
	workers := (millicores + 999) / 1000
	busy := time.Duration(millicores/workers) * burnWindow / 1000
	for range workers {
		go func() {
			t := time.NewTicker(burnWindow)
			defer t.Stop()
			for {
				start := time.Now()
				for time.Since(start) < busy {
				}
				select {
				case <-t.C:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	return nil
}
