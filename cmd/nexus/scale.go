package main

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/api/client/printers"
)

func newScaleCommand() *cobra.Command {
	co := &clientOptions{}
	cmd := &cobra.Command{
		Use:   "scale WORKLOAD REPLICAS",
		Short: "Set how many instances a service workload keeps",
		Long: `Set spec.replicas of a service workload. The controller adds instances or
removes the extra ones (those not yet placed or not ready first); nexus ps
shows them and nexus rollout status WORKLOAD waits until they are ready.`,
		Example: `  nexus scale web 5
  nexus scale web 0          # stop every instance, keep the workload
  nexus scale api 3 -n shop`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 2 {
				return fmt.Errorf("give the workload and the number of instances, e.g. nexus scale web 5")
			}
			return nil
		},
		ValidArgsFunction: co.completeFirst("workloads"),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.ParseInt(args[1], 10, 32)
			if err != nil || n < 0 {
				return fmt.Errorf("replicas %q: must be a whole number, 0 or more", args[1])
			}
			s, err := co.connect()
			if err != nil {
				return err
			}
			defer s.c.Close()
			patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"replicas": n}})
			got, err := s.c.Patch(cmd.Context(), mustLookup("workloads"), s.namespace, args[0], patch)
			if err != nil {
				return s.explain(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s scaled to %d\n", printers.Ref(got), n)
			return nil
		},
	}
	co.bind(cmd)
	return cmd
}
