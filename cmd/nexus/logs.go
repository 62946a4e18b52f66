package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/api/client"
)

func newLogsCommand() *cobra.Command {
	var (
		opts  client.LogOptions
		since string
		co    = &clientOptions{}
	)
	cmd := &cobra.Command{
		Use:   "logs INSTANCE",
		Short: "Print the output of an instance's container",
		Long: `Print what an instance's container wrote to stdout and stderr, in the order it was
written, one line per line, from the log its node's agent keeps (every run of the
container, also those before a restart). The agent rotates the log by size (10 MiB,
two files, by default), so the oldest output of a long-running instance is gone.

-f keeps printing new output as it comes, until Ctrl-C or until the instance is
deleted. --tail N starts with the last N lines (default: all), --since with what was
written in the last 5m (any duration, counted by the server's clock) or after an
RFC 3339 time. --timestamps starts each line with the time the agent read it (UTC,
nanoseconds). nexus ps lists the instances; reading a log needs "get" on
instances/log in the instance's namespace (the view, edit and admin roles have it).`,
		Example: `  nexus logs web-7xk2p
  nexus logs -f web-7xk2p
  nexus logs --tail 20 -f web-7xk2p
  nexus logs --since 10m --timestamps web-7xk2p
  nexus logs --since 2026-12-03T05:00:00Z api-k2b9d -n shop`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("give one instance, e.g. nexus logs web-7xk2p (nexus ps lists them)")
			}
			return nil
		},
		ValidArgsFunction: co.completeFirst("instances"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.TailLines < -1 {
				return fmt.Errorf("--tail %d: give a number of lines, 0 or more (-1, the default, for all)", opts.TailLines)
			}
			if since != "" {
				var err error
				if opts.Since, opts.SinceSeconds, err = client.ParseSince(since); err != nil {
					return fmt.Errorf("--%w", err)
				}
			}
			s, err := co.connect()
			if err != nil {
				return err
			}
			defer s.c.Close()
			rc, err := s.c.Logs(cmd.Context(), s.namespace, args[0], opts)
			if err != nil {
				return s.explain(err)
			}
			defer rc.Close()
			if _, err := io.Copy(cmd.OutOrStdout(), rc); err != nil && cmd.Context().Err() == nil {
				return s.explain(fmt.Errorf("the log of instance %s/%s broke off: %w", s.namespace, args[0], err))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&opts.Follow, "follow", "f", false, "keep printing new output until Ctrl-C or the instance is deleted")
	f.IntVar(&opts.TailLines, "tail", -1, "print only the last N lines; -1 prints all")
	f.StringVar(&since, "since", "", "print only output written in the last DURATION (30s, 5m, 2h) or after an RFC 3339 time")
	f.BoolVar(&opts.Timestamps, "timestamps", false, "start each line with the time it was written (RFC 3339, UTC)")
	co.bind(cmd)
	return cmd
}
