// Command orchestrationbench is the driver of bench/orchestration: it runs
// a real `nexus up` (bin/nexus, as a process) and measures, in one run:
//
//   - the time from the API create of an Instance of the built-in image
//     (nexus.local/hello) to its process running and to ready, one instance
//     at a time, as Kubernetes' pod startup SLO measures pods: when the
//     client saw it (watch events) and when the agent says it happened
//     (status.startedAt, the moment the runtime's Start returned); p50 and
//     p99 per round of N instances, medians over the rounds;
//   - interleaved with it, `podman run -d` of the same image with crun,
//     timed until it returns (the container's process has been started);
//   - `nexus up`'s resident memory idle with nothing deployed, and its
//     growth per container with I idle containers on the node, with a
//     census of the processes that are not the containers' own.
//
// It must run as root inside a network namespace of its own (nexus up makes
// a bridge and nftables rules), with the host's mount namespace; the script
// bench/orchestration sets that up, cleans up after it and documents the
// output.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	nexus        string
	dir          string
	n            int
	rounds       int
	warmup       int
	idle         int
	settle       time.Duration
	probePeriod  int
	nodeIPv4Bits int
	podman       string
	podmanMntNS  string
	timeout      time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.nexus, "nexus", "bin/nexus", "the nexus binary to run (nexus up) and to make the built-in image from")
	flag.StringVar(&o.dir, "dir", "", "an empty directory for nexus up's data, podman's storage and the logs (required)")
	flag.IntVar(&o.n, "n", 100, "instances timed per round (at most 250)")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds of the start-latency phase (nexus and podman take turns within each)")
	flag.IntVar(&o.warmup, "warmup", 3, "untimed starts of each side before the first round")
	flag.IntVar(&o.idle, "idle", 500, "idle containers for the memory phase (0 skips it)")
	flag.DurationVar(&o.settle, "settle", 30*time.Second, "wait before each resident-memory reading")
	flag.IntVar(&o.probePeriod, "probe-period", 1, "periodSeconds of the instances' HTTP readiness probe")
	flag.IntVar(&o.nodeIPv4Bits, "node-ipv4-bits", 22, "nexus up --node-ipv4-bits: the node's IPv4 prefix must hold the idle containers")
	flag.StringVar(&o.podman, "podman", "podman", "podman program for the reference (empty: no podman)")
	flag.StringVar(&o.podmanMntNS, "podman-mntns", "", "mount namespace file podman runs in (nsenter --mount), e.g. /proc/PID/ns/mnt")
	flag.DurationVar(&o.timeout, "timeout", 2*time.Hour, "bound on the whole run")
	flag.Parse()
	if err := o.check(); err != nil {
		fmt.Fprintln(os.Stderr, "orchestrationbench:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "orchestrationbench:", err)
		os.Exit(1)
	}
}

func (o *options) check() error {
	switch {
	case o.dir == "":
		return fmt.Errorf("-dir is required (bench/orchestration passes one)")
	case o.n < 1 || o.n > 250:
		return fmt.Errorf("-n must be 1-250 (podman's addresses are 10.88.<round>.<i>)")
	case o.rounds < 1 || o.rounds > 50:
		return fmt.Errorf("-rounds must be 1-50")
	case o.warmup < 0 || o.warmup > 50:
		return fmt.Errorf("-warmup must be 0-50")
	case o.idle < 0:
		return fmt.Errorf("-idle must not be negative")
	case o.probePeriod < 1:
		return fmt.Errorf("-probe-period must be at least 1 (seconds)")
	case o.nodeIPv4Bits < 16 || o.nodeIPv4Bits > 28:
		return fmt.Errorf("-node-ipv4-bits must be 16-28")
	case o.idle > 1<<(32-o.nodeIPv4Bits)-3:
		return fmt.Errorf("-idle %d containers do not fit in a /%d: lower -node-ipv4-bits", o.idle, o.nodeIPv4Bits)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (nexus up runs containers)")
	}
	// A fresh network namespace has only loopback.
	ifs, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, i := range ifs {
		if i.Name != "lo" {
			return fmt.Errorf("must run in a fresh network namespace of its own (this one has %s): nexus up makes a bridge and nftables rules (bench/orchestration does this)", i.Name)
		}
	}
	return nil
}

