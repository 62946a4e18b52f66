// Command servicesbench is the driver of bench/services: it runs a real
// `nexus up` (bin/nexus, as a process), a workload of the built-in image
// (nexus.local/hello, HTTP on 8080) with a few replicas and a Service in
// front of it, and measures from the node's own network namespace, in one
// run, how service traffic compares with traffic sent straight to an
// instance:
//
//   - direct: to the instances' own addresses, round-robin in the client;
//   - ebpf: to the Service's virtual IP, nexus up --service-datapath ebpf
//     (connect-time balancing: the socket is connected to a backend);
//   - nftables: to the virtual IP, nexus up --service-datapath nftables
//     (DNAT of every connection's packets);
//   - haproxy: to haproxy (Debian) in TCP mode on loopback, balancing
//     round-robin over the instances' addresses: the user-space reference.
//
// Per mode: new connections per second (connect, a small request, close,
// several workers), requests per second over kept-alive connections
// (several workers), the latency of one small request at a time over a
// kept-alive connection and over a new connection (p50, p99), and bulk
// throughput (a large response over a kept-alive connection). Within a
// round each figure's time per mode is cut into slices and the modes take
// turns slice by slice; the two data paths need nexus up restarted (the
// containers stay), so each round runs the modes of one data path,
// restarts, runs the other's, and the next round starts with the data
// path the previous one ended with. Medians over the rounds
// at the end, with the targets of issue #16 checked.
//
// It must run as root inside a network namespace of its own (nexus up
// makes a bridge and nftables rules), with the host's mount namespace; the
// script bench/services sets that up, cleans up after it and documents the
// output.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// The modes, in the order of the table.
const (
	modeDirect   = "direct"
	modeEBPF     = "ebpf"
	modeNFTables = "nftables"
	modeHAProxy  = "haproxy"
)

var allModes = []string{modeDirect, modeEBPF, modeNFTables, modeHAProxy}

type options struct {
	nexus    string
	haproxy  string
	dir      string
	modes    []string
	rounds   int
	duration time.Duration
	slices   int
	warmup   time.Duration
	replicas int
	workers  int
	bulkMiB  int
	family   int
	timeout  time.Duration
}

func main() {
	var o options
	var modes string
	flag.StringVar(&o.nexus, "nexus", "bin/nexus", "the nexus binary to run (nexus up)")
	flag.StringVar(&o.haproxy, "haproxy", "haproxy", "the haproxy program (mode haproxy)")
	flag.StringVar(&o.dir, "dir", "", "an empty directory for nexus up's data, haproxy's configuration and the logs (required)")
	flag.StringVar(&modes, "modes", strings.Join(allModes, ","), "the modes to measure, comma-separated: "+strings.Join(allModes, ", "))
	flag.IntVar(&o.rounds, "rounds", 5, "rounds; each measures every figure of every mode once")
	flag.DurationVar(&o.duration, "duration", 2*time.Second, "how long each figure of each mode is measured per round")
	flag.IntVar(&o.slices, "slices", 4, "each figure's time per mode is cut into this many slices, the modes of a nexus up taking turns slice by slice")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "untimed traffic of each figure and mode before the first round")
	flag.IntVar(&o.replicas, "replicas", 3, "instances of the workload behind the service")
	flag.IntVar(&o.workers, "workers", 4, "concurrent connections of the rate figures (new connections/s, kept-alive requests/s)")
	flag.IntVar(&o.bulkMiB, "bulk-mib", 64, "size of one bulk response in MiB (at most 1024)")
	flag.IntVar(&o.family, "family", 6, "address family of every figure: 6 (IPv6) or 4 (IPv4)")
	flag.DurationVar(&o.timeout, "timeout", time.Hour, "bound on the whole run")
	flag.Parse()
	o.modes = splitModes(modes)
	if err := o.check(); err != nil {
		fmt.Fprintln(os.Stderr, "servicesbench:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "servicesbench:", err)
		os.Exit(1)
	}
}

