package seccomp

import (
	"fmt"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

const (
	retAllow = unix.SECCOMP_RET_ALLOW
	retKillP = unix.SECCOMP_RET_KILL_PROCESS
	retErrno = unix.SECCOMP_RET_ERRNO
)

func TestActions(t *testing.T) {
	tests := []struct {
		action   specs.LinuxSeccompAction
		errnoRet *uint
		want     uint32
	}{
		{specs.ActKill, nil, unix.SECCOMP_RET_KILL_THREAD},
		{specs.ActKillThread, nil, unix.SECCOMP_RET_KILL_THREAD},
		{specs.ActKillProcess, nil, unix.SECCOMP_RET_KILL_PROCESS},
		{specs.ActTrap, nil, unix.SECCOMP_RET_TRAP},
		{specs.ActErrno, nil, retErrno | uint32(unix.EPERM)},
		{specs.ActErrno, uintp(42), retErrno | 42},
		{specs.ActErrno, uintp(0), retErrno},
		{specs.ActTrace, nil, unix.SECCOMP_RET_TRACE | uint32(unix.EPERM)},
		{specs.ActTrace, uintp(0xbeef), unix.SECCOMP_RET_TRACE | 0xbeef},
		{specs.ActAllow, nil, retAllow},
		{specs.ActLog, nil, unix.SECCOMP_RET_LOG},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%v", tt.action, tt.errnoRet != nil), func(t *testing.T) {
			// As the action of a rule, with a different default.
			s := &specs.LinuxSeccomp{
				DefaultAction: specs.ActErrno, DefaultErrnoRet: uintp(7),
				Syscalls: []specs.LinuxSyscall{{Names: []string{"getcwd"}, Action: tt.action, ErrnoRet: tt.errnoRet}},
			}
			f, err := compile(s, archAMD64)
			if err != nil {
				t.Fatal(err)
			}
			v := vm(t, f)
			if got := run(t, v, on(t, archAMD64, "getcwd")); got != tt.want {
				t.Errorf("getcwd: got %#x, want %#x", got, tt.want)
			}
			if got := run(t, v, on(t, archAMD64, "read")); got != retErrno|7 {
				t.Errorf("read (default): got %#x, want ERRNO(7)", got)
			}

			// As the default action.
			f, err = compile(&specs.LinuxSeccomp{DefaultAction: tt.action, DefaultErrnoRet: tt.errnoRet}, archAMD64)
			if err != nil {
				t.Fatal(err)
			}
			if got := run(t, vm(t, f), on(t, archAMD64, "getcwd")); got != tt.want {
				t.Errorf("default: got %#x, want %#x", got, tt.want)
			}
		})
	}
}

// reference is the meaning of each op on unsigned 64-bit values.
func reference(op specs.LinuxSeccompOperator, arg, v, v2 uint64) bool {
	switch op {
	case specs.OpEqualTo:
		return arg == v
	case specs.OpNotEqual:
		return arg != v
	case specs.OpLessThan:
		return arg < v
	case specs.OpLessEqual:
		return arg <= v
	case specs.OpGreaterThan:
		return arg > v
	case specs.OpGreaterEqual:
		return arg >= v
	case specs.OpMaskedEqual:
		return arg&v == v2
	}
	panic(op)
}

// edges straddle the 32-bit halves: equal hi with different lo, different hi
// with equal lo, and the extremes.
var edges = []uint64{
	0, 1, 2, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff,
	0x1_00000000, 0x1_00000001, 0x1_ffffffff, 0x2_00000000, 0x2_00000001,
	0x7fffffff_ffffffff, 0x80000000_00000000, 0xffffffff_00000000,
	0xffffffff_00000001, 0xffffffff_fffffffe, 0xffffffff_ffffffff,
}

var ops = []specs.LinuxSeccompOperator{
	specs.OpEqualTo, specs.OpNotEqual, specs.OpLessThan, specs.OpLessEqual,
	specs.OpGreaterThan, specs.OpGreaterEqual, specs.OpMaskedEqual,
}

