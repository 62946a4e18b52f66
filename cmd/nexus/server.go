package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/networking"
	"nexus.dev/nexus/server"
)

func newServerCommand(g *globalOptions) *cobra.Command {
	var (
		cfg      server.Config
		jc       server.JoinConfig
		prefixes clusterPrefixFlags
	)
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

A cluster of several servers: start the first one with a store peer address the
others reach (the default, [::1]:7380, is loopback: one machine only), make a
server join token on it, and start each other server with --join. A joining
server checks the first one against the CA pin before it sends the token, gets
its certificates and an issuing CA of its own (its keys are made on it and never
leave it), joins the store as a learner, and becomes a voting member once it has
caught up. Server joins go through the server that holds the root CA key (the
first one); agents may join through any server. Every server serves the join
service on its store peer port (UDP 7380) and writes its Server object (nexus get
servers). --join, --token and --ca-pin are used once; later starts find the
cluster in the data directory.

The server gives every Node its container prefixes: an IPv6 /64 of the
cluster's --cluster-ipv6 and an IPv4 /24 (--node-ipv4-bits) of --cluster-ipv4,
in the Node's spec.containerPrefixes, and frees them when the Node is deleted.

Examples:

  nexus server                                   # data in /var/lib/nexus, API on :7443
  nexus --data-dir /tmp/nx server --api-addr 127.0.0.1:7443
  nexus server --advertise api.example.com --advertise 203.0.113.7
  nexus server --store-endpoints http://127.0.0.1:2379   # objects in an external etcd
  nexus server --cluster-ipv6 fd12:3456:789a::/48 --cluster-ipv4 10.200.0.0/16

A three-server cluster (10.0.0.1-3):

  s1$ nexus server --name s1 --store-peer-addr 10.0.0.1:7380 --advertise 10.0.0.1
  s1$ nexus token create --role server --uses 2     # prints token: and ca-pin:
  s2$ nexus server --name s2 --store-peer-addr 10.0.0.2:7380 --advertise 10.0.0.2 \
        --join 10.0.0.1 --token nxt1.... --ca-pin sha256:...
  s3$ nexus server --name s3 --store-peer-addr 10.0.0.3:7380 --advertise 10.0.0.3 \
        --join 10.0.0.1 --token nxt1.... --ca-pin sha256:...
  s3$ nexus server leave                          # later: take s3 out again

Then, as the admin:

  nexus --config /var/lib/nexus/admin.conf get nodes
  nexus --config /var/lib/nexus/admin.conf get servers`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.ClusterPrefixes, err = prefixes.parse(); err != nil {
				return err
			}
			cfg.DataDir = g.dataDir
			cfg.Logger = slog.Default()
			cfg.WriteUserConfig = true
			if jc.Addr != "" || jc.Token != "" || jc.CAPin != "" {
				cfg.Join = &jc
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runServer(ctx, cfg, cmd)
		},
	}
	bindServerFlags(cmd, &cfg, "this server's name (default: the host name)")
	prefixes.bind(cmd)
	cmd.Flags().StringSliceVar(&cfg.StoreEndpoints, "store-endpoints", nil, "client URLs of an external etcd to keep objects in, instead of the embedded store")
	cmd.Flags().StringVar(&jc.Addr, "join", "", fmt.Sprintf("join the cluster of the server at this store peer address (host or host:port, port %d by default) instead of creating one", server.DefaultPeerPort))
	cmd.Flags().StringVar(&jc.Token, "token", "", "with --join: a server join token (nexus token create --role server)")
	cmd.Flags().StringVar(&jc.CAPin, "ca-pin", "", "with --join: the root CA's pin printed with the token (sha256:...); the server must match it")
	cmd.AddCommand(newServerLeaveCommand(g), newServerRemoveCommand(g))
	return cmd
}

func newServerLeaveCommand(g *globalOptions) *cobra.Command {
	var (
		endpoints []string
		force     bool
	)
	cmd := &cobra.Command{
		Use:   "leave",
		Short: "Take the server on this machine out of the cluster",
		Long: `Take the server on this machine out of the cluster's store. It is refused when the
voting members left would not form a quorum of servers that are up (their Server
heartbeat is recent): the store would stop taking writes. The server stops once
it learns of its removal; the others delete its Server object. Its data directory
can then be deleted; to come back it joins again with a new token.

Run it on the server machine while its nexus server runs; it reaches the store
through the server's socket (<data-dir>/store.sock).`,
		Example: `  nexus server leave
  nexus --data-dir /srv/nexus server leave --force   # even if the rest has no quorum up`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			creds, err := pkiDir(g).Credentials()
			if err != nil {
				return fmt.Errorf("which server runs here: %w", err)
			}
			return removeServer(cmd, g, endpoints, creds.Identity().Name, force)
		},
	}
	cmd.Flags().StringSliceVar(&endpoints, "store-endpoints", nil, "client URLs of the store (default: this server's socket)")
	cmd.Flags().BoolVar(&force, "force", false, "remove even if the voting members left that are up are fewer than a quorum")
	return cmd
}

