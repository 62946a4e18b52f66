// Package proc reads what Nexus needs to know about processes from /proc:
// whether a process is still the one that was recorded (pid and start
// time), which processes run inside a given root directory, the machine's
// memory (the agent's node capacity), and (for the benchmarks in bench/) a
// process's parent, name and resident memory.
package proc

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Stat is what Nexus reads of /proc/<pid>/stat.
type Stat struct {
	Comm  string // the command name (field 2), without its parentheses
	State byte   // field 3: R, S, D, Z, X, …
	PPID  int    // field 4
	// CPU is the user and system time used (fields 14 and 15).
	CPU time.Duration
	// StartTime is field 22: the start time in clock ticks since boot.
	StartTime uint64
}

// clockTick is the unit of the times in /proc/<pid>/stat: USER_HZ, which
// is 100 on every Linux architecture.
const clockTick = 10 * time.Millisecond

// ReadStat reads /proc/<pid>/stat.
func ReadStat(pid int) (Stat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	// The command name (field 2) may contain spaces and parentheses.
	s := string(data)
	lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if lp < 0 || rp < lp {
		return Stat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(s[rp+1:])
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 || len(fields[0]) != 1 {
		return Stat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	st := Stat{Comm: s[lp+1 : rp], State: fields[0][0]}
	if st.PPID, err = strconv.Atoi(fields[1]); err != nil {
		return Stat{}, fmt.Errorf("malformed /proc/%d/stat: ppid: %w", pid, err)
	}
	utime, err1 := strconv.ParseUint(fields[11], 10, 64)
	stime, err2 := strconv.ParseUint(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return Stat{}, fmt.Errorf("malformed /proc/%d/stat: cpu time: %w", pid, err)
	}
	st.CPU = time.Duration(utime+stime) * clockTick
	if st.StartTime, err = strconv.ParseUint(fields[19], 10, 64); err != nil {
		return Stat{}, fmt.Errorf("malformed /proc/%d/stat: start time: %w", pid, err)
	}
	return st, nil
}

// StartTime reads the process's start time in clock ticks since boot,
// which with the pid identifies a process across pid reuse. A process that
// has exited (a zombie) is an error.
func StartTime(pid int) (uint64, error) {
	st, err := ReadStat(pid)
	if err != nil {
		return 0, err
	}
	if st.State == 'Z' || st.State == 'X' {
		return 0, fmt.Errorf("process %d has exited", pid)
	}
	return st.StartTime, nil
}

// Memory is a process's memory as /proc/<pid>/status gives it, in bytes.
type Memory struct {
	RSS     int64 // VmRSS: resident, of which
	Anon    int64 // RssAnon: anonymous pages (heap, stacks)
	File    int64 // RssFile: pages of mapped files (the executable's among them)
	PeakRSS int64 // VmHWM: the most RSS has been
	Threads int
}

// ReadMemory reads pid's resident memory and thread count.
func ReadMemory(pid int) (Memory, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	kib := map[string]*int64{"VmRSS:": &m.RSS, "RssAnon:": &m.Anon, "RssFile:": &m.File, "VmHWM:": &m.PeakRSS}
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		if p, ok := kib[f[0]]; ok {
			*p = v << 10 // "VmRSS:    1234 kB"
		} else if f[0] == "Threads:" {
			m.Threads = int(v)
		}
	}
	if m.Threads == 0 {
		return Memory{}, fmt.Errorf("malformed /proc/%d/status: no Threads line", pid)
	}
	return m, nil
}

// SystemMemory is the machine's memory, from /proc/meminfo.
type SystemMemory struct {
	Total     int64 // MemTotal
	Available int64 // MemAvailable: what can be had without swapping
}

// ReadSystemMemory reads the machine's total and available memory.
func ReadSystemMemory() (SystemMemory, error) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return SystemMemory{}, err
	}
	var m SystemMemory
	kib := map[string]*int64{"MemTotal:": &m.Total, "MemAvailable:": &m.Available}
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if p, ok := kib[f[0]]; ok {
			v, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return SystemMemory{}, fmt.Errorf("malformed /proc/meminfo line %q", strings.TrimSpace(line))
			}
			*p = v << 10 // "MemTotal:  24613888 kB"
		}
	}
	if m.Total == 0 {
		return SystemMemory{}, errors.New("malformed /proc/meminfo: no MemTotal line")
	}
	return m, nil
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
