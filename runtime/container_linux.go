package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/runtime/cgroups"
	"nexus.dev/nexus/runtime/exitrec"
)

// Config configures a Runtime.
type Config struct {
	// Root is the state directory (DefaultRoot when empty).
	Root string
	// Logger receives debug records of each step; nil discards them.
	Logger *slog.Logger
	// RecordExits keeps every container's exit status in the kernel (see
	// package exitrec), so that Wait reports it even in a process that did
	// not create the container. The agent sets it; it costs one eBPF load
	// per boot.
	RecordExits bool
	// ExitRecorderDir is where the recorder is pinned (exitrec.DefaultDir
	// when empty).
	ExitRecorderDir string
}

// Runtime creates and manages containers whose state lives under Root. It
// is safe for concurrent use. Any number of Runtime values (in any number
// of processes) may manage the same Root: all state is on disk.
type Runtime struct {
	root string
	log  *slog.Logger

	mu       sync.Mutex
	children map[string]*child // containers this process started, for Wait

	recordExits bool
	recDir      string
	recOnce     sync.Once
	rec         *exitrec.Recorder
}

// child is a container init this process forked: the kernel gives its exit
// status only to its parent, so it is kept for Wait.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
	ws   syscall.WaitStatus
}

// New returns a Runtime for cfg.
func New(cfg Config) *Runtime {
	root := cfg.Root
	if root == "" {
		root = DefaultRoot
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runtime{root: root, log: log, children: map[string]*child{}, recordExits: cfg.RecordExits, recDir: cfg.ExitRecorderDir}
}

// recorder returns the exit recorder, or nil when it is off or cannot load
// (then Wait reports statuses only for containers this process started).
func (r *Runtime) recorder() *exitrec.Recorder {
	if !r.recordExits {
		return nil
	}
	r.recOnce.Do(func() {
		rec, err := exitrec.Open(r.recDir)
		if err != nil {
			r.log.Warn("exit statuses of containers started by other processes will be unknown", "err", err)
			return
		}
		r.rec = rec
	})
	return r.rec
}

// Root returns the state directory.
func (r *Runtime) Root() string { return r.root }

// CreateOptions are the per-container choices of Create.
type CreateOptions struct {
	Bundle        string
	PidFile       string
	ConsoleSocket string // path of a unix socket that receives the pty master
	// Stdio of the container's process. Nil means the runtime's own (the
	// OCI command line passes its stdio through). Use files, not pipes with
	// goroutines behind them, if the container must outlive this process.
	Stdin          *os.File
	Stdout, Stderr *os.File
	// PreserveFDs passes this many descriptors from 3 up to the container.
	PreserveFDs int
	// NoPivot uses MS_MOVE+chroot instead of pivot_root (for ramfs roots).
	NoPivot bool
}

// Create sets up a container from a bundle and leaves its init waiting for
// Start. Nothing is left behind if it fails: no state, cgroup, mount or
// process.
func (r *Runtime) Create(ctx context.Context, id string, opts CreateOptions) (err error) {
	if err := ValidateID(id); err != nil {
		return err
	}
	t0 := time.Now()
	step := func(name string) { r.log.Debug("create step", "id", id, "step", name, "at", time.Since(t0)) }
	bundle, err := filepath.Abs(opts.Bundle)
	if err != nil {
		return fmt.Errorf("bundle %s: %w", opts.Bundle, err)
	}
	// The seccomp profile is validated by compiling it, below.
	spec, err := loadSpec(bundle, false)
	if err != nil {
		return err
	}
	if spec.Process == nil {
		return specErr("process", "missing: a container needs a process to run")
	}
	ispec, filter, err := initSpec(spec)
	if err != nil {
		return err
	}
	rootfs := spec.Root.Path
	if !filepath.IsAbs(rootfs) {
		rootfs = filepath.Join(bundle, rootfs)
	}
	if rootfs, err = filepath.EvalSymlinks(rootfs); err != nil {
		return fmt.Errorf("root.path: %w", err)
	}
	step("spec loaded")
	cg, err := cgroups.New(cgroups.Config{Path: cgroupPath(spec, id), Resources: withDefaultDevices(spec.Linux.Resources)})
	if err != nil {
		return err
	}

	if err := os.MkdirAll(r.root, 0o700); err != nil {
		return fmt.Errorf("create state root %s: %w", r.root, err)
	}
	dir := containerDir(r.root, id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("container %s already exists: pick another id or `nexus runtime delete %s`", id, id)
		}
		return fmt.Errorf("create state directory: %w", err)
	}
	var cleanups []func()
	defer func() {
		if err != nil {
			for i := len(cleanups) - 1; i >= 0; i-- {
				cleanups[i]()
			}
			os.RemoveAll(dir)
		}
	}()
	release, err := lockContainer(dir)
	if err != nil {
		return err
	}
	defer release()

	step("state dir")
	if err := cg.Create(); err != nil {
		return fmt.Errorf("create cgroup for %s: %w", id, err)
	}
	cleanups = append(cleanups, func() { _ = cg.Destroy() })

	step("cgroup created")
	state := specs.State{Version: specs.Version, ID: id, Status: specs.StateCreating, Bundle: bundle, Annotations: spec.Annotations}
	cfg := &initConfig{Mode: "create", ID: id, Bundle: bundle, Rootfs: rootfs, Spec: ispec, Seccomp: filter,
		NoPivot: opts.NoPivot, PreserveFDs: opts.PreserveFDs, CgroupMounts: cgroupMounts(cg)}
	var cloneFlags uintptr
	var joinPid string
	for _, ns := range spec.Linux.Namespaces {
		switch {
		case ns.Path != "" && ns.Type == specs.PIDNamespace:
			joinPid = ns.Path
		case ns.Path != "":
			cfg.JoinNS = append(cfg.JoinNS, ns)
		case ns.Type == specs.CgroupNamespace:
			cfg.NewCgroupNS = true // after the cgroup is joined
		case ns.Type == specs.TimeNamespace:
			cfg.NewTimeNS = true // only unshare(2) can make one
		default:
			cloneFlags |= namespaceFlags[ns.Type]
			if ns.Type == specs.NetworkNamespace {
				cfg.NewNetNS = true
			}
		}
	}

	// The start socket: the init blocks in accept() on it until Start.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, startSocket), Net: "unix"})
	if err != nil {
		return fmt.Errorf("create start socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	lnFile, err := ln.File()
	ln.Close()
	if err != nil {
		return fmt.Errorf("create start socket: %w", err)
	}
	defer lnFile.Close()

	var console *os.File
	if opts.ConsoleSocket != "" {
		c, err := net.Dial("unix", opts.ConsoleSocket)
		if err != nil {
			return fmt.Errorf("connect to --console-socket %s: %w", opts.ConsoleSocket, err)
		}
		console, err = c.(*net.UnixConn).File()
		c.Close()
		if err != nil {
			return err
		}
		defer console.Close()
	}

	parentSock, childSock, err := socketPair()
	if err != nil {
		return err
	}
	defer parentSock.Close()

	step("sockets")
	self, err := sealedSelf()
	if err != nil {
		childSock.Close()
		return err
	}
	defer self.Close()

	cmd := &exec.Cmd{Path: execPath(self), Args: []string{"nexus-init", id}}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdio(opts.Stdin, os.Stdin), stdio(opts.Stdout, os.Stdout), stdio(opts.Stderr, os.Stderr)
	for i := 0; i < opts.PreserveFDs; i++ {
		cmd.ExtraFiles = append(cmd.ExtraFiles, os.NewFile(uintptr(3+i), "preserved"))
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, childSock)
	syncFD := 2 + len(cmd.ExtraFiles)
	cmd.ExtraFiles = append(cmd.ExtraFiles, lnFile)
	cfg.StartFD = 2 + len(cmd.ExtraFiles)
	if console != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, console)
		cfg.ConsoleFD = 2 + len(cmd.ExtraFiles)
	}
	cmd.Env = []string{initEnv + "=" + strconv.Itoa(syncFD)}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: cloneFlags,
		Pdeathsig:  syscall.SIGKILL,
	}
	if cloneFlags&unix.CLONE_NEWUSER != 0 {
		cmd.SysProcAttr.UidMappings = idMaps(spec.Linux.UIDMappings)
		cmd.SysProcAttr.GidMappings = idMaps(spec.Linux.GIDMappings)
		cmd.SysProcAttr.GidMappingsEnableSetgroups = true
		// Become root of the new namespace before exec: a process that
		// keeps its unmapped host uid loses every capability at execve.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	}

	step("sealed self")
	if err := startInPidNS(cmd, joinPid); err != nil {
		childSock.Close()
		return fmt.Errorf("start init for %s: %w", id, err)
	}
	childSock.Close()
	ch := &child{cmd: cmd, done: make(chan struct{})}
	cleanups = append(cleanups, func() {
		_ = cmd.Process.Kill()
		<-ch.done
	})
	go func() {
		_ = cmd.Wait()
		if cmd.ProcessState != nil {
			ch.ws = cmd.ProcessState.Sys().(syscall.WaitStatus)
		}
		close(ch.done)
	}()
	pid := cmd.Process.Pid
	if rec := r.recorder(); rec != nil {
		// The init is still waiting for its config: it cannot exit unseen.
		if err := rec.Watch(pid); err != nil {
			r.log.Warn("cannot record the exit status", "id", id, "err", err)
		}
	}
	state.Pid = pid
	cfg.State = state
	cfg.State.Status = specs.StateCreated

	step("init forked")
	if err := cg.Add(pid); err != nil {
		return fmt.Errorf("join %s to its cgroup: %w", id, err)
	}
	step("cgroup joined")
	if p := spec.Process; len(p.Rlimits) > 0 {
		if err := setRlimits(pid, p.Rlimits); err != nil {
			return err
		}
	}
	if err := runHooks("prestart", hookList(spec.Hooks, "prestart"), state); err != nil {
		return err
	}
	if err := runHooks("createRuntime", hookList(spec.Hooks, "createRuntime"), state); err != nil {
		return err
	}
	step("hooks")
	if err := json.NewEncoder(parentSock).Encode(cfg); err != nil {
		return fmt.Errorf("send config to init of %s: %w", id, err)
	}
	if err := readReady(ctx, parentSock, ch.done); err != nil {
		return fmt.Errorf("create %s: %w", id, err)
	}

	step("init ready")
	startTime, err := processStartTime(pid)
	if err != nil {
		return fmt.Errorf("create %s: init exited early: %w", id, err)
	}
	st := &savedState{ID: id, Pid: pid, PidStart: startTime, Bundle: bundle, Rootfs: rootfs,
		Created: time.Now().UTC(), Annotations: spec.Annotations, Cgroup: cgroupState{Paths: cg.Paths()}, Spec: spec}
	if err := writeState(dir, st); err != nil {
		return err
	}
	if opts.PidFile != "" {
		if err := writePidFile(opts.PidFile, pid); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.children[id] = ch
	r.mu.Unlock()
	r.log.Debug("container created", "id", id, "pid", pid)
	return nil
}

func stdio(f, def *os.File) *os.File {
	if f != nil {
		return f
	}
	return def
}

func idMaps(m []specs.LinuxIDMapping) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, len(m))
	for i, x := range m {
		out[i] = syscall.SysProcIDMap{ContainerID: int(x.ContainerID), HostID: int(x.HostID), Size: int(x.Size)}
	}
	return out
}

