package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/api/client/printers"
	"nexus.dev/nexus/api/types"
)

func newCreateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "create",
		Short:   "Create an object from the command line (nexus apply takes files)",
		Example: `  nexus create namespace shop`,
	}
	co := &clientOptions{}
	ns := &cobra.Command{
		Use:     "namespace NAME",
		Aliases: []string{"ns"},
		Short:   "Create a namespace",
		Example: `  nexus create namespace shop`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("name the namespace: nexus create namespace NAME")
			}
			if msg := types.ValidateName(args[0]); msg != "" {
				return fmt.Errorf("namespace name %q: %s", args[0], msg)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := co.connect()
			if err != nil {
				return err
			}
			defer s.c.Close()
			n := &types.Namespace{TypeMeta: types.TypeMeta{APIVersion: types.APIVersion, Kind: "Namespace"}}
			n.Name = args[0]
			o, err := s.c.Create(cmd.Context(), n)
			if err != nil {
				return s.explain(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s created\n", printers.Ref(o))
			return nil
		},
	}
	co.bind(ns)
	cmd.AddCommand(ns)
	return cmd
}
