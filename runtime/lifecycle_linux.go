package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/runtime/cgroups"
	"nexus.dev/nexus/runtime/initstage"
)

// open reads a container's state and locks it; call release when done.
func (r *Runtime) open(id string) (st *savedState, dir string, release func(), err error) {
	if err := ValidateID(id); err != nil {
		return nil, "", nil, err
	}
	dir = containerDir(r.root, id)
	if _, err := os.Stat(dir); err != nil {
		return nil, "", nil, fmt.Errorf("container %s: %w (list containers with %s)", id, ErrNotExist, command(r.root, "list"))
	}
	release, err = lockContainer(dir)
	if err != nil {
		return nil, "", nil, err
	}
	st, err = r.state(id, true)
	if err != nil {
		release()
		return nil, "", nil, err
	}
	return st, dir, release, nil
}

// state returns a container's state, with its spec if withSpec is set:
// as this process wrote it at create if state.json is still that file,
// else read from state.json.
func (r *Runtime) state(id string, withSpec bool) (*savedState, error) {
	r.mu.Lock()
	c := r.created[id]
	r.mu.Unlock()
	if c != nil && c.state != nil {
		if stamp, err := stampOf(containerDir(r.root, id)); err == nil && stamp == c.stamp {
			st := *c.state
			return &st, nil
		}
	}
	if withSpec {
		return readState(r.root, id)
	}
	return readStateNoSpec(r.root, id)
}

// Start runs the user's process of a created container.
func (r *Runtime) Start(ctx context.Context, id string) error {
	st, dir, release, err := r.open(id)
	if err != nil {
		return err
	}
	defer release()
	if s := st.status(dir); s != specs.StateCreated {
		return fmt.Errorf("container %s is %s: only a created container can be started", id, s)
	}
	sock := filepath.Join(dir, startSocket)
	var startErr error
	if syncSock := r.takeStartSocket(id, st.Pid); syncSock != nil {
		startErr = startOverSync(syncSock)
	} else {
		startErr = startContainer(dir)
	}
	// Without the socket the container counts as started (see status).
	if err := os.Remove(sock); err != nil {
		return fmt.Errorf("start %s: %w", id, err)
	}
	if startErr != nil {
		return fmt.Errorf("start %s: %w", id, startErr)
	}
	if hooks := initstage.HookList(st.Spec.Hooks, "poststart"); len(hooks) > 0 {
		// The program has been started, which is what poststart hooks are
		// told, even when it has already exited again.
		state := specs.State{Version: specs.Version, ID: st.ID, Status: specs.StateRunning, Pid: st.Pid,
			Bundle: st.Bundle, Annotations: st.Annotations}
		if err := runHooks("poststart", hooks, state); err != nil {
			// The runtime spec makes poststart failures warnings.
			r.log.Warn("poststart hook failed", "id", id, "err", err)
		}
	}
	return nil
}

// State returns the OCI state of a container.
func (r *Runtime) State(id string) (specs.State, error) {
	st, err := readStateNoSpec(r.root, id)
	if err != nil {
		return specs.State{}, err
	}
	return st.ociState(containerDir(r.root, id)), nil
}

