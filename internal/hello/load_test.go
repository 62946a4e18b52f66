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
	b := HoldMemory(32 << 20)
	grew := rss(t) - before
	runtime.KeepAlive(b)
	if len(b) != 32<<20 || grew < 28<<20 {
		t.Fatalf("holding 32 MiB grew the resident set by %d bytes", grew)
	}
	if HoldMemory(0) != nil || HoldMemory(-1) != nil {
		t.Fatal("holding nothing allocated")
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
	BurnCPU(ctx, 300)
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
