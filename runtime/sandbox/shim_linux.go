package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// shimEnv carries the shim's state directory; its presence makes this
// binary the shim.
const shimEnv = "_NEXUS_RUNSC_SHIM_DIR"

// Files in a container's shim directory.
const (
	sandboxPidFile = "sandbox.pid" // written by runsc create --pid-file
	shimPidFile    = "shim.pid"
	exitFile       = "exit.json"
	runscLogFile   = "runsc.log" // runsc --log of create and the sandbox
)

// shimReport is the shim's one message to Create: the sandbox pid, or why
// runsc create failed.
type shimReport struct {
	Pid   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
}

// exitRecord is how the sandbox ended, as the shim saw it.
type exitRecord struct {
	// Code is the sandbox's exit code: the container's code, or 128+n
	// when signal n killed the container's process.
	Code int `json:"code"`
	// Signal is set when the sandbox process itself was killed.
	Signal int `json:"signal,omitempty"`
}

// IsShim reports whether this process was started as the runsc shim. The
// binary's main (and TestMain of tests that use the tier) calls it before
// anything else and then ShimMain.
func IsShim() bool { return os.Getenv(shimEnv) != "" }

// ShimMain runs `runsc create` (its arguments follow argv[0]) as a child
// subreaper, reports the sandbox pid on fd 3, reaps the sandbox when it
// exits and writes its status to exit.json. It never returns.
func ShimMain() {
	dir := os.Getenv(shimEnv)
	report := os.NewFile(3, "report")
	fail := func(err error) {
		_ = json.NewEncoder(report).Encode(shimReport{Error: err.Error()})
		os.Exit(1)
	}
	if len(os.Args) < 2 {
		fail(errors.New("shim: no runsc command line"))
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fail(fmt.Errorf("become child subreaper: %w", err))
	}
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = withoutShimEnv(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		fail(fmt.Errorf("%w: %s", err, fatalFromLog(filepath.Join(dir, runscLogFile))))
	}
	pid, err := readPid(filepath.Join(dir, sandboxPidFile))
	if err != nil {
		fail(err)
	}
	_ = json.NewEncoder(report).Encode(shimReport{Pid: pid})
	report.Close()
	// The container's stdio belongs to the sandbox now; holding it would
	// keep a reader of a pipe from seeing EOF.
	if null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0); err == nil {
		for _, fd := range []int{0, 1, 2} {
			_ = unix.Dup2(int(null.Fd()), fd)
		}
		null.Close()
	}
	// Reap everything reparented here (sandbox, gofer); record the sandbox.
	for {
		var ws unix.WaitStatus
		p, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			break // ECHILD: nothing left
		}
		if p == pid {
			rec := exitRecord{Code: ws.ExitStatus()}
			if ws.Signaled() {
				rec = exitRecord{Code: 128 + int(ws.Signal()), Signal: int(ws.Signal())}
			}
			_ = writeFileAtomic(filepath.Join(dir, exitFile), rec)
		}
	}
	os.Exit(0)
}

func withoutShimEnv(env []string) []string {
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, shimEnv+"=") {
			out = append(out, e)
		}
	}
	return out
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read sandbox pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("read sandbox pid: bad pid file %s: %q", path, b)
	}
	return pid, nil
}

// fatalFromLog returns runsc's own account of why it failed. With --log,
// this runsc writes its errors there as a stream of JSON objects
// ({"msg":..., "level":"error"}), the root cause first; other versions
// write text lines with "FATAL ERROR: ".
func fatalFromLog(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return "runsc left no log"
	}
	var msgs []string
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		var m struct{ Msg, Level string }
		if err := dec.Decode(&m); err != nil {
			break
		}
		if m.Level == "error" || m.Level == "fatal" {
			msgs = append(msgs, strings.Join(strings.Fields(m.Msg), " "))
		}
	}
	if len(msgs) == 0 {
		for _, l := range strings.Split(string(b), "\n") {
			if i := strings.Index(l, "FATAL ERROR: "); i >= 0 {
				msgs = append(msgs, strings.TrimSpace(l[i+len("FATAL ERROR: "):]))
			}
		}
	}
	if len(msgs) == 0 {
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		return lines[len(lines)-1]
	}
	return strings.Join(msgs, "; ")
}

func writeFileAtomic(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
