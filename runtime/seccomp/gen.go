package seccomp

import (
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// gen emits the filter. Its shape:
//
//	load arch; one JEQ per AUDIT_ARCH the filter covers; else KILL_PROCESS
//	per arch: load nr; a binary search over syscall-number ranges whose
//	leaves return an action or hold the arg checks of one syscall.
//
// A binary search keeps a syscall's path short (about log2 of the number of
// ranges) even for large allow-lists, where libseccomp's default linear
// chain would compare hundreds of numbers for a syscall late in the list.
type gen struct {
	asm
	defRet uint32
}

func (g *gen) program(native archIndex, want [numArches]bool, rules *[numArches]map[uint32][]rule) {
	// Group arches by AUDIT_ARCH: x86_64 and x32 share one. Native first,
	// since nearly every syscall comes from it.
	type group struct {
		audit  uint32
		l      label
		arches []archIndex
	}
	var groups []*group
	add := func(a archIndex) {
		for _, gr := range groups {
			if gr.audit == archInfos[a].audit {
				if !slices.Contains(gr.arches, a) {
					gr.arches = append(gr.arches, a)
				}
				return
			}
		}
		groups = append(groups, &group{audit: archInfos[a].audit, l: g.newLabel(), arches: []archIndex{a}})
	}
	add(native)
	for a := range numArches {
		if want[a] {
			add(a)
		}
	}

	g.ld(offArch)
	for _, gr := range groups {
		next := g.newLabel()
		g.jmp(opJEQ, gr.audit, gr.l, next)
		g.bind(next)
	}
	g.ret(badArchRet)

	for _, gr := range groups {
		g.bind(gr.l)
		g.ld(offNr)
		if gr.audit != unix.AUDIT_ARCH_X86_64 {
			a := gr.arches[0]
			g.dispatch(rules[a], archInfos[a].is32, 0, 0xffffffff)
			continue
		}
		// x86_64 and x32 are told apart by __X32_SYSCALL_BIT in nr.
		has64 := slices.Contains(gr.arches, archAMD64)
		hasX32 := slices.Contains(gr.arches, archX32)
		bad := g.newLabel()
		l64, lx32 := bad, bad
		if has64 {
			l64 = g.newLabel()
		}
		if hasX32 {
			lx32 = g.newLabel()
		}
		g.jmp(opJGE, x32SyscallBit, lx32, l64)
		if has64 {
			g.bind(l64)
			g.dispatch(rules[archAMD64], false, 0, x32SyscallBit-1)
		}
		if hasX32 {
			g.bind(lx32)
			g.dispatch(rules[archX32], false, x32SyscallBit, 0xffffffff)
		}
		if !has64 || !hasX32 {
			g.bind(bad)
			g.ret(badArchRet)
		}
	}
}

// target is what a range of syscall numbers leads to: a return value, or the
// arg checks of syscall nr.
type target struct {
	ret  uint32
	body bool
	nr   uint32
}

// segment is a range of syscall numbers from start up to the next
// segment's start.
type segment struct {
	start uint32
	t     target
}

// dispatch emits the search over nr in [lo, hi]; A holds nr.
func (g *gen) dispatch(rules map[uint32][]rule, is32 bool, lo, hi uint32) {
	nrs := make([]uint32, 0, len(rules))
	for nr := range rules {
		nrs = append(nrs, nr)
	}
	slices.Sort(nrs)

	def := target{ret: g.defRet}
	segs := []segment{{start: lo, t: def}}
	put := func(start uint32, t target) {
		last := &segs[len(segs)-1]
		if last.start == start {
			last.t = t
			if n := len(segs); n > 1 && segs[n-2].t == t {
				segs = segs[:n-1]
			}
			return
		}
		if last.t != t {
			segs = append(segs, segment{start, t})
		}
	}
	for _, nr := range nrs {
		t := target{body: true, nr: nr}
		if r, ok := unconditional(rules[nr]); ok {
			t = target{ret: r.ret}
		}
		put(nr, t)
		if nr < hi {
			put(nr+1, def)
		}
	}
	g.tree(segs, rules, is32)
}

// unconditional returns the first rule without args: it supersedes the
// conditional rules of the same syscall, as in libseccomp.
func unconditional(rs []rule) (rule, bool) {
	for _, r := range rs {
		if len(r.conds) == 0 {
			return r, true
		}
	}
	return rule{}, false
}

func (g *gen) tree(segs []segment, rules map[uint32][]rule, is32 bool) {
	if len(segs) == 1 {
		t := segs[0].t
		if !t.body {
			g.ret(t.ret)
			return
		}
		g.body(rules[t.nr], is32)
		return
	}
	mid := len(segs) / 2
	left, right := g.newLabel(), g.newLabel()
	g.jmp(opJGE, segs[mid].start, right, left)
	g.bind(left)
	g.tree(segs[:mid], rules, is32)
	g.bind(right)
	g.tree(segs[mid:], rules, is32)
}

// body tries the conditional rules of one syscall in order.
func (g *gen) body(rs []rule, is32 bool) {
	for _, r := range rs {
		fail := g.newLabel()
		for _, c := range r.conds {
			ok := g.newLabel()
			g.cond(c, is32, ok, fail)
			g.bind(ok)
		}
		g.ret(r.ret)
		g.bind(fail)
	}
	g.ret(g.defRet)
}

// outcome of comparing one 32-bit half.
type outcome int

const (
	match outcome = iota
	noMatch
	checkLow // high halves equal: the low halves decide
)

// cmp64 describes an unsigned 64-bit comparison as a decision on the high
// halves followed by a JGT/JGE/JEQ on the low halves.
type cmp64 struct {
	hiGT, hiEQ, hiLT outcome
	loOp             uint16
	loTrue           outcome // outcome when loOp holds; the other otherwise
}

var cmps = map[specs.LinuxSeccompOperator]cmp64{
	specs.OpEqualTo:      {noMatch, checkLow, noMatch, opJEQ, match},
	specs.OpNotEqual:     {match, checkLow, match, opJEQ, noMatch},
	specs.OpGreaterThan:  {match, checkLow, noMatch, opJGT, match},
	specs.OpGreaterEqual: {match, checkLow, noMatch, opJGE, match},
	specs.OpLessThan:     {noMatch, checkLow, match, opJGE, noMatch},
	specs.OpLessEqual:    {noMatch, checkLow, match, opJGT, noMatch},
}

// cond emits one arg check that jumps to ok or fail. On 32-bit ABIs the
// high half of an argument is zero, so its comparison is decided here.
func (g *gen) cond(c specs.LinuxSeccompArg, is32 bool, ok, fail label) {
	offLo := uint32(offArgs + 8*c.Index)
	offHi := offLo + 4
	to := func(o outcome, low label) label {
		switch o {
		case match:
			return ok
		case noMatch:
			return fail
		}
		return low
	}

	if c.Op == specs.OpMaskedEqual {
		mask, val := c.Value, c.ValueTwo
		mHi, vHi := uint32(mask>>32), uint32(val>>32)
		if is32 || mHi == 0 {
			// (0 & mHi) or (hi & 0) is zero.
			if vHi != 0 {
				g.ja(fail)
				return
			}
		} else {
			low := g.newLabel()
			g.ld(offHi)
			if mHi != 0xffffffff {
				g.and(mHi)
			}
			g.jmp(opJEQ, vHi, low, fail)
			g.bind(low)
		}
		g.ld(offLo)
		if m := uint32(mask); m != 0xffffffff {
			g.and(m)
		}
		g.jmp(opJEQ, uint32(val), ok, fail)
		return
	}

	cm := cmps[c.Op]
	dHi, dLo := uint32(c.Value>>32), uint32(c.Value)
	low := g.newLabel()
	if is32 {
		o := cm.hiEQ
		if dHi != 0 {
			o = cm.hiLT
		}
		if o != checkLow {
			g.ja(to(o, low))
			return
		}
	} else {
		g.ld(offHi)
		switch {
		case dHi == 0: // hi < 0 is impossible
			g.jmp(opJEQ, 0, to(cm.hiEQ, low), to(cm.hiGT, low))
		case dHi == 0xffffffff || cm.hiGT == cm.hiLT: // hi > max is impossible
			g.jmp(opJEQ, dHi, to(cm.hiEQ, low), to(cm.hiLT, low))
		default:
			notGT := g.newLabel()
			g.jmp(opJGT, dHi, to(cm.hiGT, low), notGT)
			g.bind(notGT)
			g.jmp(opJEQ, dHi, to(cm.hiEQ, low), to(cm.hiLT, low))
		}
	}
	g.bind(low)
	g.ld(offLo)
	other := noMatch
	if cm.loTrue == noMatch {
		other = match
	}
	g.jmp(cm.loOp, dLo, to(cm.loTrue, low), to(other, low))
}
