// Package exitrec records the exit status of container processes in the
// kernel, so that a process that did not fork a container (an agent that
// restarted, a later `nexus runtime` command) can still learn how it ended.
//
// Only a process's parent can wait(2) for it. runc and crun solve that with
// a helper process per container (conmon, containerd-shim) that stays its
// parent. Nexus keeps no per-container process; instead a small eBPF
// program on the sched_process_exit tracepoint copies task->exit_code of
// every watched pid into a map. Program, link and maps are pinned in bpffs,
// so the recording goes on while no Nexus process runs at all, and any later
// process reads the status back from the pinned map.
package exitrec

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// DefaultDir is where the recorder's objects are pinned.
const DefaultDir = "/sys/fs/bpf/nexus/exitrec"

// bpffsRoot is where bpffs is mounted when it is missing.
const bpffsRoot = "/sys/fs/bpf"

// maxEntries bounds both maps. Exits are an LRU map: the oldest records of
// containers nobody asked about are dropped first.
const maxEntries = 65536

// Recorder watches pids and reads back their exit statuses.
type Recorder struct {
	watch *ebpf.Map // pid -> 1 while the pid is watched
	exits *ebpf.Map // pid -> wait status (exit code << 8 | signal)
}

var openMu sync.Mutex

// Open returns the recorder pinned at dir, loading and attaching it first if
// this is the first use since boot. It needs root (CAP_BPF and CAP_PERFMON,
// or CAP_SYS_ADMIN), a kernel with BTF, and dir on a bpffs (mounted at
// /sys/fs/bpf if missing there).
func Open(dir string) (*Recorder, error) {
	if dir == "" {
		dir = DefaultDir
	}
	dir = filepath.Clean(dir)
	openMu.Lock()
	defer openMu.Unlock()
	if err := ensureBPFFS(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("exit recorder: create %s: %w", dir, err)
	}
	// Serialise loaders across processes with a lock on the pin directory.
	lock, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("exit recorder: %w", err)
	}
	defer unix.Close(lock)
	if err := unix.Flock(lock, unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("exit recorder: lock %s: %w", dir, err)
	}
	if r, err := loadPinned(dir); err == nil {
		return r, nil
	}
	return create(dir)
}

func loadPinned(dir string) (*Recorder, error) {
	l, err := link.LoadPinnedLink(filepath.Join(dir, "link"), nil)
	if err != nil {
		return nil, err
	}
	l.Close() // it stays attached while pinned
	watch, err := ebpf.LoadPinnedMap(filepath.Join(dir, "watch"), nil)
	if err != nil {
		return nil, err
	}
	exits, err := ebpf.LoadPinnedMap(filepath.Join(dir, "exits"), nil)
	if err != nil {
		watch.Close()
		return nil, err
	}
	return &Recorder{watch: watch, exits: exits}, nil
}

