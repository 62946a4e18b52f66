package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/cmd/internal/ocicli"
	"nexus.dev/nexus/internal/buildinfo"
	"nexus.dev/nexus/internal/logging"
)

const defaultDataDir = "/var/lib/nexus"

// globalOptions are the flags every subcommand shares.
type globalOptions struct {
	dataDir   string
	logLevel  string
	logFormat string
}

func newRootCommand() *cobra.Command {
	opts := &globalOptions{}
	root := &cobra.Command{
		Use:   "nexus",
		Short: "Nexus: one binary that is a container orchestrator, node agent, OCI runtime and replicated store",
		Long: `Nexus runs containers across machines. One static binary is the control plane,
the node agent, an OCI container runtime and an etcd-compatible replicated store,
with mutual TLS between every pair of machines.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if strings.TrimSpace(opts.dataDir) == "" {
				// filepath.Join("", "pki") is "pki": an empty --data-dir would
				// put state, and an unencrypted root CA key, in the current directory.
				return fmt.Errorf("--data-dir %q names no directory: give the directory for Nexus state (e.g. --data-dir /var/lib/nexus), or leave the flag out to use %s", opts.dataDir, defaultDataDir)
			}
			logger, err := logging.New(os.Stderr, logging.Config{Level: opts.logLevel, Format: opts.logFormat})
			if err != nil {
				return err
			}
			slog.SetDefault(logger)
			return nil
		},
	}
	info := buildinfo.Read()
	ocicli.SetVersion(root, info.Version, info.String())
	pf := root.PersistentFlags()
	pf.StringVar(&opts.dataDir, "data-dir", defaultDataDir, "directory for Nexus state (store, certificates, images); must not be empty")
	pf.StringVar(&opts.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	pf.StringVar(&opts.logFormat, "log-format", "text", "log format: text or json")

	root.AddCommand(newVersionCommand(), newRuntimeCommand(opts), newCertCommand(opts), newTokenCommand(opts), newStoreCommand(opts))
	root.AddCommand(newHelloCommand())
	root.AddCommand(newImageCommand(opts))
	root.AddCommand(newUpCommand(opts), newServerCommand(opts), newAgentCommand(opts), newSecretsCommand(opts), newUserCommand(opts))
	root.AddCommand(newAuditCommand(opts))
	root.AddCommand(newApplyCommand(), newGetCommand(), newDescribeCommand(), newDeleteCommand(), newEditCommand(), newCreateCommand(), newConfigCommand())
	root.AddCommand(newRunCommand(), newExposeCommand(), newScaleCommand(), newRolloutCommand(), newPsCommand(), newLogsCommand())
	root.AddCommand(newTopCommand())
	root.AddCommand(newExecCommand())
	root.AddCommand(newNodeCommand(), newNodesCommand())
	return root
}
