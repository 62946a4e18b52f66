package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/cmd/internal/ocicli"
	"nexus.dev/nexus/internal/term"
)

func newExecCommand() *cobra.Command {
	co := &clientOptions{}
	var (
		stdin, tty bool
		env        []string
		workdir    string
	)
	cmd := &cobra.Command{
		Use:   "exec [-i] [-t] [-n NAMESPACE] INSTANCE -- COMMAND [ARGS...]",
		Short: "Run a command in a running instance's container",
		Long: `Run a command in the container of a running instance, as the container's
process runs: its user, environment, working directory, capabilities and
limits, in its namespaces and cgroup. The request goes to the API server and
from there to the agent of the instance's node; the command's output comes
back as it is written, and nexus exec exits with the command's exit code
(127 when the command does not exist, 126 when it cannot be run, 128+N when
signal N killed it). Ctrl-C or a lost connection kills the command.

-i passes this program's input to the command (until it ends); without it
the command's input is empty. -t gives the command a terminal of this
terminal's size, which follows resizes, and passes TERM on; the command's
output and errors then come as one stream. With both (an interactive shell)
this terminal is put in raw mode, so that every key, Ctrl-C included, goes
to the command; it is restored when the command ends. Instances are listed
by nexus ps.

Running a command needs the right to create instances/exec (the edit and
admin roles have it, view does not), and every exec is in the audit log with
its command.`,
		Example: `  nexus exec web-7d9f2 -- hostname
  nexus exec -n shop api-4kx2p -- env
  nexus exec -it web-7d9f2 -- sh
  nexus exec -i db-0 -- sh -c 'cat > /tmp/dump.sql' < dump.sql
  nexus exec -e LOG_LEVEL=debug -w /tmp web-7d9f2 -- ls -l`,
		Args: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			switch {
			case len(args) == 0 || dash == 0:
				return errors.New("name the instance and the command, e.g. nexus exec web-7d9f2 -- hostname (instances are listed by nexus ps)")
			case dash < 0 && len(args) > 1:
				return fmt.Errorf("put the command after \"--\": nexus exec %s -- %s", args[0], strings.Join(args[1:], " "))
			case dash > 1:
				return fmt.Errorf("one instance only, not %q: put the command after \"--\"", strings.Join(args[:dash], " "))
			case len(args) < 2:
				return fmt.Errorf("give the command to run after \"--\", e.g. nexus exec %s -- hostname", args[0])
			}
			return nil
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveDefault
			}
			return co.completeNames(mustLookup("instances"), prefix, nil), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := types.ExecOptions{Command: args[1:], Stdin: stdin, TTY: tty, Env: env, WorkingDir: workdir}
			streams := types.ExecStreams{Stdout: cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr()}
			if stdin {
				streams.Stdin = cmd.InOrStdin()
			}
			if errs := types.ValidateExecOptions(&opts); len(errs) > 0 {
				return fmt.Errorf("%w (flags -e and -w, and the command)", errs)
			}
			s, err := co.connect()
			if err != nil {
				return err
			}
			defer s.c.Close()
			restore := func() {}
			if tty {
				fd := int(os.Stdin.Fd())
				if !term.IsTerminal(fd) {
					return errors.New("-t needs a terminal on stdin: run it from a terminal, or leave -t out (-i alone passes piped input)")
				}
				if w, h, err := term.Size(fd); err == nil && w > 0 && h > 0 {
					opts.Size = &types.TerminalSize{Width: w, Height: h}
				}
				if t := os.Getenv("TERM"); t != "" && !hasEnv(env, "TERM") {
					opts.Env = append([]string{"TERM=" + t}, opts.Env...)
				}
				sizes := make(chan types.TerminalSize, 1)
				streams.Resize = sizes
				stopSizes := term.NotifySize(fd, func(w, h uint16) {
					// Only the latest size matters: replace one not sent yet.
					select {
					case <-sizes:
					default:
					}
					sizes <- types.TerminalSize{Width: w, Height: h}
				})
				restore = stopSizes
				// Raw only when the keys go to the command: without -i,
				// Ctrl-C stays this program's, and ends the command with it.
				if stdin {
					undo, err := term.MakeRaw(fd)
					if err != nil {
						stopSizes()
						return fmt.Errorf("put the terminal in raw mode: %w", err)
					}
					restore = func() { stopSizes(); undo() }
				}
			}
			code, err := s.c.Exec(cmd.Context(), s.namespace, args[0], opts, streams)
			restore()
			switch {
			case err != nil && code > 0:
				// The command could not be started: say why, and exit as a
				// shell would.
				fmt.Fprintln(cmd.ErrOrStderr(), "Error:", err)
				return ocicli.ExitError{Code: code}
			case err != nil:
				return s.explain(err)
			case code != 0:
				return ocicli.ExitError{Code: code}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&stdin, "stdin", "i", false, "pass this program's input to the command")
	f.BoolVarP(&tty, "tty", "t", false, "give the command a terminal of this one's size (raw mode with -i)")
	f.StringArrayVarP(&env, "env", "e", nil, "set a variable NAME=VALUE for the command (repeatable)")
	f.StringVarP(&workdir, "workdir", "w", "", "run the command in this directory of the container (absolute)")
	co.bind(cmd)
	return cmd
}

func hasEnv(env []string, name string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, name+"=") {
			return true
		}
	}
	return false
}
