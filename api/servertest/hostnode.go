package servertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/term"
)

// HostNode is a node connection (api.NodeConn) that runs exec'd commands
// as processes of this machine, not in containers, with a real
// pseudo-terminal for tty: what tests of the API's exec route, the client
// and the command line talk to without root or an agent. The agent's own
// tests run commands in containers. It serves no logs.
type HostNode struct {
	// Ended receives one value per Exec call once its process is gone:
	// nil when it ran to its end (or could not start), else the context
	// error that killed it or stopped it from starting. Tests that do not
	// read it must give it room (NewHostNode gives 64).
	Ended chan error
}

// NewHostNode returns a HostNode; register it with Server.Nodes().
func NewHostNode() *HostNode { return &HostNode{Ended: make(chan error, 64)} }

// Logs is not served by a HostNode.
func (h *HostNode) Logs(context.Context, *types.Instance, types.LogOptions) (io.ReadCloser, error) {
	return nil, errors.New("a test node of host processes has no logs")
}

// Exec runs opts.Command on this machine, killed when ctx ends. A command
// that is not found gives 127, as the agent does.
func (h *HostNode) Exec(ctx context.Context, _ *types.Instance, opts types.ExecOptions, s types.ExecStreams) (int, error) {
	cmd := exec.CommandContext(ctx, opts.Command[0], opts.Command[1:]...)
	cmd.Env = append(os.Environ(), opts.Env...)
	cmd.Dir = opts.WorkingDir
	cmd.WaitDelay = time.Second
	var err error
	if opts.TTY {
		err = runWithTerminal(cmd, opts, s)
	} else {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = s.Stdin, s.Stdout, s.Stderr
		if cmd.Stderr == nil {
			cmd.Stderr = io.Discard
		}
		err = cmd.Run()
	}
	h.Ended <- ctx.Err()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return -1, ctx.Err()
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	case errors.Is(err, exec.ErrNotFound):
		return 127, fmt.Errorf("%q: %w", opts.Command[0], err)
	case err != nil:
		return 126, err
	}
	return 0, nil
}

// runWithTerminal runs cmd with a new pseudo-terminal as its controlling
// terminal and stdio, relayed to s.
func runWithTerminal(cmd *exec.Cmd, opts types.ExecOptions, s types.ExecStreams) error {
	master, slave, err := term.OpenPTY()
	if err != nil {
		return err
	}
	defer master.Close()
	if sz := opts.Size; sz != nil {
		if err := term.SetSize(master, sz.Width, sz.Height); err != nil {
			slave.Close()
			return err
		}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	err = cmd.Start()
	slave.Close()
	if err != nil {
		return err
	}
	done := make(chan struct{})
	defer close(done)
	if s.Resize != nil {
		go func() {
			for {
				select {
				case ts, ok := <-s.Resize:
					if !ok {
						return
					}
					_ = term.SetSize(master, ts.Width, ts.Height)
				case <-done:
					return
				}
			}
		}()
	}
	if s.Stdin != nil {
		go func() { _, _ = io.Copy(master, s.Stdin) }()
	}
	copied := make(chan struct{})
	go func() {
		// Reads fail with EIO once the process's side is closed.
		_, _ = io.Copy(s.Stdout, master)
		close(copied)
	}()
	err = cmd.Wait()
	select {
	case <-copied:
	case <-time.After(time.Second):
	}
	return err
}
