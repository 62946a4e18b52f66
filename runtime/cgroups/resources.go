package cgroups

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// unifiedKey marks writes that go to the cgroup2 directory.
const unifiedKey = "unified"

// write is one interface-file write a plan asks for.
type write struct {
	ctrl  string // v1 controller that owns the file, or unifiedKey
	file  string
	value string
	// optional writes are skipped when the file does not exist (a knob the
	// running kernel lacks whose value is the default anyway).
	optional bool
	// alt is tried instead when file does not exist (blkio.weight vs
	// blkio.bfq.weight).
	alt *write
	// swapOnEINVAL: when this write fails with EINVAL, do the next write
	// first and retry this one. Pairs of limits that constrain each other
	// (memory vs memory+swap, cfs period vs quota) need that order only when
	// the new value crosses the old one.
	swapOnEINVAL bool
}

// placement says where each controller lives for one manager.
type placement struct {
	v1    map[string]bool // controllers with a v1 directory
	v2    map[string]bool // controllers enabled-able in the cgroup2 directory
	hasV2 bool
}

// where returns the ctrl key for writes to a controller: its v1 name, or
// unifiedKey when cgroup2 owns it (v2name is its name there).
func (p placement) where(v1name, v2name string) (string, bool) {
	if p.v1[v1name] {
		return v1name, true
	}
	if p.hasV2 && v2name != "" && p.v2[v2name] {
		return unifiedKey, true
	}
	return "", false
}

// SharesToWeight converts cgroup v1 cpu.shares (2..262144) to cgroup v2
// cpu.weight (1..10000), the conversion runc, crun and systemd share.
func SharesToWeight(shares uint64) uint64 {
	if shares == 0 {
		return 0
	}
	if shares < 2 {
		shares = 2
	}
	return 1 + ((shares-2)*9999)/262142
}

// blkioToIOWeight converts blkio.weight (10..1000) to io.weight (1..10000).
func blkioToIOWeight(w uint16) uint64 {
	return 1 + (uint64(w)-10)*9999/990
}

func fieldErr(field, format string, args ...any) error {
	return fmt.Errorf("cgroups: linux.resources.%s: %s", field, fmt.Sprintf(format, args...))
}

// The patterns are compiled on first use, not at package initialisation:
// every nexus-runtime process and every container's init stage links this
// package, and compiling them in init cost 0.37 ms at the least of 60 runs
// (GODEBUG=inittrace=1) that only specs with cpusets or hugepage limits need.
var (
	cpuListRe  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$`) })
	pageSizeRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[1-9][0-9]*(KB|MB|GB)$`) })
)

