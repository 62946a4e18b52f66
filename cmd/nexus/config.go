package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newConfigCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show the client config and choose its context",
		Long: `Show the client config file and choose the context the other commands use.
The file (--config, else $NEXUS_CONFIG, else ~/.nexus/config) lists clusters
(server URL, CA certificate, http3), users (client certificate and key, or a
token) and contexts pairing one of each with a default namespace. nexus server
writes an admin config to <data-dir>/admin.conf.`,
		Example: `  nexus config get-contexts
  nexus config use-context prod
  nexus --config /var/lib/nexus/admin.conf config view`,
	}
	co := &clientOptions{}
	co.bind(cmd)
	for _, name := range []string{"context", "namespace", "http3"} {
		_ = cmd.PersistentFlags().MarkHidden(name)
	}
	var (
		raw, minify bool
		output      string
	)
	view := &cobra.Command{
		Use:   "view",
		Short: "Print the config; keys, tokens and certificates are left out unless --raw",
		Example: `  nexus config view
  nexus config view --minify -o json
  nexus config view --raw > backup.conf`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "yaml" && output != "json" {
				return fmt.Errorf("unknown output format %q: use yaml or json", output)
			}
			cfg, _, err := co.loadConfig()
			if err != nil {
				return err
			}
			if minify {
				if err := cfg.Minify(); err != nil {
					return err
				}
			}
			if !raw {
				cfg = cfg.Redacted()
			}
			out, err := cfg.Marshal(output == "json")
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	view.Flags().BoolVar(&raw, "raw", false, "show keys, tokens and certificates too")
	view.Flags().BoolVar(&minify, "minify", false, "show only the current context with its cluster and user")
	view.Flags().StringVarP(&output, "output", "o", "yaml", "output format: yaml or json")

	getContexts := &cobra.Command{
		Use:     "get-contexts",
		Short:   "List the contexts; * marks the current one",
		Example: `  nexus config get-contexts`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := co.loadConfig()
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "CURRENT\tNAME\tCLUSTER\tUSER\tNAMESPACE")
			for _, x := range cfg.Contexts {
				cur := ""
				if x.Name == cfg.CurrentContext {
					cur = "*"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cur, x.Name, x.Cluster, x.User, x.Namespace)
			}
			return tw.Flush()
		},
	}
	useContext := &cobra.Command{
		Use:     "use-context NAME",
		Short:   "Make NAME the current context",
		Example: `  nexus config use-context prod`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("name the context: nexus config use-context NAME (nexus config get-contexts lists them)")
			}
			return nil
		},
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			cfg, _, err := co.loadConfig()
			if err != nil || len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var names []string
			for _, x := range cfg.Contexts {
				names = append(names, x.Name)
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, path, err := co.loadConfig()
			if err != nil {
				return err
			}
			if err := cfg.SetCurrentContext(args[0]); err != nil {
				return err
			}
			if err := cfg.Write(path); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Switched to context %q.\n", args[0])
			return nil
		},
	}
	currentContext := &cobra.Command{
		Use:     "current-context",
		Short:   "Print the current context",
		Example: `  nexus config current-context`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, path, err := co.loadConfig()
			if err != nil {
				return err
			}
			if cfg.CurrentContext == "" {
				return fmt.Errorf("%s has no current context: choose one with nexus config use-context NAME (contexts: %s)", path, cfg.ContextNames())
			}
			fmt.Fprintln(cmd.OutOrStdout(), cfg.CurrentContext)
			return nil
		},
	}
	cmd.AddCommand(view, getContexts, useContext, currentContext)
	return cmd
}