func run(ctx context.Context, o options) (err error) {
	up, err := startUp(ctx, o)
	if err != nil {
		return err
	}
	var pm *podman
	defer func() {
		// Leave nothing running, also when the run was interrupted: the
		// containers outlive nexus up by design.
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if up != nil {
			if cerr := up.removeAll(cctx); cerr != nil && err == nil {
				err = cerr
			}
			up.stop()
		}
		if pm != nil {
			pm.removeAll(cctx)
		}
	}()

	// 3. nexus up idle, before anything was ever deployed.
	fmt.Printf("nexus up started in %.1f s; waiting %s for it to settle\n", up.startTime.Seconds(), o.settle)
	if !sleep(ctx, o.settle) {
		return ctx.Err()
	}
	idle := up.memory(ctx)
	fmt.Printf("nexus up idle, nothing deployed, %s after start: %s (target < 80 MB = %.1f MiB)\n\n", o.settle, idle, 80e6/(1<<20))

	if o.podman != "" {
		if pm, err = newPodman(ctx, o, o.dir); err != nil {
			return err
		}
		fmt.Printf("reference: %s, runtime %s; image %s loaded into it from the same binary (docker archive)\n", pm.version, pm.runtimeVersion, pm.image)
		fmt.Printf("  podman runs through nsenter into a private mount namespace (see bench/orchestration): %.2f ms median per exec, included in its times\n\n", pm.nsenterCost)
	}

	if err := warmUp(ctx, o, up, pm); err != nil {
		return err
	}
	// The idle containers come before the latency rounds, so that their
	// growth is measured from a process that has run nothing but the
	// warm-up (one that ran the rounds keeps heap it no longer uses,
	// into which the idle containers' memory would partly fit unseen).
	if o.idle > 0 {
		// The process holding podman's mount namespace lives in the
		// bench's network namespace too; it is no helper of nexus up.
		var skip []int
		if f := strings.Split(o.podmanMntNS, "/"); len(f) > 2 && f[1] == "proc" {
			if pid, err := strconv.Atoi(f[2]); err == nil {
				skip = append(skip, pid)
			}
		}
		if err := idlePhase(ctx, o, up, skip); err != nil {
			return err
		}
	}
	var rounds []roundResult
	for r := range o.rounds {
		fmt.Printf("round %d of %d (load average %s)\n", r+1, o.rounds, loadAvg())
		res, err := latencyRound(ctx, o, up, pm, r)
		if err != nil {
			return err
		}
		res.print(os.Stdout)
		rounds = append(rounds, res)
		if err := up.removeAll(ctx); err != nil {
			return err
		}
		if pm != nil {
			pm.removeAll(ctx)
		}
		fmt.Println()
	}
	summarize(os.Stdout, rounds, o)

	// A restart with nothing deployed: the store replays its log.
	up.stop()
	if up, err = startUp(ctx, o); err != nil {
		return err
	}
	if !sleep(ctx, o.settle) {
		return ctx.Err()
	}
	fmt.Printf("nexus up restarted on the same data directory, nothing deployed, %s after start: %s\n", o.settle, up.memory(ctx))
	return nil
}

// warmUp starts and removes a few containers on each side, untimed: the
// first nexus instance makes the built-in image from the binary, the first
// podman run sets up its network and storage.
func warmUp(ctx context.Context, o options, up *nexusUp, pm *podman) error {
	if o.warmup == 0 {
		return nil
	}
	for i := range o.warmup {
		if _, err := up.startOne(ctx, fmt.Sprintf("warmup-%d", i), o.probePeriod); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		if pm != nil {
			if _, err := pm.startOne(ctx, fmt.Sprintf("nxb-warmup-%d", i), fmt.Sprintf("10.88.250.%d", i+1)); err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
		}
	}
	if err := up.removeAll(ctx); err != nil {
		return err
	}
	if pm != nil {
		pm.removeAll(ctx)
	}
	fmt.Printf("warm-up: %d nexus instances and %d podman containers started and removed, untimed\n\n", o.warmup, o.warmup)
	return nil
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