// validate checks r without looking at the host.
func validate(r *specs.LinuxResources) error {
	if r == nil {
		return nil
	}
	if m := r.Memory; m != nil {
		for _, f := range []struct {
			name string
			v    *int64
		}{{"memory.limit", m.Limit}, {"memory.reservation", m.Reservation}, {"memory.swap", m.Swap}} {
			if f.v != nil && *f.v < -1 {
				return fieldErr(f.name, "%d is not a valid limit (use -1 for unlimited)", *f.v)
			}
		}
		if m.Swap != nil && *m.Swap > 0 {
			if m.Limit == nil || *m.Limit <= 0 {
				return fieldErr("memory.swap", "%d needs memory.limit to be set too (swap is memory+swap)", *m.Swap)
			}
			if *m.Swap < *m.Limit {
				return fieldErr("memory.swap", "%d is below memory.limit %d; swap is the memory+swap limit, so it must be >= limit", *m.Swap, *m.Limit)
			}
		}
		if m.Swappiness != nil && *m.Swappiness > 100 {
			return fieldErr("memory.swappiness", "%d is out of range 0..100", *m.Swappiness)
		}
	}
	if c := r.CPU; c != nil {
		if c.Shares != nil && *c.Shares != 0 && (*c.Shares < 2 || *c.Shares > 262144) {
			return fieldErr("cpu.shares", "%d is out of range 2..262144", *c.Shares)
		}
		if c.Quota != nil && (*c.Quota < -1 || (*c.Quota > 0 && *c.Quota < 1000)) {
			return fieldErr("cpu.quota", "%d is not valid: use -1 for unlimited or at least 1000 (µs)", *c.Quota)
		}
		if c.Period != nil && *c.Period != 0 && (*c.Period < 1000 || *c.Period > 1000000) {
			return fieldErr("cpu.period", "%d is out of range 1000..1000000 (µs)", *c.Period)
		}
		if c.Idle != nil && *c.Idle != 0 && *c.Idle != 1 {
			return fieldErr("cpu.idle", "%d is not 0 or 1", *c.Idle)
		}
		if c.RealtimeRuntime != nil && *c.RealtimeRuntime < -1 {
			return fieldErr("cpu.realtimeRuntime", "%d is not valid (use -1 for unlimited)", *c.RealtimeRuntime)
		}
		if c.Cpus != "" && !cpuListRe().MatchString(c.Cpus) {
			return fieldErr("cpu.cpus", "%q is not a CPU list like \"0-3,6\"", c.Cpus)
		}
		if c.Mems != "" && !cpuListRe().MatchString(c.Mems) {
			return fieldErr("cpu.mems", "%q is not a memory node list like \"0-1\"", c.Mems)
		}
	}
	if p := r.Pids; p != nil && p.Limit != nil && *p.Limit < -1 {
		return fieldErr("pids.limit", "%d is not a valid limit (use 0 or -1 for unlimited)", *p.Limit)
	}
	if b := r.BlockIO; b != nil {
		if b.Weight != nil && *b.Weight != 0 && (*b.Weight < 10 || *b.Weight > 1000) {
			return fieldErr("blockIO.weight", "%d is out of range 10..1000", *b.Weight)
		}
		for i, d := range b.WeightDevice {
			if d.Weight != nil && (*d.Weight < 10 || *d.Weight > 1000) {
				return fieldErr(fmt.Sprintf("blockIO.weightDevice[%d].weight", i), "%d is out of range 10..1000", *d.Weight)
			}
			if d.Major < 0 || d.Minor < 0 {
				return fieldErr(fmt.Sprintf("blockIO.weightDevice[%d]", i), "device %d:%d is not valid", d.Major, d.Minor)
			}
		}
		for name, list := range throttleLists(b) {
			for i, d := range list {
				if d.Major < 0 || d.Minor < 0 {
					return fieldErr(fmt.Sprintf("blockIO.%s[%d]", name, i), "device %d:%d is not valid", d.Major, d.Minor)
				}
			}
		}
	}
	if n := r.Network; n != nil {
		for i, p := range n.Priorities {
			// The kernel parses "<ifname> <prio>"; an interface name has at
			// most 15 bytes and no white space or slash.
			if p.Name == "" || len(p.Name) > 15 || strings.ContainsAny(p.Name, " \t\n/\x00") {
				return fieldErr(fmt.Sprintf("network.priorities[%d].name", i), "%q is not a network interface name", p.Name)
			}
		}
	}
	for i, h := range r.HugepageLimits {
		if !pageSizeRe().MatchString(h.Pagesize) {
			return fieldErr(fmt.Sprintf("hugepageLimits[%d].pageSize", i), "%q is not a page size like \"2MB\" or \"1GB\"", h.Pagesize)
		}
	}
	if _, err := compileDevices(r.Devices); err != nil {
		return err
	}
	for k := range r.Unified {
		if err := validUnifiedKey(k); err != nil {
			return err
		}
	}
	return nil
}

func throttleLists(b *specs.LinuxBlockIO) map[string][]specs.LinuxThrottleDevice {
	return map[string][]specs.LinuxThrottleDevice{
		"throttleReadBpsDevice":   b.ThrottleReadBpsDevice,
		"throttleWriteBpsDevice":  b.ThrottleWriteBpsDevice,
		"throttleReadIOPSDevice":  b.ThrottleReadIOPSDevice,
		"throttleWriteIOPSDevice": b.ThrottleWriteIOPSDevice,
	}
}