// TestArgOps checks every op against every pair of edge values, on a 64-bit
// ABI (full compare) and on 32-bit ABIs, where the kernel passes 32-bit
// arguments so the high half of seccomp_data is ignored and taken as zero.
func TestArgOps(t *testing.T) {
	for _, a := range []archIndex{archAMD64, archX32, archARM64, arch386, archARM} {
		for _, op := range ops {
			for _, d := range edges {
				v, v2 := d, uint64(0)
				if op == specs.OpMaskedEqual {
					v, v2 = d, d&0xffff0000_ffff0000
				}
				name := fmt.Sprintf("%s/%s/%#x", archInfos[a].name, op, d)
				s := allowAllBut(specs.LinuxSyscall{
					Names: []string{"personality"}, Action: specs.ActErrno, ErrnoRet: uintp(42),
					Args: []specs.LinuxSeccompArg{{Index: 3, Value: v, ValueTwo: v2, Op: op}},
				})
				s.Architectures = []specs.Arch{archInfos[a].name}
				f, err := compile(s, archAMD64)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				vmach := vm(t, f)
				for _, arg := range edges {
					effective := arg
					if archInfos[a].is32 {
						effective = uint64(uint32(arg))
					}
					want := uint32(retAllow)
					if reference(op, effective, v, v2) {
						want = retErrno | 42
					}
					if got := run(t, vmach, on(t, a, "personality", 0, 0, 0, arg)); got != want {
						t.Errorf("%s: arg %#x: got %#x, want %#x", name, arg, got, want)
					}
				}
			}
		}
	}
}

func TestRules(t *testing.T) {
	eq := func(i uint, v uint64) specs.LinuxSeccompArg {
		return specs.LinuxSeccompArg{Index: i, Value: v, Op: specs.OpEqualTo}
	}
	deny := func(errno uint, args ...specs.LinuxSeccompArg) specs.LinuxSyscall {
		return specs.LinuxSyscall{Names: []string{"personality"}, Action: specs.ActErrno, ErrnoRet: uintp(errno), Args: args}
	}
	tests := []struct {
		name  string
		rules []specs.LinuxSyscall
		args  []uint64
		want  uint32
	}{
		{"or: first rule", []specs.LinuxSyscall{deny(1, eq(0, 5)), deny(2, eq(0, 6))}, []uint64{5}, retErrno | 1},
		{"or: second rule", []specs.LinuxSyscall{deny(1, eq(0, 5)), deny(2, eq(0, 6))}, []uint64{6}, retErrno | 2},
		{"or: none", []specs.LinuxSyscall{deny(1, eq(0, 5)), deny(2, eq(0, 6))}, []uint64{7}, retAllow},
		{"and: all match", []specs.LinuxSyscall{deny(1, eq(0, 5), eq(2, 9))}, []uint64{5, 0, 9}, retErrno | 1},
		{"and: second fails", []specs.LinuxSyscall{deny(1, eq(0, 5), eq(2, 9))}, []uint64{5, 0, 8}, retAllow},
		{"and: first fails", []specs.LinuxSyscall{deny(1, eq(0, 5), eq(2, 9))}, []uint64{4, 0, 9}, retAllow},
		{"first match wins", []specs.LinuxSyscall{deny(1, eq(0, 5)), deny(2, eq(0, 5))}, []uint64{5}, retErrno | 1},
		{"unconditional supersedes", []specs.LinuxSyscall{deny(1, eq(0, 5)), deny(3)}, []uint64{5}, retErrno | 3},
		{"same index twice is or (runc)", []specs.LinuxSyscall{deny(1, eq(0, 5), eq(0, 6))}, []uint64{6}, retErrno | 1},
		{"same index twice: neither", []specs.LinuxSyscall{deny(1, eq(0, 5), eq(0, 6))}, []uint64{7}, retAllow},
		{"arg 5", []specs.LinuxSyscall{deny(1, eq(5, 1<<40))}, []uint64{0, 0, 0, 0, 0, 1 << 40}, retErrno | 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := compile(allowAllBut(tt.rules...), archAMD64)
			if err != nil {
				t.Fatal(err)
			}
			if got := run(t, vm(t, f), on(t, archAMD64, "personality", tt.args...)); got != tt.want {
				t.Errorf("got %#x, want %#x", got, tt.want)
			}
		})
	}
}

