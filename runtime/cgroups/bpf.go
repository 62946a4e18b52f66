package cgroups

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The device policy of a cgroup2 directory is a BPF_PROG_TYPE_CGROUP_DEVICE
// program. It is assembled, loaded and attached here with bpf(2) directly
// rather than through cilium/ebpf: the program is a few dozen instructions,
// and the library links 39 packages (go/parser, debug/elf, compress/flate,
// encoding/xml, …) whose initialisation every nexus-runtime process and
// every container's init stage paid before main. Without them (and without
// the exit recorder, see runtime.Config.Exits) nexus-runtime reached main
// 1.7 ms sooner (14.6 against 16.3 ms), the init 2.5 ms sooner (12.1 against
// 14.6 ms after its config was sent), and a whole `run` of /bin/true took
// 73.5 against 76.3 ms (medians of 40 interleaved runs on the bench
// machine).

// bpfInsn is struct bpf_insn.
type bpfInsn struct {
	code uint8
	regs uint8 // destination register in the low nibble, source in the high
	off  int16
	imm  int32
}

const (
	bpfR0 = iota
	bpfR1
	bpfR2
	bpfR3
	bpfR4
	bpfR5
	bpfR6
	bpfR7
)

// Instructions of the eBPF subset the device program uses.
func bpfLoadWord(dst, src uint8, off int16) bpfInsn {
	return bpfInsn{code: unix.BPF_LDX | unix.BPF_MEM | unix.BPF_W, regs: dst | src<<4, off: off}
}
func bpfMovReg32(dst, src uint8) bpfInsn {
	return bpfInsn{code: unix.BPF_ALU | unix.BPF_MOV | unix.BPF_X, regs: dst | src<<4}
}
func bpfAndImm32(dst uint8, imm int32) bpfInsn {
	return bpfInsn{code: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, regs: dst, imm: imm}
}
func bpfRshImm32(dst uint8, imm int32) bpfInsn {
	return bpfInsn{code: unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K, regs: dst, imm: imm}
}
func bpfMovImm(dst uint8, imm int32) bpfInsn {
	return bpfInsn{code: unix.BPF_ALU64 | unix.BPF_MOV | unix.BPF_K, regs: dst, imm: imm}
}

// bpfJump jumps when dst op imm; its offset is set when the target is known.
func bpfJump(op uint8, dst uint8, imm int32) bpfInsn {
	return bpfInsn{code: unix.BPF_JMP | op | unix.BPF_K, regs: dst, imm: imm}
}
func bpfExit() bpfInsn { return bpfInsn{code: unix.BPF_JMP | unix.BPF_EXIT} }

func isBPFJump(in bpfInsn) bool {
	return in.code&0x07 == unix.BPF_JMP && in.code&0xf0 != unix.BPF_EXIT
}

// bpf is the bpf(2) system call; attr points to the command's part of
// union bpf_attr, size is its size.
func bpf(cmd int, attr unsafe.Pointer, size uintptr) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

// progLoadAttr is the BPF_PROG_LOAD part of union bpf_attr.
type progLoadAttr struct {
	progType    uint32
	insnCnt     uint32
	insns       uint64
	license     uint64
	logLevel    uint32
	logSize     uint32
	logBuf      uint64
	kernVersion uint32
	progFlags   uint32
	name        [16]byte
}

// loadDeviceProgram loads a cgroup device program and returns its
// descriptor. When the kernel refuses it, the load is repeated with the
// verifier's log, which the error then carries.
func loadDeviceProgram(insns []bpfInsn) (int, error) {
	license := []byte("Apache-2.0\x00")
	attr := progLoadAttr{
		progType: unix.BPF_PROG_TYPE_CGROUP_DEVICE,
		insnCnt:  uint32(len(insns)),
		insns:    uint64(uintptr(unsafe.Pointer(&insns[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
	}
	copy(attr.name[:], "nexus_devices")
	fd, err := bpf(unix.BPF_PROG_LOAD, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	if err != nil {
		log := make([]byte, 64<<10)
		attr.logLevel, attr.logSize, attr.logBuf = 1, uint32(len(log)), uint64(uintptr(unsafe.Pointer(&log[0])))
		if fd, err = bpf(unix.BPF_PROG_LOAD, unsafe.Pointer(&attr), unsafe.Sizeof(attr)); err != nil {
			msg := strings.TrimSpace(string(bytes.TrimRight(log, "\x00")))
			if len(msg) > 1024 {
				msg = "…" + msg[len(msg)-1024:] // the reason is at the end
			}
			err = fmt.Errorf("cgroups: load device eBPF program: %w (verifier: %s)", err, msg)
		}
	}
	runtime.KeepAlive(insns)
	runtime.KeepAlive(license)
	return fd, err
}

// progAttachAttr is the BPF_PROG_ATTACH and BPF_PROG_DETACH part of union
// bpf_attr.
type progAttachAttr struct {
	targetFD    uint32
	attachBPFFD uint32
	attachType  uint32
	attachFlags uint32
}

func attachProgram(cgroupFD, progFD int, flags uint32) error {
	attr := progAttachAttr{targetFD: uint32(cgroupFD), attachBPFFD: uint32(progFD), attachType: unix.BPF_CGROUP_DEVICE, attachFlags: flags}
	_, err := bpf(unix.BPF_PROG_ATTACH, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	return err
}

func detachProgram(cgroupFD, progFD int) error {
	attr := progAttachAttr{targetFD: uint32(cgroupFD), attachBPFFD: uint32(progFD), attachType: unix.BPF_CGROUP_DEVICE}
	_, err := bpf(unix.BPF_PROG_DETACH, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	return err
}

// progQueryAttr is the BPF_PROG_QUERY part of union bpf_attr.
type progQueryAttr struct {
	targetFD    uint32
	attachType  uint32
	queryFlags  uint32
	attachFlags uint32
	progIDs     uint64
	progCnt     uint32
}

// deviceProgramIDs lists the ids of the device programs attached to a
// cgroup directory.
func deviceProgramIDs(cgroupFD int) ([]uint32, error) {
	ids := make([]uint32, 8)
	for {
		attr := progQueryAttr{targetFD: uint32(cgroupFD), attachType: unix.BPF_CGROUP_DEVICE,
			progIDs: uint64(uintptr(unsafe.Pointer(&ids[0]))), progCnt: uint32(len(ids))}
		_, err := bpf(unix.BPF_PROG_QUERY, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
		runtime.KeepAlive(ids)
		if errors.Is(err, unix.ENOSPC) && int(attr.progCnt) > len(ids) {
			ids = make([]uint32, attr.progCnt)
			continue
		}
		if err != nil {
			return nil, err
		}
		return ids[:attr.progCnt], nil
	}
}

// progFDByID opens a loaded program by id.
func progFDByID(id uint32) (int, error) {
	attr := struct{ progID, nextID, openFlags uint32 }{progID: id}
	return bpf(unix.BPF_PROG_GET_FD_BY_ID, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
}
