package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/api/client/manifest"
	"nexus.dev/nexus/api/client/printers"
)

func newApplyCommand() *cobra.Command {
	var (
		files     []string
		recursive bool
		co        = &clientOptions{}
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "Create or update the objects described in files",
		Long: `Make the stored objects what the files say: create each object that does not
exist, update each that differs, and leave the rest alone, printing what
happened to each (workload/web created, configured or unchanged).

Files are YAML or JSON, with several documents separated by "---" lines, or a
JSON list; a directory means its .yaml, .yml and .json files (-R: also those
of subdirectories); "-" reads standard input. Objects without a namespace go
to -n (default: the context's namespace). A document that fails is reported
with its file and position and the others are still applied; the command
then exits with status 1.`,
		Example: `  nexus apply -f web.yaml
  nexus apply -f manifests/ -R
  cat web.yaml | nexus apply -f -
  nexus apply -f web.yaml -n staging`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return errors.New("give the objects to apply with -f FILE, -f DIR or -f - (standard input)")
			}
			docs, err := manifest.Read(files, recursive, cmd.InOrStdin())
			if err != nil {
				return err
			}
			if len(docs) == 0 {
				return fmt.Errorf("no objects in %s", strings.Join(files, ", "))
			}
			s, err := co.connect()
			if err != nil {
				return err
			}
			defer s.c.Close()
			failed := manifest.Apply(cmd.Context(), s.c, docs, manifest.Namespace{Default: s.namespace, Explicit: s.explicitNS}, func(o manifest.Outcome) {
				if o.Err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "Error: %s: %v\n", describeDoc(o.Doc), s.explain(o.Err))
					return
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", printers.Ref(o.Doc.Object), o.Result.Action)
			})
			return docsFailed("applied", len(docs), failed)
		},
	}
	co.bind(cmd)
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file, directory or - (standard input) with the objects; may be repeated")
	cmd.Flags().BoolVarP(&recursive, "recursive", "R", false, "also read the subdirectories of directories given with -f")
	return cmd
}

// describeDoc names a document and, when it has been read, its object.
func describeDoc(d manifest.Document) string {
	if d.Object == nil {
		return d.Where()
	}
	return d.Where() + " " + printers.Ref(d.Object)
}

// docsFailed is the closing error of a command that went through
// documents: how many failed, and which.
func docsFailed(verb string, total int, failed []manifest.Outcome) error {
	if len(failed) == 0 {
		return nil
	}
	var where []string
	for _, f := range failed {
		where = append(where, describeDoc(f.Doc))
	}
	return fmt.Errorf("%d of %d documents were not %s: %s", len(failed), total, verb, strings.Join(where, "; "))
}
