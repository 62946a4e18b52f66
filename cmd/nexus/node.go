package main

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/client/printers"
	"nexus.dev/nexus/controller"
)

func newNodeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Take nodes out of service and back: cordon, uncordon, drain",
		Long: `Manage nodes for maintenance. cordon stops new instances from being placed on a
node (its running ones stay); uncordon lets them come again; drain cordons the
node and moves its instances elsewhere without taking any service below
replicas - maxUnavailable ready instances. nexus nodes lists the nodes.`,
		Example: `  nexus node cordon n2
  nexus node drain n2 --timeout 5m
  nexus node uncordon n2`,
	}
	cmd.AddCommand(newCordonCommand(true), newCordonCommand(false), newDrainCommand())
	return cmd
}

// explainNode words an error about node, saying how to find the right
// name when there is no such node.
func explainNode(s *session, node string, err error) error {
	if client.IsNotFound(err) {
		return fmt.Errorf("node %q does not exist: nexus nodes lists the nodes", node)
	}
	return s.explain(err)
}

func oneNode(verb string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("give one node to %s, e.g. nexus node %s n2 (nexus nodes lists them)", verb, verb)
		}
		return nil
	}
}

func newCordonCommand(on bool) *cobra.Command {
	co := &clientOptions{}
	verb, short, long := "cordon", "Stop placing new instances on a node",
		`Mark a node unschedulable (spec.unschedulable): the scheduler places no new
instance there, and daemons leave it. Its other instances keep running: nexus
node drain moves them away. nexus nodes shows it as SchedulingDisabled.`
	if !on {
		verb, short, long = "uncordon", "Let new instances be placed on a node again",
			`Mark a node schedulable again (clears spec.unschedulable), after nexus node
cordon or drain. Instances already moved away stay where they are.`
	}
	cmd := &cobra.Command{
		Use:               verb + " NODE",
		Short:             short,
		Long:              long,
		Example:           "  nexus node " + verb + " n2",
		Args:              oneNode(verb),
		ValidArgsFunction: co.completeFirst("nodes"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := co.connect()
			if err != nil {
				return err
			}
			defer s.c.Close()
			changed, err := controller.Cordon(cmd.Context(), s.c, args[0], on)
			if err != nil {
				return explainNode(s, args[0], err)
			}
			state := map[bool]string{true: "cordoned", false: "uncordoned"}[on]
			if !changed {
				state = "already " + state
			}
			fmt.Fprintf(cmd.OutOrStdout(), "node/%s %s\n", args[0], state)
			return nil
		},
	}
	co.bind(cmd)
	return cmd
}

func newDrainCommand() *cobra.Command {
	co := &clientOptions{}
	var (
		timeout time.Duration
		force   bool
	)
	cmd := &cobra.Command{
		Use:   "drain NODE",
		Short: "Cordon a node and move its instances elsewhere",
		Long: `Cordon a node, then delete its instances so that their workloads make new ones
on other nodes, in steps: a service never has fewer than replicas -
maxUnavailable (at least one at a time) of its instances ready, so drain
waits for each replacement to be ready before it deletes the next. A job's
instances are deleted at once (the job runs them again elsewhere); daemons
leave a cordoned node by themselves. Instances that no workload owns would
not be replaced: drain refuses them unless --force.

Progress is printed as it goes; drain returns when the node is empty, or
fails when --timeout passes first (the node stays cordoned: drain again to
go on, or uncordon it).`,
		Example: `  nexus node drain n2
  nexus node drain n2 --timeout 10m
  nexus node drain n2 --force        # also delete instances no workload owns`,
		Args:              oneNode("drain"),
		ValidArgsFunction: co.completeFirst("nodes"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout < 0 {
				return fmt.Errorf("--timeout %v: must not be negative (0 waits as long as it takes)", timeout)
			}
			s, err := co.connect()
			if err != nil {
				return err
			}
			defer s.c.Close()
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			node := args[0]
			out := cmd.OutOrStdout()
			if _, err := s.c.Get(ctx, mustLookup("nodes"), "", node); err != nil {
				return explainNode(s, node, err)
			}
			fmt.Fprintf(out, "node/%s cordoned\n", node)
			lastWait := ""
			err = controller.Drain(ctx, s.c, node, controller.DrainOptions{Force: force, Progress: func(p controller.DrainProgress) {
				for _, d := range p.Deleted {
					fmt.Fprintf(out, "deleted instance %s\n", d)
				}
				if w := strings.Join(p.Waiting, "; "); w != "" && (w != lastWait || len(p.Deleted) > 0) {
					fmt.Fprintf(out, "waiting: %d instance(s) left on %s; %s\n", p.Remaining, node, w)
					lastWait = w
				}
			}})
			if err != nil {
				return s.explain(err)
			}
			fmt.Fprintf(out, "node/%s drained\n", node)
			return nil
		},
	}
	co.bind(cmd)
	f := cmd.Flags()
	f.DurationVar(&timeout, "timeout", 0, "give up after this long, e.g. 5m (default: wait until the node is empty)")
	f.BoolVar(&force, "force", false, "also delete instances that no workload owns (nothing replaces them)")
	return cmd
}

func newNodesCommand() *cobra.Command {
	co := &clientOptions{}
	var (
		noHeaders bool
		output    string
	)
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "List the nodes with their state, use and versions",
		Long: `List every node: its state (Ready, NotReady when its heartbeat lease ran out or
its agent says so, Unknown before its first report; SchedulingDisabled when
cordoned), roles (node-role.nexus.dev/<role> labels; every node runs an agent),
IP addresses, the CPU and memory its instances request against what it can
allocate, how many instances it runs, its Nexus and kernel versions and when
its certificate expires; -o wide adds how the node balances Service traffic
(SERVICE-DATAPATH: ebpf, connect-time in cgroup hooks, or nftables, the DNAT
fallback where the hooks cannot be used) and its OS. nexus get nodes -o wide
shows the nodes alone, with their capacity, tiers and OS.`,
		Example: `  nexus nodes
  nexus nodes -o wide
  nexus nodes --no-headers`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := printers.ParseFormat(output)
			if err != nil || (format != printers.Table && format != printers.Wide) {
				return fmt.Errorf("--output %q: nexus nodes prints a table or -o wide; for JSON or YAML use nexus get nodes -o %s", output, cmp.Or(output, "json"))
			}
			s, err := co.connect()
			if err != nil {
				return err
			}
			defer s.c.Close()
			nodes, insts, err := listTopNodes(cmd, s)
			if err != nil {
				return s.explain(err)
			}
			if len(nodes) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "No nodes have registered: nexus up starts a server with a node, nexus agent --join adds one.")
				return nil
			}
			return printers.Nodes(cmd.OutOrStdout(), nodes, insts, printers.Options{NoHeaders: noHeaders, Format: format})
		},
	}
	co.bind(cmd)
	cmd.Flags().BoolVar(&noHeaders, "no-headers", false, "leave out the header row")
	cmd.Flags().StringVarP(&output, "output", "o", "", "table (the default) or wide (adds the service data path and the OS)")
	return cmd
}