// validUnifiedKey accepts only a plain interface file name such as
// "memory.high"; placement files stay under Add's control.
func validUnifiedKey(k string) error {
	switch {
	case k == "" || strings.ContainsAny(k, "/\x00") || k == "." || k == "..":
		return fieldErr("unified", "key %q is not a cgroup interface file name", k)
	case !strings.Contains(strings.Trim(k, "."), "."):
		return fieldErr("unified", "key %q is not a cgroup interface file name (want <controller>.<name>)", k)
	case k == "cgroup.procs" || k == "cgroup.threads" || k == "cgroup.kill" || k == "cgroup.freeze":
		return fieldErr("unified", "key %q cannot be set through resources; the runtime owns it", k)
	}
	return nil
}

func limitString(v int64) string {
	if v == -1 {
		return "max"
	}
	return strconv.FormatInt(v, 10)
}

// plan turns resources into the ordered interface-file writes for the
// hierarchies in p, plus the device rules (applied separately on v2).
// r must have passed validate.
func plan(r *specs.LinuxResources, p placement) ([]write, *deviceRules, error) {
	if r == nil {
		return nil, nil, nil
	}
	var ws []write
	missing := func(field, ctrl string) error {
		return fieldErr(field, "the %s controller is not available to this cgroup (not mounted, or not enabled in cgroup2)", ctrl)
	}

	var kernel *int64
	if r.Memory != nil {
		//lint:ignore SA1019 deprecated in the spec, applied where cgroup v1 still has it
		kernel = r.Memory.Kernel
	}
	if m := r.Memory; m != nil && (set(m.Limit) || set(m.Reservation) || set(m.Swap) || m.Swappiness != nil || m.DisableOOMKiller != nil ||
		set(kernel) || set(m.KernelTCP)) {
		ctrl, ok := p.where("memory", "memory")
		if !ok {
			return nil, nil, missing("memory", "memory")
		}
		if ctrl != unifiedKey {
			limit := write{ctrl: ctrl, file: "memory.limit_in_bytes"}
			if set(m.Limit) {
				limit.value = strconv.FormatInt(*m.Limit, 10)
			}
			var memsw write
			if set(m.Swap) {
				memsw = write{ctrl: ctrl, file: "memory.memsw.limit_in_bytes", value: strconv.FormatInt(*m.Swap, 10), optional: *m.Swap == -1}
			}
			switch {
			case memsw.file != "" && *m.Swap == -1:
				// Raising memory+swap first lets any memory limit follow.
				ws = append(ws, memsw)
				if limit.value != "" {
					ws = append(ws, limit)
				}
			case memsw.file != "" && limit.value != "":
				limit.swapOnEINVAL = true
				ws = append(ws, limit, memsw)
			case memsw.file != "":
				ws = append(ws, memsw)
			case limit.value != "":
				ws = append(ws, limit)
			}
			if set(m.Reservation) {
				ws = append(ws, write{ctrl: ctrl, file: "memory.soft_limit_in_bytes", value: strconv.FormatInt(*m.Reservation, 10)})
			}
			if m.Swappiness != nil {
				ws = append(ws, write{ctrl: ctrl, file: "memory.swappiness", value: strconv.FormatUint(*m.Swappiness, 10)})
			}
			if m.DisableOOMKiller != nil {
				v := "0"
				if *m.DisableOOMKiller {
					v = "1"
				}
				ws = append(ws, write{ctrl: ctrl, file: "memory.oom_control", value: v})
			}
			// Recent kernels accept this file and ignore what is written
			// (6.18 here); older ones apply it.
			if set(kernel) {
				ws = append(ws, write{ctrl: ctrl, file: "memory.kmem.limit_in_bytes", value: strconv.FormatInt(*kernel, 10), optional: true})
			}
			if set(m.KernelTCP) {
				ws = append(ws, write{ctrl: ctrl, file: "memory.kmem.tcp.limit_in_bytes", value: strconv.FormatInt(*m.KernelTCP, 10)})
			}
		} else {
			if set(kernel) || set(m.KernelTCP) {
				return nil, nil, fieldErr("memory.kernelTCP", "kernel and kernel TCP memory limits exist only in cgroup v1 (cgroup v2 counts that memory in memory.max): remove linux.resources.memory.kernel and kernelTCP")
			}
			if set(m.Limit) {
				ws = append(ws, write{ctrl: ctrl, file: "memory.max", value: limitString(*m.Limit)})
			}
			if set(m.Swap) {
				v := "max"
				if *m.Swap > 0 {
					v = strconv.FormatInt(*m.Swap-*m.Limit, 10)
				}
				ws = append(ws, write{ctrl: ctrl, file: "memory.swap.max", value: v, optional: v == "max"})
			}
			if set(m.Reservation) {
				v := "0"
				if *m.Reservation > 0 {
					v = strconv.FormatInt(*m.Reservation, 10)
				}
				ws = append(ws, write{ctrl: ctrl, file: "memory.low", value: v})
			}
		}
	}

	if c := r.CPU; c != nil {
		if nz(c.Shares) || set(c.Quota) || nz(c.Period) || c.Burst != nil || c.Idle != nil || nz(c.RealtimePeriod) || (c.RealtimeRuntime != nil && *c.RealtimeRuntime != 0) {
			ctrl, ok := p.where("cpu", "cpu")
			if !ok {
				return nil, nil, missing("cpu", "cpu")
			}
			if ctrl != unifiedKey {
				if nz(c.Shares) {
					ws = append(ws, write{ctrl: ctrl, file: "cpu.shares", value: strconv.FormatUint(*c.Shares, 10)})
				}
				if nz(c.Period) {
					ws = append(ws, write{ctrl: ctrl, file: "cpu.cfs_period_us", value: strconv.FormatUint(*c.Period, 10), swapOnEINVAL: set(c.Quota)})
				}
				if set(c.Quota) {
					ws = append(ws, write{ctrl: ctrl, file: "cpu.cfs_quota_us", value: strconv.FormatInt(*c.Quota, 10)})
				}
				if c.Burst != nil {
					ws = append(ws, write{ctrl: ctrl, file: "cpu.cfs_burst_us", value: strconv.FormatUint(*c.Burst, 10)})
				}
				if nz(c.RealtimePeriod) {
					ws = append(ws, write{ctrl: ctrl, file: "cpu.rt_period_us", value: strconv.FormatUint(*c.RealtimePeriod, 10)})
				}
				if c.RealtimeRuntime != nil && *c.RealtimeRuntime != 0 {
					ws = append(ws, write{ctrl: ctrl, file: "cpu.rt_runtime_us", value: strconv.FormatInt(*c.RealtimeRuntime, 10)})
				}
			} else {
				if (c.RealtimeRuntime != nil && *c.RealtimeRuntime != 0) || nz(c.RealtimePeriod) {
					return nil, nil, fieldErr("cpu.realtimeRuntime", "realtime CPU scheduling limits do not exist in cgroup v2; remove them")
				}
				if nz(c.Shares) {
					ws = append(ws, write{ctrl: ctrl, file: "cpu.weight", value: strconv.FormatUint(SharesToWeight(*c.Shares), 10)})
				}
				if set(c.Quota) || nz(c.Period) {
					v := "max"
					if set(c.Quota) && *c.Quota > 0 {
						v = strconv.FormatInt(*c.Quota, 10)
					}
					if nz(c.Period) {
						v += " " + strconv.FormatUint(*c.Period, 10)
					}
					ws = append(ws, write{ctrl: ctrl, file: "cpu.max", value: v})
				}
				if c.Burst != nil {
					ws = append(ws, write{ctrl: ctrl, file: "cpu.max.burst", value: strconv.FormatUint(*c.Burst, 10)})
				}
			}
			if c.Idle != nil {
				ws = append(ws, write{ctrl: ctrl, file: "cpu.idle", value: strconv.FormatInt(*c.Idle, 10)})
			}
		}
		if c.Cpus != "" || c.Mems != "" {
			ctrl, ok := p.where("cpuset", "cpuset")
			if !ok {
				return nil, nil, missing("cpu.cpus", "cpuset")
			}
			if c.Cpus != "" {
				ws = append(ws, write{ctrl: ctrl, file: "cpuset.cpus", value: c.Cpus})
			}
			if c.Mems != "" {
				ws = append(ws, write{ctrl: ctrl, file: "cpuset.mems", value: c.Mems})
			}
		}
	}

	if pl := r.Pids; pl != nil && pl.Limit != nil {
		ctrl, ok := p.where("pids", "pids")
		if !ok {
			return nil, nil, missing("pids", "pids")
		}
		v := "max"
		if *pl.Limit > 0 {
			v = strconv.FormatInt(*pl.Limit, 10)
		}
		ws = append(ws, write{ctrl: ctrl, file: "pids.max", value: v})
	}

	if b := r.BlockIO; b != nil {
		bw, err := planBlockIO(b, p)
		if err != nil {
			return nil, nil, err
		}
		ws = append(ws, bw...)
	}

	for _, h := range r.HugepageLimits {
		ctrl, ok := p.where("hugetlb", "hugetlb")
		if !ok {
			return nil, nil, missing("hugepageLimits", "hugetlb")
		}
		file := "hugetlb." + h.Pagesize + ".limit_in_bytes"
		if ctrl == unifiedKey {
			file = "hugetlb." + h.Pagesize + ".max"
		}
		ws = append(ws, write{ctrl: ctrl, file: file, value: strconv.FormatUint(h.Limit, 10)})
	}

	if n := r.Network; n != nil {
		// net_cls and net_prio exist only as cgroup v1 controllers: cgroup v2
		// has no equivalent (eBPF programs classify traffic instead).
		noV1 := func(field, ctrl string) error {
			return fieldErr(field, "the %s controller is not mounted: it exists only in cgroup v1, so mount it "+
				"(mount -t cgroup -o net_cls,net_prio cgroup /sys/fs/cgroup/net_cls,net_prio) or remove linux.resources.network", ctrl)
		}
		if n.ClassID != nil {
			if !p.v1["net_cls"] {
				return nil, nil, noV1("network.classID", "net_cls")
			}
			ws = append(ws, write{ctrl: "net_cls", file: "net_cls.classid", value: strconv.FormatUint(uint64(*n.ClassID), 10)})
		}
		for _, pr := range n.Priorities {
			if !p.v1["net_prio"] {
				return nil, nil, noV1("network.priorities", "net_prio")
			}
			ws = append(ws, write{ctrl: "net_prio", file: "net_prio.ifpriomap", value: pr.Name + " " + strconv.FormatUint(uint64(pr.Priority), 10)})
		}
	}

	var dev *deviceRules
	if len(r.Devices) > 0 {
		rules, err := compileDevices(r.Devices)
		if err != nil {
			return nil, nil, err
		}
		if p.v1["devices"] {
			for _, line := range rules.v1Lines() {
				ws = append(ws, write{ctrl: "devices", file: line[0], value: line[1]})
			}
		} else if p.hasV2 {
			dev = rules
		} else {
			return nil, nil, fieldErr("devices", "no devices cgroup and no cgroup2 hierarchy to attach a device program to")
		}
	}

	if len(r.Unified) > 0 {
		if !p.hasV2 {
			return nil, nil, fieldErr("unified", "needs cgroup v2, and this host mounts only cgroup v1; remove linux.resources.unified")
		}
		keys := make([]string, 0, len(r.Unified))
		for k := range r.Unified {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if ctrl, _, _ := strings.Cut(k, "."); ctrl != "cgroup" && !p.v2[ctrl] {
				return nil, nil, fieldErr("unified", "key %q: the %s controller is not available in this cgroup2 hierarchy", k, ctrl)
			}
			ws = append(ws, write{ctrl: unifiedKey, file: k, value: r.Unified[k]})
		}
	}
	return ws, dev, nil
}

