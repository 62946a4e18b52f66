package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/runtime"
	"nexus.dev/nexus/runtime/spec"
)

// DefaultRoot is where sandbox state lives when Config.Root is empty.
const DefaultRoot = "/run/nexus/sandbox"

// commandTimeout bounds runsc commands whose Tier method takes no context.
const commandTimeout = 30 * time.Second

// Config configures a Tier.
type Config struct {
	// Runsc is the runsc binary; empty means "runsc" from PATH.
	Runsc string
	// Root is the state directory: runsc's --root is Root/runsc, the
	// shim's records are under Root/shim. DefaultRoot when empty.
	Root string
	// Platform is runsc's --platform: "ptrace" (default; works without
	// /dev/kvm) or "kvm".
	Platform string
	// Network is runsc's --network: "none" (default: the sandbox's own
	// netstack with loopback only), "sandbox" (needs a runsc newer than
	// Debian 12's on kernels >= ~6.7) or "host".
	Network string
	// IgnoreCgroups passes --ignore-cgroups: runsc then leaves the
	// sandbox in the caller's cgroup and applies no resource limits.
	IgnoreCgroups bool
	// IgnoreSeccomp leaves out --oci-seccomp, so the spec's seccomp
	// profile is not applied inside the sandbox.
	IgnoreSeccomp bool
	// DebugLogDir, if set, gets runsc's debug logs (one file per command).
	DebugLogDir string
}

// Tier runs containers under gVisor's runsc. It is safe for concurrent
// use; several Tier values may share a Root.
type Tier struct {
	runsc string
	root  string
	flags []string // global runsc flags, the same for every command

	mu    sync.Mutex
	shims map[string]*shim // shims this process started, for Wait and Delete
}

// shim is a running ShimMain child of this process.
type shim struct {
	cmd  *exec.Cmd
	done chan struct{}
}

var _ runtime.Tier = (*Tier)(nil)

// New checks that runsc exists and returns a Tier for cfg.
func New(cfg Config) (*Tier, error) {
	path := cfg.Runsc
	if path == "" {
		path = "runsc"
	}
	path, err := exec.LookPath(path)
	if err != nil {
		return nil, fmt.Errorf("sandbox tier needs gVisor's runsc: %w (install it with `apt-get install -y runsc` or set the runsc path)", err)
	}
	root := cfg.Root
	if root == "" {
		root = DefaultRoot
	}
	if root, err = filepath.Abs(root); err != nil {
		return nil, fmt.Errorf("sandbox root: %w", err)
	}
	platform, network := cfg.Platform, cfg.Network
	if platform == "" {
		platform = "ptrace"
	}
	if network == "" {
		network = "none"
	}
	flags := []string{"--root", filepath.Join(root, "runsc"), "--platform", platform, "--network", network}
	if cfg.IgnoreCgroups {
		flags = append(flags, "--ignore-cgroups")
	}
	if !cfg.IgnoreSeccomp {
		flags = append(flags, "--oci-seccomp")
	}
	if cfg.DebugLogDir != "" {
		flags = append(flags, "--debug", "--debug-log", strings.TrimSuffix(cfg.DebugLogDir, "/")+"/")
	}
	return &Tier{runsc: path, root: root, flags: flags, shims: map[string]*shim{}}, nil
}

// Name returns "sandbox".
func (t *Tier) Name() string { return "sandbox" }

// Root returns the state directory.
func (t *Tier) Root() string { return t.root }

func (t *Tier) shimDir(id string) string { return filepath.Join(t.root, "shim", id) }

