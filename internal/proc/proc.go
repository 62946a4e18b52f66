// Package proc reads what Nexus needs to know about processes from /proc:
// whether a process is still the one that was recorded (pid and start
// time), and which processes run inside a given root directory.
package proc

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// StartTime reads field 22 of /proc/<pid>/stat: the process's start time in
// clock ticks since boot, which with the pid identifies a process across
// pid reuse. A process that has exited (a zombie) is an error.
func StartTime(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces and parentheses.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	if fields[0] == "Z" || fields[0] == "X" {
		return 0, fmt.Errorf("process %d has exited", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// ID names a process for as long as it runs: its pid and start time.
type ID struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// Self is the calling process's ID.
func Self() (ID, error) {
	pid := os.Getpid()
	start, err := StartTime(pid)
	return ID{PID: pid, Start: start}, err
}

// Alive reports whether the process id names is still running. The zero ID
// names no process.
func (id ID) Alive() bool {
	if id.PID <= 0 {
		return false
	}
	start, err := StartTime(id.PID)
	return err == nil && start == id.Start
}

// RootedAt returns the pid of a process whose root directory is dir (a
// container's, after pivot_root or chroot), or 0 if none is. It compares
// device and inode, so a bind mount of dir counts as dir. Processes this
// one may not inspect are skipped.
func RootedAt(dir string) (int, error) {
	var want unix.Stat_t
	if err := unix.Stat(dir, &want); err != nil {
		return 0, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/root", &st) == nil && st.Dev == want.Dev && st.Ino == want.Ino {
			return pid, nil
		}
	}
	return 0, nil
}

// BootID identifies this boot of the machine (the kernel's random boot_id),
// so that state that does not outlive a reboot (unsynced files, network
// namespaces and links) can be told from this boot's. It is "unknown" when
// /proc does not say.
func BootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}
