package initstage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// EnvFD carries the number of the sync socket to the init stage; its
// presence is what makes a program act as an init (see IsInit). EnvWarm
// marks an init forked ahead of its container (see runtime.Prewarm): it
// first receives its stdio over the sync socket.
const (
	EnvFD   = "_NEXUS_INIT_FD"
	EnvWarm = "_NEXUS_INIT_WARM"
)

// Message types the init sends its parent: MsgReady when the container is
// created, MsgIdle when a warm init waits for its container, MsgError with
// the reason it failed.
const (
	MsgReady = "ready"
	MsgIdle  = "idle"
	MsgError = "error"
)

// Message is what the init stage reports to its parent: one JSON object
// per line (written by hand: see writeMessage).
type Message struct {
	Type  string `json:"type"`
	Error string `json:"error,omitempty"`
}

// IsInit reports whether this process was started as a container init
// stage. A program that can be one calls it before anything else.
func IsInit() bool { return os.Getenv(EnvFD) != "" }

// Main is the init stage. It never returns: it execs the container's
// process or exits with status 1 after reporting the error to the parent.
// The caller must have locked the main goroutine to the main OS thread
// (runtime.LockOSThread in an init function) since namespaces and
// credentials are per thread until execve.
func Main() {
	fd, err := strconv.Atoi(os.Getenv(EnvFD))
	if err != nil {
		os.Stderr.WriteString("nexus init: bad " + EnvFD + "\n")
		os.Exit(1)
	}
	os.Unsetenv(EnvFD)
	sync := os.NewFile(uintptr(fd), "sync")
	if os.Getenv(EnvWarm) != "" {
		os.Unsetenv(EnvWarm)
		if err := send(sync, MsgIdle); err != nil {
			os.Exit(1)
		}
		if err := receiveStdio(fd); err != nil {
			fail(sync, err)
		}
	}
	cfg, err := readConfig(sync)
	if err != nil {
		fail(sync, fmt.Errorf("read init config: %w", err))
	}
	rep := &reporter{w: sync, sync: sync}
	err = runInit(cfg, rep)
	fail(rep.w, err)
}

// readConfig reads one message written by Encode.
func readConfig(r io.Reader) (*Config, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := binary.LittleEndian.Uint32(n[:])
	if size > MaxConfigSize {
		return nil, fmt.Errorf("init config of %d bytes is larger than %d", size, MaxConfigSize)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return Decode(b)
}

// receiveStdio takes the container's stdin, stdout and stderr from the
// parent (SCM_RIGHTS) and makes them descriptors 0, 1 and 2.
func receiveStdio(sock int) error {
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(3*4))
	_, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return fmt.Errorf("receive stdio: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return fmt.Errorf("receive stdio: malformed message")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 3 {
		return fmt.Errorf("receive stdio: want 3 descriptors")
	}
	for i, fd := range fds {
		if err := unix.Dup3(fd, i, 0); err != nil {
			return fmt.Errorf("receive stdio: %w", err)
		}
		unix.Close(fd)
	}
	return nil
}

// reporter is where the init reports an error: its parent until the
// container is created, then whoever started it.
type reporter struct {
	w    io.Writer
	sync *os.File // the socket to the parent
}

func fail(sync io.Writer, err error) {
	if err == nil {
		err = errors.New("init returned without exec")
	}
	_ = writeMessage(sync, Message{Type: MsgError, Error: err.Error()})
	os.Exit(1)
}

func send(sync io.Writer, typ string) error { return writeMessage(sync, Message{Type: typ}) }

// writeMessage writes m as one line of JSON, as encoding/json would,
// without linking it into the init.
func writeMessage(w io.Writer, m Message) error {
	b := append([]byte(`{"type":`), quoteJSON(m.Type)...)
	if m.Error != "" {
		b = append(append(b, `,"error":`...), quoteJSON(m.Error)...)
	}
	_, err := w.Write(append(b, "}\n"...))
	return err
}

