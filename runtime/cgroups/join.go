package cgroups

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Join is what lets a new process enter a container's cgroup without Add.
// Every write of a pid to cgroup.procs takes the kernel's global
// cgroup_threadgroup_rwsem for writing, which after an idle spell first
// waits for an RCU grace period: 10-17 ms on the bench machine, most of a
// container start (docs/benchmarks.md). Two ways in take no such lock:
//
//   - V2 is the cgroup2 directory (nil on hosts without cgroup2): a process
//     forked with clone3(CLONE_INTO_CGROUP) on it (SysProcAttr.UseCgroupFD)
//     is born in the cgroup.
//   - Tasks are the tasks files of the cgroup v1 hierarchies, open for
//     writing: a thread that writes "0" to one moves itself into that
//     hierarchy's cgroup. Only that thread moves; the process's other
//     threads stay where they were. The container's init writes them from
//     the thread that later execs the container's program, and execve ends
//     every other thread, so the program runs wholly inside the cgroup
//     (initstage.Config.CgroupFDs).
//     The kernel checks the writer's right to move itself, not the file's
//     owner, at that point: an init in a user namespace can do it.
type Join struct {
	V2    *os.File
	Tasks []*os.File
}

// OpenJoin opens the cgroup's Join. Call it after Create.
func (m *manager) OpenJoin() (_ *Join, err error) {
	j := &Join{}
	defer func() {
		if err != nil {
			j.Close()
		}
	}()
	for _, dir := range m.dirs {
		fd, err := unix.Open(filepath.Join(dir, "tasks"), unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("cgroups: open %s/tasks: %w", dir, err)
		}
		j.Tasks = append(j.Tasks, os.NewFile(uintptr(fd), filepath.Join(dir, "tasks")))
	}
	if m.v2 != "" {
		fd, err := unix.Open(m.v2, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("cgroups: open %s: %w", m.v2, err)
		}
		j.V2 = os.NewFile(uintptr(fd), m.v2)
	}
	return j, nil
}

// Close closes the files of j.
func (j *Join) Close() {
	if j.V2 != nil {
		j.V2.Close()
	}
	for _, f := range j.Tasks {
		f.Close()
	}
}
