package types

import "time"

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
	// Command is the program and its arguments; required.
	Command []string `json:"command"`
	// TTY gives the process a terminal; its output then comes as one stream.
	TTY bool `json:"tty,omitempty"`
	// Stdin connects the caller's input to the process.
	Stdin bool `json:"stdin,omitempty"`
	// Env adds NAME=VALUE variables to the container's environment.
	Env []string `json:"env,omitempty"`
	// WorkingDir overrides the container's working directory.
	WorkingDir string `json:"workingDir,omitempty"`
}

// TerminalSize is a terminal's size in characters.
type TerminalSize struct {
	Width  uint16 `json:"width"`
	Height uint16 `json:"height"`
}
