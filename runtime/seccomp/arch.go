package seccomp

import (
	"fmt"
	"runtime"
	"sort"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

//go:generate go run gen_sysnum.go

// archIndex is a column of syscallTable; the order matches gen_sysnum.go.
type archIndex int

const (
	archAMD64 archIndex = iota
	arch386
	archX32
	archARM64
	archARM
	numArches
)

// x32SyscallBit is __X32_SYSCALL_BIT: x32 syscalls carry it in their number.
const x32SyscallBit = 0x40000000

// archInfo describes one ABI the filter can match.
type archInfo struct {
	name  specs.Arch
	audit uint32 // seccomp_data.arch
	is32  bool   // arguments are 32-bit: only the low half is compared
}

var archInfos = [numArches]archInfo{
	archAMD64: {specs.ArchX86_64, unix.AUDIT_ARCH_X86_64, false},
	arch386:   {specs.ArchX86, unix.AUDIT_ARCH_I386, true},
	archX32:   {specs.ArchX32, unix.AUDIT_ARCH_X86_64, false},
	archARM64: {specs.ArchAARCH64, unix.AUDIT_ARCH_AARCH64, false},
	archARM:   {specs.ArchARM, unix.AUDIT_ARCH_ARM, true},
}

// ignoredArches are valid in the runtime spec but can never be the
// architecture of a syscall on a host Nexus runs on (see the package doc).
var ignoredArches = map[specs.Arch]bool{
	specs.ArchMIPS: true, specs.ArchMIPS64: true, specs.ArchMIPS64N32: true,
	specs.ArchMIPSEL: true, specs.ArchMIPSEL64: true, specs.ArchMIPSEL64N32: true,
	specs.ArchPPC: true, specs.ArchPPC64: true, specs.ArchPPC64LE: true,
	specs.ArchS390: true, specs.ArchS390X: true, specs.ArchPARISC: true,
	specs.ArchPARISC64: true, specs.ArchRISCV64: true, specs.ArchLOONGARCH64: true,
	specs.ArchM68K: true, specs.ArchSH: true, specs.ArchSHEB: true,
}

// parseArch maps a spec architecture to its table column; ok is false for
// ignored architectures, err is set for unknown ones.
func parseArch(a specs.Arch) (idx archIndex, ok bool, err error) {
	for i, info := range archInfos {
		if info.name == a {
			return archIndex(i), true, nil
		}
	}
	if ignoredArches[a] {
		return 0, false, nil
	}
	return 0, false, fmt.Errorf("unknown architecture %q (supported: SCMP_ARCH_X86_64, SCMP_ARCH_X86, SCMP_ARCH_X32, SCMP_ARCH_AARCH64, SCMP_ARCH_ARM)", a)
}

// nativeArch is the architecture of the running binary.
func nativeArch() (archIndex, error) {
	switch runtime.GOARCH {
	case "amd64":
		return archAMD64, nil
	case "arm64":
		return archARM64, nil
	case "386":
		return arch386, nil
	case "arm":
		return archARM, nil
	}
	return 0, fmt.Errorf("seccomp: native architecture %s is not supported", runtime.GOARCH)
}

type sysnum struct {
	name string
	nr   [numArches]int32
}

// onOtherArch reports whether name is a syscall of an architecture this
// package has no table for.
func onOtherArch(name string) bool {
	i := sort.SearchStrings(otherArchSyscalls[:], name)
	return i < len(otherArchSyscalls) && otherArchSyscalls[i] == name
}

// lookup returns the per-arch numbers of a syscall name.
func lookup(name string) (*[numArches]int32, bool) {
	i := sort.Search(len(syscallTable), func(i int) bool { return syscallTable[i].name >= name })
	if i < len(syscallTable) && syscallTable[i].name == name {
		return &syscallTable[i].nr, true
	}
	return nil, false
}
