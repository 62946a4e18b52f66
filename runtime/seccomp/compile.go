package seccomp

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/runtime/initstage"
)

// Filter is a compiled seccomp profile: a classic BPF program over struct
// seccomp_data and the flags to pass to seccomp(2).
type Filter struct {
	prog  []unix.SockFilter
	flags uint
}

// Instructions returns a copy of the BPF program.
func (f *Filter) Instructions() []unix.SockFilter { return slices.Clone(f.prog) }

// Flags returns the SECCOMP_FILTER_FLAG_* bits the profile asked for.
func (f *Filter) Flags() uint { return f.flags }

// Program returns the program and its flags as the init stage loads them
// (initstage.Load, initstage.LoadAndExec).
func (f *Filter) Program() *initstage.Filter { return &initstage.Filter{Prog: f.prog, Flags: f.flags} }

// Offsets into struct seccomp_data. Every supported architecture is little
// endian, so the low half of a 64-bit argument comes first.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

// badArchRet is returned for a syscall from an architecture the filter does
// not cover; see the package doc for why it is KILL_PROCESS.
const badArchRet = unix.SECCOMP_RET_KILL_PROCESS

// maxErrno is the kernel's MAX_ERRNO; larger SECCOMP_RET_ERRNO data is
// clamped by the kernel, so it is rejected here instead.
const maxErrno = 4095

var flagBits = map[specs.LinuxSeccompFlag]uint{
	specs.LinuxSeccompFlagLog:              unix.SECCOMP_FILTER_FLAG_LOG,
	specs.LinuxSeccompFlagSpecAllow:        unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW,
	specs.LinuxSeccompFlagWaitKillableRecv: unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
}

// Validate reports whether s can be compiled, naming the offending field if
// not. It runs the whole compiler, so a profile that validates also loads
// (kernel support for its flags and actions aside).
func Validate(s *specs.LinuxSeccomp) error {
	_, err := Compile(s)
	return err
}

// Compile translates s into a Filter for the native architecture plus the
// architectures s lists. It has no side effects.
func Compile(s *specs.LinuxSeccomp) (*Filter, error) {
	native, err := nativeArch()
	if err != nil {
		return nil, err
	}
	return compile(s, native)
}

// rule is one alternative for a syscall: all conds must match (AND).
type rule struct {
	ret   uint32
	conds []specs.LinuxSeccompArg
}

func compile(s *specs.LinuxSeccomp, native archIndex) (*Filter, error) {
	if s == nil {
		return nil, errors.New("seccomp: no profile")
	}
	defRet, err := actionRet(s.DefaultAction, s.DefaultErrnoRet, "defaultAction", "defaultErrnoRet")
	if err != nil {
		return nil, err
	}
	if s.ListenerPath != "" || s.ListenerMetadata != "" {
		return nil, errors.New("seccomp: listenerPath: seccomp notify listeners are not supported; remove listenerPath and listenerMetadata")
	}

	var want [numArches]bool
	want[native] = true
	for i, a := range s.Architectures {
		idx, ok, err := parseArch(a)
		if err != nil {
			return nil, fmt.Errorf("seccomp: architectures[%d]: %w", i, err)
		}
		if ok {
			want[idx] = true
		}
	}

	var flags uint
	for i, fl := range s.Flags {
		b, ok := flagBits[fl]
		if !ok {
			return nil, fmt.Errorf("seccomp: flags[%d]: unknown flag %q (supported: SECCOMP_FILTER_FLAG_LOG, SECCOMP_FILTER_FLAG_SPEC_ALLOW, SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)", i, fl)
		}
		flags |= b
	}

	var rules [numArches]map[uint32][]rule
	for a := range rules {
		if want[a] {
			rules[a] = map[uint32][]rule{}
		}
	}
	for i, sc := range s.Syscalls {
		field := fmt.Sprintf("syscalls[%d]", i)
		ret, err := actionRet(sc.Action, sc.ErrnoRet, field+".action", field+".errnoRet")
		if err != nil {
			return nil, err
		}
		if len(sc.Names) == 0 {
			return nil, fmt.Errorf("seccomp: %s: names is empty", field)
		}
		alts, err := ruleAlternatives(sc.Args, ret, field)
		if err != nil {
			return nil, err
		}
		for j, name := range sc.Names {
			if name == "" {
				return nil, fmt.Errorf("seccomp: %s.names[%d]: empty syscall name", field, j)
			}
			nrs, ok := lookup(name)
			if !ok && onOtherArch(name) {
				continue // exists, but not on any architecture filtered here
			}
			if !ok {
				return nil, fmt.Errorf("seccomp: %s: unknown syscall %q", field, name)
			}
			for a, nr := range nrs {
				if nr < 0 || rules[a] == nil {
					continue // libseccomp also skips names an arch lacks
				}
				n := uint32(nr)
				if archIndex(a) == archX32 {
					n |= x32SyscallBit
				}
				rules[a][n] = append(rules[a][n], alts...)
			}
		}
	}

	g := gen{defRet: defRet}
	g.program(native, want, &rules)
	prog, err := g.assemble()
	if err != nil {
		return nil, err
	}
	return &Filter{prog: prog, flags: flags}, nil
}

