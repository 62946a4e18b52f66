package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/term"
	"nexus.dev/nexus/runtime"
	"nexus.dev/nexus/runtime/image/bundle"
)

// outputGrace is how long the output of an exec'd process that has
// exited may go without a byte before it is cut off: a process it started
// in the background may hold its stdout open for ever (kubectl exec of
// `sh -c 'sleep 1000 &'` would hang), while a slow reader only slows the
// copy down and keeps it going.
const outputGrace = 2 * time.Second

// Exec runs a process in the running container of inst, as runc exec and
// kubectl exec do: the container's process settings (user, environment,
// working directory, capabilities, limits) with opts' command, variables
// and working directory, in all its namespaces and its cgroup. With
// opts.TTY the process gets a terminal whose size follows s.Resize; else
// its stdout and stderr stay apart. It returns the exit code (128+N when
// signal N killed it) once the process has exited and its output is
// written. When ctx ends first the process is killed.
//
// A process that could not be started gives an error and 127 (command not
// found) or 126 (any other reason), as a shell does; anything else that
// fails gives an error and -1. Exec is the agent's side of
// api.NodeConn.
func (a *Agent) Exec(ctx context.Context, inst *types.Instance, opts types.ExecOptions, s types.ExecStreams) (int, error) {
	name := inst.Namespace + "/" + inst.Name
	if inst.Spec.NodeName != a.cfg.NodeName {
		return -1, fmt.Errorf("instance %s is bound to node %q, not to %s: exec through its own node", name, inst.Spec.NodeName, a.cfg.NodeName)
	}
	if errs := types.ValidateExecOptions(&opts); len(errs) > 0 {
		return -1, fmt.Errorf("exec in instance %s: %w", name, errs)
	}
	rt := a.cfg.Runtime
	id := containerPrefix + inst.UID
	st, err := rt.State(id)
	switch {
	case errors.Is(err, runtime.ErrNotExist):
		return -1, fmt.Errorf("instance %s has no container on node %s: exec once it is Running (nexus describe instance %s -n %s)", name, a.cfg.NodeName, inst.Name, inst.Namespace)
	case err != nil:
		return -1, fmt.Errorf("exec in instance %s: %w", name, err)
	case st.Status != specs.StateRunning:
		return -1, fmt.Errorf("the container of instance %s is %s: exec needs it running (nexus describe instance %s -n %s)", name, st.Status, inst.Name, inst.Namespace)
	}
	spec, err := rt.Spec(id)
	if err != nil {
		return -1, fmt.Errorf("exec in instance %s: %w", name, err)
	}
	if spec.Process == nil {
		return -1, fmt.Errorf("exec in instance %s: its container has no process settings", name)
	}
	proc, err := execProcess(spec.Process, &opts)
	if err != nil {
		return -1, fmt.Errorf("exec in instance %s: %w", name, err)
	}

	xio := &execIO{streams: s, stdin: opts.Stdin && s.Stdin != nil}
	defer xio.close()
	ropts, err := xio.open(opts.TTY)
	if err != nil {
		return -1, fmt.Errorf("exec in instance %s: %w", name, err)
	}
	p, err := rt.Exec(ctx, id, proc, ropts)
	if err != nil {
		if ctx.Err() != nil {
			return -1, ctx.Err()
		}
		return startFailureCode(err), fmt.Errorf("instance %s: %w", name, err)
	}
	xio.started()
	a.log.Debug("exec started", "container", id, "pid", p.Pid, "command", opts.Command)
	es, err := p.Wait(ctx)
	if err != nil {
		// The caller went away: the process goes too (its output has
		// nowhere to go).
		_ = unix.Kill(p.Pid, unix.SIGKILL)
		_, _ = p.Wait(context.Background())
		return -1, fmt.Errorf("exec in instance %s: %w; the process was killed", name, err)
	}
	xio.drain(ctx)
	return es.Code, nil
}

// execProcess is the process settings of an exec: the container's, with
// opts' command, variables (each replacing the container's of the same
// name, as the image's are replaced when the container is made) and
// working directory.
func execProcess(base *specs.Process, opts *types.ExecOptions) (*specs.Process, error) {
	env, err := bundle.Environment(base.Env, opts.Env)
	if err != nil {
		return nil, err
	}
	p := *base
	p.Args = slices.Clone(opts.Command)
	p.Env = env
	if opts.WorkingDir != "" {
		p.Cwd = opts.WorkingDir
	}
	p.Terminal, p.ConsoleSize = opts.TTY, nil
	if opts.TTY && opts.Size != nil {
		p.ConsoleSize = &specs.Box{Width: uint(opts.Size.Width), Height: uint(opts.Size.Height)}
	}
	return &p, nil
}

// startFailureCode is the code a shell gives a command it could not run:
// 127 when it does not exist, 126 otherwise. The runtime's init reports
// a missing program as "process.args[0]: executable … not found" or, for
// a path, "process.args[0] /x: … no such file or directory".
func startFailureCode(err error) int {
	msg := err.Error()
	if strings.Contains(msg, "process.args[0]") && (strings.Contains(msg, "not found") || strings.Contains(msg, "no such file or directory")) {
		return 127
	}
	return 126
}