func TestArchitectures(t *testing.T) {
	deny := specs.LinuxSyscall{Names: []string{"getcwd", "rt_sigaction", "arch_prctl"}, Action: specs.ActErrno, ErrnoRet: uintp(42)}
	tests := []struct {
		name   string
		native archIndex
		arches []specs.Arch
		call   call
		want   uint32
	}{
		{"native only", archAMD64, nil, call{arch: unix.AUDIT_ARCH_X86_64, nr: 79}, retErrno | 42},
		{"native, other syscall", archAMD64, nil, call{arch: unix.AUDIT_ARCH_X86_64, nr: 0}, retAllow},
		{"x32 call without SCMP_ARCH_X32 is foreign", archAMD64, nil, call{arch: unix.AUDIT_ARCH_X86_64, nr: x32SyscallBit | 79}, retKillP},
		{"x32 getcwd", archAMD64, []specs.Arch{specs.ArchX32}, call{arch: unix.AUDIT_ARCH_X86_64, nr: x32SyscallBit | 79}, retErrno | 42},
		{"x32 rt_sigaction is 512", archAMD64, []specs.Arch{specs.ArchX32}, call{arch: unix.AUDIT_ARCH_X86_64, nr: x32SyscallBit | 512}, retErrno | 42},
		{"x32 13 is not rt_sigaction", archAMD64, []specs.Arch{specs.ArchX32}, call{arch: unix.AUDIT_ARCH_X86_64, nr: x32SyscallBit | 13}, retAllow},
		{"amd64 512 is nothing", archAMD64, []specs.Arch{specs.ArchX32}, call{arch: unix.AUDIT_ARCH_X86_64, nr: 512}, retAllow},
		{"x32 only: amd64 call is foreign", archX32, nil, call{arch: unix.AUDIT_ARCH_X86_64, nr: 79}, retKillP},
		{"i386 not listed", archAMD64, nil, call{arch: unix.AUDIT_ARCH_I386, nr: 183}, retKillP},
		{"i386 getcwd is 183", archAMD64, []specs.Arch{specs.ArchX86}, call{arch: unix.AUDIT_ARCH_I386, nr: 183}, retErrno | 42},
		{"i386 79 is not getcwd", archAMD64, []specs.Arch{specs.ArchX86}, call{arch: unix.AUDIT_ARCH_I386, nr: 79}, retAllow},
		{"i386 has arch_prctl", archAMD64, []specs.Arch{specs.ArchX86}, call{arch: unix.AUDIT_ARCH_I386, nr: 384}, retErrno | 42},
		{"aarch64 on amd64 filter", archAMD64, []specs.Arch{specs.ArchX86}, call{arch: unix.AUDIT_ARCH_AARCH64, nr: 17}, retKillP},
		{"aarch64 native getcwd", archARM64, nil, call{arch: unix.AUDIT_ARCH_AARCH64, nr: 17}, retErrno | 42},
		{"aarch64 has no arch_prctl", archARM64, nil, call{arch: unix.AUDIT_ARCH_AARCH64, nr: 158}, retAllow},
		{"arm compat getcwd", archARM64, []specs.Arch{specs.ArchARM}, call{arch: unix.AUDIT_ARCH_ARM, nr: 183}, retErrno | 42},
		{"arm not listed", archARM64, nil, call{arch: unix.AUDIT_ARCH_ARM, nr: 183}, retKillP},
		{"ignored arch listed", archAMD64, []specs.Arch{specs.ArchS390X}, call{arch: unix.AUDIT_ARCH_S390X, nr: 183}, retKillP},
		{"duplicate arches", archAMD64, []specs.Arch{specs.ArchX86_64, specs.ArchX86_64}, call{arch: unix.AUDIT_ARCH_X86_64, nr: 79}, retErrno | 42},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := allowAllBut(deny)
			s.Architectures = tt.arches
			f, err := compile(s, tt.native)
			if err != nil {
				t.Fatal(err)
			}
			if got := run(t, vm(t, f), tt.call); got != tt.want {
				t.Errorf("got %#x, want %#x", got, tt.want)
			}
		})
	}
}