// quoteJSON returns s as a JSON string. Bytes that are not UTF-8 pass
// through; a JSON decoder reads each as U+FFFD.
func quoteJSON(s string) []byte {
	const hex = "0123456789abcdef"
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

func runInit(cfg *Config, rep *reporter) error {
	s := cfg.Spec
	proc := s.Process
	if err := joinCgroups(cfg.CgroupFDs); err != nil {
		return err
	}
	if err := joinNamespaces(cfg.JoinNS); err != nil {
		return err
	}
	if cfg.Chroot != "" {
		if err := chrootTo(cfg.Chroot); err != nil {
			return err
		}
	}
	if cfg.NewCgroupNS {
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			return fmt.Errorf("create cgroup namespace: %w", err)
		}
	}
	if cfg.NewTimeNS {
		if err := setupTimeNS(s.Linux.TimeOffsets); err != nil {
			return err
		}
	}
	if cfg.Mode == "create" {
		if cfg.NewNetNS {
			if err := loopbackUp(); err != nil {
				return err
			}
		}
		if err := setupSysctls(s.Linux.Sysctl); err != nil {
			return err
		}
		if err := buildRootfs(cfg); err != nil {
			return err
		}
		if s.Hostname != "" {
			if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
				return fmt.Errorf("hostname %q: %w", s.Hostname, err)
			}
		}
		if s.Domainname != "" {
			if err := unix.Setdomainname([]byte(s.Domainname)); err != nil {
				return fmt.Errorf("domainname %q: %w", s.Domainname, err)
			}
		}
	}
	if p := s.Linux.Personality; p != nil {
		if _, _, errno := unix.Syscall(unix.SYS_PERSONALITY, uintptr(PersonalityDomains[p.Domain]), 0, 0); errno != 0 {
			return fmt.Errorf("linux.personality %s: %w", p.Domain, errno)
		}
	}
	if _, err := unix.Setsid(); err != nil {
		return fmt.Errorf("setsid: %w", err)
	}
	if proc == nil {
		return waitWithoutProcess(cfg, rep)
	}
	if proc.Terminal {
		if err := setupConsole(cfg); err != nil {
			return err
		}
	}
	if proc.OOMScoreAdj != nil {
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(*proc.OOMScoreAdj)), 0); err != nil {
			return fmt.Errorf("process.oomScoreAdj: %w", err)
		}
	}
	umask := 0o022
	if proc.User.Umask != nil {
		umask = int(*proc.User.Umask)
	}
	unix.Umask(umask)

	// The user's seccomp profile is loaded last, together with execve
	// (LoadAndExec), so that nothing the runtime or the Go scheduler
	// does depends on syscalls the profile may deny (an old profile without
	// close_range, one that denies prctl, capset or futex). Without no_new_privs loading a filter needs CAP_SYS_ADMIN, so the
	// process keeps it in its effective and permitted sets until then:
	// execve computes the program's sets from the bounding, inheritable and
	// ambient sets alone, so the extra capability never reaches it.
	filter := cfg.Seccomp
	if err := switchUser(proc, filter != nil && !proc.NoNewPrivileges); err != nil {
		return err
	}
	if proc.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("process.noNewPrivileges: %w", err)
		}
	}
	if err := unix.Chdir(proc.Cwd); err != nil {
		return fmt.Errorf("process.cwd %s: %w", proc.Cwd, err)
	}
	if wd, err := unix.Getwd(); err != nil || !strings.HasPrefix(wd, "/") {
		// A cwd reached through a leaked host fd reads "(unreachable)/…".
		return fmt.Errorf("process.cwd %s is outside the container's root filesystem", proc.Cwd)
	}
	path, err := lookPath(proc.Args[0], proc.Env)
	if err != nil {
		return err
	}
	// Nothing of the runtime may leak into the container: every descriptor
	// above the preserved ones closes on exec.
	if err := closeOnExecFrom(3 + cfg.PreserveFDs); err != nil {
		return fmt.Errorf("mark descriptors close-on-exec: %w", err)
	}
	if cfg.Mode == "create" {
		if err := readyThenWaitForStart(cfg, rep); err != nil {
			return err
		}
		if err := RunHooks("startContainer", HookList(s.Hooks, "startContainer"), cfg.State); err != nil {
			return err
		}
	} else if err := unix.Prctl(unix.PR_SET_PDEATHSIG, 0, 0, 0, 0); err != nil {
		// Set up, the process no longer dies with the runtime that forked
		// it, as a created container's does not: `exec --detach` leaves it
		// running when the command exits (a container without a pid
		// namespace of its own got SIGKILL then).
		return fmt.Errorf("clear the parent-death signal: %w", err)
	}
	if err := setRlimits(proc.Rlimits); err != nil {
		return err
	}
	if filter != nil {
		return LoadAndExec(filter, path, proc.Args, proc.Env)
	}
	err = unix.Exec(path, proc.Args, proc.Env)
	return fmt.Errorf("exec %s: %w", path, err)
}

