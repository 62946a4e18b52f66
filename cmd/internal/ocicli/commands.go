package ocicli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/runtime"
	"nexus.dev/nexus/runtime/spec"
)

// idRules says what a container ID may be, as runtime.ValidateID checks it.
var idRules = fmt.Sprintf("1-%d characters from A-Z a-z 0-9 _ . + -, starting with a letter or digit", runtime.MaxIDLength)

func rtCreate(o *runtimeOptions) *cobra.Command {
	var co runtime.CreateOptions
	cmd := &cobra.Command{
		Use:   "create [flags] ID",
		Short: "Create a container from a bundle; its process waits for start",
		Long: `Create a container from a bundle (config.json and the root filesystem) and
leave its process waiting for start. ID is a name you choose for the container,
unique among the containers under --root:
` + idRules + `.
Start, state, kill, exec and delete refer to the container by it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.rt.Create(cmd.Context(), args[0], co)
		},
	}
	createFlags(cmd, &co)
	return cmd
}

func createFlags(cmd *cobra.Command, co *runtime.CreateOptions) {
	f := cmd.Flags()
	f.StringVarP(&co.Bundle, "bundle", "b", ".", "bundle directory (holds config.json and the root filesystem)")
	f.StringVar(&co.PidFile, "pid-file", "", "write the container's host pid to this file")
	f.StringVar(&co.ConsoleSocket, "console-socket", "", "unix socket that receives the pty master when process.terminal is set")
	f.IntVar(&co.PreserveFDs, "preserve-fds", 0, "pass this many extra descriptors (from 3 up) to the container")
	f.BoolVar(&co.NoPivot, "no-pivot", false, "use MS_MOVE and chroot instead of pivot_root (for ramfs roots; weaker)")
	f.Bool("no-new-keyring", false, "accepted for compatibility (no session keyring is created)")
}

func rtStart(o *runtimeOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "start ID",
		Short: "Run the process of a created container",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.rt.Start(cmd.Context(), args[0])
		},
	}
}

func rtState(o *runtimeOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "state ID",
		Short: "Print the container's state as OCI state JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := o.rt.State(args[0])
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), st)
		},
	}
}

func rtKill(o *runtimeOptions) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "kill [--all] ID [SIGNAL]",
		Short: "Send a signal (default SIGTERM) to the container's process, or with --all to all of them",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			sig := syscall.SIGTERM
			if len(args) == 2 {
				s, err := parseSignal(args[1])
				if err != nil {
					return err
				}
				sig = s
			}
			return o.rt.Kill(args[0], sig, all)
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "signal every process in the container")
	return cmd
}

// parseSignal accepts "TERM", "SIGTERM" or "15".
func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("signal %d is out of range 1-64", n)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q (use a name like TERM or KILL, or a number)", s)
}

func rtDelete(o *runtimeOptions) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "delete [--force] ID",
		Short: "Remove a stopped container (with --force, kill it first)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.rt.Delete(cmd.Context(), args[0], force)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running container before removing it")
	return cmd
}

func rtRun(o *runtimeOptions) *cobra.Command {
	var co runtime.CreateOptions
	var detach bool
	cmd := &cobra.Command{
		Use:   "run [flags] ID",
		Short: "Create and start a container, wait for it and remove it (exits with its status)",
		Long: `Create a container from a bundle, start it, wait for its process and remove it.
The command exits with the process's exit status.

ID is a name you choose for the container, unique among the containers under
--root: ` + idRules + `.
Other commands (state, kill, exec, delete) refer to the container by it.

When config.json sets process.terminal (as runc spec and crun spec do), the
container gets a pseudo-terminal whose other end is this command: its stdin
goes to the container, the container's output comes out of its stdout. With
--console-socket the terminal goes to that socket instead.

Signals sent to this command go to the container's process once it runs;
an INT, TERM, HUP or QUIT that comes before stops the create and removes
what it made.

The bundle is a directory holding config.json (spec writes a default one) and
the root filesystem that config.json's root.path names (rootfs by default).`,
		Example: `  # a bundle: a default config.json and a busybox root filesystem
  mkdir -p mybundle/rootfs
  podman export $(podman create busybox) | tar -C mybundle/rootfs -x
  nexus-runtime spec --bundle mybundle
  # run it as the container "web1"; the process is config.json's process.args
  nexus-runtime run --bundle mybundle web1
  # or in the background, then stop and remove it
  nexus-runtime run --detach --bundle mybundle web1
  nexus-runtime kill web1 TERM
  nexus-runtime delete web1`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			id := args[0]
			var relay *signalRelay
			// In the foreground without --console-socket this command is
			// the other end of a process.terminal's pty, as for runc and
			// crun: bundles from `runc spec` and `crun spec` set terminal.
			stopConsole := func() {}
			if !detach {
				relay = catchSignals(cancel)
				defer relay.stop()
				if co.ConsoleSocket == "" {
					co.Console = func(master *os.File) { stopConsole = runtime.RelayConsole(master, os.Stdin, os.Stdout) }
				}
			}
			if err := o.rt.Create(ctx, id, co); err != nil {
				return relay.explain(id, err)
			}
			err := ctx.Err()
			if err == nil {
				err = o.rt.Start(ctx, id)
			}
			if err != nil {
				_ = o.rt.Delete(context.Background(), id, true)
				stopConsole()
				return relay.explain(id, err)
			}
			if detach {
				return nil
			}
			relay.forwardTo(func(s syscall.Signal) { _ = o.rt.Kill(id, s, false) })
			status, err := o.rt.Wait(context.Background(), id)
			stopConsole()
			if derr := o.rt.Delete(context.Background(), id, true); derr != nil && err == nil {
				err = derr
			}
			if err != nil {
				return err
			}
			if status.OOMKilled {
				slog.Warn("container ran out of memory", "id", id, "status", status.String())
			}
			if status.Code != 0 {
				return ExitError{status.Code}
			}
			return nil
		},
	}
	createFlags(cmd, &co)
	cmd.Flags().BoolVarP(&detach, "detach", "d", false, "return once the container runs (it is not removed)")
	return cmd
}

