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
		co     = &clientOptions{}
	)
	cmd := &cobra.Command{
		Use:   "describe KIND [NAME...]",
		Short: "Show objects in detail: metadata, spec, status, conditions and related objects",
		Long: `Show objects in a readable multi-line form: metadata, spec and status,
status conditions as a table, and related objects (a workload's instances, the
instances on a node, a service's backends with their node, addresses and
readiness). Without names, every object of the kind (narrowed with
-l) is described. A Secret's values are never shown, only their sizes.`,
		Example: `  nexus describe workload web
  nexus describe node n1
  nexus describe svc web
  nexus describe inst -l app=web`,
		Args:              kindArg("nexus describe workload web"),
		ValidArgsFunction: co.completeKindsAndNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := oneResource(args[0], "describe")
			if err != nil {
				return err
			}
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
	co.bind(cmd)
	cmd.Flags().StringVarP(&labels, "selector", "l", "", "describe the objects matching this label selector")
	return cmd
}
