package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"nexus.dev/nexus/runtime/cgroups"
)

// ExecOptions are the choices of Exec.
type ExecOptions struct {
	Stdin          *os.File
	Stdout, Stderr *os.File
	ConsoleSocket  string
	PidFile        string
	PreserveFDs    int
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
	st, dir, release, err := r.open(id)
	if err != nil {
		return nil, err
	}
	defer release()
	if s := st.status(dir); s != specs.StateRunning {
		return nil, fmt.Errorf("container %s is %s: exec needs a running container", id, s)
	}
	if err := validateProcess(proc, "process"); err != nil {
		return nil, err
	}
	spec := *st.Spec
	spec.Process = proc
	ispec, filter, err := initSpec(&spec)
	if err != nil {
		return nil, err
	}
	cfg := &initConfig{Mode: "exec", ID: id, Bundle: st.Bundle, Rootfs: st.Rootfs, Spec: ispec, Seccomp: filter, PreserveFDs: opts.PreserveFDs}
	var joinPid string
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
	cg, err := cgroups.Load(st.Cgroup.Paths)
	if err != nil {
		return nil, fmt.Errorf("exec into %s: %w", id, err)
	}

	var console *os.File
	if opts.ConsoleSocket != "" {
		c, err := net.Dial("unix", opts.ConsoleSocket)
		if err != nil {
			return nil, fmt.Errorf("connect to --console-socket %s: %w", opts.ConsoleSocket, err)
		}
		console, err = c.(*net.UnixConn).File()
		c.Close()
		if err != nil {
			return nil, err
		}
		defer console.Close()
	}
	parentSock, childSock, err := socketPair()
	if err != nil {
		return nil, err
	}
	defer parentSock.Close()
	self, err := sealedSelf()
	if err != nil {
		childSock.Close()
		return nil, err
	}
	defer self.Close()
	cmd := &exec.Cmd{Path: execPath(self), Args: []string{"nexus-init", id}}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdio(opts.Stdin, os.Stdin), stdio(opts.Stdout, os.Stdout), stdio(opts.Stderr, os.Stderr)
	for i := 0; i < opts.PreserveFDs; i++ {
		cmd.ExtraFiles = append(cmd.ExtraFiles, os.NewFile(uintptr(3+i), "preserved"))
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, childSock)
	syncFD := 2 + len(cmd.ExtraFiles)
	if console != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, console)
		cfg.ConsoleFD = 2 + len(cmd.ExtraFiles)
	}
	cmd.Env = []string{initEnv + "=" + strconv.Itoa(syncFD)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := startInPidNS(cmd, joinPid); err != nil {
		childSock.Close()
		return nil, fmt.Errorf("exec into %s: %w", id, err)
	}
	childSock.Close()
	ch := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		if cmd.ProcessState != nil {
			ch.ws = cmd.ProcessState.Sys().(syscall.WaitStatus)
		}
		close(ch.done)
	}()
	fail := func(err error) (*Process, error) {
		_ = cmd.Process.Kill()
		<-ch.done
		return nil, fmt.Errorf("exec into %s: %w", id, err)
	}
	if err := cg.Add(cmd.Process.Pid); err != nil {
		return fail(err)
	}
	if len(proc.Rlimits) > 0 {
		if err := setRlimits(cmd.Process.Pid, proc.Rlimits); err != nil {
			return fail(err)
		}
	}
	if err := json.NewEncoder(parentSock).Encode(cfg); err != nil {
		return fail(err)
	}
	// On success the init execs and its end of the socket closes: EOF.
	var msg initMessage
	if err := json.NewDecoder(parentSock).Decode(&msg); err == nil && msg.Type == "error" {
		<-ch.done
		return nil, fmt.Errorf("exec into %s: %s", id, msg.Error)
	} else if err != nil && !errors.Is(err, io.EOF) {
		return fail(err)
	}
	if opts.PidFile != "" {
		if err := writePidFile(opts.PidFile, cmd.Process.Pid); err != nil {
			return nil, err
		}
	}
	return &Process{Pid: cmd.Process.Pid, ch: ch}, nil
}

var nsProcName = map[specs.LinuxNamespaceType]string{
	specs.PIDNamespace: "pid", specs.NetworkNamespace: "net", specs.MountNamespace: "mnt",
	specs.IPCNamespace: "ipc", specs.UTSNamespace: "uts", specs.UserNamespace: "user",
	specs.CgroupNamespace: "cgroup", specs.TimeNamespace: "time",
}
