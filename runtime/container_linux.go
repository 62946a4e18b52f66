package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/runtime/cgroups"
	"nexus.dev/nexus/runtime/initstage"
	"nexus.dev/nexus/runtime/spec"
)

// Config configures a Runtime.
type Config struct {
	// Root is the state directory (DefaultRoot when empty).
	Root string
	// Logger receives debug records of each step; nil discards them.
	Logger *slog.Logger
	// Exits, when set, keeps every container's exit status in the kernel,
	// so that Wait reports it even in a process that did not create the
	// container. The agent sets it to an exitrec.Recorder (one eBPF load
	// per boot) and closes that after the Runtime. The runtime does not
	// import package exitrec itself: its eBPF library would add 39 packages
	// to the initialisation of every nexus-runtime process (see
	// runtime/cgroups/bpf.go).
	Exits ExitRecorder
}

// ExitRecorder keeps the exit status of watched processes after whoever
// reaps them (package exitrec implements it).
type ExitRecorder interface {
	// Watch starts recording pid's exit; call it before pid can exit.
	Watch(pid int) error
	// Lookup returns pid's recorded wait status, if it exited while watched.
	Lookup(pid int) (unix.WaitStatus, bool, error)
	// Forget drops what is kept for pid.
	Forget(pid int)
}

// Runtime creates and manages containers whose state lives under Root. It
// is safe for concurrent use. Any number of Runtime values (in any number
// of processes) may manage the same Root: all state is on disk.
type Runtime struct {
	root string
	log  *slog.Logger

	mu      sync.Mutex
	created map[string]*createdHere // containers this process created

	warm    []*warmSlot // see Prewarm
	filters filterCache

	exits ExitRecorder
}

// createdHere is a container this process created. The kernel gives its
// init's exit status only to its parent, so it is kept for Wait; and the
// init's sync socket stays open, so that Start in this process (`run`, the
// agent) starts it over that socket, without the round trip through the
// start socket that a start command needs.
type createdHere struct {
	init  *child
	start *os.File // the sync socket while the container is created, else nil
	// state is what Create wrote to state.json, and stamp that file, so
	// that Start, Wait and Delete here need not read and decode it again
	// (the spec with the default seccomp profile is most of it: 250 µs).
	state *savedState
	stamp stateStamp
}

// child is a container init this process forked: the kernel gives its exit
// status only to its parent, so it is kept for Wait.
type child struct {
	pid  int
	done chan struct{} // closed once the process has exited
	ws   syscall.WaitStatus
	// keep leaves the exited process unreaped, for whoever inherits it
	// when this process exits (exec --detach under conmon, which waits for
	// it as subreaper). Set it before the process can exit on its own.
	keep atomic.Bool

	mu     sync.Mutex
	pidfd  int  // -1 once reaped (or when the kernel gave none)
	reaped bool // the zombie is gone: pid may name another process now
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
	return &Runtime{root: root, log: log, created: map[string]*createdHere{}, exits: cfg.Exits,
		filters: filterCache{dir: filepath.Join(root, seccompCacheDir)}}
}

// recorder returns the exit recorder, or nil when there is none (then
// Wait reports statuses only for containers this process started).
func (r *Runtime) recorder() ExitRecorder { return r.exits }

// Root returns the state directory.
func (r *Runtime) Root() string { return r.root }