func TestValidateErrors(t *testing.T) {
	ok := func(mod func(s *specs.LinuxSeccomp)) *specs.LinuxSeccomp {
		s := allowAllBut(specs.LinuxSyscall{Names: []string{"getcwd"}, Action: specs.ActErrno})
		mod(s)
		return s
	}
	tests := []struct {
		name string
		spec *specs.LinuxSeccomp
		want string // substring; "" means valid
	}{
		{"valid", ok(func(*specs.LinuxSeccomp) {}), ""},
		{"nil", nil, "seccomp: no profile"},
		{"unknown default action", ok(func(s *specs.LinuxSeccomp) { s.DefaultAction = "SCMP_ACT_NOPE" }), `seccomp: defaultAction: unknown action "SCMP_ACT_NOPE"`},
		{"empty default action", ok(func(s *specs.LinuxSeccomp) { s.DefaultAction = "" }), "seccomp: defaultAction: action is empty"},
		{"defaultErrnoRet with allow", ok(func(s *specs.LinuxSeccomp) { s.DefaultErrnoRet = uintp(1) }), "seccomp: defaultErrnoRet: errnoRet is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not SCMP_ACT_ALLOW"},
		{"errnoRet with kill", ok(func(s *specs.LinuxSeccomp) {
			s.Syscalls[0].Action, s.Syscalls[0].ErrnoRet = specs.ActKill, uintp(1)
		}), "seccomp: syscalls[0].errnoRet: errnoRet is only valid"},
		{"errno too large", ok(func(s *specs.LinuxSeccomp) { s.Syscalls[0].ErrnoRet = uintp(4096) }), "seccomp: syscalls[0].errnoRet: errno 4096 out of range"},
		{"trace value too large", ok(func(s *specs.LinuxSeccomp) {
			s.Syscalls[0].Action, s.Syscalls[0].ErrnoRet = specs.ActTrace, uintp(1<<16)
		}), "seccomp: syscalls[0].errnoRet: trace value 65536 out of range"},
		{"notify", ok(func(s *specs.LinuxSeccomp) { s.Syscalls[0].Action = specs.ActNotify }), "seccomp: syscalls[0].action: SCMP_ACT_NOTIFY is not supported"},
		{"listener path", ok(func(s *specs.LinuxSeccomp) { s.ListenerPath = "/run/l.sock" }), "seccomp: listenerPath: seccomp notify listeners are not supported"},
		{"unknown arch", ok(func(s *specs.LinuxSeccomp) { s.Architectures = []specs.Arch{specs.ArchX86, "SCMP_ARCH_Z80"} }), `seccomp: architectures[1]: unknown architecture "SCMP_ARCH_Z80"`},
		{"unknown flag", ok(func(s *specs.LinuxSeccomp) { s.Flags = []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_TSYNC"} }), `seccomp: flags[0]: unknown flag "SECCOMP_FILTER_FLAG_TSYNC"`},
		{"known flags", ok(func(s *specs.LinuxSeccomp) {
			s.Flags = []specs.LinuxSeccompFlag{specs.LinuxSeccompFlagLog, specs.LinuxSeccompFlagSpecAllow, specs.LinuxSeccompFlagWaitKillableRecv}
		}), ""},
		{"empty names", ok(func(s *specs.LinuxSeccomp) { s.Syscalls[0].Names = nil }), "seccomp: syscalls[0]: names is empty"},
		{"empty name", ok(func(s *specs.LinuxSeccomp) { s.Syscalls[0].Names = []string{"read", ""} }), "seccomp: syscalls[0].names[1]: empty syscall name"},
		{"unknown syscall", ok(func(s *specs.LinuxSeccomp) {
			for range 3 {
				s.Syscalls = append(s.Syscalls, s.Syscalls[0])
			}
			s.Syscalls[3].Names = []string{"read", "foo"}
		}), `seccomp: syscalls[3]: unknown syscall "foo"`},
		{"syscall of another arch only", ok(func(s *specs.LinuxSeccomp) { s.Syscalls[0].Names = []string{"arm_fadvise64_64"} }), ""},
		{"unknown action", ok(func(s *specs.LinuxSeccomp) { s.Syscalls[0].Action = "ALLOW" }), `seccomp: syscalls[0].action: unknown action "ALLOW"`},
		{"arg index", ok(func(s *specs.LinuxSeccomp) {
			s.Syscalls[0].Args = []specs.LinuxSeccompArg{{Index: 0, Op: specs.OpEqualTo}, {Index: 6, Op: specs.OpEqualTo}}
		}), "seccomp: syscalls[0].args[1]: index 6 out of range"},
		{"unknown op", ok(func(s *specs.LinuxSeccomp) { s.Syscalls[0].Args = []specs.LinuxSeccompArg{{Op: "SCMP_CMP_LIKE"}} }), `seccomp: syscalls[0].args[0]: unknown op "SCMP_CMP_LIKE"`},
		{"valueTwo without masked eq", ok(func(s *specs.LinuxSeccomp) {
			s.Syscalls[0].Args = []specs.LinuxSeccompArg{{Op: specs.OpEqualTo, ValueTwo: 3}}
		}), "seccomp: syscalls[0].args[0]: valueTwo is only used by SCMP_CMP_MASKED_EQ"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.spec)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("Validate succeeded, want error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("Validate: %v\nwant error containing %q", err, tt.want)
			}
		})
	}
}

func TestDefaultProfile(t *testing.T) {
	for _, native := range []archIndex{archAMD64, archARM64} {
		p := DefaultProfile()
		switch native {
		case archAMD64:
			p.Architectures = []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}
		case archARM64:
			p.Architectures = []specs.Arch{specs.ArchAARCH64, specs.ArchARM}
		}
		f, err := compile(p, native)
		if err != nil {
			t.Fatalf("%s: %v", archInfos[native].name, err)
		}
		if len(f.prog) <= 256 {
			t.Fatalf("%s: program has %d instructions; the test needs one longer than a short jump", archInfos[native].name, len(f.prog))
		}
		v := vm(t, f)
		eperm := uint32(retErrno | uint32(unix.EPERM))
		abis := []archIndex{archAMD64, arch386, archX32}
		if native == archARM64 {
			abis = []archIndex{archARM64, archARM}
		}
		for _, a := range abis {
			name := string(archInfos[a].name)
			// Every allowed syscall the arch has is allowed: this walks all
			// leaves of the search, including ones behind long jumps.
			for _, sc := range defaultAllowed {
				nrs, _ := lookup(sc)
				if nrs[a] < 0 {
					continue
				}
				if got := run(t, v, on(t, a, sc)); got != retAllow {
					t.Errorf("%s %s: got %#x, want ALLOW", name, sc, got)
				}
			}
			tests := []struct {
				sc   string
				args []uint64
				want uint32
			}{
				{"mount", nil, eperm},
				{"unshare", []uint64{unix.CLONE_NEWUSER}, eperm},
				{"setns", nil, eperm},
				{"kexec_load", nil, eperm},
				{"clone", []uint64{unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD}, retAllow},
				{"clone", []uint64{unix.CLONE_NEWUSER}, eperm},
				{"clone", []uint64{unix.CLONE_NEWNET | uint64(unix.SIGCHLD)}, eperm},
				{"clone3", nil, retErrno | uint32(unix.ENOSYS)},
				{"personality", []uint64{0xffffffff}, retAllow},
				{"personality", []uint64{0x0008}, retAllow},
				{"personality", []uint64{0x0040000}, eperm},
				{"socket", []uint64{unix.AF_INET}, retAllow},
				{"socket", []uint64{unix.AF_VSOCK}, eperm},
			}
			for _, tt := range tests {
				nrs, _ := lookup(tt.sc)
				if nrs[a] < 0 {
					continue
				}
				if got := run(t, v, on(t, a, tt.sc, tt.args...)); got != tt.want {
					t.Errorf("%s %s%x: got %#x, want %#x", name, tt.sc, tt.args, got, tt.want)
				}
			}
			// Numbers no syscall has get the default action.
			if got := run(t, v, call{arch: archInfos[a].audit, nr: nr(t, "read", a) | 0xfff0}); got != eperm {
				t.Errorf("%s unassigned number: got %#x, want EPERM", name, got)
			}
		}
	}
}