func planBlockIO(b *specs.LinuxBlockIO, p placement) ([]write, error) {
	any := (b.Weight != nil && *b.Weight != 0) || len(b.WeightDevice) > 0 || len(b.ThrottleReadBpsDevice) > 0 ||
		len(b.ThrottleWriteBpsDevice) > 0 || len(b.ThrottleReadIOPSDevice) > 0 || len(b.ThrottleWriteIOPSDevice) > 0
	if !any {
		return nil, nil
	}
	ctrl, ok := p.where("blkio", "io")
	if !ok {
		return nil, fieldErr("blockIO", "the blkio/io controller is not available to this cgroup")
	}
	var ws []write
	dev := func(d specs.LinuxBlockIODevice) string { return fmt.Sprintf("%d:%d", d.Major, d.Minor) }
	if ctrl != unifiedKey {
		if b.Weight != nil && *b.Weight != 0 {
			v := strconv.Itoa(int(*b.Weight))
			ws = append(ws, write{ctrl: ctrl, file: "blkio.weight", value: v, alt: &write{ctrl: ctrl, file: "blkio.bfq.weight", value: v}})
		}
		for _, d := range b.WeightDevice {
			if d.Weight != nil {
				v := dev(d.LinuxBlockIODevice) + " " + strconv.Itoa(int(*d.Weight))
				ws = append(ws, write{ctrl: ctrl, file: "blkio.weight_device", value: v, alt: &write{ctrl: ctrl, file: "blkio.bfq.weight_device", value: v}})
			}
		}
		for _, t := range []struct {
			file string
			list []specs.LinuxThrottleDevice
		}{
			{"blkio.throttle.read_bps_device", b.ThrottleReadBpsDevice},
			{"blkio.throttle.write_bps_device", b.ThrottleWriteBpsDevice},
			{"blkio.throttle.read_iops_device", b.ThrottleReadIOPSDevice},
			{"blkio.throttle.write_iops_device", b.ThrottleWriteIOPSDevice},
		} {
			for _, d := range t.list {
				ws = append(ws, write{ctrl: ctrl, file: t.file, value: dev(d.LinuxBlockIODevice) + " " + strconv.FormatUint(d.Rate, 10)})
			}
		}
		return ws, nil
	}
	if b.Weight != nil && *b.Weight != 0 {
		ws = append(ws, write{ctrl: ctrl, file: "io.bfq.weight", value: strconv.Itoa(int(*b.Weight)),
			alt: &write{ctrl: ctrl, file: "io.weight", value: "default " + strconv.FormatUint(blkioToIOWeight(*b.Weight), 10)}})
	}
	for _, d := range b.WeightDevice {
		if d.Weight != nil {
			ws = append(ws, write{ctrl: ctrl, file: "io.bfq.weight", value: dev(d.LinuxBlockIODevice) + " " + strconv.Itoa(int(*d.Weight)),
				alt: &write{ctrl: ctrl, file: "io.weight", value: dev(d.LinuxBlockIODevice) + " " + strconv.FormatUint(blkioToIOWeight(*d.Weight), 10)}})
		}
	}
	for _, t := range []struct {
		key  string
		list []specs.LinuxThrottleDevice
	}{
		{"rbps", b.ThrottleReadBpsDevice}, {"wbps", b.ThrottleWriteBpsDevice},
		{"riops", b.ThrottleReadIOPSDevice}, {"wiops", b.ThrottleWriteIOPSDevice},
	} {
		for _, d := range t.list {
			v := "max"
			if d.Rate > 0 {
				v = strconv.FormatUint(d.Rate, 10)
			}
			ws = append(ws, write{ctrl: ctrl, file: "io.max", value: dev(d.LinuxBlockIODevice) + " " + t.key + "=" + v})
		}
	}
	return ws, nil
}

// set reports whether an optional limit asks for a change; 0 means "not
// set", as in runc, because writing 0 would kill the container.
func set(v *int64) bool { return v != nil && *v != 0 }

func nz(v *uint64) bool { return v != nil && *v != 0 }
