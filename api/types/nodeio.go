package types

import (
	"io"
	"strings"
	"time"
)

// LogOptions select what of an instance's container log to read
// (GET .../instances/{name}/log).
type LogOptions struct {
	// Follow keeps the stream open and sends new output as it is written.
	Follow bool `json:"follow,omitempty"`
	// TailLines is how many of the last lines to send; negative for all.
	TailLines int `json:"tailLines,omitempty"`
	// Since drops lines written before it (zero for none).
	Since time.Time `json:"since,omitzero"`
	// Timestamps starts each line with the time it was written (RFC 3339).
	Timestamps bool `json:"timestamps,omitempty"`
}

// ExecOptions describe a process to run in an instance's container
// (.../instances/{name}/exec).
type ExecOptions struct {
	// Command is the program and its arguments; required. A program
	// without a slash is looked up in the container's PATH.
	Command []string `json:"command"`
	// TTY gives the process a terminal; its output then comes as one stream.
	TTY bool `json:"tty,omitempty"`
	// Stdin connects the caller's input to the process.
	Stdin bool `json:"stdin,omitempty"`
	// Env adds NAME=VALUE variables to the container's environment (a
	// name the container has already is replaced).
	Env []string `json:"env,omitempty"`
	// WorkingDir overrides the container's working directory.
	WorkingDir string `json:"workingDir,omitempty"`
	// Size is the terminal's size when the process starts (TTY only), so
	// that it never sees a 0x0 terminal; later changes come as resizes.
	Size *TerminalSize `json:"size,omitempty"`
}

// TerminalSize is a terminal's size in characters.
type TerminalSize struct {
	Width  uint16 `json:"width"`
	Height uint16 `json:"height"`
}

// ExecStreams carry an exec'd process's stdio. Stdin is nil unless
// ExecOptions.Stdin; Stderr is unused with ExecOptions.TTY (the terminal
// merges it into Stdout). Resize delivers terminal size changes (TTY
// only; nil otherwise). When output is cut off (a background process
// holds it open after the process exited), a write to Stdout or Stderr
// may come after Exec returned: the writer drops it.
type ExecStreams struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Resize         <-chan TerminalSize
}

// Limits of an exec request: a command line is what execve takes in
// practice (Linux allows 2 MiB of arguments and environment, and 128 KiB
// per string); an exec is a human's or a script's command, not a way to
// ship data.
const (
	MaxExecArgs  = 4096
	MaxExecBytes = 256 << 10
)

// ValidateExecOptions checks o and returns every rule it breaks.
func ValidateExecOptions(o *ExecOptions) FieldErrors {
	var errs FieldErrors
	cmd := NewPath("command")
	switch {
	case len(o.Command) == 0:
		errs.add(cmd, "must name the program to run, e.g. [\"hostname\"]")
	case o.Command[0] == "":
		errs.add(cmd.Index(0), "must name the program to run, not be empty")
	case len(o.Command) > MaxExecArgs:
		errs.add(cmd, "has %d arguments, more than the %d allowed", len(o.Command), MaxExecArgs)
	}
	size := 0
	for i, a := range o.Command {
		size += len(a) + 1
		if strings.IndexByte(a, 0) >= 0 {
			errs.add(cmd.Index(i), "contains a NUL byte, which no program can receive")
		}
	}
	for i, e := range o.Env {
		size += len(e) + 1
		p := NewPath("env").Index(i)
		name, _, ok := strings.Cut(e, "=")
		switch {
		case !ok:
			errs.add(p, "%q must be NAME=VALUE", truncate(e, 40))
		case !envName.MatchString(name):
			errs.add(p, "%q is not a variable name (letters, digits, '_', '-', '.'; not starting with a digit)", truncate(name, 40))
		case strings.IndexByte(e, 0) >= 0:
			errs.add(p, "contains a NUL byte, which no program can receive")
		}
	}
	if size > MaxExecBytes {
		errs.add(cmd, "command and env are %d bytes, more than the %d allowed", size, MaxExecBytes)
	}
	if w := o.WorkingDir; w != "" && (!strings.HasPrefix(w, "/") || strings.IndexByte(w, 0) >= 0) {
		errs.add(NewPath("workingDir"), "%q must be an absolute path", truncate(w, 80))
	}
	if o.Size != nil {
		switch {
		case !o.TTY:
			errs.add(NewPath("size"), "is set without tty: a size is a terminal's")
		case o.Size.Width == 0 || o.Size.Height == 0:
			errs.add(NewPath("size"), "%dx%d: width and height must be at least 1", o.Size.Width, o.Size.Height)
		}
	}
	return errs
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// ExecResult ends an exec's output stream: how the process ended, or why
// it could not run.
type ExecResult struct {
	// ExitCode is the process's exit status, 128+N when signal N killed
	// it. When the process could not be started it is 127 for a command
	// that was not found and 126 for one that could not be run, as a
	// shell (and docker exec) answer; otherwise, with Error, -1.
	ExitCode int `json:"exitCode"`
	// Error says why the exec failed, empty when the process ran.
	Error string `json:"error,omitempty"`
}