func splitModes(s string) []string {
	var out []string
	for _, m := range strings.Split(s, ",") {
		if m = strings.TrimSpace(m); m != "" {
			out = append(out, m)
		}
	}
	return out
}

func (o *options) check() error {
	if len(o.modes) == 0 {
		return fmt.Errorf("-modes is empty: give some of %s", strings.Join(allModes, ","))
	}
	for i, m := range o.modes {
		if !slices.Contains(allModes, m) {
			return fmt.Errorf("-modes: unknown mode %q: the modes are %s", m, strings.Join(allModes, ", "))
		}
		if slices.Contains(o.modes[:i], m) {
			return fmt.Errorf("-modes: %q given twice", m)
		}
	}
	switch {
	case o.dir == "":
		return fmt.Errorf("-dir is required (bench/services passes one)")
	case o.rounds < 1 || o.rounds > 50:
		return fmt.Errorf("-rounds must be 1-50")
	case o.duration < 100*time.Millisecond || o.duration > 10*time.Minute:
		return fmt.Errorf("-duration must be 100ms-10m")
	case o.slices < 1 || o.duration/time.Duration(o.slices) < 50*time.Millisecond:
		return fmt.Errorf("-slices must be 1 or more, with slices of at least 50ms (-duration %s)", o.duration)
	case o.warmup < 0 || o.warmup > time.Minute:
		return fmt.Errorf("-warmup must be 0-1m")
	case o.replicas < 1 || o.replicas > 50:
		return fmt.Errorf("-replicas must be 1-50")
	case o.workers < 1 || o.workers > 256:
		return fmt.Errorf("-workers must be 1-256")
	case o.bulkMiB < 1 || o.bulkMiB > 1024:
		return fmt.Errorf("-bulk-mib must be 1-1024 (the built-in image's /bytes sends at most 1 GiB)")
	case o.family != 4 && o.family != 6:
		return fmt.Errorf("-family must be 4 or 6")
	}
	if slices.Contains(o.modes, modeHAProxy) {
		if _, err := exec.LookPath(o.haproxy); err != nil {
			return fmt.Errorf("mode haproxy needs %s: on Debian apt-get install -y haproxy (or leave haproxy out of -modes): %w", o.haproxy, err)
		}
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (nexus up runs containers)")
	}
	// A fresh network namespace has only loopback, and the script's
	// stand-in for an uplink.
	ifs, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, i := range ifs {
		if i.Name != "lo" && i.Name != uplink && i.Name != uplink+"-peer" {
			return fmt.Errorf("must run in a fresh network namespace of its own (this one has %s): nexus up makes a bridge and nftables rules (bench/services does this)", i.Name)
		}
	}
	return nil
}

// uplink is the interface bench/services gives the namespace (a veth
// pair, uplink and uplink-peer), with default routes through it, as a
// node has: a local client's connect to a
// virtual IP needs a route before the nftables data path's DNAT (in the
// nat output hook) sends it to a backend; eBPF rewrites the address
// before the route lookup.
const uplink = "uplink0"

// phase is the modes measured under one nexus up: its service data path
// (empty: nexus up's default) and the modes that need it.
type phase struct {
	datapath string
	modes    []string
}

// phases groups the modes by the data path nexus up must run with.
// Direct and haproxy traffic passes no service address; they run beside
// the eBPF modes when there are some, so that the comparison that matters
// most, (b) against (a), is made under the same nexus up.
func phases(modes []string) []phase {
	var ebpf, nft, other []string
	for _, m := range modes {
		switch m {
		case modeEBPF:
			ebpf = append(ebpf, m)
		case modeNFTables:
			nft = append(nft, m)
		default:
			other = append(other, m)
		}
	}
	var out []phase
	switch {
	case len(ebpf) > 0:
		out = append(out, phase{modeEBPF, append(other, ebpf...)})
		if len(nft) > 0 {
			out = append(out, phase{modeNFTables, nft})
		}
	case len(nft) > 0:
		out = append(out, phase{modeNFTables, append(other, nft...)})
	default:
		out = append(out, phase{"", other})
	}
	return out
}

