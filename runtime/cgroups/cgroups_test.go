package cgroups

import (
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func i64(v int64) *int64   { return &v }
func u64(v uint64) *uint64 { return &v }
func u16(v uint16) *uint16 { return &v }
func u32(v uint32) *uint32 { return &v }
func dev(allow bool, typ string, major, minor int64, access string) specs.LinuxDeviceCgroup {
	d := specs.LinuxDeviceCgroup{Allow: allow, Type: typ, Access: access}
	if major != -1 {
		d.Major = i64(major)
	}
	if minor != -1 {
		d.Minor = i64(minor)
	}
	return d
}

func TestSharesToWeight(t *testing.T) {
	for _, tc := range []struct{ shares, weight uint64 }{
		{0, 0}, {1, 1}, {2, 1}, {1024, 39}, {262144, 10000}, {512, 20},
	} {
		if got := SharesToWeight(tc.shares); got != tc.weight {
			t.Errorf("SharesToWeight(%d) = %d, want %d", tc.shares, got, tc.weight)
		}
	}
}

func TestCleanPath(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "/a/b", want: "a/b"},
		{in: "ctr1", want: DefaultParent + "/ctr1"},
		{in: "pod/ctr1/", want: DefaultParent + "/pod/ctr1"},
		{in: "//a//b", want: "a/b"},
		{in: "", err: "empty"},
		{in: "/", err: "root"},
		{in: "../../etc", err: `".."`},
		{in: "/a/../../b", err: `".."`},
		{in: "a/./b", err: `"."`},
		{in: "/a/cgroup.procs", err: "interface files"},
		{in: "system.slice:nexus:abc", err: "systemd"},
		{in: "a\x00b", err: "NUL"},
	} {
		got, err := cleanPath(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("cleanPath(%q) error = %v, want one mentioning %s", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("cleanPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestValidateErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    specs.LinuxResources
		want string
	}{
		{"memory limit", specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(-5)}},
			"cgroups: linux.resources.memory.limit: -5 is not a valid limit (use -1 for unlimited)"},
		{"swap below limit", specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(100 << 20), Swap: i64(50 << 20)}}, "memory.swap"},
		{"swap without limit", specs.LinuxResources{Memory: &specs.LinuxMemory{Swap: i64(50 << 20)}}, "memory.swap"},
		{"swappiness", specs.LinuxResources{Memory: &specs.LinuxMemory{Swappiness: u64(101)}}, "memory.swappiness"},
		{"shares", specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(1)}}, "cpu.shares"},
		{"quota", specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(10)}}, "cpu.quota"},
		{"period", specs.LinuxResources{CPU: &specs.LinuxCPU{Period: u64(5_000_000)}}, "cpu.period"},
		{"cpus", specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "0-3,x"}}, "cpu.cpus"},
		{"pids", specs.LinuxResources{Pids: &specs.LinuxPids{Limit: i64(-2)}}, "pids.limit"},
		{"blkio weight", specs.LinuxResources{BlockIO: &specs.LinuxBlockIO{Weight: u16(5)}}, "blockIO.weight"},
		{"hugepage size", specs.LinuxResources{HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2M"}}}, "hugepageLimits[0].pageSize"},
		{"device type", specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Type: "x"}}}, "devices[0].type"},
		{"device access", specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Type: "c", Access: "rwx"}}}, "devices[0].access"},
		{"device major", specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Type: "c", Major: i64(5000)}}}, "devices[0].major"},
		{"unified escape", specs.LinuxResources{Unified: map[string]string{"../x": "1"}}, "unified"},
		{"unified slash", specs.LinuxResources{Unified: map[string]string{"memory.max/x": "1"}}, "unified"},
		{"unified procs", specs.LinuxResources{Unified: map[string]string{"cgroup.procs": "1"}}, "runtime owns it"},
		{"unified no dot", specs.LinuxResources{Unified: map[string]string{"memory": "1"}}, "unified"},
		{"interface name", specs.LinuxResources{Network: &specs.LinuxNetwork{Priorities: []specs.LinuxInterfacePriority{{Name: "eth0 1\nlo", Priority: 1}}}},
			"network.priorities[0].name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validate(&tc.r)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("validate = %v, want error containing %q", err, tc.want)
			}
		})
	}
	ok := &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: i64(-1), Swap: i64(-1), Reservation: i64(0)},
		CPU:    &specs.LinuxCPU{Shares: u64(1024), Quota: i64(-1), Period: u64(100000), Cpus: "0-1,3", Mems: "0"},
		Pids:   &specs.LinuxPids{Limit: i64(0)},
	}
	if err := validate(ok); err != nil {
		t.Fatalf("validate(valid) = %v", err)
	}
}

