package main

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/server"
)

func newUserCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "user",
		Short: "Issue client configurations for people",
	}
	cmd.AddCommand(newUserAddCommand(g))
	return cmd
}

func newUserAddCommand(g *globalOptions) *cobra.Command {
	var (
		groups     []string
		serverURL  string
		out        string
		ttl        time.Duration
		contextArg string
	)
	cmd := &cobra.Command{
		Use:   "add NAME",
		Short: "Issue a user certificate (the key is made here) and print a client configuration for it",
		Long: `Issue a client certificate for user NAME from the cluster CA in <data-dir>/pki,
with the given groups (RBAC subjects), and print a client configuration holding
the cluster's CA, the certificate and its key. The key is made on this machine;
hand the configuration to the user over a channel you trust, or write it with -o.

The user can do nothing until a RoleBinding or ClusterRoleBinding grants it (or
one of its groups) a role. User certificates live 90 days by default (--ttl); a
lost one is revoked with nexus cert revoke.

Run it on the server that holds the CA. The API's address is taken from
admin.conf unless --server says otherwise.

Examples:

  nexus user add alice --group dev -o alice.conf
  nexus --config alice.conf get workloads

  nexus apply -f - <<EOF
  kind: RoleBinding
  metadata: {name: dev-edit, namespace: default}
  subjects: [{kind: Group, name: dev}]
  roleRef: {kind: ClusterRole, name: edit}
  EOF`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if serverURL == "" {
				admin, err := client.LoadConfig(filepath.Join(g.dataDir, server.AdminConfigFile))
				if err != nil {
					return fmt.Errorf("no --server given and %w: give the API's URL, e.g. --server https://HOST:%d", err, server.DefaultAPIPort)
				}
				r, err := admin.Resolve("")
				if err != nil {
					return err
				}
				serverURL = r.Settings.Server
			}
			cfg, cert, err := server.IssueUserConfig(server.UserConfig{DataDir: g.dataDir, User: args[0], Groups: groups,
				Server: serverURL, TTL: ttl, Context: contextArg})
			if err != nil {
				return err
			}
			if out != "" {
				if err := cfg.WriteNew(out); err != nil {
					if errors.Is(err, fs.ErrExist) {
						return fmt.Errorf("%s exists: choose another -o, or remove it first", out)
					}
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s for user %s (groups %v), valid until %s\n", out, args[0], groups, cert.NotAfter.UTC().Format(time.RFC3339))
				return nil
			}
			data, err := cfg.Marshal(false)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(data)
			return err
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&groups, "group", nil, "a group of the user (repeat for several)")
	f.StringVar(&serverURL, "server", "", "the API's URL (default: the one in <data-dir>/admin.conf)")
	f.StringVarP(&out, "output", "o", "", "write the configuration to this file (0600) instead of printing it")
	f.DurationVar(&ttl, "ttl", server.DefaultUserTTL, "how long the certificate lives")
	f.StringVar(&contextArg, "context-name", "", "the context's name (default NAME@CLUSTER)")
	return cmd
}
