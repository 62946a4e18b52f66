package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/internal/buildinfo"
)

func newVersionCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version of this binary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := buildinfo.Read()
			switch output {
			case "text", "":
				_, err := fmt.Fprint(cmd.OutOrStdout(), info.String())
				return err
			case "json":
				return printJSON(cmd.OutOrStdout(), info)
			}
			return fmt.Errorf("unknown output format %q: use text or json", output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
