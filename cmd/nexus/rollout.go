package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/client/printers"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/controller"
)

// mustLookup is a resource every build has.
func mustLookup(name string) *types.Resource {
	r, ok := types.LookupResource(name)
	if !ok {
		panic("no resource " + name)
	}
	return r
}

func newRolloutCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout status|history|undo WORKLOAD",
		Short: "Follow, list and undo the rollouts of a workload's template",
		Long: `A change of a workload's template (image, command, environment, ports, ...)
rolls out: new instances replace old ones a few at a time, within the
workload's strategy (maxSurge, maxUnavailable), each new one ready before
more old ones go. Every template rolled out is kept, numbered, in the
workload's status.history (the last 10).`,
		Example: `  nexus rollout status web
  nexus rollout history web
  nexus rollout undo web
  nexus rollout undo web --to-revision 2`,
	}
	cmd.AddCommand(newRolloutStatusCommand(), newRolloutHistoryCommand(), newRolloutUndoCommand())
	return cmd
}

func workloadArg(verb string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("name one workload, e.g. nexus rollout %s web", verb)
		}
		return nil
	}
}

func newRolloutStatusCommand() *cobra.Command {
	var (
		timeout time.Duration
		watch   bool
		co      = &clientOptions{}
	)
	cmd := &cobra.Command{
		Use:   "status WORKLOAD",
		Short: "Wait until a workload's latest change is rolled out",
		Long: `Print the progress of a workload's rollout as it changes and return once every
instance runs the current template and is ready (a job: once it has
completed). Exits 1 when a job failed or --timeout passes first. With
--watch=false, print the state once and return.`,
		Example: `  nexus rollout status web
  nexus rollout status web --timeout 2m
  nexus rollout status batch --watch=false`,
		Args:              workloadArg("status"),
		ValidArgsFunction: co.completeFirst("workloads"),
		RunE: func(cmd *cobra.Command, args []string) error {
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
			last := ""
			done := errors.New("done")
			check := func(o types.Object) error {
				ok, msg, err := controller.RolloutStatus(o.(*types.Workload))
				if err != nil {
					return err
				}
				if msg != last {
					fmt.Fprintln(cmd.OutOrStdout(), msg)
					last = msg
				}
				if ok || !watch {
					return done
				}
				return nil
			}
			o, err := s.c.Get(ctx, mustLookup("workloads"), s.namespace, args[0])
			if err != nil {
				return s.explain(err)
			}
			if err := check(o); err != nil {
				if err == done {
					return nil
				}
				return err
			}
			err = s.c.Follow(ctx, mustLookup("workloads"), s.namespace, client.FollowOptions{FieldSelector: "metadata.name=" + args[0]}, func(ev client.Event) error {
				if ev.Type == client.Deleted {
					return fmt.Errorf("workload %q was deleted", args[0])
				}
				return check(ev.Object)
			})
			switch {
			case err == done:
				return nil
			case err != nil:
				return s.explain(err)
			case ctx.Err() != nil && cmd.Context().Err() == nil:
				return fmt.Errorf("the rollout of workload %q did not finish within %s (nexus ps shows its instances, nexus describe workload %s why)", args[0], timeout, args[0])
			}
			return nil
		},
	}
	co.bind(cmd)
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long, e.g. 2m (default: wait until it finishes)")
	cmd.Flags().BoolVarP(&watch, "watch", "w", true, "follow the rollout until it finishes; false prints the state once")
	return cmd
}

