package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/client/printers"
	"nexus.dev/nexus/api/types"
)

func newTopCommand() *cobra.Command {
	var (
		all       bool
		labels    string
		sortBy    string
		noHeaders bool
		co        = &clientOptions{}
	)
	cmd := &cobra.Command{
		Use:   "top [instances|nodes]",
		Short: "Show the CPU and memory that instances and nodes use",
		Long: `Show what the instances of the namespace (-n, default: the context's) or of
every namespace (-A) use, as their nodes' agents measured it from each
container's cgroup: CPU in millicores (averaged over the agent's sampling
interval, 10 s), memory (the working set: in use minus the page cache the
kernel reclaims first), memory as a percentage of the instance's limit and
how many of its processes the kernel's OOM killer killed (across restarts).

"nexus top nodes" sums the instances of each node and compares the sums
with the node's capacity.

The numbers are those of each instance's status.resources: an agent rewrites
them when they change noticeably (CPU by 10 % or 5m, memory by 5 % or 1 MiB,
any OOM kill), so a small drift may not show yet. An instance its agent has not
measured yet (not running, or started in the last seconds) is not listed.`,
		Example: `  nexus top
  nexus top instances -A --sort-by memory
  nexus top instances -n shop -l app=web --sort-by cpu
  nexus top nodes`,
		ValidArgs: []string{"instances", "nodes"},
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 1 {
				return fmt.Errorf("one of instances or nodes, not %d arguments", len(args))
			}
			if len(args) == 1 && topKind(args[0]) == "" {
				return fmt.Errorf("cannot show the use of %q: use instances or nodes", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			by, err := printers.ParseTopSort(sortBy)
			if err != nil {
				return fmt.Errorf("--sort-by: %w", err)
			}
			kind := "instances"
			if len(args) == 1 {
				kind = topKind(args[0])
			}
			s, err := co.connect()
			if err != nil {
				return err
			}
			defer s.c.Close()
			o := printers.Options{AllNamespaces: all, NoHeaders: noHeaders}
			if kind == "nodes" {
				if all || s.explicitNS || labels != "" {
					return fmt.Errorf("nexus top nodes sums every namespace's instances: -A, -n and -l apply to nexus top instances")
				}
				nodes, insts, err := listTopNodes(cmd, s)
				if err != nil {
					return s.explain(err)
				}
				if len(nodes) == 0 {
					fmt.Fprintln(cmd.ErrOrStderr(), "No nodes have registered: nexus up starts a server with a node.")
					return nil
				}
				return printers.TopNodes(cmd.OutOrStdout(), nodes, insts, by, o)
			}
			instances := mustLookup("instances")
			insts, err := listInstances(cmd, s, s.nsFor(instances, all), client.ListOptions{LabelSelector: labels})
			if err != nil {
				return s.explain(err)
			}
			if len(printers.Measured(insts)) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "No measured instances %s: an agent reports an instance's use within 10 s of its start (nexus ps shows what runs).\n", s.where(instances, all))
				return nil
			}
			return printers.TopInstances(cmd.OutOrStdout(), insts, by, o)
		},
	}
	co.bind(cmd)
	f := cmd.Flags()
	f.BoolVarP(&all, "all-namespaces", "A", false, "show the instances of every namespace")
	f.StringVarP(&labels, "selector", "l", "", "label selector for the instances, e.g. app=web")
	f.StringVar(&sortBy, "sort-by", "", "order: cpu or memory (most first), or name (the default)")
	f.BoolVar(&noHeaders, "no-headers", false, "leave out the header row")
	_ = cmd.RegisterFlagCompletionFunc("sort-by", cobra.FixedCompletions([]string{"cpu", "memory", "name"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// topKind reads the kind argument of nexus top ("" if unknown).
func topKind(arg string) string {
	switch arg {
	case "instances", "instance", "inst":
		return "instances"
	case "nodes", "node", "no":
		return "nodes"
	}
	return ""
}

func listTopNodes(cmd *cobra.Command, s *session) ([]*types.Node, []*types.Instance, error) {
	objs, _, err := s.c.List(cmd.Context(), mustLookup("nodes"), "", client.ListOptions{})
	if err != nil {
		return nil, nil, err
	}
	nodes := make([]*types.Node, len(objs))
	for i, o := range objs {
		nodes[i] = o.(*types.Node)
	}
	insts, err := listInstances(cmd, s, "", client.ListOptions{})
	return nodes, insts, err
}
