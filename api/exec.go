package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"nexus.dev/nexus/api/types"
)

// exec runs a process in an instance's container through the agent of
// its node (POST .../instances/{name}/exec, verb create on
// instances/exec). The request body is the options line and then frames
// of input; the answer, once the process runs, frames of output and a
// last exit frame (types.ExecStream). Both flow at once: HTTP/2 and
// HTTP/3 streams are full duplex, and HTTP/1.1 is made so.
func (s *Server) exec(w http.ResponseWriter, r *request) error {
	body, opts, line, err := readExecRequest(r.http)
	if err != nil {
		return err
	}
	r.body, r.annotations = execAuditBody(opts, line), execAnnotations(opts)
	inst, conn, err := s.execTarget(r)
	if err != nil {
		return err
	}
	// The record of who ran what is on disk before the process starts.
	if err := s.audited(r, http.StatusOK, nil); err != nil {
		return problem(http.StatusServiceUnavailable, "Unavailable", "the audit log cannot be written, so exec is refused: %v", err).withRetry(5)
	}
	r.code = http.StatusOK
	code, err := serveExec(r.http.Context(), w, body, opts, conn, inst)
	s.log.Info("exec ended", "principal", r.principal.ID, "instance", r.namespace+"/"+r.name, "node", inst.Spec.NodeName,
		"command", opts.Command, "exitCode", code, "err", err)
	return errResponseStarted
}

// readExecRequest reads an exec request's options line; the rest of body
// is its input frames.
func readExecRequest(hr *http.Request) (*bufio.Reader, *types.ExecOptions, []byte, error) {
	body := bufio.NewReaderSize(hr.Body, 64<<10)
	opts, line, err := types.ReadExecOptions(body)
	if err != nil {
		var de *types.DecodeError
		if errors.As(err, &de) {
			p := badRequest("exec options: %s", de.Error())
			p.Fields = de.Fields
			return nil, nil, nil, p
		}
		return nil, nil, nil, badRequest("read the exec options: %v", err)
	}
	return body, opts, line, nil
}

// serveExec answers an exec through conn: the input frames of body go to
// the process, its output and then its exit status go out as frames. The
// API serves it, and a node's agent serves it to the API (NodeHandler),
// with the same code. It returns the exit code and the error the exit
// frame carried.
func serveExec(ctx context.Context, w http.ResponseWriter, body *bufio.Reader, opts *types.ExecOptions, conn NodeConn, inst *types.Instance) (int, error) {
	_ = http.NewResponseController(w).EnableFullDuplex() // HTTP/1.1; the others are
	flusher, ok := w.(http.Flusher)
	if !ok {
		return -1, errors.New("the connection cannot stream")
	}
	w.Header().Set("Content-Type", types.ExecContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()

	out := &execOutput{w: w, flush: flusher.Flush}
	streams := types.ExecStreams{Stdout: out.stream(types.StreamStdout), Stderr: out.stream(types.StreamStderr)}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	in := &execInput{frames: types.NewExecFrameReader(body), opts: opts, done: make(chan struct{})}
	if opts.Stdin {
		var pr *io.PipeReader
		pr, in.stdin = io.Pipe()
		streams.Stdin = pr
		defer pr.CloseWithError(io.ErrClosedPipe)
	}
	if opts.TTY {
		resize := make(chan types.TerminalSize)
		in.resize, streams.Resize = resize, resize
	}
	defer close(in.done)
	go func() {
		if err := in.run(); err != nil {
			cancel(err)
		}
	}()

	code, err := conn.Exec(ctx, inst, *opts, streams)
	res := types.ExecResult{ExitCode: code}
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = cause // the input broke the framing
		}
		res.Error = err.Error()
	}
	out.finish(res)
	return code, err
}

// execTarget finds the instance and the connection to the agent of its
// node (instanceNode), and refuses an instance that is not Running: exec
// needs its container's process.
func (s *Server) execTarget(r *request) (*types.Instance, NodeConn, error) {
	inst, conn, err := s.instanceNode(r)
	if err != nil {
		return nil, nil, err
	}
	if phase := inst.Status.Phase; phase != types.PhaseRunning {
		if phase == "" {
			phase = types.PhaseScheduled
		}
		return nil, nil, problem(http.StatusConflict, "Conflict", "instance %s/%s is %s on node %s, not Running: exec once it is (nexus describe instance %s -n %s)",
			r.namespace, r.name, phase, inst.Spec.NodeName, r.name, r.namespace)
	}
	return inst, conn, nil
}

