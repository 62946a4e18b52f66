package hello

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rss is this process's resident memory in bytes.
func rss(t *testing.T) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skipf("no /proc/self/statm: %v", err)
	}
	f := strings.Fields(string(data))
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return pages * int64(os.Getpagesize())
}

// TestHoldMemoryIsResident: the memory held is resident, not just
// reserved, so a cgroup charges it to the container.
func TestHoldMemoryIsResident(t *testing.T) {
	before := rss(t)
	b, err := HoldMemory(32 << 20)
	grew := rss(t) - before
	runtime.KeepAlive(b)
	if err != nil || len(b) != 32<<20 || grew < 28<<20 {
		t.Fatalf("holding 32 MiB grew the resident set by %d bytes (%v)", grew, err)
	}
	for _, n := range []int64{0, -1} {
		if b, err := HoldMemory(n); b != nil || err != nil {
			t.Fatalf("holding %d bytes: %d bytes, %v; want nothing", n, len(b), err)
		}
	}
	// More than the machine has (1 EiB would also panic in make).
	for _, n := range []int64{1 << 60, 1 << 46} {
		if b, err := HoldMemory(n); b != nil || err == nil || !strings.Contains(err.Error(), "MiB of memory") {
			t.Fatalf("holding %d bytes: %d bytes, %v; want an error saying the machine's memory", n, len(b), err)
		}
	}
}

func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestBurnCPUUsesItsShare: 300 millicores for a second use about 0.3 s of
// CPU (less on a busy machine, never much more), and stop when the
// context ends.
func TestBurnCPUUsesItsShare(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	start := cpuTime(t)
	if err := BurnCPU(ctx, 300); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	cancel()
	used := cpuTime(t) - start
	if used < 100*time.Millisecond || used > 600*time.Millisecond {
		t.Fatalf("300m for 1 s used %v of CPU, want about 300ms", used)
	}
	time.Sleep(2 * burnWindow)
	after := cpuTime(t)
	time.Sleep(500 * time.Millisecond)
	if idle := cpuTime(t) - after; idle > 50*time.Millisecond {
		t.Fatalf("%v of CPU used in 0.5 s after the context ended", idle)
	}
}

// TestBurnCPURefusesMoreThanTheMachine: more CPU than the machine's cores
// is refused before any goroutine starts.
func TestBurnCPURefusesMoreThanTheMachine(t *testing.T) {
	before := runtime.NumGoroutine()
	err := BurnCPU(context.Background(), int64(runtime.NumCPU())*1000+1)
	if err == nil || !strings.Contains(err.Error(), "CPUs") {
		t.Fatalf("BurnCPU over the machine's cores: %v", err)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after a refused burn, %d before", n, before)
	}
}