// ruleAlternatives turns one spec entry's args into rules. Like runc, an
// entry that names the same arg index twice means "any of these conditions"
// and becomes one rule per condition.
func ruleAlternatives(args []specs.LinuxSeccompArg, ret uint32, field string) ([]rule, error) {
	var seen [6]bool
	repeated := false
	for j, arg := range args {
		f := fmt.Sprintf("%s.args[%d]", field, j)
		if arg.Index > 5 {
			return nil, fmt.Errorf("seccomp: %s: index %d out of range: syscalls have args 0-5", f, arg.Index)
		}
		switch arg.Op {
		case specs.OpNotEqual, specs.OpLessThan, specs.OpLessEqual, specs.OpEqualTo,
			specs.OpGreaterEqual, specs.OpGreaterThan:
			if arg.ValueTwo != 0 {
				return nil, fmt.Errorf("seccomp: %s: valueTwo is only used by SCMP_CMP_MASKED_EQ, not %s; remove it", f, arg.Op)
			}
		case specs.OpMaskedEqual:
		default:
			return nil, fmt.Errorf("seccomp: %s: unknown op %q (supported: SCMP_CMP_NE, SCMP_CMP_LT, SCMP_CMP_LE, SCMP_CMP_EQ, SCMP_CMP_GE, SCMP_CMP_GT, SCMP_CMP_MASKED_EQ)", f, arg.Op)
		}
		repeated = repeated || seen[arg.Index]
		seen[arg.Index] = true
	}
	if !repeated {
		return []rule{{ret: ret, conds: args}}, nil
	}
	alts := make([]rule, len(args))
	for j := range args {
		alts[j] = rule{ret: ret, conds: args[j : j+1]}
	}
	return alts, nil
}

// actionRet maps a spec action to its SECCOMP_RET_* value.
func actionRet(act specs.LinuxSeccompAction, errnoRet *uint, field, errnoField string) (uint32, error) {
	var ret uint32
	switch act {
	case specs.ActKill, specs.ActKillThread:
		ret = unix.SECCOMP_RET_KILL_THREAD
	case specs.ActKillProcess:
		ret = unix.SECCOMP_RET_KILL_PROCESS
	case specs.ActTrap:
		ret = unix.SECCOMP_RET_TRAP
	case specs.ActAllow:
		ret = unix.SECCOMP_RET_ALLOW
	case specs.ActLog:
		ret = unix.SECCOMP_RET_LOG
	case specs.ActErrno:
		e := uint(unix.EPERM)
		if errnoRet != nil {
			if *errnoRet > maxErrno {
				return 0, fmt.Errorf("seccomp: %s: errno %d out of range 0-%d", errnoField, *errnoRet, maxErrno)
			}
			e = *errnoRet
		}
		return unix.SECCOMP_RET_ERRNO | uint32(e), nil
	case specs.ActTrace:
		v := uint(unix.EPERM) // runc's default trace value
		if errnoRet != nil {
			if *errnoRet > unix.SECCOMP_RET_DATA {
				return 0, fmt.Errorf("seccomp: %s: trace value %d out of range 0-%d", errnoField, *errnoRet, unix.SECCOMP_RET_DATA)
			}
			v = *errnoRet
		}
		return unix.SECCOMP_RET_TRACE | uint32(v), nil
	case specs.ActNotify:
		return 0, fmt.Errorf("seccomp: %s: SCMP_ACT_NOTIFY is not supported: it needs a seccomp notify listener (listenerPath), which Nexus does not provide; use SCMP_ACT_ERRNO or SCMP_ACT_TRACE", field)
	case "":
		return 0, fmt.Errorf("seccomp: %s: action is empty", field)
	default:
		return 0, fmt.Errorf("seccomp: %s: unknown action %q (supported: SCMP_ACT_KILL, SCMP_ACT_KILL_PROCESS, SCMP_ACT_KILL_THREAD, SCMP_ACT_TRAP, SCMP_ACT_ERRNO, SCMP_ACT_TRACE, SCMP_ACT_ALLOW, SCMP_ACT_LOG)", field, act)
	}
	if errnoRet != nil {
		return 0, fmt.Errorf("seccomp: %s: errnoRet is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not %s", errnoField, act)
	}
	return ret, nil
}

// filterWire is how a Filter travels between processes (the runtime
// compiles once and sends the program to the container's init stage).
type filterWire struct {
	Flags uint   `json:"flags"`
	Prog  []byte `json:"prog"` // struct sock_filter array, native layout
}

// MarshalJSON encodes the compiled program compactly.
func (f *Filter) MarshalJSON() ([]byte, error) {
	raw := make([]byte, 0, len(f.prog)*8)
	for _, in := range f.prog {
		raw = append(raw, byte(in.Code), byte(in.Code>>8), in.Jt, in.Jf,
			byte(in.K), byte(in.K>>8), byte(in.K>>16), byte(in.K>>24))
	}
	return json.Marshal(filterWire{Flags: f.flags, Prog: raw})
}

// UnmarshalJSON decodes a program encoded by MarshalJSON. The kernel's
// verifier checks the program again when it is loaded.
func (f *Filter) UnmarshalJSON(data []byte) error {
	var w filterWire
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	if len(w.Prog)%8 != 0 || len(w.Prog) == 0 || len(w.Prog)/8 > maxInsns {
		return fmt.Errorf("seccomp: encoded program has %d bytes, not a whole number of 1..%d instructions", len(w.Prog), maxInsns)
	}
	f.flags = w.Flags
	f.prog = make([]unix.SockFilter, len(w.Prog)/8)
	for i := range f.prog {
		b := w.Prog[i*8:]
		f.prog[i] = unix.SockFilter{Code: uint16(b[0]) | uint16(b[1])<<8, Jt: b[2], Jf: b[3],
			K: uint32(b[4]) | uint32(b[5])<<8 | uint32(b[6])<<16 | uint32(b[7])<<24}
	}
	return nil
}