func newRolloutHistoryCommand() *cobra.Command {
	var (
		revision int64
		co       = &clientOptions{}
	)
	cmd := &cobra.Command{
		Use:   "history WORKLOAD",
		Short: "List the templates a workload has rolled out",
		Long: `List the revisions kept in the workload's status.history, oldest first: number,
the image, when it was first rolled out and its change cause (the workload's
nexus.dev/change-cause annotation at the time). The last one is current.
--revision N prints that revision's template.`,
		Example: `  nexus rollout history web
  nexus rollout history web --revision 2`,
		Args:              workloadArg("history"),
		ValidArgsFunction: co.completeFirst("workloads"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := co.connect()
			if err != nil {
				return err
			}
			defer s.c.Close()
			o, err := s.c.Get(cmd.Context(), mustLookup("workloads"), s.namespace, args[0])
			if err != nil {
				return s.explain(err)
			}
			w := o.(*types.Workload)
			if revision != 0 {
				r, ok := controller.FindRevision(w, revision)
				if !ok {
					return fmt.Errorf("workload %q has no revision %d: %s", w.Name, revision, revisionsKept(w))
				}
				y, err := printers.YAMLOf(&types.Workload{Spec: types.WorkloadSpec{Template: r.Template}})
				if err != nil {
					return err
				}
				_, after, _ := strings.Cut(string(y), "template:\n")
				fmt.Fprintf(cmd.OutOrStdout(), "workload %q revision %d (%s):\n%s", w.Name, r.Revision, r.Hash, after)
				return nil
			}
			if len(w.Status.History) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "No rollouts of workload %q recorded yet.\n", w.Name)
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 3, ' ', 0)
			fmt.Fprintln(tw, "REVISION\tIMAGE\tCREATED\tCHANGE-CAUSE")
			for _, h := range w.Status.History {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", h.Revision, h.Template.Image, printers.Age(h.CreatedAt, time.Now())+" ago", cmp.Or(h.ChangeCause, "<none>"))
			}
			return tw.Flush()
		},
	}
	co.bind(cmd)
	cmd.Flags().Int64Var(&revision, "revision", 0, "print the template of this revision")
	return cmd
}

func revisionsKept(w *types.Workload) string {
	if len(w.Status.History) == 0 {
		return "none is recorded yet"
	}
	var nums []string
	for _, h := range w.Status.History {
		nums = append(nums, fmt.Sprint(h.Revision))
	}
	return "it keeps " + strings.Join(nums, ", ") + " (nexus rollout history " + w.Name + ")"
}

func newRolloutUndoCommand() *cobra.Command {
	var (
		to int64
		co = &clientOptions{}
	)
	cmd := &cobra.Command{
		Use:   "undo WORKLOAD [--to-revision N]",
		Short: "Roll a workload back to an earlier template",
		Long: `Put an earlier template from the workload's history back into its spec, which
rolls it out like any change; it becomes the newest revision (its old number
is not kept, as in Kubernetes). Without --to-revision, go back to the
revision before the current one.`,
		Example: `  nexus rollout undo web
  nexus rollout undo web --to-revision 2 && nexus rollout status web`,
		Args:              workloadArg("undo"),
		ValidArgsFunction: co.completeFirst("workloads"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to < 0 {
				return fmt.Errorf("--to-revision %d: revisions are numbered from 1", to)
			}
			s, err := co.connect()
			if err != nil {
				return err
			}
			defer s.c.Close()
			for attempt := 0; ; attempt++ {
				o, err := s.c.Get(cmd.Context(), mustLookup("workloads"), s.namespace, args[0])
				if err != nil {
					return s.explain(err)
				}
				w := o.(*types.Workload)
				r, ok := controller.FindRevision(w, to)
				switch {
				case !ok && to == 0:
					return fmt.Errorf("workload %q has no earlier revision to go back to: %s", w.Name, revisionsKept(w))
				case !ok:
					return fmt.Errorf("workload %q has no revision %d: %s", w.Name, to, revisionsKept(w))
				case r.Hash == controller.TemplateHash(&w.Spec.Template):
					fmt.Fprintf(cmd.OutOrStdout(), "%s skipped rollback: its template already is revision %d\n", printers.Ref(w), r.Revision)
					return nil
				}
				w.Spec.Template = r.Template
				// The resourceVersion read above makes this a compare-and-swap:
				// a change made meanwhile is not overwritten.
				_, err = s.c.Update(cmd.Context(), w)
				if client.IsConflict(err) && attempt < 5 {
					continue
				}
				if err != nil {
					return s.explain(err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s rolled back to revision %d\n", printers.Ref(w), r.Revision)
				return nil
			}
		},
	}
	co.bind(cmd)
	cmd.Flags().Int64Var(&to, "to-revision", 0, "the revision to go back to (default: the one before the current)")
	return cmd
}
