package seccomp

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Load installs f on the calling thread with seccomp(SECCOMP_SET_MODE_FILTER).
//
// The caller must either have set no_new_privs (prctl PR_SET_NO_NEW_PRIVS)
// or hold CAP_SYS_ADMIN; the kernel refuses the filter with EACCES otherwise.
// Load does not set no_new_privs itself because whether a container gets it
// is the spec's decision (process.noNewPrivileges).
//
// The filter applies to the calling OS thread only: TSYNC is deliberately
// not used. Load is meant to run in the container init on a locked OS thread
// right before execve, which keeps that thread's filter and discards every
// other thread, so synchronising the Go runtime's other threads would add a
// failure mode (TSYNC fails if a thread has diverged) and buy nothing.
//
// Load does not allocate unless it fails.
func Load(f *Filter) error {
	if f == nil || len(f.prog) == 0 {
		return errors.New("seccomp: load: empty filter")
	}
	// WAIT_KILLABLE_RECV only applies to a notify listener, and the kernel
	// rejects it without SECCOMP_FILTER_FLAG_NEW_LISTENER.
	flags := f.flags &^ unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
	prog := unix.SockFprog{Len: uint16(len(f.prog)), Filter: &f.prog[0]}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, uintptr(flags), uintptr(unsafe.Pointer(&prog)))
	runtime.KeepAlive(f)
	switch errno {
	case 0:
		return nil
	case unix.EACCES:
		return fmt.Errorf("seccomp: load filter: %w (set no_new_privs first or run with CAP_SYS_ADMIN)", errno)
	case unix.EINVAL:
		return fmt.Errorf("seccomp: load filter with flags %#x: %w (this kernel may not support one of the profile's flags or actions)", flags, errno)
	}
	return fmt.Errorf("seccomp: load filter: %w", errno)
}