// relayedSignals are the signals `run` passes on to the container.
var relayedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH}

// signalRelay catches the signals a user sends to `run` from the start and
// relays them to the container once it runs. Before that, one that would
// have ended the command (INT, TERM, HUP, QUIT) cancels the create, which
// then removes what it made, instead of killing the command halfway and
// leaving state, cgroups and a dying init behind.
//
// signal.Notify runs in the relay's goroutine, not on the command's path:
// the Go runtime starts two threads for it (one holds the signal mask) and
// hands each signal's mask change to the second, 2.0 ms on the bench
// machine when it ran between start and wait, by which time a short-lived
// container had already exited. It now runs while create waits for the
// init.
type signalRelay struct {
	ch     chan os.Signal
	done   chan struct{}
	cancel context.CancelFunc

	mu     sync.Mutex
	target func(syscall.Signal) // set once the container runs
	ended  os.Signal            // the signal that cancelled the create
}

func catchSignals(cancel context.CancelFunc) *signalRelay {
	r := &signalRelay{ch: make(chan os.Signal, 16), done: make(chan struct{}), cancel: cancel}
	go r.loop()
	return r
}

func (r *signalRelay) loop() {
	signal.Notify(r.ch, relayedSignals...)
	defer signal.Stop(r.ch)
	for {
		select {
		case s := <-r.ch:
			r.mu.Lock()
			target := r.target
			if target == nil && s != syscall.SIGUSR1 && s != syscall.SIGUSR2 && s != syscall.SIGWINCH && r.ended == nil {
				r.ended = s
				r.cancel()
			}
			r.mu.Unlock()
			if target != nil {
				target(s.(syscall.Signal))
			}
		case <-r.done:
			return
		}
	}
}

// forwardTo makes every signal from now on go to f, and passes on one that
// came after the container started but before this call.
func (r *signalRelay) forwardTo(f func(syscall.Signal)) {
	r.mu.Lock()
	r.target = f
	early := r.ended
	r.mu.Unlock()
	if early != nil {
		f(early.(syscall.Signal))
	}
}

// explain says which signal stopped a create or start that failed.
func (r *signalRelay) explain(id string, err error) error {
	if r == nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended != nil {
		return fmt.Errorf("run %s: stopped by %v before the container started; nothing was left behind (%w)", id, r.ended, err)
	}
	return err
}

func (r *signalRelay) stop() { close(r.done) }

