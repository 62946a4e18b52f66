package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/runtime/cgroups"
	"nexus.dev/nexus/runtime/initstage"
	"nexus.dev/nexus/runtime/spec"
)

// ExecOptions are the choices of Exec.
type ExecOptions struct {
	Stdin          *os.File
	Stdout, Stderr *os.File
	ConsoleSocket  string
	// Console, when proc.Terminal is set and ConsoleSocket is empty,
	// receives the pty master before Exec returns, so that the caller is
	// the terminal's other end (as CreateOptions.Console).
	Console     func(master *os.File)
	PidFile     string
	PreserveFDs int
	// Detach leaves the process to whoever inherits it once the caller
	// exits, unreaped, as runc exec --detach does: conmon waits for it as
	// a subreaper and reads its exit status. Without it a short process
	// could be reaped by this one first, and its status lost (podman exec
	// then reported exit code -1).
	Detach bool
}

// Process is a process started in a running container by Exec.
type Process struct {
	Pid int
	ch  *child
}

// Wait blocks until the process exits.
func (p *Process) Wait(ctx context.Context) (ExitStatus, error) {
	select {
	case <-p.ch.done:
		return exitStatusOf(p.ch.ws), nil
	case <-ctx.Done():
		return ExitStatus{}, ctx.Err()
	}
}

// Exec starts proc inside a running container: in all its namespaces, its
// cgroup, its root, with proc's own user, capabilities and limits, and the
// container's seccomp profile.
func (r *Runtime) Exec(ctx context.Context, id string, proc *specs.Process, opts ExecOptions) (*Process, error) {
	if err := checkPreserved(opts.PreserveFDs); err != nil {
		return nil, fmt.Errorf("exec in %s: %w", id, err)
	}
	st, dir, release, err := r.open(id)
	if err != nil {
		return nil, err
	}
	defer release()
	if s := st.status(dir); s != specs.StateRunning {
		return nil, fmt.Errorf("container %s is %s: exec needs a running container", id, s)
	}
	if err := spec.ValidateProcess(proc); err != nil {
		return nil, err
	}
	r.warnCapabilities(id, proc)
	s := *st.Spec
	s.Process = proc
	ispec, filter, err := specForInit(&s, r.filters.compile)
	if err != nil {
		return nil, err
	}
	cfg := &initstage.Config{Mode: "exec", ID: id, Bundle: st.Bundle, Rootfs: st.Rootfs, Spec: ispec, Seccomp: filter, PreserveFDs: opts.PreserveFDs}
	var joinPid string
	if !spec.HasNamespace(st.Spec.Linux, specs.MountNamespace) {
		cfg.Chroot = "/proc/" + strconv.Itoa(st.Pid) + "/root"
	}
	for _, ns := range st.Spec.Linux.Namespaces {
		path := "/proc/" + strconv.Itoa(st.Pid) + "/ns/" + nsProcName[ns.Type]
		switch ns.Type {
		case specs.UserNamespace:
			if ns.Path == "" {
				return nil, fmt.Errorf("exec into %s: the container has its own user namespace, which a Go process cannot join: not supported yet", id)
			}
		case specs.TimeNamespace:
			return nil, fmt.Errorf("exec into %s: joining a time namespace is not supported", id)
		case specs.PIDNamespace:
			joinPid = path
		default:
			cfg.JoinNS = append(cfg.JoinNS, specs.LinuxNamespace{Type: ns.Type, Path: path})
		}
	}
	cg, err := cgroups.Load(st.Cgroup)
	if err != nil {
		return nil, fmt.Errorf("exec into %s: %w", id, err)
	}

	var console, consoleHere *os.File
	switch {
	case opts.ConsoleSocket != "":
		if console, err = dialConsole(opts.ConsoleSocket); err != nil {
			return nil, err
		}
		defer console.Close()
	case opts.Console != nil && proc.Terminal:
		if consoleHere, console, err = socketPair(); err != nil {
			return nil, err
		}
		defer consoleHere.Close()
		defer console.Close()
	}
	stdio := [3]*os.File{stdio(opts.Stdin, os.Stdin), stdio(opts.Stdout, os.Stdout), stdio(opts.Stderr, os.Stderr)}
	h, err := r.forkInit(id, stdio, opts.PreserveFDs, nil, console, nsPlan{joinPid: joinPid}, &s, false, nil)
	if err != nil {
		return nil, fmt.Errorf("exec into %s: %w", id, err)
	}
	defer h.sock.Close()
	cfg.ConsoleFD = h.consoleFD
	ch, parentSock, pid := h.ch, h.sock, h.pid()
	fail := func(err error) (*Process, error) {
		ch.keep.Store(false)
		h.kill()
		return nil, fmt.Errorf("exec into %s: %w", id, err)
	}
	// The process waits for its config below; it cannot exit on its own
	// before then.
	ch.keep.Store(opts.Detach)
	if err := cg.Add(pid); err != nil {
		return fail(err)
	}
	if len(proc.Rlimits) > 0 {
		if err := raiseHardLimits(pid, proc.Rlimits); err != nil {
			return fail(err)
		}
	}
	if _, err := parentSock.Write(initstage.Encode(cfg)); err != nil {
		return fail(err)
	}
	// On success the init execs and its end of the socket closes: EOF.
	var msg initstage.Message
	if err := json.NewDecoder(parentSock).Decode(&msg); err == nil && msg.Type == "error" {
		ch.keep.Store(false)
		<-ch.done
		ch.reap()
		return nil, fmt.Errorf("exec into %s: %s", id, msg.Error)
	} else if err != nil && !errors.Is(err, io.EOF) {
		return fail(err)
	}
	if consoleHere != nil {
		// The init sent the master before it exec'd the process.
		master, err := receiveConsole(consoleHere)
		if err != nil {
			_ = unix.Kill(pid, unix.SIGKILL)
			return nil, fmt.Errorf("exec into %s: %w", id, err)
		}
		opts.Console(master)
	}
	if opts.PidFile != "" {
		if err := writePidFile(opts.PidFile, pid); err != nil {
			return nil, err
		}
	}
	return &Process{Pid: pid, ch: ch}, nil
}

var nsProcName = map[specs.LinuxNamespaceType]string{
	specs.PIDNamespace: "pid", specs.NetworkNamespace: "net", specs.MountNamespace: "mnt",
	specs.IPCNamespace: "ipc", specs.UTSNamespace: "uts", specs.UserNamespace: "user",
	specs.CgroupNamespace: "cgroup", specs.TimeNamespace: "time",
}
