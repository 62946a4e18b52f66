// Package simulate builds seeded synthetic clusters and workloads for the
// scheduler's benchmarks (scheduler's BenchmarkPlace and bench/schedulerbench),
// so both measure the same thing.
package simulate

import (
	"fmt"
	"math/rand/v2"

	"nexus.dev/nexus/scheduler"
)

const (
	gib  = int64(1) << 30
	core = int64(1000)
)

var (
	kernels = []string{"5.10.0", "5.15.2", "6.1.0", "6.6.3", "6.12.1-rc.1"}
	images  = func() []string {
		s := make([]string, 24)
		for i := range s {
			s[i] = fmt.Sprintf("registry.example/app%d:1", i)
		}
		return s
	}()
)

// Cluster returns n nodes in 5 zones (3 when n < 100) and racks of 20:
// mostly 32 cores / 128 GiB, a quarter 16 / 64; labels os, arch (a fifth
// arm64), kernel, disk; one in twenty has a GPU and a gpu NoSchedule taint;
// every node runs containers, half sandboxes, a fifth VMs; one in a hundred
// is not ready; each holds a few of 24 images.
func Cluster(seed uint64, n int) scheduler.Snapshot {
	r := rand.New(rand.NewPCG(seed, 1))
	zones := 5
	if n < 100 {
		zones = 3
	}
	var snap scheduler.Snapshot
	for i := range n {
		capac := scheduler.Resources{MilliCPU: 32 * core, MemoryBytes: 128 * gib}
		if r.IntN(4) == 0 {
			capac = scheduler.Resources{MilliCPU: 16 * core, MemoryBytes: 64 * gib}
		}
		arch := "amd64"
		if r.IntN(5) == 0 {
			arch = "arm64"
		}
		disk := "ssd"
		if r.IntN(3) == 0 {
			disk = "hdd"
		}
		nd := scheduler.Node{
			ID:       fmt.Sprintf("node-%05d", i),
			Capacity: capac,
			Labels:   map[string]string{"os": "linux", "arch": arch, "kernel": kernels[r.IntN(len(kernels))], "disk": disk},
			Zone:     fmt.Sprintf("zone-%d", i%zones),
			Rack:     fmt.Sprintf("rack-%d", i/20),
			Ready:    r.IntN(100) != 0,
			Tiers:    []string{"container"},
		}
		if r.IntN(2) == 0 {
			nd.Tiers = append(nd.Tiers, "sandbox")
		}
		if r.IntN(5) == 0 {
			nd.Tiers = append(nd.Tiers, "vm")
		}
		if r.IntN(20) == 0 {
			nd.Labels["gpu"] = "a100"
			nd.Taints = []scheduler.Taint{{Key: "gpu", Value: "true", Effect: scheduler.NoSchedule}}
		}
		for range 3 {
			nd.Images = append(nd.Images, images[r.IntN(len(images))])
		}
		snap.Nodes = append(snap.Nodes, nd)
	}
	return snap
}

// Workload returns the first n instances of NewGenerator(seed).
func Workload(seed uint64, n int) []scheduler.Instance {
	return NewGenerator(seed).Next(make([]scheduler.Instance, 0, n), n)
}

// Generator produces a mixed workload in groups, in arrival order:
//   - 55 % of groups: batch, 20-200 small instances (power of two choices),
//     priority 10;
//   - 25 %: services of 10-50 with constraints (arch, or a kernel version
//     range plus an os regexp), an ssd affinity, and one of distinct hosts,
//     hard zone spread or a sandbox tier; priority 50;
//   - 10 %: 5-30 instances with a host port (so distinct hosts), priority 50;
//   - 10 %: 5-20 larger critical instances, priority 100, which preempt
//     batch work once the cluster is full.
//
// By instance count that is about 85 % batch; the average request is about
// 0.25 cores and 0.75 GiB, so 100 instances per node of Cluster ask for
// about 90 % of its cpu.
type Generator struct {
	r                  *rand.Rand
	g, left, i         int
	base               scheduler.Instance
	archAMD, newKernel []scheduler.Constraint
	ssd                []scheduler.Affinity
	distinct           []scheduler.AntiAffinity
	zoneSpread         *scheduler.Spread
}

// NewGenerator returns a generator seeded with seed.
func NewGenerator(seed uint64) *Generator {
	return &Generator{
		r:       rand.New(rand.NewPCG(seed, 2)),
		archAMD: []scheduler.Constraint{{Key: "arch", Op: scheduler.OpEqual, Values: []string{"amd64"}}},
		newKernel: []scheduler.Constraint{
			{Key: "kernel", Op: scheduler.OpVersion, Values: []string{">=5.15, <7.0"}},
			{Key: "os", Op: scheduler.OpRegexp, Values: []string{"^lin"}},
		},
		ssd:        []scheduler.Affinity{{Constraint: scheduler.Constraint{Key: "disk", Op: scheduler.OpEqual, Values: []string{"ssd"}}, Weight: 50}},
		distinct:   []scheduler.AntiAffinity{{Hard: true}},
		zoneSpread: &scheduler.Spread{Topology: "zone", MaxSkew: 1, Hard: true},
	}
}

// Next appends the next n instances to dst.
func (w *Generator) Next(dst []scheduler.Instance, n int) []scheduler.Instance {
	for range n {
		if w.left == 0 {
			w.newGroup()
		}
		in := w.base
		in.ID = fmt.Sprintf("%s-%d", in.Group, w.i)
		dst = append(dst, in)
		w.i++
		w.left--
	}
	return dst
}

func (w *Generator) newGroup() {
	r := w.r
	w.g++
	w.i = 0
	base := scheduler.Instance{Group: fmt.Sprintf("g%d", w.g), Image: images[r.IntN(len(images))]}
	switch k := r.IntN(100); {
	case k < 55:
		w.left = 20 + r.IntN(181)
		base.Batch = true
		base.Priority = 10
		base.Request = scheduler.Resources{MilliCPU: 100 + 25*r.Int64N(7), MemoryBytes: gib / 4 * (1 + r.Int64N(4))}
	case k < 80:
		w.left = 10 + r.IntN(41)
		base.Priority = 50
		base.Request = scheduler.Resources{MilliCPU: 250 * (1 + r.Int64N(4)), MemoryBytes: gib / 2 * (1 + r.Int64N(4))}
		if r.IntN(2) == 0 {
			base.Constraints = w.archAMD
		} else {
			base.Constraints = w.newKernel
		}
		base.Affinities = w.ssd
		switch r.IntN(4) {
		case 0:
			base.AntiAffinity = w.distinct
		case 1:
			base.Spread = w.zoneSpread
		case 2:
			base.Tier = "sandbox"
		}
	case k < 90:
		w.left = 5 + r.IntN(26)
		base.Priority = 50
		base.Request = scheduler.Resources{MilliCPU: 500, MemoryBytes: gib}
		base.HostPorts = []scheduler.Port{scheduler.Port(8000 + w.g%200)}
	default:
		w.left = 5 + r.IntN(16)
		base.Priority = 100
		base.Request = scheduler.Resources{MilliCPU: 1000 * (1 + r.Int64N(2)), MemoryBytes: 2 * gib * (1 + r.Int64N(2))}
	}
	w.base = base
}