// execIO connects an exec'd process's stdio to its streams: pipes, or a
// terminal (the pty master), with a goroutine per direction.
type execIO struct {
	streams types.ExecStreams
	stdin   bool

	child  []*os.File // the process's ends, closed once it has them
	ours   []*os.File // our ends, closed by close
	master *os.File   // the terminal's master (tty)
	// stdinW and the output readers are ours. For drain: lastOutput is
	// when output was last written (Unix nanoseconds), writing how many
	// writes are under way.
	stdinW     *os.File
	outputs    []outputCopy
	lastOutput atomic.Int64
	writing    atomic.Int32
	copies     sync.WaitGroup
	done       chan struct{} // closed by close: the helper goroutines end
}

type outputCopy struct {
	r *os.File
	w io.Writer
}

// open makes the pipes (or asks for the terminal) and returns the
// runtime's options for them.
func (x *execIO) open(tty bool) (runtime.ExecOptions, error) {
	x.done = make(chan struct{})
	var o runtime.ExecOptions
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return o, err
	}
	x.child = append(x.child, null)
	if tty {
		// The init makes the terminal its stdio; these only carry what it
		// might say before that.
		o.Stdin, o.Stdout, o.Stderr = null, null, null
		o.Console = func(m *os.File) { x.master = m }
		return o, nil
	}
	o.Stdin = null
	if x.stdin {
		r, w, err := os.Pipe()
		if err != nil {
			return o, err
		}
		x.child, x.ours, x.stdinW = append(x.child, r), append(x.ours, w), w
		o.Stdin = r
	}
	stderr := x.streams.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	for _, w := range []io.Writer{x.streams.Stdout, stderr} {
		pr, pw, err := os.Pipe()
		if err != nil {
			return o, err
		}
		x.child, x.ours = append(x.child, pw), append(x.ours, pr)
		x.outputs = append(x.outputs, outputCopy{pr, w})
	}
	o.Stdout, o.Stderr = x.child[len(x.child)-2], x.child[len(x.child)-1]
	return o, nil
}

// started closes the process's ends of the pipes (so their readers see
// the end when the process closes its own) and starts the copies.
func (x *execIO) started() {
	for _, f := range x.child {
		f.Close()
	}
	x.child = nil
	if x.master != nil {
		x.ours = append(x.ours, x.master)
		x.outputs = append(x.outputs, outputCopy{x.master, x.streams.Stdout})
		if x.stdin {
			x.stdinW = x.master
		}
		if x.streams.Resize != nil {
			go x.resize()
		}
	}
	for _, c := range x.outputs {
		x.copies.Add(1)
		go func() {
			defer x.copies.Done()
			_, _ = io.CopyBuffer(&outputWriter{x: x, w: c.w}, c.r, make([]byte, types.MaxExecFrame))
		}()
	}
	if x.stdin {
		go x.copyStdin()
	}
}

// copyStdin passes the caller's input on; its end closes the process's
// stdin (a terminal has no end of input to pass: the input just stops).
func (x *execIO) copyStdin() {
	_, _ = io.Copy(x.stdinW, x.streams.Stdin)
	if x.master == nil {
		x.stdinW.Close()
	}
}

func (x *execIO) resize() {
	for {
		select {
		case ts, ok := <-x.streams.Resize:
			if !ok {
				return
			}
			_ = term.SetSize(x.master, ts.Width, ts.Height)
		case <-x.done:
			return
		}
	}
}

// drain waits until the output copies end, or no output has been
// written for outputGrace since the process exited (or ctx ends). A write
// the caller is slow to take counts as output all along.
func (x *execIO) drain(ctx context.Context) {
	done := make(chan struct{})
	go func() { x.copies.Wait(); close(done) }()
	x.lastOutput.Store(time.Now().UnixNano())
	t := time.NewTimer(outputGrace)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-t.C:
			idle := time.Since(time.Unix(0, x.lastOutput.Load()))
			if x.writing.Load() > 0 {
				idle = 0
			}
			if idle >= outputGrace {
				return
			}
			t.Reset(outputGrace - idle)
		}
	}
}

// close ends the copies: closing a pipe or the master ends a Read that
// waits on it. A copy blocked writing to a caller that stops reading
// ends when its writer fails (types.ExecStreams).
func (x *execIO) close() {
	if x.done != nil {
		close(x.done)
	}
	for _, f := range append(x.child, x.ours...) {
		f.Close()
	}
}

// outputWriter writes output to the caller, and records for drain that
// it does.
type outputWriter struct {
	x *execIO
	w io.Writer
}

func (o *outputWriter) Write(p []byte) (int, error) {
	o.x.writing.Add(1)
	n, err := o.w.Write(p)
	o.x.lastOutput.Store(time.Now().UnixNano())
	o.x.writing.Add(-1)
	return n, err
}