var (
	v1Place = placement{v1: map[string]bool{"cpu": true, "cpuacct": true, "cpuset": true, "memory": true, "devices": true, "freezer": true, "blkio": true, "pids": true}}
	v2Place = placement{v1: map[string]bool{}, hasV2: true, v2: map[string]bool{"cpu": true, "cpuset": true, "memory": true, "io": true, "pids": true, "hugetlb": true}}
	hybrid  = placement{v1: v1Place.v1, hasV2: true, v2: map[string]bool{"hugetlb": true}}
)

func TestPlan(t *testing.T) {
	res := &specs.LinuxResources{
		Memory:         &specs.LinuxMemory{Limit: i64(64 << 20), Swap: i64(96 << 20), Swappiness: u64(10)},
		CPU:            &specs.LinuxCPU{Shares: u64(1024), Quota: i64(50000), Period: u64(100000)},
		Pids:           &specs.LinuxPids{Limit: i64(-1)},
		BlockIO:        &specs.LinuxBlockIO{ThrottleReadBpsDevice: []specs.LinuxThrottleDevice{{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 8, Minor: 0}, Rate: 1 << 20}}},
		HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 0}},
	}
	for _, tc := range []struct {
		name string
		p    placement
		want []string // ctrl file=value, in order
	}{
		{"v1", placement{v1: map[string]bool{"cpu": true, "memory": true, "pids": true, "blkio": true, "hugetlb": true}}, []string{
			"memory memory.limit_in_bytes=67108864", "memory memory.memsw.limit_in_bytes=100663296", "memory memory.swappiness=10",
			"cpu cpu.shares=1024", "cpu cpu.cfs_period_us=100000", "cpu cpu.cfs_quota_us=50000",
			"pids pids.max=max", "blkio blkio.throttle.read_bps_device=8:0 1048576", "hugetlb hugetlb.2MB.limit_in_bytes=0",
		}},
		{"v2", v2Place, []string{
			"unified memory.max=67108864", "unified memory.swap.max=33554432",
			"unified cpu.weight=39", "unified cpu.max=50000 100000",
			"unified pids.max=max", "unified io.max=8:0 rbps=1048576", "unified hugetlb.2MB.max=0",
		}},
		{"hybrid", placement{v1: map[string]bool{"cpu": true, "memory": true, "pids": true, "blkio": true}, hasV2: true, v2: map[string]bool{"hugetlb": true}}, []string{
			"memory memory.limit_in_bytes=67108864", "memory memory.memsw.limit_in_bytes=100663296", "memory memory.swappiness=10",
			"cpu cpu.shares=1024", "cpu cpu.cfs_period_us=100000", "cpu cpu.cfs_quota_us=50000",
			"pids pids.max=max", "blkio blkio.throttle.read_bps_device=8:0 1048576", "unified hugetlb.2MB.max=0",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws, _, err := plan(res, tc.p)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range ws {
				got = append(got, w.ctrl+" "+w.file+"="+w.value)
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// planLines shows writes as "ctrl file=value", in order.
func planLines(ws []write) []string {
	var out []string
	for _, w := range ws {
		out = append(out, w.ctrl+" "+w.file+"="+w.value)
	}
	return out
}

func TestPlanKernelMemory(t *testing.T) {
	//lint:ignore SA1019 deprecated in the spec, still applied on cgroup v1
	r := &specs.LinuxResources{Memory: &specs.LinuxMemory{Kernel: i64(50 << 20), KernelTCP: i64(40 << 20)}}
	ws, _, err := plan(r, v1Place)
	if err != nil {
		t.Fatal(err)
	}
	got := planLines(ws)
	want := []string{"memory memory.kmem.limit_in_bytes=52428800", "memory memory.kmem.tcp.limit_in_bytes=41943040"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, _, err := plan(r, v2Place); err == nil || !strings.Contains(err.Error(), "exist only in cgroup v1") {
		t.Errorf("on cgroup v2: %v", err)
	}
}

func TestPlanNetwork(t *testing.T) {
	p := placement{v1: map[string]bool{"net_cls": true, "net_prio": true}}
	r := &specs.LinuxResources{Network: &specs.LinuxNetwork{ClassID: u32(0x100001),
		Priorities: []specs.LinuxInterfacePriority{{Name: "lo", Priority: 5}, {Name: "eth0", Priority: 9}}}}
	ws, _, err := plan(r, p)
	if err != nil {
		t.Fatal(err)
	}
	got := planLines(ws)
	want := []string{"net_cls net_cls.classid=1048577", "net_prio net_prio.ifpriomap=lo 5", "net_prio net_prio.ifpriomap=eth0 9"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestPlanRefusesWhatTheHostCannotDo(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    specs.LinuxResources
		p    placement
		want string
	}{
		{"unified on v1", specs.LinuxResources{Unified: map[string]string{"memory.high": "1"}}, v1Place, "needs cgroup v2"},
		{"unified controller missing", specs.LinuxResources{Unified: map[string]string{"memory.high": "1"}}, hybrid, "memory controller is not available"},
		{"rt on v2", specs.LinuxResources{CPU: &specs.LinuxCPU{RealtimeRuntime: i64(1000)}}, v2Place, "cgroup v2"},
		{"no pids controller", specs.LinuxResources{Pids: &specs.LinuxPids{Limit: i64(10)}}, placement{v1: map[string]bool{"memory": true}}, "pids controller"},
		{"net_cls not mounted", specs.LinuxResources{Network: &specs.LinuxNetwork{ClassID: u32(0x100001)}}, hybrid,
			"network.classID: the net_cls controller is not mounted: it exists only in cgroup v1"},
		{"net_prio not mounted", specs.LinuxResources{Network: &specs.LinuxNetwork{Priorities: []specs.LinuxInterfacePriority{{Name: "lo", Priority: 1}}}}, v2Place,
			"network.priorities: the net_prio controller is not mounted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := plan(&tc.r, tc.p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("plan = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestDeviceRules(t *testing.T) {
	type req struct {
		typ          int
		major, minor int64
		access       int
		allowed      bool
	}
	for _, tc := range []struct {
		name    string
		list    []specs.LinuxDeviceCgroup
		v1      []string
		checks  []req
		nReturn int
	}{
		{
			name: "deny default with allow list",
			list: []specs.LinuxDeviceCgroup{dev(false, "a", -1, -1, "rwm"), dev(true, "c", 1, 3, "rwm"), dev(true, "c", 1, 5, "r"), dev(true, "c", 136, -1, "rw")},
			v1:   []string{"devices.deny=a", "devices.allow=c 1:3 rwm", "devices.allow=c 1:5 r", "devices.allow=c 136:* rw"},
			checks: []req{
				{devChar, 1, 3, accRead | accWrite, true},
				{devChar, 1, 5, accRead, true},
				{devChar, 1, 5, accRead | accWrite, false},
				{devChar, 136, 7, accWrite, true},
				{devChar, 136, 7, accMknod, false},
				{devBlock, 1, 3, accRead, false},
				{devChar, 1, 8, accRead, false},
			},
		},
		{
			name: "allow all then deny null",
			list: []specs.LinuxDeviceCgroup{dev(true, "a", -1, -1, "rwm"), dev(false, "c", 1, 3, "rwm")},
			v1:   []string{"devices.allow=a", "devices.deny=c 1:3 rwm"},
			checks: []req{
				{devChar, 1, 3, accRead, false},
				{devChar, 1, 5, accRead | accWrite, true},
				{devBlock, 8, 0, accRead, true},
			},
		},
		{
			name: "later rule removes exception; wildcard type expands",
			list: []specs.LinuxDeviceCgroup{dev(true, "c", 1, 3, "rwm"), dev(false, "c", 1, 3, "w"), dev(true, "", 7, -1, "r")},
			v1:   []string{"devices.deny=a", "devices.allow=c 1:3 rm", "devices.allow=b 7:* r", "devices.allow=c 7:* r"},
			checks: []req{
				{devChar, 1, 3, accRead, true},
				{devChar, 1, 3, accWrite, false},
				{devBlock, 7, 1, accRead, true},
			},
		},
		{
			name: "last reset wins",
			list: []specs.LinuxDeviceCgroup{dev(true, "c", 1, 3, "rwm"), dev(false, "a", -1, -1, "")},
			v1:   []string{"devices.deny=a"},
			checks: []req{
				{devChar, 1, 3, accRead, false},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules, err := compileDevices(tc.list)
			if err != nil {
				t.Fatal(err)
			}
			var v1 []string
			for _, l := range rules.v1Lines() {
				v1 = append(v1, l[0]+"="+l[1])
			}
			if strings.Join(v1, "\n") != strings.Join(tc.v1, "\n") {
				t.Errorf("v1 lines:\n%s\nwant:\n%s", strings.Join(v1, "\n"), strings.Join(tc.v1, "\n"))
			}
			for _, c := range tc.checks {
				if got := rules.allows(c.typ, c.major, c.minor, c.access); got != c.allowed {
					t.Errorf("allows(type %d, %d:%d, access %d) = %v, want %v", c.typ, c.major, c.minor, c.access, got, c.allowed)
				}
			}
			// The program has one allow/deny exit per exception plus the
			// default, every jump lands forward on the start of a block (right
			// after an exit), and it decides every check as the policy does.
			prog := rules.program()
			exits := 0
			for i, ins := range prog {
				if ins.code == unix.BPF_JMP|unix.BPF_EXIT {
					exits++
				}
				if isBPFJump(ins) {
					to := i + 1 + int(ins.off)
					if ins.off < 0 || to >= len(prog) || prog[to-1].code != unix.BPF_JMP|unix.BPF_EXIT {
						t.Errorf("instruction %d jumps to %d, not to the start of a block", i, to)
					}
				}
			}
			if exits != len(rules.exceptions)+1 {
				t.Errorf("program has %d exits, want %d", exits, len(rules.exceptions)+1)
			}
			for _, c := range tc.checks {
				if got := runDeviceProgram(t, prog, c.typ, c.major, c.minor, c.access); got != c.allowed {
					t.Errorf("program(type %d, %d:%d, access %d) = %v, want %v", c.typ, c.major, c.minor, c.access, got, c.allowed)
				}
			}
		})
	}
}

func TestParseMountinfo(t *testing.T) {
	hybridInfo := `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 31 0:31 /sub /mnt/memsub rw,relatime - cgroup cgroup rw,memory
`
	l := parseMountinfo([]byte(hybridInfo))
	if l.mode() != ModeHybrid || l.v2 != "/sys/fs/cgroup/unified" || len(l.v1) != 3 {
		t.Fatalf("hybrid: mode %v v2 %q v1 %+v", l.mode(), l.v2, l.v1)
	}
	if got := strings.Join(l.v1[0].controllers, ","); got != "cpu,cpuacct" || l.v1[0].mountpoint != "/sys/fs/cgroup/cpu,cpuacct" {
		t.Errorf("co-mounted hierarchy = %+v", l.v1[0])
	}
	if got := l.v1[2].controllers[0]; got != "name=systemd" {
		t.Errorf("named hierarchy = %q", got)
	}
	l = parseMountinfo([]byte("30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"))
	if l.mode() != ModeV2 || l.v2 != "/sys/fs/cgroup" {
		t.Errorf("v2: mode %v v2 %q", l.mode(), l.v2)
	}
	l = parseMountinfo([]byte("34 31 0:31 / /cg\\040mem rw - cgroup cgroup rw,memory\n"))
	if l.mode() != ModeV1 || l.v1[0].mountpoint != "/cg mem" {
		t.Errorf("v1: mode %v %+v", l.mode(), l.v1)
	}
}

func TestLoadRejectsForeignPaths(t *testing.T) {
	l := &layout{v1: []hierarchy{{"/sys/fs/cgroup/memory", []string{"memory"}}}, v2: "/sys/fs/cgroup/unified"}
	for _, paths := range []map[string]string{
		{"memory": "/etc"},
		{"memory": "/sys/fs/cgroup/memory"},
		{"memory": "/sys/fs/cgroup/memory/../x"},
		{"cpu": "/sys/fs/cgroup/memory/x"},
		{"unified": "/sys/fs/cgroup/memory/x"},
		{},
	} {
		if _, err := loadManager(paths, l); err == nil {
			t.Errorf("loadManager(%v) succeeded, want error", paths)
		}
	}
	m, err := loadManager(map[string]string{"memory": "/sys/fs/cgroup/memory/nexus/a", "unified": "/sys/fs/cgroup/unified/nexus/a"}, l)
	if err != nil {
		t.Fatal(err)
	}
	if m.V2Path() != "/sys/fs/cgroup/unified/nexus/a" || m.Paths()["memory"] != "/sys/fs/cgroup/memory/nexus/a" {
		t.Errorf("loaded paths = %v", m.Paths())
	}
}

// runDeviceProgram executes a device program as the kernel would, for the
// instructions program emits, and reports whether it allows the access.
func runDeviceProgram(t *testing.T, prog []bpfInsn, typ int, major, minor int64, access int) bool {
	t.Helper()
	ctx := [3]uint32{uint32(access)<<16 | uint32(typ), uint32(major), uint32(minor)}
	var reg [11]uint64
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		dst, src := in.regs&0x0f, in.regs>>4
		switch in.code {
		case unix.BPF_LDX | unix.BPF_MEM | unix.BPF_W:
			if src != bpfR1 || in.off%4 != 0 || in.off < 0 || in.off > 8 {
				t.Fatalf("instruction %d loads outside the context", pc)
			}
			reg[dst] = uint64(ctx[in.off/4])
		case unix.BPF_ALU | unix.BPF_MOV | unix.BPF_X:
			reg[dst] = uint64(uint32(reg[src]))
		case unix.BPF_ALU | unix.BPF_AND | unix.BPF_K:
			reg[dst] = uint64(uint32(reg[dst]) & uint32(in.imm))
		case unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K:
			reg[dst] = uint64(uint32(reg[dst]) >> uint32(in.imm))
		case unix.BPF_ALU64 | unix.BPF_MOV | unix.BPF_K:
			reg[dst] = uint64(int64(in.imm))
		case unix.BPF_JMP | unix.BPF_JNE | unix.BPF_K:
			if reg[dst] != uint64(int64(in.imm)) {
				pc += int(in.off)
			}
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			if reg[dst] == uint64(int64(in.imm)) {
				pc += int(in.off)
			}
		case unix.BPF_JMP | unix.BPF_EXIT:
			return reg[bpfR0] == 1
		default:
			t.Fatalf("instruction %d: unexpected opcode %#x", pc, in.code)
		}
	}
	t.Fatal("program ran off its end")
	return false
}