// TestLongJumps builds a profile whose per-syscall arg checks push most
// branches of the search far beyond a conditional jump's 255-instruction
// reach, and checks every syscall still reaches its own rules.
func TestLongJumps(t *testing.T) {
	s := &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, DefaultErrnoRet: uintp(99)}
	var names []string
	for _, e := range syscallTable {
		if e.nr[archAMD64] >= 0 && len(names) < 200 {
			names = append(names, e.name)
		}
	}
	for i, n := range names {
		s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{
			Names: []string{n}, Action: specs.ActErrno, ErrnoRet: uintp(uint(i + 1)),
			Args: []specs.LinuxSeccompArg{{Index: 1, Value: uint64(i) << 32, Op: specs.OpGreaterEqual}, {Index: 2, Value: 7, Op: specs.OpNotEqual}},
		})
	}
	f, err := compile(s, archAMD64)
	if err != nil {
		t.Fatal(err)
	}
	v := vm(t, f)
	for i, n := range names {
		if got, want := run(t, v, on(t, archAMD64, n, 0, uint64(i)<<32, 0)), retErrno|uint32(i+1); got != want {
			t.Errorf("%s: got %#x, want %#x", n, got, want)
		}
		if got := run(t, v, on(t, archAMD64, n, 0, uint64(i)<<32, 7)); got != retErrno|99 {
			t.Errorf("%s with arg2 7: got %#x, want default", n, got)
		}
	}
}

