package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api"
	"nexus.dev/nexus/security/secretbox"
	"nexus.dev/nexus/store/embed"
)

func newSecretsCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secrets",
		Short: "Manage the key that encrypts Secrets at rest",
		Long: `Secrets are stored sealed with AES-256-GCM under the keys in <data-dir>/secrets.key
(made by the first nexus server). Every server of the cluster needs the same file.`,
	}
	cmd.AddCommand(newSecretsRotateCommand(g), newSecretsRetireCommand(g))
	return cmd
}

// storeClient connects to the store a server on this machine uses (its
// socket by default) and checks that it answers.
func storeClient(ctx context.Context, g *globalOptions, endpoints []string) (*clientv3.Client, error) {
	if len(endpoints) == 0 {
		endpoints = []string{"unix://" + filepath.Join(g.dataDir, "store.sock")}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: embed.QuietClientLogger()})
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", strings.Join(endpoints, ","), err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := cli.Get(pctx, "/nexus/ping"); err != nil {
		cli.Close()
		return nil, fmt.Errorf("the store at %s does not answer (%v): run this on a server whose nexus server is running, or give --store-endpoints", strings.Join(endpoints, ","), err)
	}
	return cli, nil
}

func newSecretsRotateCommand(g *globalOptions) *cobra.Command {
	var endpoints []string
	cmd := &cobra.Command{
		Use:   "rotate-key",
		Short: "Add a new key to secrets.key and seal every stored Secret again with it",
		Long: `Add a new primary key to <data-dir>/secrets.key, then seal every stored Secret
again with it (each with a compare-and-swap, so concurrent writes are kept). The
old keys stay in the file so that anything sealed with them still opens; a running
server on this machine picks the new key up within 10 seconds.

With several servers: copy the new secrets.key to every other server, then run
nexus secrets retire-old-keys, which reseals what was written meanwhile and drops
the old keys.

Run it on a server machine, as the user that runs nexus server. By default it
reaches the store through the server's socket (<data-dir>/store.sock).

Example:

  nexus --data-dir /var/lib/nexus secrets rotate-key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := filepath.Join(g.dataDir, "secrets.key")
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Minute)
			defer cancel()
			// Fail before changing the key file when the store is out of reach.
			cli, err := storeClient(ctx, g, endpoints)
			if err != nil {
				return err
			}
			defer cli.Close()
			ring, err := secretbox.Rotate(path)
			if err != nil {
				return fmt.Errorf("rotate %s: %w", path, err)
			}
			res, err := reseal(ctx, cli, path)
			if err != nil {
				return fmt.Errorf("the new key %s is in %s, but resealing stopped: %w (run nexus secrets retire-old-keys to finish)", ring.Primary(), path, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "new primary key %s in %s\nresealed %d secrets (%d were already sealed with it)\n"+
				"old keys kept: copy %s to every other server, then run nexus secrets retire-old-keys\n",
				ring.Primary(), path, res.Resealed, res.Current, path)
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&endpoints, "store-endpoints", nil, "the store's client URLs (default: this server's socket, <data-dir>/store.sock)")
	return cmd
}

func reseal(ctx context.Context, cli *clientv3.Client, path string) (api.ResealResult, error) {
	keys, err := api.LoadSecretKeys(path, false, nil)
	if err != nil {
		return api.ResealResult{}, err
	}
	return api.ResealSecrets(ctx, cli, keys)
}

func newSecretsRetireCommand(g *globalOptions) *cobra.Command {
	var endpoints []string
	cmd := &cobra.Command{
		Use:   "retire-old-keys",
		Short: "Seal every stored Secret with the primary key, then remove the older keys from secrets.key",
		Long: `Seal every stored Secret that is not sealed with the primary key again with it,
then remove every other key from <data-dir>/secrets.key. Run it after
rotate-key, once every server has the new secrets.key, then copy the file to
the other servers again.

Example:

  nexus --data-dir /var/lib/nexus secrets retire-old-keys`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := filepath.Join(g.dataDir, "secrets.key")
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Minute)
			defer cancel()
			cli, err := storeClient(ctx, g, endpoints)
			if err != nil {
				return err
			}
			defer cli.Close()
			res, err := reseal(ctx, cli, path)
			if err != nil {
				return fmt.Errorf("no key retired: %w", err)
			}
			ring, err := secretbox.Load(path)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "resealed %d secrets with key %s (%d already were)\n", res.Resealed, ring.Primary(), res.Current)
			for _, id := range ring.KeyIDs() {
				if id == ring.Primary() {
					continue
				}
				if _, err := secretbox.Retire(path, id); err != nil {
					return fmt.Errorf("retire key %s: %w", id, err)
				}
				fmt.Fprintf(out, "retired key %s\n", id)
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&endpoints, "store-endpoints", nil, "the store's client URLs (default: this server's socket, <data-dir>/store.sock)")
	return cmd
}
