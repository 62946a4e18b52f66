// Package ocicli is the OCI runtime command line (create, start, state,
// kill, delete, run, exec, ps, list, features, spec, stats: runc's and
// crun's commands and flags, which is what podman and containerd call). Two
// programs wire it: the lean nexus-runtime program (cmd/nexus-runtime) as
// its root command, and nexus as `nexus runtime`.
//
// It imports cobra and the runtime's packages and nothing else, because
// Go initialises every linked package before main: nexus-runtime, which OCI
// tools start once per container operation, must not pay for the store,
// gRPC and protobuf that nexus links (4.5 ms of package initialisation per
// call, measured with GODEBUG=inittrace=1; docs/benchmarks.md). The test
// TestRuntimeProgramIsLean in cmd/nexus keeps it that way.
package ocicli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/cobra"

	"nexus.dev/nexus/internal/buildinfo"
	"nexus.dev/nexus/internal/logging"
	"nexus.dev/nexus/runtime"
)

// ExitError makes the process exit with a given status, e.g. a container's.
type ExitError struct{ Code int }

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// ExitCode is the status a program exits with after err: the container's
// for an ExitError, else 1.
func ExitCode(err error) int {
	var ee ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return 1
}

// Config says where the command line is mounted.
type Config struct {
	// Name is the command's name: the program's name for a root command,
	// "runtime" under nexus.
	Name string
	// LogLevel and LogFormat are the parent command's log flags. When nil
	// the command is a program's root command and owns --log-level,
	// --log-format and --version itself.
	LogLevel, LogFormat *string
	// Note is appended to the long help.
	Note string
}

type runtimeOptions struct {
	logLevel, logFormat *string
	root                string
	logFile             string
	debug               bool
	systemdCgroup       bool
	rt                  *runtime.Runtime
}

// New returns the OCI runtime command line.
func New(cfg Config) *cobra.Command {
	o := &runtimeOptions{logLevel: cfg.LogLevel, logFormat: cfg.LogFormat}
	standalone := cfg.LogLevel == nil || cfg.LogFormat == nil
	if standalone {
		o.logLevel, o.logFormat = new(string), new(string)
	}
	cmd := &cobra.Command{
		Use:   cfg.Name,
		Short: "OCI container runtime (create, start, state, kill, delete, run, exec, ps, features)",
		Long: `An OCI runtime-spec container runtime. It follows the OCI runtime command line,
so tools that drive runc or crun can drive it: point them at the nexus-runtime
program (make build writes bin/nexus-runtime; nexus runtime extract writes it
from a nexus binary), e.g. podman --runtime /usr/local/bin/nexus-runtime.

Lifecycle: create sets up the container from a bundle and leaves it waiting;
start runs its process; state reports it; kill signals it; delete removes it.
run does create + start + wait + delete in one step. Every command names the
container by its ID, a name you choose at create (or run) time.` + cfg.Note,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			var w io.Writer = os.Stderr
			if o.logFile != "" {
				f, err := os.OpenFile(o.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
				if err != nil {
					return fmt.Errorf("open --log %s: %w", o.logFile, err)
				}
				w = f
			}
			level := *o.logLevel
			if o.debug {
				level = "debug"
			}
			logger, err := logging.New(w, logging.Config{Level: level, Format: *o.logFormat})
			if err != nil {
				return err
			}
			slog.SetDefault(logger)
			if o.systemdCgroup {
				return errors.New("--systemd-cgroup is not supported: use the cgroupfs manager (podman: --cgroup-manager=cgroupfs)")
			}
			o.rt = runtime.New(runtime.Config{Root: o.root, Logger: logger})
			return nil
		},
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&o.root, "root", runtime.DefaultRoot, "directory for container state (on tmpfs)")
	pf.StringVar(&o.logFile, "log", "", "write log records to this file instead of stderr")
	pf.BoolVar(&o.debug, "debug", false, "log debug records")
	pf.BoolVar(&o.systemdCgroup, "systemd-cgroup", false, "place containers with systemd (not supported; accepted so callers get a clear error)")
	pf.Bool("rootless", false, "accepted for compatibility; rootless mode is detected")
	if standalone {
		pf.StringVar(o.logFormat, "log-format", "text", "log format: text or json")
		pf.StringVar(o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
		info := buildinfo.Read()
		SetVersion(cmd, info.Version, fmt.Sprintf("%s version %s\ncommit: %s\nspec: %s\ngo: %s\n",
			cfg.Name, info.Version, info.Commit, specs.Version, info.GoVersion))
	}
	cmd.AddCommand(rtCreate(o), rtStart(o), rtState(o), rtKill(o), rtDelete(o), rtRun(o), rtExec(o),
		rtPs(o), rtList(o), rtFeatures(o), rtSpec(o), rtStats(o))
	return cmd
}

// SetVersion makes `cmd --version` (and -v) print text, as runc and crun
// do: OCI tools call `<runtime> --version`.
func SetVersion(cmd *cobra.Command, version, text string) {
	cmd.Version = version
	// cobra prints a template; quoting text makes it one literal.
	cmd.SetVersionTemplate("{{print " + strconv.Quote(text) + "}}")
}

// printJSON writes v as indented JSON, as runc prints state.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
