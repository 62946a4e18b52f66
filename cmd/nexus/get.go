package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/client/printers"
	"nexus.dev/nexus/api/types"
)

func newGetCommand() *cobra.Command {
	var (
		output, labels, fields string
		all, watch, watchOnly  bool
		noHeaders, watchEvents bool
		co                     = &clientOptions{}
	)
	cmd := &cobra.Command{
		Use:   "get KIND[,KIND...] [NAME...]",
		Short: "List objects, or show some by name; -w follows changes",
		Long: `List the objects of one or more kinds in the namespace (-n, default: the
context's), or in every namespace (-A), or show the named ones. Tables show a
few columns per kind; -o wide adds more, -o json|yaml show whole objects and
-o name only kind/name. -w prints the list and then every change as it
happens, resuming by itself when the connection drops, until Ctrl-C.

Kinds (plural, singular and short names all work):
` + kindsHelp(),
		Example: `  nexus get workloads
  nexus get wl web -o yaml
  nexus get inst -l app=web -o wide
  nexus get instances --field-selector spec.nodeName=n1 -A
  nexus get wl,svc -n shop
  nexus get svc -o wide       # TYPE, VIRTUAL-IPS, PORTS, ENDPOINTS (ready/total), SELECTOR, AFFINITY
  nexus get wl -w`,
		Args:              kindArg("nexus get workloads"),
		ValidArgsFunction: co.completeKindsAndNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := printers.ParseFormat(output)
			if err != nil {
				return fmt.Errorf("-o: %w", err)
			}
			rs, err := resources(args[0])
			if err != nil {
				return err
			}
			names := args[1:]
			switch {
			case len(names) > 0 && len(rs) > 1:
				return fmt.Errorf("names can be given with one kind only, not %s", args[0])
			case len(names) > 0 && labels != "":
				return errors.New("give names or a label selector (-l), not both")
			case len(names) > 0 && all:
				return errors.New("objects are named within one namespace: use -n NAMESPACE instead of -A")
			case (watch || watchOnly) && len(rs) > 1:
				return fmt.Errorf("-w follows one kind at a time, not %s", args[0])
			case (watch || watchOnly) && len(names) > 1:
				return errors.New("-w follows all objects of a kind (narrowed with -l) or one by name, not several")
			}
			s, err := co.connect()
			if err != nil {
				return err
			}
			defer s.c.Close()
			popts := printers.Options{Format: format, AllNamespaces: all, NoHeaders: noHeaders, WatchEvents: watchEvents}
			if popts.Endpoints, err = serviceEndpoints(cmd.Context(), s, rs, format, all); err != nil {
				return s.explain(err)
			}
			p := printers.New(cmd.OutOrStdout(), popts)
			if watch || watchOnly {
				return s.explain(follow(cmd.Context(), s, rs[0], all, names, labels, fields, watchOnly, p))
			}
			if len(names) > 0 {
				return getNamed(cmd, s, rs[0], names, p)
			}
			var objs []types.Object
			for _, r := range rs {
				items, _, err := s.c.List(cmd.Context(), r, s.nsFor(r, all), client.ListOptions{LabelSelector: labels, FieldSelector: fields})
				if err != nil {
					return s.explain(err)
				}
				objs = append(objs, items...)
			}
			if len(objs) == 0 && (format == printers.Table || format == printers.Wide) {
				fmt.Fprintf(cmd.ErrOrStderr(), "No %s found %s.\n", args[0], s.where(rs[0], all))
				return nil
			}
			return p.Print(objs, false)
		},
	}
	co.bind(cmd)
	f := cmd.Flags()
	f.StringVarP(&output, "output", "o", "table", "output format: table, wide, json, yaml or name")
	f.StringVarP(&labels, "selector", "l", "", "label selector, e.g. app=web,tier in (fe,be),!canary")
	f.StringVar(&fields, "field-selector", "", "field selector, e.g. spec.nodeName=n1 or status.phase!=Running")
	f.BoolVarP(&all, "all-namespaces", "A", false, "list objects of every namespace")
	f.BoolVarP(&watch, "watch", "w", false, "after the list, print every change until Ctrl-C")
	f.BoolVar(&watchOnly, "watch-only", false, "print only changes, not the list first")
	f.BoolVar(&watchEvents, "output-watch-events", false, "show each change's type (ADDED, MODIFIED, DELETED)")
	f.BoolVar(&noHeaders, "no-headers", false, "leave out table headers")
	_ = cmd.RegisterFlagCompletionFunc("output", completeFormats)
	return cmd
}

// serviceEndpoints are the Endpoints a table of services shows in its
// ENDPOINTS column: those of the namespace (or all), when services are
// listed as a table. A caller who may read services but not endpoints
// sees <none> there.
func serviceEndpoints(ctx context.Context, s *session, rs []*types.Resource, format printers.Format, all bool) ([]*types.Endpoints, error) {
	if format != printers.Table && format != printers.Wide || !slices.ContainsFunc(rs, func(r *types.Resource) bool { return r.Kind == "Service" }) {
		return nil, nil
	}
	epRes, _ := types.LookupResource("endpoints")
	items, _, err := s.c.List(ctx, epRes, s.nsFor(epRes, all), client.ListOptions{})
	if client.IsForbidden(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	eps := make([]*types.Endpoints, len(items))
	for i, o := range items {
		eps[i] = o.(*types.Endpoints)
	}
	return eps, nil
}

// getNamed shows the named objects; the ones that cannot be read are
// reported and the rest still shown.
func getNamed(cmd *cobra.Command, s *session, r *types.Resource, names []string, p *printers.Printer) error {
	var objs []types.Object
	var failed int
	for _, n := range names {
		o, err := s.c.Get(cmd.Context(), r, s.namespace, n)
		if err != nil {
			if len(names) == 1 {
				return s.explain(err)
			}
			failed++
			fmt.Fprintln(cmd.ErrOrStderr(), "Error:", s.explain(err))
			continue
		}
		objs = append(objs, o)
	}
	if err := p.Print(objs, len(names) == 1); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d %s could not be read", failed, len(names), r.Plural)
	}
	return nil
}

// follow prints the objects and then every change, until interrupted.
func follow(ctx context.Context, s *session, r *types.Resource, all bool, names []string, labels, fields string, watchOnly bool, p *printers.Printer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(names) == 1 {
		sel := "metadata.name=" + names[0]
		if fields != "" {
			sel += "," + fields
		}
		fields = sel
	}
	opts := client.FollowOptions{LabelSelector: labels, FieldSelector: fields, SkipInitial: watchOnly,
		Initial: p.PrintInitial}
	return s.c.Follow(ctx, r, s.nsFor(r, all), opts, p.PrintEvent)
}
