package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"nexus.dev/nexus/api/types"
)

// Exec runs opts.Command in the container of the instance namespace/name,
// with its stdio on s, and returns its exit code (128+N when signal N
// killed it). Input and output flow at once over one HTTP/2 or HTTP/3
// stream (docs/api.md, Exec). A command that could not be started gives
// an error and 127 (not found) or 126 (not runnable), as a shell does;
// any other failure an error and -1. Ending ctx kills the process.
//
// s.Stdin is read until it ends, then the process's input is closed; a
// Read of s.Stdin still waiting when the process exits is left to return
// on its own (os.Stdin cannot be interrupted).
func (c *Client) Exec(ctx context.Context, namespace, name string, opts types.ExecOptions, s types.ExecStreams) (int, error) {
	what := fmt.Sprintf("exec in instance %s/%s", namespace, name)
	if errs := types.ValidateExecOptions(&opts); len(errs) > 0 {
		return -1, fmt.Errorf("%s: %w", what, errs)
	}
	if opts.Stdin && s.Stdin == nil {
		return -1, fmt.Errorf("%s: stdin is asked for but no input was given", what)
	}
	instances, _ := types.LookupResource("instances")
	p, err := path(instances, namespace, name)
	if err != nil {
		return -1, err
	}
	line, err := json.Marshal(opts)
	if err != nil {
		return -1, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	// Writes to the pipe are whole frames: io.Pipe never interleaves two
	// Write calls, so the senders below need no lock of their own.
	defer pw.CloseWithError(errExecDone)
	// The HTTP/2 transport notices a cancelled request only between reads
	// of its body: end the body, so that the stream is reset and the
	// server kills the process.
	stop := context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })
	defer stop()
	go func() {
		if _, err := pw.Write(append(line, '\n')); err != nil {
			return
		}
		if opts.Stdin {
			go sendStdin(pw, s.Stdin)
		}
		if opts.TTY && s.Resize != nil {
			go sendResizes(ctx, pw, s.Resize)
		}
	}()
	resp, err := c.do(ctx, request{method: http.MethodPost, path: p + "/exec", bodyStream: pr, ctype: types.ExecContentType, stream: true})
	if err != nil {
		return -1, err
	}
	defer resp.Body.Close()
	stderr := s.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	frames := types.NewExecFrameReader(resp.Body)
	for {
		stream, payload, err := frames.Next()
		if err != nil {
			if ctx.Err() != nil {
				return -1, ctx.Err()
			}
			if err == io.EOF {
				err = errors.New("the stream ended before the exit status")
			}
			return -1, &ConnectionError{Server: c.Server(), Proto: c.proto, Err: fmt.Errorf("%s: %w", what, err)}
		}
		switch stream {
		case types.StreamStdout:
			if _, err := s.Stdout.Write(payload); err != nil {
				return -1, fmt.Errorf("%s: write its output: %w", what, err)
			}
		case types.StreamStderr:
			if _, err := stderr.Write(payload); err != nil {
				return -1, fmt.Errorf("%s: write its error output: %w", what, err)
			}
		case types.StreamExit:
			var res types.ExecResult
			if err := json.Unmarshal(payload, &res); err != nil {
				return -1, fmt.Errorf("%s: the server sent an exit status that does not decode: %w", what, err)
			}
			if res.Error != "" {
				return res.ExitCode, errors.New(res.Error)
			}
			return res.ExitCode, nil
		default:
			return -1, fmt.Errorf("%s: the server sent a %s frame, which only requests carry", what, stream)
		}
	}
}

var errExecDone = errors.New("the exec has ended")

// sendStdin sends in as stdin frames, then closes the process's input.
func sendStdin(w io.Writer, in io.Reader) {
	buf := make([]byte, types.MaxExecFrame)
	frame := make([]byte, 0, types.MaxExecFrame+16)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			frame = types.AppendExecFrame(frame[:0], types.StreamStdin, buf[:n])
			if _, werr := w.Write(frame); werr != nil {
				return
			}
		}
		if err != nil {
			_, _ = w.Write(types.AppendExecFrame(nil, types.StreamCloseStdin, nil))
			return
		}
	}
}

// sendResizes sends each terminal size change until sizes is closed or
// the exec ends.
func sendResizes(ctx context.Context, w io.Writer, sizes <-chan types.TerminalSize) {
	for {
		select {
		case ts, ok := <-sizes:
			if !ok {
				return
			}
			if ts.Width == 0 || ts.Height == 0 {
				continue // not a terminal's size: nothing to tell
			}
			js, _ := json.Marshal(ts)
			if _, err := w.Write(types.AppendExecFrame(nil, types.StreamResize, js)); err != nil {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}