func newServerRemoveCommand(g *globalOptions) *cobra.Command {
	var (
		endpoints []string
		force     bool
	)
	cmd := &cobra.Command{
		Use:   "remove NAME",
		Short: "Take another server out of the cluster (for one that is gone for good)",
		Long: `Remove server NAME from the cluster's store, from any other server machine, e.g.
for a machine that died and will not come back. It is refused when the voting
members left would not form a quorum of servers that are up, and for the last
voting member. The servers delete NAME's Server object.

Run it on a server machine while its nexus server runs; it reaches the store
through that server's socket (<data-dir>/store.sock).`,
		Example: `  nexus server remove s3
  nexus get servers       # s3 is gone within a few seconds`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return removeServer(cmd, g, endpoints, args[0], force)
		},
	}
	cmd.Flags().StringSliceVar(&endpoints, "store-endpoints", nil, "client URLs of the store (default: this server's socket)")
	cmd.Flags().BoolVar(&force, "force", false, "remove even if the voting members left that are up are fewer than a quorum")
	return cmd
}

func removeServer(cmd *cobra.Command, g *globalOptions, endpoints []string, name string, force bool) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
	defer cancel()
	cli, err := storeClient(ctx, g, endpoints)
	if err != nil {
		return err
	}
	defer cli.Close()
	if err := server.RemoveServer(ctx, server.RemoveConfig{Client: cli, Name: name, Force: force}); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "Removed server %s from the cluster's store; it stops on its own.\n", name)
	return nil
}

// bindServerFlags binds the flags of a server's configuration that nexus
// server and nexus up share; nameHelp describes --name.
func bindServerFlags(cmd *cobra.Command, cfg *server.Config, nameHelp string) {
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", "", nameHelp)
	f.StringVar(&cfg.Cluster, "cluster", "nexus", "the cluster's name, for a new cluster's CA")
	f.StringVar(&cfg.APIAddr, "api-addr", fmt.Sprintf(":%d", server.DefaultAPIPort), "where the API listens (host:port, TCP for HTTPS and UDP for HTTP/3)")
	f.StringSliceVar(&cfg.Advertise, "advertise", nil, "host names and addresses clients use to reach the API (in its certificate; the first goes into admin.conf)")
	f.StringVar(&cfg.StorePeerAddr, "store-peer-addr", "[::1]:7380", "the embedded store member's peer address (QUIC), where the join service answers too; loopback by default (one machine): for a cluster, an address the other servers reach (an unspecified host such as [::]:7380 is advertised as the first --advertise)")
	f.StringSliceVar(&cfg.StoreClientURLs, "store-client-urls", nil, "also serve the embedded store to etcd clients on these URLs (e.g. http://127.0.0.1:2379)")
	f.StringVar(&cfg.AdminUser, "admin-user", "admin", "the first user, bound to cluster-admin on a new cluster")
	f.StringVar(&cfg.AuditPolicy, "audit-policy", "", "audit policy file (JSON or YAML; default: changes with their request bodies, reads of secrets, every denial and authentication failure; other reads not recorded)")
}

func runServer(ctx context.Context, cfg server.Config, cmd *cobra.Command) error {
	s, err := server.Start(ctx, cfg)
	if err != nil {
		return err
	}
	if cfg.Join != nil {
		fmt.Fprintf(cmd.OutOrStdout(), "nexus server %s: joined the cluster\n", s.Name())
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
		if err := s.Err(); errors.Is(err, server.ErrRemoved) {
			fmt.Fprintf(cmd.OutOrStdout(), "nexus server %s: removed from the cluster; its data directory %s can be deleted\n", s.Name(), cfg.DataDir)
			return nil
		} else if err != nil {
			return err
		}
		return nil
	}
}

// clusterPrefixFlags are the cluster's container prefixes, which nexus
// server and nexus up take (server.Config.ClusterPrefixes).
type clusterPrefixFlags struct {
	ipv6, ipv4   string
	nodeIPv4Bits int
}

func (p *clusterPrefixFlags) bind(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&p.ipv6, "cluster-ipv6", "", "the cluster's IPv6 container prefix, a /48 or shorter (default: a generated unique local /48; must match the cluster's once it has one)")
	f.StringVar(&p.ipv4, "cluster-ipv4", "", "the cluster's IPv4 container prefix (default "+networking.DefaultIPv4Cluster.String()+"; must match the cluster's once it has one)")
	f.IntVar(&p.nodeIPv4Bits, "node-ipv4-bits", 0, fmt.Sprintf("prefix length of each node's IPv4 range (default %d: 253 containers per node)", networking.DefaultNodeIPv4Bits))
}

func (p *clusterPrefixFlags) parse() (networking.ClusterPrefixes, error) {
	return networking.ParseClusterPrefixes(p.ipv6, p.ipv4, p.nodeIPv4Bits)
}