func socketPair() (parent, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("create sync socket: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "sync-parent"), os.NewFile(uintptr(fds[1]), "sync-child"), nil
}

// startInPidNS starts cmd; when nsPath is set the child is forked into that
// existing pid namespace. The kernel takes the pid namespace of a new
// process from the forking thread, so the fork happens on a locked thread
// that has joined it, and that thread is thrown away afterwards.
func startInPidNS(cmd *exec.Cmd, nsPath string) error {
	if nsPath == "" {
		return cmd.Start()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open pid namespace %s: %w", nsPath, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWPID); err != nil {
			errc <- fmt.Errorf("join pid namespace %s: %w", nsPath, err)
			return
		}
		// Pdeathsig fires when the forking thread exits, which here is at
		// once; the init clears it anyway once it is ready.
		cmd.SysProcAttr.Pdeathsig = 0
		errc <- cmd.Start()
	}()
	return <-errc
}

// readReady waits for the init's "ready" (or its error).
func readReady(ctx context.Context, sock *os.File, done <-chan struct{}) error {
	msgs := make(chan initMessage, 1)
	errs := make(chan error, 1)
	go func() {
		var m initMessage
		if err := json.NewDecoder(sock).Decode(&m); err != nil {
			errs <- err
			return
		}
		msgs <- m
	}()
	select {
	case m := <-msgs:
		if m.Type == "error" {
			return errors.New(m.Error)
		}
		if m.Type != "ready" {
			return fmt.Errorf("unexpected message %q from init", m.Type)
		}
		return nil
	case err := <-errs:
		return fmt.Errorf("init exited before it was ready: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func writePidFile(path string, pid int) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("write --pid-file: %w", err)
	}
	return os.Rename(tmp, path)
}

// cgroupPath is the spec's cgroupsPath, or one derived from the id.
func cgroupPath(s *specs.Spec, id string) string {
	if s.Linux.CgroupsPath != "" {
		return s.Linux.CgroupsPath
	}
	return id
}

// withDefaultDevices adds, after the spec's device rules, the rules that let
// the container use the device nodes every container gets (null, zero, tty,
// ptys, …), as runc does: a spec that denies all devices still needs these.
func withDefaultDevices(r *specs.LinuxResources) *specs.LinuxResources {
	if r == nil {
		return nil
	}
	out := *r
	out.Devices = append([]specs.LinuxDeviceCgroup(nil), r.Devices...)
	dev := func(major, minor int64) specs.LinuxDeviceCgroup {
		d := specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &major, Access: "rwm"}
		if minor >= 0 {
			d.Minor = &minor
		}
		return d
	}
	for _, d := range defaultDevices {
		out.Devices = append(out.Devices, dev(d.Major, d.Minor))
	}
	out.Devices = append(out.Devices, dev(5, 2), dev(136, -1)) // /dev/ptmx, /dev/pts/*
	return &out
}
