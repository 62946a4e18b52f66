package seccomp

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// maxInsns is BPF_MAXINSNS, the kernel's limit on a classic BPF program.
const maxInsns = 4096

// label names a position in the program. Every jump goes to a label, never
// to a fixed offset, so that assemble can insert long-jump trampolines.
type label int

// insn is one instruction before jump resolution. A bound label is a
// pseudo-instruction (isLabel) that occupies no space.
type insn struct {
	code    uint16
	k       uint32
	jt, jf  label // conditional jumps: both targets; JA: jt only
	isLabel bool
}

const (
	opLd  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	opAnd = unix.BPF_ALU | unix.BPF_AND | unix.BPF_K
	opRet = unix.BPF_RET | unix.BPF_K
	opJA  = unix.BPF_JMP | unix.BPF_JA
	opJEQ = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	opJGT = unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K
	opJGE = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
)

// asm builds a forward-only classic BPF program with symbolic labels.
type asm struct {
	insns   []insn
	nlabels int
}

func (a *asm) newLabel() label {
	a.nlabels++
	return label(a.nlabels - 1)
}

// bind places l before the next instruction.
func (a *asm) bind(l label) { a.insns = append(a.insns, insn{isLabel: true, jt: l}) }

func (a *asm) ld(off uint32) { a.insns = append(a.insns, insn{code: opLd, k: off}) }
func (a *asm) and(k uint32)  { a.insns = append(a.insns, insn{code: opAnd, k: k}) }
func (a *asm) ret(k uint32)  { a.insns = append(a.insns, insn{code: opRet, k: k}) }
func (a *asm) ja(l label)    { a.insns = append(a.insns, insn{code: opJA, jt: l}) }
func (a *asm) jmp(op uint16, k uint32, jt, jf label) {
	a.insns = append(a.insns, insn{code: op, k: k, jt: jt, jf: jf})
}

func isCond(code uint16) bool {
	return code&0x07 == unix.BPF_JMP && code&0xf0 != unix.BPF_JA
}

// assemble resolves labels into offsets. Conditional jumps reach at most 255
// instructions ahead; a branch that needs more is routed through a JA
// trampoline placed right after the jump (JA has a 32-bit offset). Inserting
// trampolines can push other branches out of range, so this repeats until
// every branch fits; each round only grows the program, so it terminates.
func (a *asm) assemble() ([]unix.SockFilter, error) {
	insns := a.insns
	pos := make([]int, a.nlabels)
	for {
		n := 0
		for i := range pos {
			pos[i] = -1
		}
		for _, in := range insns {
			if in.isLabel {
				pos[in.jt] = n
			} else {
				n++
			}
		}
		if n > maxInsns {
			return nil, fmt.Errorf("seccomp: compiled filter has %d instructions, more than the kernel limit of %d: use fewer rules", n, maxInsns)
		}
		far := func(p int, l label) (bool, error) {
			t := pos[l]
			if t <= p || t >= n {
				return false, fmt.Errorf("seccomp: internal error: jump from %d to %d of %d", p, t, n)
			}
			return t-p-1 > 255, nil
		}
		var out []insn
		p := 0
		for i, in := range insns {
			if in.isLabel {
				if out != nil {
					out = append(out, in)
				}
				continue
			}
			if isCond(in.code) {
				ft, err := far(p, in.jt)
				if err != nil {
					return nil, err
				}
				ff, err := far(p, in.jf)
				if err != nil {
					return nil, err
				}
				if ft || ff {
					if out == nil {
						out = append(make([]insn, 0, len(insns)+len(insns)/8+2), insns[:i]...)
					}
					var tramp []insn
					if ft {
						l := label(a.nlabels)
						a.nlabels++
						tramp = append(tramp, insn{isLabel: true, jt: l}, insn{code: opJA, jt: in.jt})
						in.jt = l
					}
					if ff {
						l := label(a.nlabels)
						a.nlabels++
						tramp = append(tramp, insn{isLabel: true, jt: l}, insn{code: opJA, jt: in.jf})
						in.jf = l
					}
					out = append(out, in)
					out = append(out, tramp...)
					p++
					continue
				}
			} else if in.code == opJA {
				if _, err := far(p, in.jt); err != nil {
					return nil, err
				}
			}
			if out != nil {
				out = append(out, in)
			}
			p++
		}
		if out == nil {
			return emit(insns, pos, n), nil
		}
		insns = out
		pos = make([]int, a.nlabels)
	}
}

func emit(insns []insn, pos []int, n int) []unix.SockFilter {
	prog := make([]unix.SockFilter, 0, n)
	for _, in := range insns {
		if in.isLabel {
			continue
		}
		p := len(prog)
		f := unix.SockFilter{Code: in.code, K: in.k}
		switch {
		case in.code == opJA:
			f.K = uint32(pos[in.jt] - p - 1)
		case isCond(in.code):
			f.Jt = uint8(pos[in.jt] - p - 1)
			f.Jf = uint8(pos[in.jf] - p - 1)
		}
		prog = append(prog, f)
	}
	return prog
}