// readyThenWaitForStart ends create: the init stops dying with its parent
// (which may exit now), reports ready and waits for start, to which it
// then reports.
func readyThenWaitForStart(cfg *Config, rep *reporter) error {
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, 0, 0, 0, 0); err != nil {
		return err
	}
	if err := send(rep.w, MsgReady); err != nil {
		return err
	}
	conn, err := waitForStart(int(rep.sync.Fd()), cfg.StartFD)
	if err != nil {
		return err
	}
	if conn != nil {
		rep.w = conn
	}
	return nil
}

// waitWithoutProcess is the init of a spec without a process, which the
// runtime spec allows: the container is created, and start is what fails.
func waitWithoutProcess(cfg *Config, rep *reporter) error {
	if err := readyThenWaitForStart(cfg, rep); err != nil {
		return err
	}
	return errors.New("config.json: process: not set, so there is nothing to start: add a process to the bundle's config.json and create the container again")
}

// closeOnExecFrom marks every descriptor from lowest up close-on-exec:
// close_range(CLOSE_RANGE_CLOEXEC) where the kernel has it (5.11), else one
// fcntl per descriptor listed in /proc/self/fd.
func closeOnExecFrom(lowest int) error {
	err := unix.CloseRange(uint(lowest), ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil || !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) {
		return err
	}
	dir, err := os.Open("/proc/self/fd")
	if err != nil {
		return err
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd < lowest || fd == int(dir.Fd()) {
			continue
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && !errors.Is(err, unix.EBADF) {
			return err
		}
	}
	return nil
}

func buildRootfs(cfg *Config) error {
	r := &rootfsSetup{cfg: cfg}
	defer r.close()
	if err := r.prepare(); err != nil {
		return err
	}
	if err := r.mountAll(); err != nil {
		return err
	}
	if err := r.createDevices(); err != nil {
		return err
	}
	if err := r.createDevSymlinks(); err != nil {
		return err
	}
	// The process's cwd must exist; create it the way the image would.
	if p := cfg.Spec.Process; p != nil {
		rel, err := resolveInRoot(cfg.Rootfs, p.Cwd)
		if err != nil {
			return fmt.Errorf("process.cwd: %w", err)
		}
		d, err := mkdirAllInRoot(r.rootFd, rel, 0o755)
		if err != nil {
			return fmt.Errorf("process.cwd %s: %w", p.Cwd, err)
		}
		d.Close()
	}
	if err := RunHooks("createContainer", HookList(cfg.Spec.Hooks, "createContainer"), cfg.State); err != nil {
		return err
	}
	if err := r.pivot(); err != nil {
		return err
	}
	return finishRootfs(cfg.Spec)
}

// joinCgroups moves this thread into the container's cgroup v1
// hierarchies by writing "0" to their tasks files, open on fds, and closes
// them. The kernel moves a thread that moves itself without the global lock
// that moving a process by pid takes (see cgroups.Join). The init's other
// threads, which run nothing but the Go runtime, stay outside; execve ends
// them.
func joinCgroups(fds []int) error {
	var err error
	for _, fd := range fds {
		if err == nil {
			err = writeZero(fd)
		}
		unix.Close(fd)
	}
	if err != nil {
		return fmt.Errorf("join the container's cgroup: %w", err)
	}
	return nil
}

func writeZero(fd int) error {
	for {
		_, err := unix.Write(fd, []byte("0"))
		if err != unix.EINTR {
			return err
		}
	}
}

// joinNamespaces enters namespaces given by path. The mount namespace is
// entered last (its paths would no longer resolve after), and only after this
// thread stops sharing its file-system attributes with the others, which the
// kernel requires of a multi-threaded process.
func joinNamespaces(nss []specs.LinuxNamespace) error {
	type open struct {
		fd   int
		kind specs.LinuxNamespaceType
	}
	var opened []open
	defer func() {
		for _, o := range opened {
			unix.Close(o.fd)
		}
	}()
	for _, ns := range nss {
		fd, err := unix.Open(ns.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s namespace %s: %w", ns.Type, ns.Path, err)
		}
		opened = append(opened, open{fd, ns.Type})
	}
	for _, o := range opened {
		if o.kind == specs.MountNamespace {
			continue
		}
		if err := unix.Setns(o.fd, int(NamespaceFlags[o.kind])); err != nil {
			return fmt.Errorf("join %s namespace: %w", o.kind, err)
		}
	}
	for _, o := range opened {
		if o.kind != specs.MountNamespace {
			continue
		}
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return fmt.Errorf("unshare fs attributes: %w", err)
		}
		if err := unix.Setns(o.fd, unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("join mount namespace: %w", err)
		}
	}
	return nil
}

