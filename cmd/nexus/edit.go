package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/api/client/edit"
)

// editorCommand is the editor to run: $NEXUS_EDITOR, $EDITOR, $VISUAL, or vi.
func editorCommand() string {
	for _, env := range []string{"NEXUS_EDITOR", "EDITOR", "VISUAL"} {
		if e := os.Getenv(env); e != "" {
			return e
		}
	}
	return "vi"
}

func newEditCommand() *cobra.Command {
	co := &clientOptions{}
	cmd := &cobra.Command{
		Use:   "edit KIND NAME",
		Short: "Change an object in your editor",
		Long: `Open an object as YAML in your editor ($NEXUS_EDITOR, $EDITOR or $VISUAL, else
vi) and save it back when you close the editor. The update carries the
version you were shown: if someone changed the object in the meantime, your
changes are applied to the current version and the editor opens again for
you to review them. If the file does not parse or the server refuses it,
the editor opens again with the problem at the top. Saving the file
unchanged, or empty, cancels the edit.`,
		Example: `  nexus edit workload web
  EDITOR=nano nexus edit svc web -n shop`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return fmt.Errorf("name one object to edit: nexus edit KIND NAME (kinds: %s)", kindList())
			}
			return nil
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
			if len(args) >= 2 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return co.completeKindsAndNames(cmd, args, prefix)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := oneResource(args[0], "edit")
			if err != nil {
				return err
			}
			s, err := co.connect()
			if err != nil {
				return err
			}
			defer s.c.Close()
			_, err = edit.Run(cmd.Context(), edit.Options{
				Client: s.c, Resource: r, Namespace: s.namespace, Name: args[1], Out: cmd.OutOrStdout(),
				Editor: edit.ShellEditor(editorCommand(), cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()),
			})
			return s.explain(err)
		},
	}
	co.bind(cmd)
	return cmd
}