// CreateOptions are the per-container choices of Create.
type CreateOptions struct {
	Bundle        string
	PidFile       string
	ConsoleSocket string // path of a unix socket that receives the pty master
	// Console, when process.terminal is set and ConsoleSocket is empty,
	// receives the pty master before Create returns, so that the caller is
	// the terminal's other end (runc run does this in the foreground; see
	// RelayConsole). Without either such a spec is refused.
	Console func(master *os.File)
	// Stdio of the container's process. Nil means the runtime's own (the
	// OCI command line passes its stdio through). Use files, not pipes with
	// goroutines behind them, if the container must outlive this process.
	Stdin          *os.File
	Stdout, Stderr *os.File
	// PreserveFDs passes this many descriptors from 3 up to the container:
	// descriptors this process inherited (see checkPreserved).
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
	if err := checkPreserved(opts.PreserveFDs); err != nil {
		return fmt.Errorf("create %s: %w", id, err)
	}
	t0 := time.Now()
	step := func(name string) { r.log.Debug("create step", "id", id, "step", name, "at", time.Since(t0)) }
	b, err := r.loadBundle(opts.Bundle, false)
	if err != nil {
		return err
	}
	r.warnCapabilities(id, b.spec.Process)
	step("spec loaded")
	limits, late := splitLate(withDefaultDevices(b.spec.Linux.Resources))
	cg, err := cgroups.New(cgroups.Config{Path: cgroupPath(b.spec, id), Resources: limits})
	if err != nil {
		return err
	}
	dir, err := r.makeStateDir(id)
	if err != nil {
		return err
	}
	c := &creation{r: r, id: id, dir: dir, b: b, cg: cg, late: late, pidFile: opts.PidFile}
	defer func() {
		if err != nil {
			c.undo()
		}
	}()
	release, err := lockContainer(dir)
	if err != nil {
		return err
	}
	defer release()

	plan := planNamespaces(b.spec)
	var hostRootfsMount uint64
	if plan.hostMount {
		if hostRootfsMount, err = mountIDOf(b.rootfs); err != nil {
			return fmt.Errorf("create %s: %w", id, err)
		}
		c.onUndo(func() { _ = unmountAbove(b.rootfs, hostRootfsMount) })
	}
	ln, err := listenStart(dir)
	if err != nil {
		return err
	}
	defer ln.Close()
	var console, consoleHere *os.File
	switch {
	case opts.ConsoleSocket != "":
		if console, err = dialConsole(opts.ConsoleSocket); err != nil {
			return err
		}
		defer console.Close()
	case opts.Console != nil && b.spec.Process != nil && b.spec.Process.Terminal:
		if consoleHere, console, err = socketPair(); err != nil {
			return err
		}
		defer consoleHere.Close()
		defer console.Close()
	}
	// The cgroup is made first, so that the init enters it without
	// cgroups.Manager.Add (see cgroups.Join): it is forked into the cgroup2
	// directory and moves its thread into the v1 hierarchies itself. Its
	// program starts (exec, Go runtime) while this process compiles the
	// seccomp profile.
	if err := cg.Create(); err != nil {
		return fmt.Errorf("create cgroup for %s: %w", id, err)
	}
	c.onUndo(func() { _ = cg.Destroy() })
	step("cgroup created")
	join, err := cg.OpenJoin()
	if err != nil {
		return fmt.Errorf("create %s: %w", id, err)
	}
	defer join.Close()
	stdio := [3]*os.File{stdio(opts.Stdin, os.Stdin), stdio(opts.Stdout, os.Stdout), stdio(opts.Stderr, os.Stderr)}
	h, err := r.forkInit(id, stdio, opts.PreserveFDs, ln, console, plan, b.spec, false, join)
	if err != nil {
		return fmt.Errorf("start init for %s: %w", id, err)
	}
	c.init = h
	step("init forked")
	if err := b.prepareInit(r); err != nil {
		return err
	}
	if !h.joining {
		if err := cg.Add(h.pid()); err != nil {
			return fmt.Errorf("join %s to its cgroup: %w", id, err)
		}
		step("cgroup joined")
	}
	cfg := b.initConfig(id, plan, cg)
	cfg.NoPivot, cfg.PreserveFDs = opts.NoPivot, opts.PreserveFDs
	cfg.StartFD, cfg.ConsoleFD, cfg.CgroupFDs = h.startFD, h.consoleFD, h.cgroupFDs
	c.hostRootfsMount = hostRootfsMount
	if err := c.finish(ctx, cfg, nil); err != nil {
		return err
	}
	step("init ready")
	if consoleHere != nil {
		// The init sent the master before it reported ready.
		master, err := receiveConsole(consoleHere)
		if err != nil {
			return fmt.Errorf("create %s: %w", id, err)
		}
		opts.Console(master)
	}
	return nil
}