// List returns the state of every container under the root, sorted by id.
func (r *Runtime) List() ([]specs.State, error) {
	entries, err := os.ReadDir(r.root)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []specs.State
	for _, e := range entries {
		if !e.IsDir() || ValidateID(e.Name()) != nil {
			continue
		}
		s, err := r.State(e.Name())
		if err != nil {
			continue // being created or deleted right now
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Kill sends sig to the container's init, or with all to every process in
// its cgroup.
func (r *Runtime) Kill(id string, sig syscall.Signal, all bool) error {
	st, dir, release, err := r.open(id)
	if err != nil {
		return err
	}
	defer release()
	if st.status(dir) == specs.StateStopped {
		return fmt.Errorf("container %s is stopped: nothing to signal", id)
	}
	if all {
		cg, err := cgroups.Load(st.Cgroup)
		if err != nil {
			return fmt.Errorf("signal %s: %w", id, err)
		}
		return cg.KillAll(sig)
	}
	return signalProcess(st, sig)
}

// signalProcess signals the init through a pidfd after checking that the
// pid still names the same process, so a recycled pid is never signalled.
func signalProcess(st *savedState, sig syscall.Signal) error {
	pidfd, err := unix.PidfdOpen(st.Pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("container %s has exited", st.ID)
		}
		return fmt.Errorf("signal %s: %w", st.ID, err)
	}
	defer unix.Close(pidfd)
	if !st.alive() {
		return fmt.Errorf("container %s has exited", st.ID)
	}
	if err := unix.PidfdSendSignal(pidfd, sig, nil, 0); err != nil {
		return fmt.Errorf("signal %s with %v: %w", st.ID, sig, err)
	}
	return nil
}

// Delete removes a stopped (or created) container: its cgroup, its state,
// and then runs the poststop hooks. With force, a running container is
// killed first.
func (r *Runtime) Delete(ctx context.Context, id string, force bool) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	dir := containerDir(r.root, id)
	st, _, release, err := r.open(id)
	if err != nil {
		if force && !errors.Is(err, ErrNotExist) {
			// Corrupt or half-written state: forced delete still cleans up.
			return os.RemoveAll(dir)
		}
		if force && errors.Is(err, ErrNotExist) {
			return nil
		}
		return err
	}
	defer release()
	status := st.status(dir)
	if status == specs.StateRunning && !force {
		return fmt.Errorf("container %s is running: stop it first (%s) or delete it by force (%s)", id, command(r.root, "kill "+id), command(r.root, "delete --force "+id))
	}
	cg, cgErr := cgroups.Load(st.Cgroup)
	if status != specs.StateStopped {
		if cgErr == nil {
			_ = cg.KillAll(unix.SIGKILL)
		}
		_ = signalProcess(st, unix.SIGKILL)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := waitExit(wctx, st)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("process %d did not exit within 10s of SIGKILL", st.Pid)
			}
			return fmt.Errorf("delete %s: %w", id, err)
		}
	}
	if cgErr == nil {
		if err := cg.Destroy(); err != nil {
			return fmt.Errorf("delete %s: remove cgroup: %w", id, err)
		}
	}
	if st.HostRootfsMount != 0 {
		if err := unmountAbove(st.Rootfs, st.HostRootfsMount); err != nil {
			return fmt.Errorf("delete %s: %w", id, err)
		}
	}
	r.reap(id)
	if rec := r.recorder(); rec != nil {
		rec.Forget(st.Pid)
	}
	state := st.ociState(dir)
	state.Status = specs.StateStopped
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("delete %s: remove state: %w", id, err)
	}
	if err := runHooks("poststop", initstage.HookList(st.Spec.Hooks, "poststop"), state); err != nil {
		r.log.Warn("poststop hook failed", "id", id, "err", err)
	}
	return nil
}

// waitExit blocks until the container's init exits (a pidfd becomes
// readable then), whether or not this process forked it.
func waitExit(ctx context.Context, st *savedState) error {
	pidfd, err := unix.PidfdOpen(st.Pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("wait for %s: %w", st.ID, err)
	}
	defer unix.Close(pidfd)
	if !st.alive() {
		return nil // the pid was reused: ours is long gone
	}
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := unix.Poll(fds, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("wait for %s: %w", st.ID, err)
		}
		if n > 0 {
			return nil
		}
	}
}

// reap forgets a container this process created (waiting for its init so
// no zombie remains).
func (r *Runtime) reap(id string) {
	r.mu.Lock()
	c := r.created[id]
	delete(r.created, id)
	r.mu.Unlock()
	if c == nil {
		return
	}
	if c.start != nil {
		c.start.Close()
	}
	<-c.init.done
}

// takeStartSocket returns the sync socket of the created container id whose
// init is pid, if this process created it and has not started it yet; the
// caller closes it. A container of that id with another pid was deleted
// and created again by another process.
func (r *Runtime) takeStartSocket(id string, pid int) *os.File {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.created[id]
	if c == nil || c.init.pid != pid {
		return nil
	}
	sock := c.start
	c.start = nil
	return sock
}

// ExitStatus is how a container's process ended.
type ExitStatus struct {
	Code      int            // exit code, or 128+signal when killed
	Signal    syscall.Signal // the signal that killed it, 0 if it exited
	OOMKilled bool           // the kernel's OOM killer killed a process in the container
	// Known is false when the status could not be recovered: the process
	// was started by another process and Config.RecordExits is off (or the
	// kernel could not load the recorder).
	Known bool
}

func (e ExitStatus) String() string {
	s := fmt.Sprintf("exit code %d", e.Code)
	if e.Signal != 0 {
		s = fmt.Sprintf("killed by %v (exit code %d)", e.Signal, e.Code)
	}
	if e.OOMKilled {
		s += ", out of memory"
	}
	return s
}