func TestLimit(t *testing.T) {
	s := allowAllBut()
	for _, e := range syscallTable {
		if e.nr[archAMD64] >= 0 {
			for i := range 4 {
				s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{Names: []string{e.name}, Action: specs.ActKill,
					Args: []specs.LinuxSeccompArg{{Index: uint(i), Value: 1 << 40, Op: specs.OpLessThan}}})
			}
		}
	}
	if err := Validate(s); err == nil || !strings.Contains(err.Error(), "more than the kernel limit of 4096") {
		t.Fatalf("Validate: %v, want instruction limit error", err)
	}
}

func BenchmarkCompileDefault(b *testing.B) {
	p := DefaultProfile()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(p); err != nil {
			b.Fatal(err)
		}
	}
}

func TestNamesOfOtherArchitecturesAreSkipped(t *testing.T) {
	errno := uint(1)
	s := &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
		{Names: []string{"swapcontext", "s390_runtime_instr", "mkdir"}, Action: specs.ActErrno, ErrnoRet: &errno},
	}}
	if _, err := Compile(s); err != nil {
		t.Fatalf("a profile listing other architectures' syscalls must compile: %v", err)
	}
	s.Syscalls[0].Names = append(s.Syscalls[0].Names, "not_a_syscall_anywhere")
	if _, err := Compile(s); err == nil || !strings.Contains(err.Error(), `unknown syscall "not_a_syscall_anywhere"`) {
		t.Fatalf("want an unknown-syscall error, got %v", err)
	}
}

func TestFilterJSONRoundTrip(t *testing.T) {
	f, err := Compile(DefaultProfile())
	if err != nil {
		t.Fatal(err)
	}
	data, err := f.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var g Filter
	if err := g.UnmarshalJSON(data); err != nil {
		t.Fatal(err)
	}
	if g.Flags() != f.Flags() || len(g.Instructions()) != len(f.Instructions()) {
		t.Fatalf("round trip changed the filter: %d/%d instructions", len(g.Instructions()), len(f.Instructions()))
	}
	for i, in := range f.Instructions() {
		if g.Instructions()[i] != in {
			t.Fatalf("instruction %d: %+v != %+v", i, g.Instructions()[i], in)
		}
	}
	for _, bad := range []string{`{"prog":"AAAA"}`, `{"prog":""}`, `[]`} {
		if err := new(Filter).UnmarshalJSON([]byte(bad)); err == nil {
			t.Errorf("%s: want an error", bad)
		}
	}
}