func create(dir string) (_ *Recorder, err error) {
	// Remove what a half-finished earlier load may have left.
	for _, n := range []string{"link", "watch", "exits"} {
		os.Remove(filepath.Join(dir, n))
	}
	pidOff, codeOff, err := taskOffsets()
	if err != nil {
		return nil, err
	}
	watch, err := ebpf.NewMap(&ebpf.MapSpec{Name: "nexus_watch", Type: ebpf.Hash, KeySize: 4, ValueSize: 1, MaxEntries: maxEntries})
	if err != nil {
		return nil, fmt.Errorf("exit recorder: create watch map: %w", err)
	}
	exits, err := ebpf.NewMap(&ebpf.MapSpec{Name: "nexus_exits", Type: ebpf.LRUHash, KeySize: 4, ValueSize: 4, MaxEntries: maxEntries})
	if err != nil {
		watch.Close()
		return nil, fmt.Errorf("exit recorder: create exits map: %w", err)
	}
	r := &Recorder{watch: watch, exits: exits}
	defer func() {
		if err != nil {
			r.Close()
			for _, n := range []string{"link", "watch", "exits"} {
				os.Remove(filepath.Join(dir, n))
			}
		}
	}()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "nexus_exitrec",
		Type:         ebpf.Tracing,
		AttachType:   ebpf.AttachTraceRawTp,
		AttachTo:     "sched_process_exit",
		License:      "Dual MIT/GPL",
		Instructions: program(watch.FD(), exits.FD(), pidOff, codeOff),
	})
	if err != nil {
		return nil, fmt.Errorf("exit recorder: load program: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: prog})
	if err != nil {
		return nil, fmt.Errorf("exit recorder: attach to sched_process_exit: %w", err)
	}
	defer l.Close()
	if err := watch.Pin(filepath.Join(dir, "watch")); err != nil {
		return nil, fmt.Errorf("exit recorder: pin: %w", err)
	}
	if err := exits.Pin(filepath.Join(dir, "exits")); err != nil {
		return nil, fmt.Errorf("exit recorder: pin: %w", err)
	}
	// Pin the link last: its presence is what marks a complete load.
	if err := l.Pin(filepath.Join(dir, "link")); err != nil {
		return nil, fmt.Errorf("exit recorder: pin: %w", err)
	}
	return r, nil
}

// program is, in C:
//
//	u32 pid = task->pid; u32 code = task->exit_code;
//	if (bpf_map_lookup_elem(&watch, &pid)) {
//		bpf_map_update_elem(&exits, &pid, &code, BPF_ANY);
//		bpf_map_delete_elem(&watch, &pid);
//	}
//	return 0;
//
// Removing the pid from watch makes a later process that reuses the pid
// leave the record alone.
func program(watchFD, exitsFD int, pidOff, codeOff int16) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R6, asm.R1, 0, asm.DWord), // r6 = ctx->args[0] (struct task_struct *)
		asm.LoadMem(asm.R2, asm.R6, pidOff, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R2, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, codeOff, asm.Word),
		asm.StoreMem(asm.RFP, -8, asm.R3, asm.Word),
		asm.LoadMapPtr(asm.R1, watchFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMapPtr(asm.R1, exitsFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnMapUpdateElem.Call(),
		asm.LoadMapPtr(asm.R1, watchFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapDeleteElem.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
}

// taskOffsets finds task_struct.pid and task_struct.exit_code in the
// running kernel's BTF: the layout differs between kernel builds.
func taskOffsets() (pid, code int16, err error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return 0, 0, fmt.Errorf("exit recorder: read kernel BTF (needs CONFIG_DEBUG_INFO_BTF): %w", err)
	}
	var task *btf.Struct
	if err := spec.TypeByName("task_struct", &task); err != nil {
		return 0, 0, fmt.Errorf("exit recorder: find task_struct: %w", err)
	}
	p, okP := memberOffset(task.Members, "pid", 0)
	c, okC := memberOffset(task.Members, "exit_code", 0)
	if !okP || !okC {
		return 0, 0, errors.New("exit recorder: task_struct lacks pid or exit_code")
	}
	if p > 1<<15-1 || c > 1<<15-1 {
		return 0, 0, errors.New("exit recorder: task_struct offsets do not fit a load instruction")
	}
	return int16(p), int16(c), nil
}

// memberOffset returns a member's byte offset, looking into anonymous
// structs and unions (randomised layouts nest members in them).
func memberOffset(members []btf.Member, name string, base uint32) (uint32, bool) {
	for _, m := range members {
		off := base + uint32(m.Offset)/8
		if m.Name == name {
			return off, true
		}
		if m.Name != "" {
			continue
		}
		switch t := btf.UnderlyingType(m.Type).(type) {
		case *btf.Struct:
			if o, ok := memberOffset(t.Members, name, off); ok {
				return o, true
			}
		case *btf.Union:
			if o, ok := memberOffset(t.Members, name, off); ok {
				return o, true
			}
		}
	}
	return 0, false
}

// ensureBPFFS makes sure dir can hold pins: the nearest directory of its
// path that exists is on a bpffs, or bpffs is mounted at bpffsRoot when
// dir is under it. bpffs is never mounted anywhere else: over a directory
// that has other things in it (/sys/fs, say), it would hide them.
func ensureBPFFS(dir string) error {
	for p := dir; ; p = filepath.Dir(p) {
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err == nil {
			if st.Type == unix.BPF_FS_MAGIC {
				return nil
			}
			break
		}
		if p == filepath.Dir(p) {
			break
		}
	}
	if !strings.HasPrefix(dir, bpffsRoot+"/") {
		return fmt.Errorf("exit recorder: %s is not on a bpffs: pin it under %s", dir, bpffsRoot)
	}
	if err := os.MkdirAll(bpffsRoot, 0o700); err != nil {
		return fmt.Errorf("exit recorder: %w", err)
	}
	if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("exit recorder: mount bpffs at %s: %w", bpffsRoot, err)
	}
	return nil
}

// Watch starts recording pid's exit. Call it before the process can exit.
func (r *Recorder) Watch(pid int) error {
	if err := r.exits.Delete(uint32(pid)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("exit recorder: clear old record of pid %d: %w", pid, err)
	}
	if err := r.watch.Put(uint32(pid), uint8(1)); err != nil {
		return fmt.Errorf("exit recorder: watch pid %d: %w", pid, err)
	}
	return nil
}

// Lookup returns the wait status recorded for pid, and whether there is one.
func (r *Recorder) Lookup(pid int) (unix.WaitStatus, bool, error) {
	var code uint32
	if err := r.exits.Lookup(uint32(pid), &code); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("exit recorder: read pid %d: %w", pid, err)
	}
	return unix.WaitStatus(code), true, nil
}

// Forget drops pid from both maps.
func (r *Recorder) Forget(pid int) {
	_ = r.watch.Delete(uint32(pid))
	_ = r.exits.Delete(uint32(pid))
}

// Close releases this process's handles; the pinned recorder keeps running.
func (r *Recorder) Close() error {
	r.watch.Close()
	r.exits.Close()
	return nil
}
