package cgroups

import (
	"fmt"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Access bits, as the kernel's BPF_DEVCG_ACC_* constants.
const (
	accMknod = 1
	accRead  = 2
	accWrite = 4
	accAll   = accMknod | accRead | accWrite
)

// Device types, as BPF_DEVCG_DEV_*; devAll matches both.
const (
	devBlock = 1
	devChar  = 2
	devAll   = 3
)

// deviceRule is one exception to the default: type, major/minor (-1 for
// any) and access bits.
type deviceRule struct {
	typ          int
	major, minor int64
	access       int
}

// deviceRules is the effective device policy after folding the ordered
// spec list the way the v1 devices cgroup does: a default behaviour and
// exceptions that all mean the opposite of it.
type deviceRules struct {
	defaultAllow bool
	exceptions   []deviceRule
}

// compileDevices folds linux.resources.devices starting from "deny all".
// A wildcard rule for every device with all access resets the default and
// drops the exceptions; a rule agreeing with the default removes access from
// exactly matching exceptions; any other rule adds an exception.
func compileDevices(list []specs.LinuxDeviceCgroup) (*deviceRules, error) {
	rules := &deviceRules{}
	for i, d := range list {
		field := fmt.Sprintf("devices[%d]", i)
		r := deviceRule{major: -1, minor: -1}
		switch d.Type {
		case "", "a":
			r.typ = devAll
		case "b":
			r.typ = devBlock
		case "c":
			r.typ = devChar
		default:
			return nil, fieldErr(field+".type", "%q is not a, b or c", d.Type)
		}
		if d.Major != nil && *d.Major != -1 {
			if *d.Major < 0 || *d.Major >= 1<<12 {
				return nil, fieldErr(field+".major", "%d is out of range 0..4095 (use -1 or omit it for any)", *d.Major)
			}
			r.major = *d.Major
		}
		if d.Minor != nil && *d.Minor != -1 {
			if *d.Minor < 0 || *d.Minor >= 1<<20 {
				return nil, fieldErr(field+".minor", "%d is out of range 0..1048575 (use -1 or omit it for any)", *d.Minor)
			}
			r.minor = *d.Minor
		}
		if d.Access == "" {
			r.access = accAll
		}
		for _, c := range d.Access {
			switch c {
			case 'r':
				r.access |= accRead
			case 'w':
				r.access |= accWrite
			case 'm':
				r.access |= accMknod
			default:
				return nil, fieldErr(field+".access", "%q may only contain r, w and m", d.Access)
			}
		}
		if r.typ == devAll && r.major == -1 && r.minor == -1 && r.access == accAll {
			rules.defaultAllow = d.Allow
			rules.exceptions = nil
			continue
		}
		if d.Allow == rules.defaultAllow {
			kept := rules.exceptions[:0]
			for _, e := range rules.exceptions {
				if e.typ == r.typ && e.major == r.major && e.minor == r.minor {
					e.access &^= r.access
				}
				if e.access != 0 {
					kept = append(kept, e)
				}
			}
			rules.exceptions = kept
			continue
		}
		rules.exceptions = append(rules.exceptions, r)
	}
	return rules, nil
}

// allows evaluates the policy the way the kernel does: with a deny default a
// request passes when one exception covers all requested access; with an
// allow default it fails when any exception overlaps it.
func (d *deviceRules) allows(typ int, major, minor int64, access int) bool {
	for _, e := range d.exceptions {
		if e.typ&typ == 0 || (e.major != -1 && e.major != major) || (e.minor != -1 && e.minor != minor) {
			continue
		}
		if d.defaultAllow && e.access&access != 0 {
			return false
		}
		if !d.defaultAllow && access&^e.access == 0 {
			return true
		}
	}
	return d.defaultAllow
}

// v1Lines renders the policy as (file, value) writes for the devices
// controller: first the default, then each exception.
func (d *deviceRules) v1Lines() [][2]string {
	def, exc := "devices.deny", "devices.allow"
	if d.defaultAllow {
		def, exc = exc, def
	}
	lines := [][2]string{{def, "a"}}
	for _, e := range d.exceptions {
		num := func(v int64) string {
			if v == -1 {
				return "*"
			}
			return strconv.FormatInt(v, 10)
		}
		acc := ""
		for _, b := range []struct {
			bit int
			c   string
		}{{accRead, "r"}, {accWrite, "w"}, {accMknod, "m"}} {
			if e.access&b.bit != 0 {
				acc += b.c
			}
		}
		for _, t := range []struct {
			bit int
			c   string
		}{{devBlock, "b"}, {devChar, "c"}} {
			if e.typ&t.bit != 0 {
				lines = append(lines, [2]string{exc, t.c + " " + num(e.major) + ":" + num(e.minor) + " " + acc})
			}
		}
	}
	return lines
}

// program builds the BPF_PROG_TYPE_CGROUP_DEVICE program for the policy.
// The context is struct bpf_cgroup_dev_ctx { u32 access_type; u32 major;
// u32 minor; } with access_type = access<<16 | type. It returns 1 to allow.
// Each exception is a block that falls through to its exit when it matches
// and otherwise jumps to the next block; the last block jumps to the
// default.
func (d *deviceRules) program() []bpfInsn {
	p := []bpfInsn{
		bpfLoadWord(bpfR2, bpfR1, 0),
		bpfMovReg32(bpfR3, bpfR2),
		bpfAndImm32(bpfR3, 0xffff), // type
		bpfMovReg32(bpfR4, bpfR2),
		bpfRshImm32(bpfR4, 16),       // access
		bpfLoadWord(bpfR5, bpfR1, 4), // major
		bpfLoadWord(bpfR6, bpfR1, 8), // minor
	}
	result, fallback := int32(1), int32(0)
	if d.defaultAllow {
		result, fallback = 0, 1
	}
	var toNext []int // jumps to the block after the current one
	bind := func() {
		for _, j := range toNext {
			p[j].off = int16(len(p) - j - 1)
		}
		toNext = toNext[:0]
	}
	jumpToNext := func(in bpfInsn) {
		toNext = append(toNext, len(p))
		p = append(p, in)
	}
	for _, e := range d.exceptions {
		bind()
		if e.typ != devAll {
			jumpToNext(bpfJump(unix.BPF_JNE, bpfR3, int32(e.typ)))
		}
		if e.major != -1 {
			jumpToNext(bpfJump(unix.BPF_JNE, bpfR5, int32(e.major)))
		}
		if e.minor != -1 {
			jumpToNext(bpfJump(unix.BPF_JNE, bpfR6, int32(e.minor)))
		}
		p = append(p, bpfMovReg32(bpfR7, bpfR4))
		if d.defaultAllow {
			// Deny when any requested access is listed.
			p = append(p, bpfAndImm32(bpfR7, int32(e.access)))
			jumpToNext(bpfJump(unix.BPF_JEQ, bpfR7, 0))
		} else {
			// Allow only when every requested access is listed.
			p = append(p, bpfAndImm32(bpfR7, int32(accAll&^e.access)))
			jumpToNext(bpfJump(unix.BPF_JNE, bpfR7, 0))
		}
		p = append(p, bpfMovImm(bpfR0, result), bpfExit())
	}
	bind()
	return append(p, bpfMovImm(bpfR0, fallback), bpfExit())
}
