package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/client/manifest"
	"nexus.dev/nexus/api/client/printers"
	"nexus.dev/nexus/api/types"
)

func newDeleteCommand() *cobra.Command {
	var (
		files          []string
		recursive      bool
		resVersion     string
		ignoreNotFound bool
		co             = &clientOptions{}
	)
	cmd := &cobra.Command{
		Use:   "delete KIND NAME... | KIND/NAME... | -f FILE|DIR|-",
		Short: "Delete objects by name, or those described in files",
		Long: `Delete the named objects of a kind, or the objects the files describe (as
nexus apply reads them). --resource-version deletes an object only if it is
still at that version, so a change made by someone else is not lost unseen.
Deleting a namespace deletes everything in it.`,
		Example: `  nexus delete workload web
  nexus delete workload/web secret/token         # KIND/NAME, as nexus get -o name prints
  nexus delete wl web api -n shop
  nexus delete -f web.yaml
  nexus delete wl web --resource-version 1234`,
		ValidArgsFunction: co.completeKindsAndNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			slashed := len(args) > 0 && strings.Contains(args[0], "/")
			switch {
			case len(files) > 0 && len(args) > 0:
				return errors.New("give objects by KIND NAME or with -f, not both")
			case len(files) == 0 && len(args) < 2 && !slashed:
				return errors.New("name the objects to delete: nexus delete KIND NAME..., or nexus delete -f FILE")
			case resVersion != "" && (len(files) > 0 || (len(args) != 2 && !(slashed && len(args) == 1))):
				return errors.New("--resource-version applies to one object: nexus delete KIND NAME --resource-version RV")
			}
			s, err := co.connect()
			if err != nil {
				return err
			}
			defer s.c.Close()
			ctx := cmd.Context()
			if len(files) > 0 {
				docs, err := manifest.Read(files, recursive, cmd.InOrStdin())
				if err != nil {
					return err
				}
				failed := manifest.Delete(ctx, s.c, docs, manifest.Namespace{Default: s.namespace, Explicit: s.explicitNS}, func(o manifest.Outcome) {
					switch {
					case o.Err != nil && ignoreNotFound && client.IsNotFound(o.Err):
					case o.Err != nil:
						fmt.Fprintf(cmd.ErrOrStderr(), "Error: %s: %v\n", describeDoc(o.Doc), s.explain(o.Err))
					default:
						fmt.Fprintf(cmd.OutOrStdout(), "%s deleted\n", printers.Ref(o.Doc.Object))
					}
				})
				var real []manifest.Outcome
				for _, f := range failed {
					if !(ignoreNotFound && client.IsNotFound(f.Err)) {
						real = append(real, f)
					}
				}
				return docsFailed("deleted", len(docs), real)
			}
			type target struct {
				r    *types.Resource
				name string
			}
			var targets []target
			if slashed {
				for _, a := range args {
					kind, name, ok := strings.Cut(a, "/")
					if !ok || kind == "" || name == "" {
						return fmt.Errorf("%q: give every object as KIND/NAME (e.g. workload/web), or KIND NAME... without slashes", a)
					}
					r, err := oneResource(kind, "delete")
					if err != nil {
						return err
					}
					targets = append(targets, target{r, name})
				}
			} else {
				r, err := oneResource(args[0], "delete")
				if err != nil {
					return err
				}
				for _, n := range args[1:] {
					targets = append(targets, target{r, n})
				}
			}
			var failed int
			for _, tg := range targets {
				o, err := s.c.Delete(ctx, tg.r, s.namespace, tg.name, client.DeleteOptions{ResourceVersion: resVersion})
				switch {
				case err != nil && ignoreNotFound && client.IsNotFound(err):
				case err != nil && len(targets) == 1:
					return s.explain(err)
				case err != nil:
					failed++
					fmt.Fprintln(cmd.ErrOrStderr(), "Error:", s.explain(err))
				default:
					fmt.Fprintf(cmd.OutOrStdout(), "%s deleted\n", printers.Ref(o))
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d objects were not deleted", failed, len(targets))
			}
			return nil
		},
	}
	co.bind(cmd)
	f := cmd.Flags()
	f.StringArrayVarP(&files, "filename", "f", nil, "file, directory or - with the objects to delete; may be repeated")
	f.BoolVarP(&recursive, "recursive", "R", false, "also read the subdirectories of directories given with -f")
	f.StringVar(&resVersion, "resource-version", "", "delete only if the object is still at this resourceVersion")
	f.BoolVar(&ignoreNotFound, "ignore-not-found", false, "an object that does not exist is not an error")
	return cmd
}