// execAnnotations put what an exec runs in its audit record, which keeps
// annotations at every level: the command, and only the names of the
// variables (their values may be secrets).
func execAnnotations(o *types.ExecOptions) map[string]string {
	cmd, _ := json.Marshal(o.Command)
	a := map[string]string{"exec.command": string(cmd), "exec.tty": strconv.FormatBool(o.TTY), "exec.stdin": strconv.FormatBool(o.Stdin)}
	if len(o.Env) > 0 {
		names := make([]string, len(o.Env))
		for i, e := range o.Env {
			names[i], _, _ = strings.Cut(e, "=")
		}
		a["exec.env"] = strings.Join(names, ",")
	}
	if o.WorkingDir != "" {
		a["exec.workingDir"] = o.WorkingDir
	}
	return a
}

// execAuditBody is the options as the audit log keeps them (at the
// Request level): the variables' values left out, as they may be secrets.
func execAuditBody(o *types.ExecOptions, line []byte) []byte {
	if len(o.Env) == 0 {
		return line
	}
	c := *o
	c.Env = make([]string, len(o.Env))
	for i, e := range o.Env {
		name, _, _ := strings.Cut(e, "=")
		c.Env[i] = name + "=<redacted>"
	}
	js, _ := json.Marshal(&c)
	return js
}

// execInput passes an exec's input frames on: stdin to the process,
// resizes to its terminal.
type execInput struct {
	frames *types.ExecFrameReader
	opts   *types.ExecOptions
	stdin  *io.PipeWriter            // nil without opts.Stdin
	resize chan<- types.TerminalSize // nil without opts.TTY
	done   chan struct{}             // closed when the exec has ended
}

// run reads frames until the body ends or breaks the rules (an error:
// the exec is stopped). Either way the process's input ends with it.
func (in *execInput) run() (err error) {
	defer func() {
		if in.stdin != nil {
			in.stdin.CloseWithError(err) // nil: end of input
		}
	}()
	for {
		stream, p, err := in.frames.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			select {
			case <-in.done:
				return nil // the exec ended and the body with it
			default:
			}
			if errors.Is(err, types.ErrExecFrame) || errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("the request's input stream: %w", err)
			}
			return nil // the client went away: the request's context ends too
		}
		switch stream {
		case types.StreamStdin:
			if in.stdin == nil {
				return errors.New("the request's input stream: a stdin frame, but the exec was started without stdin")
			}
			if _, err := in.stdin.Write(p); err != nil {
				return nil // the process's input is closed: drop the rest
			}
		case types.StreamCloseStdin:
			if in.stdin != nil {
				in.stdin.Close()
			}
		case types.StreamResize:
			ts, err := types.DecodeTerminalSize(p)
			if err != nil {
				return fmt.Errorf("the request's input stream: %w", err)
			}
			if in.resize == nil {
				continue // no terminal to size: harmless
			}
			select {
			case in.resize <- ts:
			case <-in.done:
				return nil
			}
		default:
			return fmt.Errorf("the request's input stream: a %s frame, which only answers carry", stream)
		}
	}
}

// execOutput writes an exec's output frames, one writer at a time, each
// flushed at once; after the exit frame it drops what comes.
type execOutput struct {
	mu     sync.Mutex
	w      io.Writer
	flush  func()
	buf    []byte
	closed bool
}

var errExecEnded = errors.New("the exec has ended")

// maxExecError bounds the error of an exit frame, which must fit a frame
// once escaped as JSON.
const maxExecError = 4 << 10

func (o *execOutput) write(s types.ExecStream, p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0, errExecEnded
	}
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), types.MaxExecFrame)]
		o.buf = types.AppendExecFrame(o.buf[:0], s, chunk)
		if _, err := o.w.Write(o.buf); err != nil {
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	o.flush()
	return n, nil
}

func (o *execOutput) finish(res types.ExecResult) {
	if len(res.Error) > maxExecError {
		res.Error = res.Error[:maxExecError] + "…"
	}
	js, _ := json.Marshal(res)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	o.buf = types.AppendExecFrame(o.buf[:0], types.StreamExit, js)
	if _, err := o.w.Write(o.buf); err == nil {
		o.flush()
	}
}

func (o *execOutput) stream(s types.ExecStream) io.Writer {
	return writerFunc(func(p []byte) (int, error) { return o.write(s, p) })
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