func run(ctx context.Context, o options) (err error) {
	ph := phases(o.modes)
	up, err := startUp(ctx, o, ph[0].datapath)
	if err != nil {
		return err
	}
	var hap *haproxy
	defer func() {
		// Leave nothing running, also when the run was interrupted: the
		// containers outlive nexus up by design.
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if hap != nil {
			hap.stop()
		}
		if up != nil {
			if cerr := up.removeAll(cctx); cerr != nil && err == nil {
				err = cerr
			}
			up.stop()
		}
	}()
	fmt.Printf("nexus up started in %.1f s%s\n", up.startTime.Seconds(), up.describeDatapath())
	svc, err := up.deploy(ctx, o)
	if err != nil {
		return err
	}
	fmt.Printf("workload %s: %d ready instances of %s: %s\n", workloadName, len(svc.instances), imageName(), strings.Join(svc.instances, " "))
	if len(svc.vips) > 0 {
		fmt.Printf("service %s: virtual IPs %s, port %d -> %d\n", serviceName, strings.Join(svc.vips, " "), servicePort, targetPort)
	}
	targets := map[string][]string{modeDirect: svc.instanceTargets()}
	if slices.Contains(o.modes, modeHAProxy) {
		if hap, err = startHAProxy(ctx, o, svc.instanceTargets()); err != nil {
			return err
		}
		fmt.Printf("reference: %s, TCP mode, roundrobin over the %d instances, on %s\n", hap.version, len(svc.instances), hap.addr)
		targets[modeHAProxy] = []string{hap.addr}
	}
	if vip := svc.vipTarget(); vip != "" {
		targets[modeEBPF] = []string{vip}
		targets[modeNFTables] = []string{vip}
	}
	for _, m := range o.modes {
		if len(targets[m]) == 0 {
			return fmt.Errorf("mode %s: the service has no virtual IPv%d address (spec.virtualIPs %v): is the Service API of issue #16 in this build?", m, o.family, svc.vips)
		}
	}
	b := &bench{o: o, targets: targets}
	fmt.Printf("each figure: %s per mode per round, in %d slices the modes take turns with; %d workers for the rates; one request at a time for the latencies; bulk: %d MiB responses, one at a time\n\n", o.duration, o.slices, o.workers, o.bulkMiB)

	current := ph[0].datapath
	warmed := map[string]bool{}
	var rounds []roundResult
	for r := range o.rounds {
		fmt.Printf("round %d of %d (load average %s)\n", r+1, o.rounds, loadAvg())
		res := roundResult{}
		// Start with the data path nexus up runs now: a restart less.
		order := slices.Clone(ph)
		if len(order) == 2 && order[1].datapath == current {
			order[0], order[1] = order[1], order[0]
		}
		for _, p := range order {
			if p.datapath != current {
				up.stop()
				if up, err = startUp(ctx, o, p.datapath); err != nil {
					return err
				}
				current = p.datapath
				if err := up.waitService(ctx, svc, o); err != nil {
					return err
				}
				fmt.Printf("  nexus up restarted in %.1f s%s\n", up.startTime.Seconds(), up.describeDatapath())
			}
			for _, m := range p.modes {
				if !warmed[m] {
					if err := b.warm(ctx, m); err != nil {
						return err
					}
					warmed[m] = true
				}
			}
			if err := b.round(ctx, p.modes, r, res); err != nil {
				return err
			}
		}
		res.print(os.Stdout, o.modes, "  ")
		rounds = append(rounds, res)
		fmt.Println()
	}
	summarize(os.Stdout, rounds, o)
	return nil
}

// rotate starts the modes' turns with the k-th (modulo their number), so
// that no mode always goes first.
func rotate(modes []string, k int) []string {
	k %= len(modes)
	return append(slices.Clone(modes[k:]), modes[:k]...)
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