func setupTimeNS(offsets map[string]specs.LinuxTimeOffset) error {
	if err := unix.Unshare(unix.CLONE_NEWTIME); err != nil {
		return fmt.Errorf("create time namespace: %w", err)
	}
	var b strings.Builder
	for clock, off := range offsets {
		fmt.Fprintf(&b, "%s %d %d\n", clock, off.Secs, off.Nanosecs)
	}
	if b.Len() == 0 {
		return nil
	}
	if err := os.WriteFile("/proc/self/timens_offsets", []byte(b.String()), 0); err != nil {
		return fmt.Errorf("linux.timeOffsets: %w", err)
	}
	return nil
}

// loopbackUp brings up lo in a new network namespace, as every container
// runtime does: many programs assume localhost works.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring up loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up loopback: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up loopback: %w", err)
	}
	return nil
}

// setupSysctls writes the (already validated, namespaced) sysctls through
// /proc/sys, which at this point reflects the container's namespaces.
func setupSysctls(sysctls map[string]string) error {
	for k, v := range sysctls {
		p := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
		if err := os.WriteFile(p, []byte(v), 0); err != nil {
			return fmt.Errorf("linux.sysctl[%s]: %w", k, err)
		}
	}
	return nil
}

// switchUser drops the bounding set, changes groups and ids keeping the
// capabilities the spec asks for, then sets them exactly. With keepAdmin the
// effective and permitted sets also keep CAP_SYS_ADMIN, which loading a
// seccomp filter without no_new_privs needs (see runInit).
func switchUser(p *specs.Process, keepAdmin bool) error {
	var caps capabilities
	if c := p.Capabilities; c != nil {
		caps = capabilities{Bounding: capSetOf(c.Bounding), Effective: capSetOf(c.Effective),
			Inheritable: capSetOf(c.Inheritable), Permitted: capSetOf(c.Permitted), Ambient: capSetOf(c.Ambient)}
	}
	// What the runtime does not hold cannot be granted; Create warned.
	have, err := Grantable()
	if err != nil {
		return err
	}
	caps = caps.within(have)
	if err := caps.dropBounding(); err != nil {
		return fmt.Errorf("process.capabilities.bounding: %w", err)
	}
	// The kernel raises an ambient capability only if it is permitted and
	// inheritable; the others are left out, as runc and crun do (Create
	// logs them).
	caps.Ambient &= caps.Permitted & caps.Inheritable
	if keepAdmin {
		caps.Effective |= 1 << capSysAdmin
		caps.Permitted |= 1 << capSysAdmin
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("keep capabilities across setuid: %w", err)
	}
	groups := make([]int, len(p.User.AdditionalGids))
	for i, g := range p.User.AdditionalGids {
		groups[i] = int(g)
	}
	if err := unix.Setgroups(groups); err != nil && !(len(groups) == 0 && errors.Is(err, unix.EPERM)) {
		return fmt.Errorf("process.user.additionalGids: %w", err)
	}
	if err := setresid(unix.SYS_SETRESGID, p.User.GID); err != nil {
		return fmt.Errorf("process.user.gid %d: %w (is it mapped in the user namespace?)", p.User.GID, err)
	}
	if err := setresid(unix.SYS_SETRESUID, p.User.UID); err != nil {
		return fmt.Errorf("process.user.uid %d: %w (is it mapped in the user namespace?)", p.User.UID, err)
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return err
	}
	if err := caps.apply(); err != nil {
		return fmt.Errorf("process.capabilities: %w", err)
	}
	return nil
}

