package main

import (
	"context"
	"fmt"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/server"
)

func newServerCommand(g *globalOptions) *cobra.Command {
	var cfg server.Config
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a control-plane server: the API, its store and the cluster's CA",
		Long: `Run a Nexus control-plane server. On its first start in an empty data directory
it creates the cluster: a certificate authority (<data-dir>/pki), this server's
certificates, a member of the embedded replicated store, the key that encrypts
Secrets at rest (<data-dir>/secrets.key), the audit log (<data-dir>/audit) and a
client configuration for the first user, bound to cluster-admin
(<data-dir>/admin.conf, 0600; also ~/.nexus/config when that does not exist).
Later starts reuse all of it.

The API is served over HTTPS (TLS 1.3, HTTP/2) and, on the same port over UDP,
HTTP/3. Its serving certificate is issued by the cluster CA for this host's
names and addresses, localhost, and whatever --advertise adds; certificates
renew themselves at half-life while the server runs.

With --store-endpoints the server keeps its objects in an external etcd instead
of the embedded store.

Examples:

  nexus server                                   # data in /var/lib/nexus, API on :7443
  nexus --data-dir /tmp/nx server --api-addr 127.0.0.1:7443
  nexus server --advertise api.example.com --advertise 203.0.113.7
  nexus server --store-endpoints http://127.0.0.1:2379   # objects in an external etcd

Then, as the admin:

  nexus --config /var/lib/nexus/admin.conf get nodes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.DataDir = g.dataDir
			cfg.Logger = slog.Default()
			cfg.WriteUserConfig = true
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runServer(ctx, cfg, cmd)
		},
	}
	bindServerFlags(cmd, &cfg, "this server's name (default: the host name)")
	cmd.Flags().StringSliceVar(&cfg.StoreEndpoints, "store-endpoints", nil, "client URLs of an external etcd to keep objects in, instead of the embedded store")
	return cmd
}

// bindServerFlags binds the flags of a server's configuration that nexus
// server and nexus up share; nameHelp describes --name.
func bindServerFlags(cmd *cobra.Command, cfg *server.Config, nameHelp string) {
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", "", nameHelp)
	f.StringVar(&cfg.Cluster, "cluster", "nexus", "the cluster's name, for a new cluster's CA")
	f.StringVar(&cfg.APIAddr, "api-addr", fmt.Sprintf(":%d", server.DefaultAPIPort), "where the API listens (host:port, TCP for HTTPS and UDP for HTTP/3)")
	f.StringSliceVar(&cfg.Advertise, "advertise", nil, "host names and addresses clients use to reach the API (in its certificate; the first goes into admin.conf)")
	f.StringVar(&cfg.StorePeerAddr, "store-peer-addr", "[::1]:7380", "the embedded store member's peer address (QUIC)")
	f.StringSliceVar(&cfg.StoreClientURLs, "store-client-urls", nil, "also serve the embedded store to etcd clients on these URLs (e.g. http://127.0.0.1:2379)")
	f.StringVar(&cfg.AdminUser, "admin-user", "admin", "the first user, bound to cluster-admin on a new cluster")
	f.StringVar(&cfg.AuditPolicy, "audit-policy", "", "audit policy file (JSON or YAML; default: changes with their request bodies, reads of secrets, every denial and authentication failure; other reads not recorded)")
}

func runServer(ctx context.Context, cfg server.Config, cmd *cobra.Command) error {
	s, err := server.Start(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "nexus server %s: API on https://%s (HTTP/2 and HTTP/3)\n", s.Name(), s.APIAddr())
	if p := s.AdminConfig(); p != "" {
		fmt.Fprintf(cmd.OutOrStdout(), "admin client configuration: %s\n  try: nexus --config %s get namespaces\n", p, p)
	}
	select {
	case <-ctx.Done():
		slog.Info("stopping")
		s.Stop()
		return nil
	case <-s.Done():
		if err := s.Err(); err != nil {
			return err
		}
		return nil
	}
}