// Create runs `runsc create` for the bundle under a shim that will record
// the exit status, and leaves the container created. Nothing is left
// behind if it fails.
func (t *Tier) Create(ctx context.Context, id string, opts runtime.CreateOptions) (err error) {
	if err := runtime.ValidateID(id); err != nil {
		return err
	}
	bundle, err := filepath.Abs(opts.Bundle)
	if err != nil {
		return fmt.Errorf("bundle %s: %w", opts.Bundle, err)
	}
	s, err := spec.Load(bundle)
	if err != nil {
		return err
	}
	if opts.PreserveFDs > 0 {
		// runsc create has no --preserve-fds: they would reach only the shim.
		return fmt.Errorf("create %s: the sandbox tier cannot pass preserved file descriptors: run without them or use the container tier", id)
	}
	dir := t.shimDir(id)
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return fmt.Errorf("create sandbox state root: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("sandbox %s already exists: pick another id or delete it first", id)
		}
		return fmt.Errorf("create sandbox state for %s: %w", id, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
			removeCgroupLeftovers(s, id)
		}
	}()

	args := append([]string{t.runsc, "--log", filepath.Join(dir, runscLogFile)}, t.flags...)
	args = append(args, "create", "--bundle", bundle, "--pid-file", filepath.Join(dir, sandboxPidFile))
	if opts.ConsoleSocket != "" {
		args = append(args, "--console-socket", opts.ConsoleSocket)
	}
	args = append(args, id)

	reportR, reportW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("create %s: %w", id, err)
	}
	defer reportR.Close()
	cmd := &exec.Cmd{Path: "/proc/self/exe", Args: append([]string{"nexus-runsc-shim"}, args...)}
	cmd.Env = append(os.Environ(), shimEnv+"="+dir)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = orStd(opts.Stdin, os.Stdin), orStd(opts.Stdout, os.Stdout), orStd(opts.Stderr, os.Stderr)
	cmd.ExtraFiles = []*os.File{reportW}
	// Its own session: the shim must outlive this process to record the
	// exit status of a container that does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		reportW.Close()
		return fmt.Errorf("create %s: start runsc shim: %w", id, err)
	}
	reportW.Close()
	sh := &shim{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(sh.done)
	}()
	_ = os.WriteFile(filepath.Join(dir, shimPidFile), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)

	reportCh := make(chan shimReport, 1)
	go func() {
		var r shimReport
		if err := json.NewDecoder(reportR).Decode(&r); err != nil {
			r.Error = "shim exited without a report: " + err.Error()
		}
		reportCh <- r
	}()
	var rep shimReport
	select {
	case rep = <-reportCh:
	case <-ctx.Done():
		_ = cmd.Process.Kill() // runsc create dies with it (Pdeathsig)
		<-sh.done
		t.forceDelete(id)
		return fmt.Errorf("create %s: %w", id, ctx.Err())
	}
	if rep.Error != "" {
		<-sh.done
		t.forceDelete(id)
		return fmt.Errorf("runsc create %s: %s (check the bundle; add DebugLogDir for runsc's debug logs)", id, rep.Error)
	}
	if opts.PidFile != "" {
		if err := os.WriteFile(opts.PidFile, []byte(strconv.Itoa(rep.Pid)), 0o644); err != nil {
			t.forceDelete(id)
			<-sh.done
			return fmt.Errorf("create %s: write pid file: %w", id, err)
		}
	}
	t.mu.Lock()
	t.shims[id] = sh
	t.mu.Unlock()
	return nil
}

func orStd(f, std *os.File) *os.File {
	if f != nil {
		return f
	}
	return std
}

// forceDelete removes whatever runsc holds for id, ignoring errors: it
// cleans up after a failed Create.
func (t *Tier) forceDelete(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	_, _ = t.run(ctx, "delete", "--force", id)
}

// removeCgroupLeftovers removes the empty cgroup directories a failed
// `runsc create` leaves behind (it creates them before the sandbox fails,
// and `runsc delete --force` finds no state to clean up). runsc puts the
// sandbox at linux.cgroupsPath, or /<id> when that is empty. Only empty
// directories go (rmdir), so nothing in use is touched.
func removeCgroupLeftovers(spec *specs.Spec, id string) {
	path := "/" + id
	if spec.Linux != nil && spec.Linux.CgroupsPath != "" {
		path = spec.Linux.CgroupsPath
	}
	if strings.Contains(path, ":") || strings.Contains(path, "..") {
		return // systemd slice syntax: runsc's systemd driver owns it
	}
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", path))
	dirs = append(dirs, filepath.Join("/sys/fs/cgroup", path))
	for _, d := range dirs {
		_ = unix.Rmdir(d)
	}
}

// Start runs the container's process.
func (t *Tier) Start(ctx context.Context, id string) error {
	if _, err := t.run(ctx, "start", id); err != nil {
		return fmt.Errorf("start sandbox %s: %w (see its state with State, or Delete it)", id, err)
	}
	return nil
}

// State returns runsc's OCI state of the container.
func (t *Tier) State(id string) (specs.State, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := t.run(ctx, "state", id)
	if err != nil {
		return specs.State{}, fmt.Errorf("state of sandbox %s: %w", id, err)
	}
	var st specs.State
	if err := json.Unmarshal(out, &st); err != nil {
		return specs.State{}, fmt.Errorf("state of sandbox %s: parse runsc output %q: %w", id, out, err)
	}
	return st, nil
}