// setresid sets the real, effective and saved uid (SYS_SETRESUID) or gid
// (SYS_SETRESGID) of the calling thread only, like setgroups, capset and
// prctl here. unix.Setresuid and unix.Setresgid change every thread of the
// process (syscall.AllThreadsSyscall: the world stopped, a signal to each
// thread), which took the init 2-5 ms of a start, for nothing: only this
// thread execs, and execve ends the others, which run nothing but the Go
// runtime.
func setresid(nr uintptr, id uint32) error {
	if _, _, errno := unix.RawSyscall(nr, uintptr(id), uintptr(id), uintptr(id)); errno != 0 {
		return errno
	}
	return nil
}

// lookPath finds the program as the container's PATH would.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		if err := isExecutable(name); err != nil {
			return "", fmt.Errorf("process.args[0] %s: %w", name, err)
		}
		return name, nil
	}
	pathVar := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathVar = v
		}
	}
	for _, dir := range filepath.SplitList(pathVar) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if isExecutable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("process.args[0]: executable %q not found in the container's PATH (%s)", name, pathVar)
}

func isExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return errors.New("is a directory")
	}
	if fi.Mode()&0o111 == 0 {
		return errors.New("permission denied: not executable")
	}
	return nil
}

// waitForStart blocks until the container is started: by the process
// that created it, which writes one byte to the sync socket (`run` and the
// agent), or by a start command, which connects to the start socket. It
// returns that connection, or nil for a start over the sync socket. When
// the creating process exits without starting the container (a create
// command), the sync socket reads end-of-file and only the start socket is
// watched.
func waitForStart(syncFD, listenFD int) (*os.File, error) {
	fds := []unix.PollFd{{Fd: int32(listenFD), Events: unix.POLLIN}, {Fd: int32(syncFD), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return nil, fmt.Errorf("wait for start: %w", err)
		}
		if len(fds) > 1 && fds[1].Revents != 0 {
			var b [1]byte
			n, err := unix.Read(syncFD, b[:])
			if err == unix.EINTR {
				continue
			}
			if n == 1 {
				unix.Close(listenFD)
				return nil, nil
			}
			fds = fds[:1] // the creating process is gone
		}
		if fds[0].Revents == 0 {
			continue
		}
		nfd, _, err := unix.Accept4(listenFD, unix.SOCK_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("wait for start: %w", err)
		}
		unix.Close(listenFD)
		f := os.NewFile(uintptr(nfd), "start")
		var b [1]byte
		if _, err := f.Read(b[:]); err != nil {
			return nil, fmt.Errorf("wait for start: %w", err)
		}
		return f, nil
	}
}
