package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/api/client/printers"
	"nexus.dev/nexus/api/types"
)

func newRunCommand() *cobra.Command {
	var (
		image       string
		replicas    int32
		ports       []int32
		env, labels []string
		co          = &clientOptions{}
	)
	cmd := &cobra.Command{
		Use:   "run NAME --image IMAGE [--replicas N] [--port P] [--env K=V] [-- COMMAND [ARG...]]",
		Short: "Run an image as a service workload",
		Long: `Create a service workload named NAME that keeps --replicas instances of IMAGE
running (default 1). The controllers make the instances (named NAME-xxxxx),
the scheduler places them on nodes and each node's agent runs them; nexus ps
lists them. Failed instances are replaced; nexus scale changes the count and
a changed template (nexus edit, nexus apply) rolls out instance by instance.

--port declares a port the container listens on (repeat for several); --env
sets an environment variable (repeat); --label sets a label on the instances
(default app=NAME), which services select them by. Words after "--" replace
the image's entrypoint.`,
		Example: `  nexus run web --image nexus.local/hello --replicas 3 --port 8080
  nexus run api --image registry.example/api:1.4 --env LOG_LEVEL=debug --env REGION=eu
  nexus run sleeper --image busybox -- sleep 3600`,
		Args: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() == 0 || len(args) == 0 {
				return errors.New("name the workload, e.g. nexus run web --image nexus.local/hello")
			}
			if cmd.ArgsLenAtDash() < 0 && len(args) > 1 {
				return fmt.Errorf("one name only, not %q: put the command after \"--\" (nexus run %s --image IMAGE -- %s)", strings.Join(args, " "), args[0], strings.Join(args[1:], " "))
			}
			if cmd.ArgsLenAtDash() > 1 {
				return fmt.Errorf("one name only before \"--\", not %q", strings.Join(args[:cmd.ArgsLenAtDash()], " "))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if image == "" {
				return errors.New("give the image to run with --image, e.g. --image nexus.local/hello")
			}
			if replicas < 0 {
				return fmt.Errorf("--replicas %d: must not be negative", replicas)
			}
			w := &types.Workload{TypeMeta: types.TypeMeta{APIVersion: types.APIVersion, Kind: "Workload"}}
			w.Name = args[0]
			w.Spec = types.WorkloadSpec{Kind: types.KindService, Replicas: &replicas,
				Template: types.InstanceTemplate{Image: image, Command: args[1:], Labels: map[string]string{"app": args[0]}}}
			if len(labels) > 0 {
				l, err := parseLabels(labels)
				if err != nil {
					return err
				}
				w.Spec.Template.Labels = l
			}
			for _, e := range env {
				k, v, ok := strings.Cut(e, "=")
				if !ok || k == "" {
					return fmt.Errorf("--env %q: must be NAME=VALUE, e.g. --env LOG_LEVEL=debug", e)
				}
				w.Spec.Template.Env = append(w.Spec.Template.Env, types.EnvVar{Name: k, Value: v})
			}
			for _, p := range ports {
				w.Spec.Template.Ports = append(w.Spec.Template.Ports, types.Port{Port: p})
			}
			s, err := co.connect()
			if err != nil {
				return err
			}
			defer s.c.Close()
			w.Namespace = s.namespace
			got, err := s.c.Create(cmd.Context(), w)
			if err != nil {
				return s.explain(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s created\n", printers.Ref(got))
			return nil
		},
	}
	co.bind(cmd)
	f := cmd.Flags()
	f.StringVar(&image, "image", "", "image to run (required), e.g. nexus.local/hello or nginx:1.27")
	f.Int32Var(&replicas, "replicas", 1, "how many instances to keep running")
	f.Int32SliceVar(&ports, "port", nil, "a port the container listens on; may be repeated")
	f.StringArrayVar(&env, "env", nil, "environment variable NAME=VALUE; may be repeated")
	f.StringArrayVarP(&labels, "label", "l", nil, "label KEY=VALUE of the instances (default app=NAME); may be repeated")
	return cmd
}

// parseLabels parses --label KEY=VALUE flags (nil for none).
func parseLabels(flags []string) (map[string]string, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, l := range flags {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q: must be KEY=VALUE, e.g. --label tier=frontend", l)
		}
		m[k] = v
	}
	return m, nil
}
