package main

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/internal/logging"
)

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
			logger, err := logging.New(os.Stderr, logging.Config{Level: opts.logLevel, Format: opts.logFormat})
			if err != nil {
				return err
			}
			slog.SetDefault(logger)
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&opts.dataDir, "data-dir", "/var/lib/nexus", "directory for Nexus state (store, certificates, images)")
	pf.StringVar(&opts.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	pf.StringVar(&opts.logFormat, "log-format", "text", "log format: text or json")

	root.AddCommand(newVersionCommand(), newRuntimeCommand(opts, false), newCertCommand(opts), newTokenCommand(opts), newStoreCommand(opts))
	root.AddCommand(newHelloCommand())
	root.AddCommand(newImageCommand(opts))
	root.AddCommand(newDemoCommand(opts))
	return root
}