// bundleSpec is a loaded and validated bundle.
type bundleSpec struct {
	bundle, rootfs string
	spec           *specs.Spec
	raw            []byte          // config.json as read, which decodes to spec
	ispec          *initstage.Spec // what the init receives (specForInit)
	filter         *initstage.Filter
}

// loadBundle reads and validates a bundle; with forInit it also prepares
// what the init receives (see prepareInit).
func (r *Runtime) loadBundle(path string, forInit bool) (*bundleSpec, error) {
	bundle, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	// The seccomp profile is validated by compiling it (prepareInit).
	s, raw, err := spec.LoadExceptSeccomp(bundle)
	if err != nil {
		return nil, err
	}
	rootfs := s.Root.Path
	if !filepath.IsAbs(rootfs) {
		rootfs = filepath.Join(bundle, rootfs)
	}
	if rootfs, err = filepath.EvalSymlinks(rootfs); err != nil {
		return nil, fmt.Errorf("root.path: %w", err)
	}
	b := &bundleSpec{bundle: bundle, rootfs: rootfs, spec: s, raw: raw}
	if forInit {
		if err := b.prepareInit(r); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// prepareInit compiles the seccomp profile (validating it) and sets what
// the init receives.
func (b *bundleSpec) prepareInit(r *Runtime) error {
	ispec, filter, err := specForInit(b.spec, r.filters.compile)
	if err != nil {
		return err
	}
	b.ispec, b.filter = ispec, filter
	return nil
}

// warnCapabilities logs the capabilities the process will not get: those
// the runtime does not hold itself, and ambient ones that are not also
// permitted and inheritable. The runtime spec asks for a warning, not a
// failure, for capabilities that cannot be granted.
func (r *Runtime) warnCapabilities(id string, p *specs.Process) {
	if p == nil || p.Capabilities == nil {
		return
	}
	if have, err := initstage.Grantable(); err == nil {
		if lost := initstage.Ungrantable(p.Capabilities, have); len(lost) > 0 {
			r.log.Warn("capabilities not granted: the runtime does not hold them itself",
				"id", id, "capabilities", strings.Join(lost, ","))
		}
	}
	if lost := initstage.UnraisableAmbient(p.Capabilities); len(lost) > 0 {
		r.log.Warn("ambient capabilities not raised: an ambient capability must also be permitted and inheritable",
			"id", id, "capabilities", strings.Join(lost, ","))
	}
}

func (b *bundleSpec) initConfig(id string, plan nsPlan, cg cgroups.Manager) *initstage.Config {
	return &initstage.Config{Mode: "create", ID: id, Bundle: b.bundle, Rootfs: b.rootfs, Spec: b.ispec, Seccomp: b.filter,
		JoinNS: plan.join, NewCgroupNS: plan.newCgroup, NewTimeNS: plan.newTime, NewNetNS: plan.newNet,
		HostMountNS: plan.hostMount, CgroupMounts: cgroupMounts(cg)}
}

// nsPlan is how the init gets its namespaces.
type nsPlan struct {
	cloneFlags                 uintptr // created by clone(2)
	joinPid                    string  // pid namespace joined by the forking thread
	join                       []specs.LinuxNamespace
	newCgroup, newTime, newNet bool
	hostMount                  bool // no mount namespace: share the runtime's
}

func planNamespaces(s *specs.Spec) nsPlan {
	p := nsPlan{hostMount: !spec.HasNamespace(s.Linux, specs.MountNamespace)}
	for _, ns := range s.Linux.Namespaces {
		switch {
		case ns.Path != "" && ns.Type == specs.PIDNamespace:
			p.joinPid = ns.Path
		case ns.Path != "":
			p.join = append(p.join, ns)
		case ns.Type == specs.CgroupNamespace:
			p.newCgroup = true // unshared by the init after the cgroup is joined
		case ns.Type == specs.TimeNamespace:
			p.newTime = true // only unshare(2) can make one
		default:
			p.cloneFlags |= initstage.NamespaceFlags[ns.Type]
			p.newNet = p.newNet || ns.Type == specs.NetworkNamespace
		}
	}
	return p
}

func (r *Runtime) makeStateDir(id string) (string, error) {
	if err := os.MkdirAll(r.root, 0o700); err != nil {
		return "", fmt.Errorf("create state root %s: %w", r.root, err)
	}
	dir := containerDir(r.root, id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("container %s already exists: pick another id or %s", id, command(r.root, "delete "+id))
		}
		return "", fmt.Errorf("create state directory: %w", err)
	}
	return dir, nil
}

// listenStart binds the start socket: the init blocks in accept() on it
// until Start connects.
func listenStart(dir string) (*os.File, error) {
	path, done, err := socketPath(dir, startSocket)
	if err != nil {
		return nil, fmt.Errorf("create start socket: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	done()
	if err != nil {
		return nil, fmt.Errorf("create start socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	f, err := ln.File()
	ln.Close()
	if err != nil {
		return nil, fmt.Errorf("create start socket: %w", err)
	}
	return f, nil
}

func dialConsole(path string) (*os.File, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to --console-socket %s: %w", path, err)
	}
	defer c.Close()
	return c.(*net.UnixConn).File()
}

// initHandle is a forked init stage and the descriptor numbers it got.
type initHandle struct {
	ch                 *child
	sock               *os.File // parent end of the sync socket
	startFD, consoleFD int
	// joining is set when the init was forked into the cgroup2 directory
	// and got the v1 tasks files (cgroupFDs) to join the rest itself.
	joining   bool
	cgroupFDs []int
}

func (h *initHandle) pid() int { return h.ch.pid }

// kill stops the init and reaps it.
func (h *initHandle) kill() {
	h.ch.signal(unix.SIGKILL)
	<-h.ch.done
	h.ch.reap()
	h.sock.Close()
}

// signal sends sig to the child unless it has been reaped, through its
// pidfd where the kernel gave one, so no other process can get it.
func (ch *child) signal(sig unix.Signal) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	switch {
	case ch.reaped:
	case ch.pidfd >= 0:
		_ = unix.PidfdSendSignal(ch.pidfd, sig, nil, 0)
	default:
		_ = unix.Kill(ch.pid, sig)
	}
}

// reap reaps the exited process if the waiter left it (keep was set when
// it exited). Call it only after done is closed.
func (ch *child) reap() {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.reaped {
		return
	}
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(ch.pid, &ws, 0, nil)
		if err != syscall.EINTR {
			break
		}
	}
	ch.ws, ch.reaped = ws, true
	if ch.pidfd >= 0 {
		unix.Close(ch.pidfd)
		ch.pidfd = -1
	}
}

// checkPreserved checks that the n descriptors from 3 up, which the
// container is to get, are ones this process inherited. Every descriptor
// a process inherits lacks close-on-exec (it would not have crossed the
// execve otherwise), and every one Go opens has it: without that check a
// caller that passed fewer than n gave the container the runtime's own
// (the Go runtime keeps the cgroup's cpu.cfs_quota_us and cpu.cfs_period_us
// open, and they took descriptors 3 and 4).
func checkPreserved(n int) error {
	if n < 0 {
		return fmt.Errorf("preserve %d descriptors: want 0 or more", n)
	}
	for fd := 3; fd < 3+n; fd++ {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil {
			return fmt.Errorf("preserve %d descriptors (3 to %d): descriptor %d is not open; pass the descriptors to keep from 3 up", n, 2+n, fd)
		}
		if flags&unix.FD_CLOEXEC != 0 {
			return fmt.Errorf("preserve %d descriptors (3 to %d): descriptor %d was not passed to this process (it is one of its own); pass the descriptors to keep from 3 up", n, 2+n, fd)
		}
	}
	return nil
}

// forkInit starts an init stage: the init program (see sealedSelf),
// executed read-only, in the namespaces of plan. Its descriptors are stdio,
// then the preserved ones (3…), the sync socket, the start listener, the
// console socket, the cgroup v1 tasks files of join and last the one it is
// executed through (see execThrough). With join it is forked into join's
// cgroup2 directory. A warm init gets its real stdio later, over the sync
// socket.
func (r *Runtime) forkInit(id string, stdio [3]*os.File, preserve int, ln, console *os.File, plan nsPlan, spec *specs.Spec, warm bool, join *cgroups.Join) (*initHandle, error) {
	parentSock, childSock, err := socketPair()
	if err != nil {
		return nil, err
	}
	defer childSock.Close()
	self, err := sealedSelf(r.root)
	if err != nil {
		parentSock.Close()
		return nil, err
	}
	defer self.Close()
	fds := []uintptr{stdio[0].Fd(), stdio[1].Fd(), stdio[2].Fd()}
	for i := 0; i < preserve; i++ {
		fds = append(fds, uintptr(3+i))
	}
	add := func(f *os.File) int {
		fds = append(fds, f.Fd())
		return len(fds) - 1
	}
	h := &initHandle{sock: parentSock}
	syncFD := add(childSock)
	if ln != nil {
		h.startFD = add(ln)
	}
	if console != nil {
		h.consoleFD = add(console)
	}
	plain := slices.Clip(fds) // without join's descriptors
	// One P: the init runs one goroutine locked to its thread, and with a
	// second P the Go runtime sets up more per-P state and threads, and its
	// sysmon thread keeps waking every 20 µs while the init blocks in a
	// system call (9 % of the init's CPU time in perf). The init reached
	// main 1.6 ms sooner (7.0 against 8.6 ms after its config was sent;
	// medians of 40 interleaved runs). Its process gets its own environment
	// at execve, so the setting does not reach it.
	env := []string{initstage.EnvFD + "=" + strconv.Itoa(syncFD), "GOMAXPROCS=1"}
	if warm {
		env = append(env, initstage.EnvWarm+"=1")
	}
	pidfd := -1
	sys := &syscall.SysProcAttr{Cloneflags: plan.cloneFlags, Pdeathsig: syscall.SIGKILL, PidFD: &pidfd}
	if plan.cloneFlags&unix.CLONE_NEWUSER != 0 {
		sys.UidMappings = idMaps(spec.Linux.UIDMappings)
		sys.GidMappings = idMaps(spec.Linux.GIDMappings)
		sys.GidMappingsEnableSetgroups = true
		// Become root of the new namespace before exec: a process that
		// keeps its unmapped host uid loses every capability at execve.
		sys.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	}
	// syscall.StartProcess, not os/exec: the first os.StartProcess of a
	// process forks and reaps a throwaway child to find out whether the
	// kernel has pidfds (os.checkClonePidfd), one more process on the
	// path of every start (0.3-4 ms in perf trace on the bench machine).
	attr := &syscall.ProcAttr{Env: env, Sys: sys}
	path, files := execThrough(plain, self)
	if join != nil {
		for _, f := range join.Tasks {
			h.cgroupFDs = append(h.cgroupFDs, add(f))
		}
		path, files = execThrough(fds, self)
		h.joining = true
		if join.V2 != nil {
			sys.UseCgroupFD, sys.CgroupFD = true, int(join.V2.Fd())
		}
	}
	attr.Files = files
	argv := []string{"nexus-init", id}
	pid, err := startInPidNS(path, argv, attr, plan.joinPid)
	if err != nil && sys.UseCgroupFD && (errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL)) {
		// A kernel before 5.7 has no clone3 or no CLONE_INTO_CGROUP: fork
		// as before, and the caller moves the init (Manager.Add).
		sys.UseCgroupFD, sys.CgroupFD = false, 0
		h.joining, h.cgroupFDs = false, nil
		path, attr.Files = execThrough(plain, self)
		pid, err = startInPidNS(path, argv, attr, plan.joinPid)
	}
	runtime.KeepAlive(join)
	runtime.KeepAlive(stdio) // their descriptors were passed by number
	runtime.KeepAlive(ln)
	runtime.KeepAlive(console)
	if err != nil {
		parentSock.Close()
		return nil, fmt.Errorf("start the init stage: %w", err)
	}
	h.ch = startWaiter(pid, pidfd)
	if rec := r.recorder(); rec != nil {
		// The init is still waiting for its config: it cannot exit unseen.
		if err := rec.Watch(pid); err != nil {
			r.log.Warn("cannot record the exit status", "id", id, "err", err)
		}
	}
	return h, nil
}

// startWaiter reaps the child in the background once it exits, unless
// keep is set by then; the status is kept for Wait.
func startWaiter(pid, pidfd int) *child {
	ch := &child{pid: pid, pidfd: pidfd, done: make(chan struct{})}
	go func() {
		defer close(ch.done)
		var info unix.Siginfo
		for {
			var err error
			if pidfd >= 0 {
				err = unix.Waitid(unix.P_PIDFD, pidfd, &info, unix.WEXITED|unix.WNOWAIT, nil)
			} else {
				err = unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
			}
			if err != unix.EINTR {
				break
			}
		}
		if !ch.keep.Load() {
			ch.reap()
		}
	}()
	return ch
}

// creation is a Create in progress: what to undo if it fails, and the
// steps after the init is in its cgroup.
type creation struct {
	r       *Runtime
	id, dir string
	b       *bundleSpec
	cg      cgroups.Manager
	late    *specs.LinuxResources // limits applied once the init is ready (splitLate)
	// hostRootfsMount is the mount on rootfs below the container's when
	// it shares the host's mount namespace (0 otherwise).
	hostRootfsMount uint64
	init            *initHandle
	pidFile         string
	undos           []func()
}

func (c *creation) onUndo(f func()) { c.undos = append(c.undos, f) }

func (c *creation) undo() {
	if c.init != nil {
		c.init.kill()
	}
	for i := len(c.undos) - 1; i >= 0; i-- {
		c.undos[i]()
	}
	os.RemoveAll(c.dir)
}

// finish applies rlimits, runs the runtime-side hooks, sends the init its
// config (after the stdio files of a warm init), waits for it to be ready
// and records the container.
func (c *creation) finish(ctx context.Context, cfg *initstage.Config, stdio []*os.File) error {
	spec, pid := c.b.spec, c.init.pid()
	// Hooks run after the runtime environment exists (step 2 of the
	// runtime spec's lifecycle), which the spec calls created.
	state := specs.State{Version: specs.Version, ID: c.id, Status: specs.StateCreated, Pid: pid, Bundle: c.b.bundle, Annotations: spec.Annotations}
	if hasInitHooks(spec.Hooks) {
		data, err := json.Marshal(state)
		if err != nil {
			return err
		}
		cfg.State = data
	}
	if spec.Process != nil && len(spec.Process.Rlimits) > 0 {
		if err := raiseHardLimits(pid, spec.Process.Rlimits); err != nil {
			return c.oomDuringSetup(err)
		}
	}
	if err := runHooks("prestart", initstage.HookList(spec.Hooks, "prestart"), state); err != nil {
		return err
	}
	if err := runHooks("createRuntime", initstage.HookList(spec.Hooks, "createRuntime"), state); err != nil {
		return err
	}
	if stdio != nil {
		if err := sendFiles(c.init.sock, stdio); err != nil {
			return fmt.Errorf("send stdio to init of %s: %w", c.id, c.oomDuringSetup(err))
		}
	}
	if _, err := c.init.sock.Write(initstage.Encode(cfg)); err != nil {
		// The init may already be dead: killed for lack of memory while its
		// Go runtime started (TestMemoryLimitTooLowForSetupIsExplained got
		// this bare broken pipe in 1 of 6 runs).
		return fmt.Errorf("send config to init of %s: %w", c.id, c.oomDuringSetup(err))
	}
	if err := readMessage(ctx, c.init.sock, initstage.MsgReady); err != nil {
		return fmt.Errorf("create %s: %w", c.id, c.oomDuringSetup(err))
	}
	if c.late != nil {
		if err := c.cg.Update(c.late); err != nil {
			return fmt.Errorf("create %s: apply device rules and pids limit: %w", c.id, err)
		}
	}
	startTime, err := processStartTime(pid)
	if err != nil {
		return fmt.Errorf("create %s: init exited early: %w", c.id, err)
	}
	st := &savedState{ID: c.id, Pid: pid, PidStart: startTime, Bundle: c.b.bundle, Rootfs: c.b.rootfs,
		Created: time.Now().UTC(), Annotations: spec.Annotations, Cgroup: c.cg.Saved(), HostRootfsMount: c.hostRootfsMount, Spec: spec, rawSpec: c.b.raw}
	if err := writeState(c.dir, st); err != nil {
		return err
	}
	if c.pidFile != "" {
		if err := writePidFile(c.pidFile, pid); err != nil {
			return err
		}
	}
	c.r.mu.Lock()
	here := &createdHere{init: c.init.ch, start: c.init.sock}
	if stamp, err := stampOf(c.dir); err == nil {
		kept := *st
		kept.rawSpec = nil // only writeState needs it
		here.state, here.stamp = &kept, stamp
	}
	c.r.created[c.id] = here
	c.r.mu.Unlock()
	c.r.log.Debug("container created", "id", c.id, "pid", pid)
	return nil
}

// setupMemoryMiB is about what the init stage needs before the user's
// program runs: measured with nexus-init on kernel 6.18 (v1 memory
// controller), a 1 MiB limit gets it OOM-killed, 1.5 MiB does not.
const setupMemoryMiB = 2

// oomDuringSetup explains an init that died before it was ready because the
// kernel's OOM killer took it: the container's memory limit does not leave
// room even for the runtime's setup, and the bare "connection reset" from
// the sync socket would not say so.
func (c *creation) oomDuringSetup(err error) error {
	if n, cerr := c.cg.OOMKillCount(); cerr != nil || n == 0 {
		return err
	}
	limit := "the memory limit"
	if m := c.b.spec.Linux.Resources; m != nil && m.Memory != nil && m.Memory.Limit != nil {
		limit = fmt.Sprintf("linux.resources.memory.limit (%d bytes)", *m.Memory.Limit)
	}
	return fmt.Errorf("the container was killed for lack of memory during setup, before its process started: %s is too low; "+
		"the runtime's setup alone needs about %d MiB (%w)", limit, setupMemoryMiB, err)
}

// sendFiles passes descriptors over a unix socket (SCM_RIGHTS).
func sendFiles(sock *os.File, files []*os.File) error {
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	return unix.Sendmsg(int(sock.Fd()), []byte{'f'}, unix.UnixRights(fds...), nil, 0)
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

// startInPidNS starts path with attr; when nsPath is set the child is
// forked into that existing pid namespace.
//
// An init dies with this process until it is ready (Pdeathsig), but the
// kernel sends that signal when the thread that forked it ends, not the
// process, and Go ends a thread whenever a goroutine returns with it
// locked (package networking does, after writing a namespace's sysctls).
// Inits forked from whatever thread the caller ran on were killed in the
// middle of Create ("init exited before it was ready"), so they are forked
// from initThread, which lives as long as this process.
func startInPidNS(path string, argv []string, attr *syscall.ProcAttr, nsPath string) (int, error) {
	if nsPath == "" {
		res := make(chan startResult, 1)
		initThread() <- startRequest{path, argv, attr, res}
		r := <-res
		return r.pid, r.err
	}
	res := make(chan startResult, 1)
	go func() {
		// The kernel takes the pid namespace of a new process from the
		// forking thread: this one joins nsPath, forks, and goes back.
		runtime.LockOSThread()
		own, err := unix.Open("/proc/thread-self/ns/pid", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			res <- startResult{err: fmt.Errorf("open own pid namespace: %w", err)}
			return
		}
		defer unix.Close(own)
		fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			res <- startResult{err: fmt.Errorf("open pid namespace %s: %w", nsPath, err)}
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWPID); err != nil {
			runtime.UnlockOSThread()
			res <- startResult{err: fmt.Errorf("join pid namespace %s: %w", nsPath, err)}
			return
		}
		// Not tied to this thread: it would end with it if it cannot go
		// back. The init clears it anyway once it is ready.
		attr.Sys.Pdeathsig = 0
		pid, err := syscall.ForkExec(path, argv, attr)
		// Back in its own namespace the thread can serve any goroutine;
		// otherwise it ends with this one. Ending it would kill what other
		// code forked from it earlier with a Pdeathsig.
		if unix.Setns(own, unix.CLONE_NEWPID) == nil {
			runtime.UnlockOSThread()
		}
		res <- startResult{pid, err}
	}()
	r := <-res
	return r.pid, r.err
}

// startRequest asks initThread to start path and send the result to res.
type startRequest struct {
	path string
	argv []string
	attr *syscall.ProcAttr
	res  chan<- startResult
}

type startResult struct {
	pid int
	err error
}

// initThread returns the requests channel of a goroutine that starts
// processes from its own OS thread, locked for the life of this process
// (see startInPidNS). It is one per process, not per Runtime, because the
// thread must outlive every init forked from it until the init is ready.
var initThread = sync.OnceValue(func() chan<- startRequest {
	reqs := make(chan startRequest)
	go func() {
		runtime.LockOSThread() // never unlocked, and this goroutine never returns
		for req := range reqs {
			pid, err := syscall.ForkExec(req.path, req.argv, req.attr)
			req.res <- startResult{pid, err}
		}
	}()
	return reqs
})

// readMessage waits for the init's next message and wants it to be of
// type want; an error message becomes the error. Cancelling ctx ends the
// wait: shutting down the reading side of the socket ends the read. The
// wait runs in the caller's goroutine: one in the background would hold a
// thread of its own while it blocks (see signalRelay in cmd/internal/ocicli
// for what each thread costs a short-lived process).
func readMessage(ctx context.Context, sock *os.File, want string) error {
	fd := int(sock.Fd())
	stop := context.AfterFunc(ctx, func() { _ = unix.Shutdown(fd, unix.SHUT_RD) })
	line, err := readLine(sock)
	if !stop() {
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("init exited before it was %s: %w", want, err)
	}
	// The message the init sends when all is well, written by hand there
	// (initstage.writeMessage): no JSON decoder is built for it.
	if string(line) == `{"type":"`+want+`"}` {
		return nil
	}
	var m initstage.Message
	if err := json.Unmarshal(line, &m); err != nil {
		return fmt.Errorf("malformed message from init: %w", err)
	}
	if m.Type == initstage.MsgError {
		return errors.New(m.Error)
	}
	if m.Type != want {
		return fmt.Errorf("unexpected message %q from init", m.Type)
	}
	return nil
}

// readLine reads one line (without its newline). The init writes each
// message in one write and sends nothing more until it is answered, so
// nothing after the line is consumed.
func readLine(r io.Reader) ([]byte, error) {
	var line []byte
	buf := make([]byte, 512)
	for len(line) < maxMessageSize {
		n, err := r.Read(buf)
		line = append(line, buf[:n]...)
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			return line[:i], nil
		}
		if err != nil {
			return nil, err
		}
	}
	return nil, errors.New("message from init too long")
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

// splitLate separates the limits that would stop the runtime's own setup
// from the others: they are applied once the init is ready. The device
// rules: the init makes the container's device nodes, and mknod needs the
// "m" access that a deny-all rule takes away (runc applies them at the same
// point). The pids limit: on cgroup v2 the init is born in the cgroup
// (cgroups.Join), and its Go runtime starts threads, which a low limit
// would refuse. Until then the init runs nothing but the runtime's setup.
func splitLate(r *specs.LinuxResources) (limits, late *specs.LinuxResources) {
	if r == nil || len(r.Devices) == 0 && r.Pids == nil {
		return r, nil
	}
	l := *r
	l.Devices, l.Pids = nil, nil
	return &l, &specs.LinuxResources{Devices: r.Devices, Pids: r.Pids}
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
	for _, d := range initstage.DefaultDevices {
		out.Devices = append(out.Devices, dev(d.Major, d.Minor))
	}
	out.Devices = append(out.Devices, dev(5, 2), dev(136, -1)) // /dev/ptmx, /dev/pts/*
	return &out
}
