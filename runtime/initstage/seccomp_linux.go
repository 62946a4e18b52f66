package initstage

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Load installs the seccomp program f on the calling thread with seccomp(SECCOMP_SET_MODE_FILTER).
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
// Load does not allocate unless it fails, and makes no syscall but the one
// that installs the filter, so the caller can execve right after it.
func Load(f *Filter) error {
	if f == nil || len(f.Prog) == 0 {
		return errors.New("seccomp: load: empty filter")
	}
	flags := f.loadFlags()
	prog := unix.SockFprog{Len: uint16(len(f.Prog)), Filter: &f.Prog[0]}
	// A raw syscall: on the way out of a plain one the Go scheduler may wake
	// another thread with futex, which the profile just loaded may deny
	// (the runtime then crashes with "futexwakeup ... returned -1").
	_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&prog)))
	runtime.KeepAlive(f)
	return loadError(flags, errno)
}

// loadFlags are the filter's flags as SECCOMP_SET_MODE_FILTER takes them:
// WAIT_KILLABLE_RECV only applies to a notify listener, and the kernel
// rejects it without SECCOMP_FILTER_FLAG_NEW_LISTENER.
func (f *Filter) loadFlags() uintptr {
	return uintptr(f.Flags &^ unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
}

func loadError(flags uintptr, errno syscall.Errno) error {
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

// LoadAndExec installs f on the calling thread and executes path, with
// nothing in between: no allocation, no syscall, no function prologue where
// the Go scheduler could preempt the goroutine (a preempted goroutine hands
// its processor to another thread with futex, which the profile may deny,
// and the Go runtime crashes). It returns only if either step fails; the
// error then says which.
//
// Unlike syscall.Exec it does not put back the RLIMIT_NOFILE soft limit
// the process started with (Go raises it at start): a caller that cares
// sets the limit with syscall.Setrlimit first.
func LoadAndExec(f *Filter, path string, argv, envv []string) error {
	if f == nil || len(f.Prog) == 0 {
		return errors.New("seccomp: load: empty filter")
	}
	pathp, err := syscall.BytePtrFromString(path)
	if err != nil {
		return err
	}
	argvp, err := syscall.SlicePtrFromStrings(argv)
	if err != nil {
		return err
	}
	envvp, err := syscall.SlicePtrFromStrings(envv)
	if err != nil {
		return err
	}
	flags := f.loadFlags()
	prog := unix.SockFprog{Len: uint16(len(f.Prog)), Filter: &f.Prog[0]}
	loadErrno, execErrno := loadExec(&prog, flags, pathp, &argvp[0], &envvp[0])
	runtime.KeepAlive(f)
	runtime.KeepAlive(argvp)
	runtime.KeepAlive(envvp)
	if loadErrno != 0 {
		return loadError(flags, loadErrno)
	}
	return fmt.Errorf("exec %s after loading the seccomp profile: %w", path, execErrno)
}

// loadExec is the part of LoadAndExec that runs with the filter loaded.
//
//go:nosplit
func loadExec(prog *unix.SockFprog, flags uintptr, path *byte, argv, envv **byte) (load, exec syscall.Errno) {
	_, _, load = syscall.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(prog)))
	if load != 0 {
		return load, 0
	}
	_, _, exec = syscall.RawSyscall(unix.SYS_EXECVE, uintptr(unsafe.Pointer(path)), uintptr(unsafe.Pointer(argv)), uintptr(unsafe.Pointer(envv)))
	return 0, exec
}
