package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/client/printers"
	"nexus.dev/nexus/api/types"
)

func newDescribeCommand() *cobra.Command {
	var (
		labels string
		co     *clientOptions
	)
	cmd := &cobra.Command{
		Use:   "describe KIND [NAME...]",
		Short: "Show objects in detail: metadata, spec, status, conditions and related objects",
		Long: `Show objects in a readable multi-line form: metadata, spec and status,
status conditions as a table, and related objects (a workload's instances, the
instances on a node). Without names, every object of the kind (narrowed with
-l) is described. A Secret's values are never shown, only their sizes.`,
		Example: `  nexus describe workload web
  nexus describe node n1
  nexus describe inst -l app=web`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return fmt.Errorf("name the kind (and the objects) to describe, e.g. nexus describe workload web (kinds: %s)", kindList())
			}
			return nil
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
			return co.completeKindsAndNames(cmd, args, prefix)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			rs, err := resources(args[0])
			if err != nil {
				return err
			}
			if len(rs) != 1 {
				return fmt.Errorf("describe one kind at a time, not %s", args[0])
			}
			r := rs[0]
			s, err := co.connect()
			if err != nil {
				return err
			}
			defer s.c.Close()
			ctx := cmd.Context()
			var objs []types.Object
			if len(args) == 1 {
				if objs, _, err = s.c.List(ctx, r, s.nsFor(r, false), client.ListOptions{LabelSelector: labels}); err != nil {
					return s.explain(err)
				}
				if len(objs) == 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "No %s found.\n", r.Plural)
				}
			}
			for _, n := range args[1:] {
				o, err := s.c.Get(ctx, r, s.namespace, n)
				if err != nil {
					return s.explain(err)
				}
				objs = append(objs, o)
			}
			for i, o := range objs {
				if i > 0 {
					fmt.Fprintln(cmd.OutOrStdout())
				}
				var related []types.Object
				if rr, ns, sel, ok := printers.Related(o); ok {
					if related, _, err = s.c.List(ctx, rr, ns, client.ListOptions{FieldSelector: sel}); err != nil {
						return s.explain(err)
					}
				}
				if err := printers.Describe(cmd.OutOrStdout(), o, related, time.Now()); err != nil {
					return err
				}
			}
			return nil
		},
	}
	co = bindClientFlags(cmd)
	cmd.Flags().StringVarP(&labels, "selector", "l", "", "describe the objects matching this label selector")
	return cmd
}
