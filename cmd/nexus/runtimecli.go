package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/cmd/internal/ocicli"
	"nexus.dev/nexus/runtime/initbin"
)

// runtimeNote tells users of `nexus runtime` what it costs and where the
// lean entry is.
const runtimeNote = `

Through nexus, every call first initialises all of nexus's packages (the store,
gRPC, protobuf: about 4.5 ms per call, more than the rest of a container
start). OCI tools and scripts should call the lean nexus-runtime program
instead: the same command line, linking only the runtime. make build writes it
to bin/nexus-runtime; nexus runtime extract writes it from this binary.`

func newRuntimeCommand(g *globalOptions) *cobra.Command {
	cmd := ocicli.New(ocicli.Config{Name: "runtime", LogLevel: &g.logLevel, LogFormat: &g.logFormat, Note: runtimeNote})
	cmd.AddCommand(newRuntimeExtractCommand())
	return cmd
}

func newRuntimeExtractCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "extract [PATH]",
		Short: "Write the lean nexus-runtime program carried in this binary to PATH",
		Long: `Write the nexus-runtime program that make build embeds in nexus to PATH (a file
or a directory; default: nexus-runtime beside this binary). It is the OCI
runtime command line without the rest of nexus, for OCI tools such as podman
(--runtime PATH) and containerd.`,
		Example: `  nexus runtime extract /usr/local/bin/nexus-runtime
  podman --runtime /usr/local/bin/nexus-runtime --cgroup-manager cgroupfs run --rm busybox true`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(initbin.Runtime) == 0 {
				return errors.New("this nexus binary carries no nexus-runtime program (it was built with go build, not make build): build it with make build, or go build ./cmd/nexus-runtime")
			}
			path, err := extractPath(args)
			if err != nil {
				return err
			}
			if old, err := os.ReadFile(path); err == nil {
				if bytes.Equal(old, initbin.Runtime) {
					_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s is already this nexus-runtime\n", path)
					return err
				}
				if !force {
					return fmt.Errorf("%s exists and is not this nexus-runtime: remove it or pass --force to replace it", path)
				}
			} else if !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("read %s: %w", path, err)
			}
			if err := initbin.WriteFile(path, initbin.Runtime, 0o755); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", path)
			return err
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "replace an existing file at PATH")
	return cmd
}

// extractPath is where extract writes: args[0], args[0]/nexus-runtime if
// that is a directory, or nexus-runtime beside this binary.
func extractPath(args []string) (string, error) {
	if len(args) == 0 {
		self, err := os.Executable()
		if err != nil {
			return "", fmt.Errorf("find this binary's directory (give PATH instead): %w", err)
		}
		return filepath.Join(filepath.Dir(self), "nexus-runtime"), nil
	}
	if fi, err := os.Stat(args[0]); err == nil && fi.IsDir() {
		return filepath.Join(args[0], "nexus-runtime"), nil
	}
	return args[0], nil
}