// Kill sends sig to the container's process, or with all to every
// process of the container.
func (t *Tier) Kill(id string, sig syscall.Signal, all bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	args := []string{"kill"}
	if all {
		args = append(args, "--all")
	}
	args = append(args, id, strconv.Itoa(int(sig)))
	if _, err := t.run(ctx, args...); err != nil {
		return fmt.Errorf("signal sandbox %s with %v: %w", id, sig, err)
	}
	return nil
}

// Wait blocks until the container's process exits and returns its status.
func (t *Tier) Wait(ctx context.Context, id string) (runtime.ExitStatus, error) {
	if err := runtime.ValidateID(id); err != nil {
		return runtime.ExitStatus{}, err
	}
	dir := t.shimDir(id)
	t.mu.Lock()
	sh := t.shims[id]
	t.mu.Unlock()
	if sh != nil {
		select {
		case <-sh.done:
		case <-ctx.Done():
			return runtime.ExitStatus{}, ctx.Err()
		}
	}
	for {
		if rec, err := readExit(dir); err == nil {
			return exitStatus(rec.Code, rec.Signal), nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return runtime.ExitStatus{}, fmt.Errorf("wait for sandbox %s: %w", id, err)
		}
		if _, err := os.Stat(dir); err != nil {
			return runtime.ExitStatus{}, fmt.Errorf("wait for sandbox %s: %w (it was never created or is deleted)", id, runtime.ErrNotExist)
		}
		if !shimAlive(dir) {
			// The shim is gone without a record: ask runsc, which
			// knows the status only while the sandbox runs.
			return t.runscWait(ctx, id)
		}
		select {
		case <-ctx.Done():
			return runtime.ExitStatus{}, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func readExit(dir string) (exitRecord, error) {
	var rec exitRecord
	b, err := os.ReadFile(filepath.Join(dir, exitFile))
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("parse %s: %w", exitFile, err)
	}
	return rec, nil
}

// shimAlive reports whether the shim recorded in dir still runs. A
// recycled pid makes it look alive; Wait then keeps polling until the
// context ends, which is the safe side.
func shimAlive(dir string) bool {
	pid, err := readPid(filepath.Join(dir, shimPidFile))
	if err != nil {
		return false
	}
	return unix.Kill(pid, 0) == nil
}

// waitResult is what `runsc wait` prints.
type waitResult struct {
	ID         string `json:"id"`
	ExitStatus int    `json:"exitStatus"`
}

func (t *Tier) runscWait(ctx context.Context, id string) (runtime.ExitStatus, error) {
	out, err := t.run(ctx, "wait", id)
	if err != nil {
		return runtime.ExitStatus{}, fmt.Errorf("wait for sandbox %s: %w", id, err)
	}
	var r waitResult
	if err := json.Unmarshal(out, &r); err != nil {
		return runtime.ExitStatus{}, fmt.Errorf("wait for sandbox %s: parse runsc output %q: %w", id, out, err)
	}
	return exitStatus(r.ExitStatus, 0), nil
}

// exitStatus maps runsc's encoding (128+n for signal n, like a shell) to
// an ExitStatus. An exit code above 128 chosen by the process itself is
// indistinguishable from a signal, as with `runsc wait`.
func exitStatus(code, signal int) runtime.ExitStatus {
	if signal == 0 && code > 128 && code < 128+65 {
		signal = code - 128
	}
	return runtime.ExitStatus{Code: code, Signal: syscall.Signal(signal), Known: true}
}

// Delete removes the container; with force a running one is killed first.
func (t *Tier) Delete(ctx context.Context, id string, force bool) error {
	if err := runtime.ValidateID(id); err != nil {
		return err
	}
	args := []string{"delete"}
	if force {
		args = append(args, "--force")
	}
	if _, err := t.run(ctx, append(args, id)...); err != nil {
		return fmt.Errorf("delete sandbox %s: %w (stop it with Kill first, or delete with force)", id, err)
	}
	t.mu.Lock()
	sh := t.shims[id]
	delete(t.shims, id)
	t.mu.Unlock()
	if sh != nil {
		select {
		case <-sh.done:
		case <-ctx.Done():
			return fmt.Errorf("delete sandbox %s: waiting for its shim: %w", id, ctx.Err())
		}
	}
	if err := os.RemoveAll(t.shimDir(id)); err != nil {
		return fmt.Errorf("delete sandbox %s: remove state: %w", id, err)
	}
	return nil
}

// run runs one runsc command with the global flags and returns its
// stdout; the error carries runsc's trimmed stderr. Cancelling ctx kills
// runsc.
func (t *Tier) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, t.runsc, append(append([]string(nil), t.flags...), args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("runsc %s: %w", args[0], ctx.Err())
		}
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("runsc %s: %s", args[0], msg)
	}
	return stdout.Bytes(), nil
}