func rtExec(o *runtimeOptions) *cobra.Command {
	var (
		processFile, cwd, user, pidFile, consoleSocket string
		env, caps                                      []string
		tty, detach, noNewPrivs                        bool
		preserveFDs                                    int
	)
	cmd := &cobra.Command{
		Use:   "exec [flags] ID [COMMAND [ARG...]]",
		Short: "Run another process in a running container",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			var proc *specs.Process
			if processFile != "" {
				data, err := fsutil.ReadFileLimit(processFile, spec.MaxSize)
				if err != nil {
					return fmt.Errorf("read --process: %w", err)
				}
				proc = &specs.Process{}
				if err := json.Unmarshal(data, proc); err != nil {
					return fmt.Errorf("--process %s is not a valid process JSON: %w", processFile, err)
				}
			} else {
				if len(args) < 2 {
					return errors.New("give a command to run, or --process FILE")
				}
				st, err := o.rt.Spec(id)
				if err != nil {
					return err
				}
				base := st.Process
				proc = &specs.Process{Args: args[1:], Env: base.Env, Cwd: base.Cwd, User: base.User,
					Capabilities: base.Capabilities, NoNewPrivileges: base.NoNewPrivileges, Rlimits: base.Rlimits}
			}
			proc.Terminal = proc.Terminal || tty
			proc.Env = append(proc.Env, env...)
			if cwd != "" {
				proc.Cwd = cwd
			}
			if noNewPrivs {
				proc.NoNewPrivileges = true
			}
			if user != "" {
				uid, gid, err := parseUser(user)
				if err != nil {
					return err
				}
				proc.User.UID, proc.User.GID = uid, gid
			}
			if len(caps) > 0 {
				if proc.Capabilities == nil {
					proc.Capabilities = &specs.LinuxCapabilities{}
				}
				c := proc.Capabilities
				c.Bounding, c.Effective, c.Permitted = append(c.Bounding, caps...), append(c.Effective, caps...), append(c.Permitted, caps...)
			}
			p, err := o.rt.Exec(cmd.Context(), id, proc, runtime.ExecOptions{PidFile: pidFile, ConsoleSocket: consoleSocket, PreserveFDs: preserveFDs, Detach: detach})
			if err != nil {
				return err
			}
			if detach {
				return nil
			}
			status, err := p.Wait(cmd.Context())
			if err != nil {
				return err
			}
			if status.Code != 0 {
				return ExitError{status.Code}
			}
			return nil
		},
	}
	f := cmd.Flags()
	// Everything after the container id belongs to the command: `exec ID sh -c …`.
	f.SetInterspersed(false)
	f.StringVarP(&processFile, "process", "p", "", "JSON file with the process to run (runtime-spec process object)")
	f.StringVar(&cwd, "cwd", "", "working directory inside the container")
	f.StringArrayVarP(&env, "env", "e", nil, "set an environment variable (NAME=VALUE), repeatable")
	f.StringVarP(&user, "user", "u", "", "uid[:gid] to run as")
	f.StringArrayVarP(&caps, "cap", "c", nil, "add a capability, repeatable")
	f.BoolVarP(&tty, "tty", "t", false, "allocate a pseudo-terminal (needs --console-socket)")
	f.BoolVarP(&detach, "detach", "d", false, "do not wait for the process")
	f.BoolVar(&noNewPrivs, "no-new-privs", false, "set no_new_privs for the process")
	f.StringVar(&pidFile, "pid-file", "", "write the process's host pid to this file")
	f.StringVar(&consoleSocket, "console-socket", "", "unix socket that receives the pty master")
	f.IntVar(&preserveFDs, "preserve-fds", 0, "pass this many extra descriptors (from 3 up)")
	return cmd
}

func parseUser(s string) (uint32, uint32, error) {
	u, g, hasG := strings.Cut(s, ":")
	uid, err := strconv.ParseUint(u, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("--user %q: uid must be a number", s)
	}
	gid := uint64(0)
	if hasG {
		if gid, err = strconv.ParseUint(g, 10, 32); err != nil {
			return 0, 0, fmt.Errorf("--user %q: gid must be a number", s)
		}
	}
	return uint32(uid), uint32(gid), nil
}

func rtPs(o *runtimeOptions) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "ps [--format table|json] ID",
		Short: "List the processes in a container",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pids, err := o.rt.Processes(args[0])
			if err != nil {
				return err
			}
			switch format {
			case "json":
				if pids == nil {
					pids = []int{}
				}
				return json.NewEncoder(cmd.OutOrStdout()).Encode(pids)
			case "table":
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "PID\tCOMMAND")
				for _, p := range pids {
					comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p))
					fmt.Fprintf(w, "%d\t%s\n", p, strings.TrimSpace(string(comm)))
				}
				return w.Flush()
			}
			return fmt.Errorf("unknown --format %q: use table or json", format)
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "table", "output format: table or json")
	return cmd
}

func rtList(o *runtimeOptions) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List containers",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			states, err := o.rt.List()
			if err != nil {
				return err
			}
			if format == "json" {
				if states == nil {
					states = []specs.State{}
				}
				return printJSON(cmd.OutOrStdout(), states)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tPID\tSTATUS\tBUNDLE")
			for _, s := range states {
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", s.ID, s.Pid, s.Status, s.Bundle)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "table", "output format: table or json")
	return cmd
}

func rtFeatures(o *runtimeOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "features",
		Short: "Print what this runtime supports (OCI features JSON)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return printJSON(cmd.OutOrStdout(), runtime.Features())
		},
	}
}

func rtSpec(o *runtimeOptions) *cobra.Command {
	var bundle string
	cmd := &cobra.Command{
		Use:   "spec [--bundle DIR]",
		Short: "Write a default config.json (busybox-friendly, hardened) into the bundle",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := bundle + "/config.json"
			if _, err := os.Stat(path); err == nil {
				return fmt.Errorf("%s already exists: remove it first", path)
			}
			data, err := json.MarshalIndent(spec.Default(), "", "  ")
			if err != nil {
				return err
			}
			if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: put the root filesystem in %s, set process.args to the program to run, then: %s run --bundle %s ID\n",
				path, filepath.Join(bundle, "rootfs"), cmd.Parent().CommandPath(), bundle)
			return err
		},
	}
	cmd.Flags().StringVarP(&bundle, "bundle", "b", ".", "bundle directory")
	return cmd
}

func rtStats(o *runtimeOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "stats ID",
		Short: "Print the container's resource usage as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.rt.Stats(args[0])
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), s)
		},
	}
}
