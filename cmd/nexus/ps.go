package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/client/printers"
	"nexus.dev/nexus/api/types"
)

func newPsCommand() *cobra.Command {
	var (
		all       bool
		labels    string
		noHeaders bool
		co        = &clientOptions{}
	)
	cmd := &cobra.Command{
		Use:   "ps [WORKLOAD]",
		Short: "List instances: where they run and how they are doing",
		Long: `List the instances of the namespace (-n, default: the context's), of every
namespace (-A) or of one workload, with the node each is bound to, its
addresses (IPv6 first), phase, whether it is ready, how often its container
restarted and its age. An instance that cannot be placed stays Pending:
nexus describe instance NAME says why.`,
		Example: `  nexus ps
  nexus ps web
  nexus ps -A
  nexus ps -l app=web`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 1 {
				return fmt.Errorf("one workload at a time, not %d", len(args))
			}
			return nil
		},
		ValidArgsFunction: co.completeFirst("workloads"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := co.connect()
			if err != nil {
				return err
			}
			defer s.c.Close()
			opts := client.ListOptions{LabelSelector: labels}
			if len(args) == 1 {
				if msg := types.ValidateName(args[0]); msg != "" {
					return fmt.Errorf("workload %q: %s", args[0], msg)
				}
				opts.FieldSelector = "spec.workload=" + args[0]
			}
			instances := mustLookup("instances")
			insts, err := listInstances(cmd, s, s.nsFor(instances, all), opts)
			if err != nil {
				return s.explain(err)
			}
			if len(insts) == 0 {
				where := s.where(instances, all)
				if len(args) == 1 {
					where = fmt.Sprintf("of workload %q %s", args[0], where)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "No instances %s.\n", where)
				return nil
			}
			return printers.Processes(cmd.OutOrStdout(), insts, printers.Options{AllNamespaces: all, NoHeaders: noHeaders})
		},
	}
	co.bind(cmd)
	f := cmd.Flags()
	f.BoolVarP(&all, "all-namespaces", "A", false, "list the instances of every namespace")
	f.StringVarP(&labels, "selector", "l", "", "label selector, e.g. app=web")
	f.BoolVar(&noHeaders, "no-headers", false, "leave out the header row")
	return cmd
}

// listInstances lists the instances of namespace ns ("" for every one).
func listInstances(cmd *cobra.Command, s *session, ns string, opts client.ListOptions) ([]*types.Instance, error) {
	objs, _, err := s.c.List(cmd.Context(), mustLookup("instances"), ns, opts)
	if err != nil {
		return nil, err
	}
	insts := make([]*types.Instance, len(objs))
	for i, o := range objs {
		insts[i] = o.(*types.Instance)
	}
	return insts, nil
}