// Wait blocks until the container's init exits and returns its status.
func (r *Runtime) Wait(ctx context.Context, id string) (ExitStatus, error) {
	if err := ValidateID(id); err != nil {
		return ExitStatus{}, err
	}
	st, err := r.state(id, false)
	if err != nil {
		return ExitStatus{}, err
	}
	r.mu.Lock()
	c := r.created[id]
	r.mu.Unlock()
	var es ExitStatus
	if c != nil && c.init.pid == st.Pid {
		select {
		case <-c.init.done:
		case <-ctx.Done():
			return ExitStatus{}, ctx.Err()
		}
		es = exitStatusOf(c.init.ws)
	} else {
		if err := waitExit(ctx, st); err != nil {
			return ExitStatus{}, err
		}
		if rec := r.recorder(); rec != nil {
			if ws, ok, err := rec.Lookup(st.Pid); err == nil && ok {
				es = exitStatusOf(syscall.WaitStatus(ws))
			}
		}
	}
	if cg, err := cgroups.Load(st.Cgroup); err == nil {
		if n, err := cg.OOMKillCount(); err == nil && n > 0 {
			es.OOMKilled = true
		}
	}
	return es, nil
}

func exitStatusOf(ws syscall.WaitStatus) ExitStatus {
	if ws.Signaled() {
		return ExitStatus{Code: 128 + int(ws.Signal()), Signal: ws.Signal(), Known: true}
	}
	return ExitStatus{Code: ws.ExitStatus(), Known: true}
}

// Stats returns the container's cgroup counters.
func (r *Runtime) Stats(id string) (*cgroups.Stats, error) {
	st, err := readStateNoSpec(r.root, id)
	if err != nil {
		return nil, err
	}
	cg, err := cgroups.Load(st.Cgroup)
	if err != nil {
		return nil, fmt.Errorf("stats of %s: %w", id, err)
	}
	return cg.Stats()
}

// Update changes the container's resource limits.
func (r *Runtime) Update(id string, res *specs.LinuxResources) error {
	st, dir, release, err := r.open(id)
	if err != nil {
		return err
	}
	defer release()
	cg, err := cgroups.Load(st.Cgroup)
	if err != nil {
		return fmt.Errorf("update %s: %w", id, err)
	}
	if err := cg.Update(res); err != nil {
		return fmt.Errorf("update %s: %w", id, err)
	}
	// A changed copy: the state kept from create (see Runtime.state)
	// shares the spec, and its config.json as read no longer says it.
	s, linux := *st.Spec, *st.Spec.Linux
	linux.Resources = res
	s.Linux = &linux
	st.Spec, st.rawSpec = &s, nil
	return writeState(dir, st)
}

// Processes lists the host pids of every process in the container.
func (r *Runtime) Processes(id string) ([]int, error) {
	st, err := readStateNoSpec(r.root, id)
	if err != nil {
		return nil, err
	}
	cg, err := cgroups.Load(st.Cgroup)
	if err != nil {
		return nil, fmt.Errorf("processes of %s: %w", id, err)
	}
	return cg.Processes()
}

// startContainer is used by Start in a process that did not create the
// container: connect to the init's start socket, ask it to exec, and
// report whatever error it sends back.
func startContainer(dir string) error {
	path, done, err := socketPath(dir, startSocket)
	if err != nil {
		return fmt.Errorf("connect to the container's init: %w", err)
	}
	c, err := net.Dial("unix", path)
	done()
	if err != nil {
		return fmt.Errorf("connect to the container's init: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{'s'}); err != nil {
		return fmt.Errorf("signal the container's init: %w", err)
	}
	return readStartResult(c)
}

// startOverSync starts the container over the init's sync socket, which
// the process that created it kept, and closes the socket.
func startOverSync(sock *os.File) error {
	defer sock.Close()
	if _, err := sock.Write([]byte{'s'}); err != nil {
		return fmt.Errorf("signal the container's init: %w", err)
	}
	return readStartResult(sock)
}

// readStartResult reads what the init reports after it was told to start:
// nothing (end-of-file: the exec succeeded and closed the socket) or the
// error it failed with.
func readStartResult(r io.Reader) error {
	data, err := io.ReadAll(io.LimitReader(r, maxMessageSize))
	if err != nil {
		return fmt.Errorf("read start result: %w", err)
	}
	if len(data) == 0 {
		return nil
	}
	var msg initstage.Message
	if err := json.Unmarshal(data, &msg); err != nil {
		return fmt.Errorf("read start result: %w", err)
	}
	if msg.Type == initstage.MsgError {
		return errors.New(msg.Error)
	}
	return nil
}

// maxMessageSize bounds what is read of one message from an init.
const maxMessageSize = 64 << 10
