package seccomp

import (
	"encoding/binary"
	"fmt"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// call is a crafted struct seccomp_data.
type call struct {
	arch uint32
	nr   uint32
	args [6]uint64
}

// data lays out c as the kernel does on a little-endian machine. The
// x/net/bpf VM loads words big-endian, so each 32-bit word is stored
// big-endian here to make the VM read the value the kernel would.
func (c call) data() []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[offNr:], c.nr)
	binary.BigEndian.PutUint32(b[offArch:], c.arch)
	for i, a := range c.args {
		binary.BigEndian.PutUint32(b[offArgs+8*i:], uint32(a))
		binary.BigEndian.PutUint32(b[offArgs+8*i+4:], uint32(a>>32))
	}
	return b
}

// vm wraps a compiled filter in the emulator after checking its structure.
func vm(t testing.TB, f *Filter) *bpf.VM {
	t.Helper()
	if err := checkProgram(f.prog); err != nil {
		t.Fatalf("structural check: %v", err)
	}
	raw := make([]bpf.RawInstruction, len(f.prog))
	for i, in := range f.prog {
		raw[i] = bpf.RawInstruction{Op: in.Code, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	insns, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatalf("program has instructions the emulator does not know")
	}
	v, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatalf("emulator rejects program: %v", err)
	}
	return v
}

func run(t testing.TB, v *bpf.VM, c call) uint32 {
	t.Helper()
	r, err := v.Run(c.data())
	if err != nil {
		t.Fatalf("run %+v: %v", c, err)
	}
	return uint32(r)
}

// checkProgram is the structural check every compiled program must pass:
// within the kernel's size limit, only the instructions the compiler emits,
// aligned loads inside seccomp_data, every jump forward and in range, and a
// return at the end.
func checkProgram(p []unix.SockFilter) error {
	n := len(p)
	if n == 0 || n > maxInsns {
		return fmt.Errorf("length %d", n)
	}
	for i, in := range p {
		switch in.Code {
		case opLd:
			if in.K%4 != 0 || in.K >= 64 {
				return fmt.Errorf("insn %d: load offset %d", i, in.K)
			}
		case opAnd, opRet:
		case opJA:
			if uint64(i)+1+uint64(in.K) >= uint64(n) {
				return fmt.Errorf("insn %d: ja %d out of range", i, in.K)
			}
		case opJEQ, opJGT, opJGE:
			if i+1+int(in.Jt) >= n || i+1+int(in.Jf) >= n {
				return fmt.Errorf("insn %d: jump %d/%d out of range", i, in.Jt, in.Jf)
			}
		default:
			return fmt.Errorf("insn %d: unexpected code %#x", i, in.Code)
		}
	}
	if p[n-1].Code != opRet {
		return fmt.Errorf("last instruction %#x is not a return", p[n-1].Code)
	}
	return nil
}

func uintp(v uint) *uint { return &v }

// nr returns the number of name on arch, failing the test if it has none.
func nr(t testing.TB, name string, a archIndex) uint32 {
	t.Helper()
	nrs, ok := lookup(name)
	if !ok || nrs[a] < 0 {
		t.Fatalf("no syscall %q on %s", name, archInfos[a].name)
	}
	n := uint32(nrs[a])
	if a == archX32 {
		n |= x32SyscallBit
	}
	return n
}

// on builds a call to name on arch a.
func on(t testing.TB, a archIndex, name string, args ...uint64) call {
	t.Helper()
	c := call{arch: archInfos[a].audit, nr: nr(t, name, a)}
	copy(c.args[:], args)
	return c
}

func allowAllBut(rules ...specs.LinuxSyscall) *specs.LinuxSeccomp {
	return &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: rules}
}
