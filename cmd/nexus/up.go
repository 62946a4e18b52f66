package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/internal/profiles"
	"nexus.dev/nexus/runtime/image/builtin"
	"nexus.dev/nexus/up"
)

func newUpCommand(g *globalOptions) *cobra.Command {
	var cfg up.Config
	var node nodeFlags
	var pprofAddr string
	var prefixes clusterPrefixFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a whole orchestrator on this machine: server, store, controllers and the node agent",
		Long: `Run Nexus on this machine in one process: a control-plane server (the API, a
single-member replicated store, the cluster's CA, the controllers and the
scheduler) and the node agent (the OCI runtime, the image store and the node's
container networking), so that workloads can be run, scaled and rolled out at
once. Needs root, like any container runtime.

On its first start in an empty --data-dir it creates the cluster (see nexus
server --help) and writes the admin's client configuration to
<data-dir>/admin.conf (0600), and to ~/.nexus/config when that does not exist,
so nexus commands work without flags. Later starts reuse everything: objects,
certificates, images, and the containers that still run, which the agent
adopts without restarting them (also after nexus up was killed).

Containers get an IPv6 address from this node's /64 of the cluster's unique
local /48 (generated on a new cluster, or --cluster-ipv6) and an IPv4 address
from this node's /24 of 10.71.0.0/16 (--cluster-ipv4), on the bridge nexus0,
with outbound NAT and the host ports they publish. The server gives each node
its prefixes (the Node's spec.containerPrefixes); containers on other nodes
are reached without NAT, by direct routes to nodes on the same network and
through VXLAN (UDP 4789) to the others (--network-mode). The built-in image
` + builtin.Reference + ` needs no registry.

Services (nexus expose) get virtual IPs from ranges no node gets (a /112 of
the cluster's last IPv6 /64, and its last IPv4 /24, 10.71.255.0/24 by
default); the node balances connections to them at connect time in
eBPF (cgroup hooks on the cgroup2 root), or with nftables DNAT where the hooks
cannot load (--service-datapath; nexus nodes -o wide shows which). Containers
resolve Services by name through the node's DNS server on the bridge
(web, web.<namespace>.svc.cluster.local).

SIGINT or SIGTERM stops Nexus and leaves the containers running for the next
start to adopt; delete workloads first to stop them.`,
		Example: `  nexus up                                          # data in /var/lib/nexus, API on :7443
  nexus --data-dir /tmp/nx up --api-addr 127.0.0.1:7443
  nexus up --cluster-ipv4 10.200.0.0/16 --label zone=lab
  nexus up --network-mode vxlan                      # tunnel to every other node
  nexus up --service-datapath nftables               # Services by DNAT rules instead of eBPF
  nexus up --pprof-addr 127.0.0.1:6060               # then: go tool pprof http://127.0.0.1:6060/debug/pprof/heap

Then, in another terminal:

  nexus run web --image ` + builtin.Reference + ` --replicas 3 --port 8080
  nexus ps
  nexus logs -f web-<id>`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return fmt.Errorf("nexus up runs containers and needs root: run it with sudo")
			}
			ns, err := node.parse()
			if err != nil {
				return err
			}
			cfg.Labels, cfg.Bridge, cfg.NetworkMode, cfg.ServiceDataPath = ns.labels, ns.bridge, ns.mode, ns.services
			if cfg.Server.ClusterPrefixes, err = prefixes.parse(); err != nil {
				return err
			}
			cfg.Server.DataDir = g.dataDir
			cfg.Server.WriteUserConfig = true
			cfg.Logger = slog.Default()
			if pprofAddr != "" {
				url, stopProfiles, err := profiles.ServeLoopback(pprofAddr)
				if err != nil {
					return fmt.Errorf("--pprof-addr: %w", err)
				}
				defer stopProfiles()
				slog.Info("serving Go profiles", "url", url)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runUp(ctx, cfg, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	bindServerFlags(cmd, &cfg.Server, "this server's name, and the node's unless --node-name (default: the host name)")
	f.StringVar(&cfg.NodeName, "node-name", "", "this machine's node name (default: the server's name)")
	node.bind(cmd)
	prefixes.bind(cmd)
	f.StringVar(&pprofAddr, "pprof-addr", "", "serve Go's runtime profiles (/debug/pprof/: CPU, heap, goroutines) on this loopback address, e.g. 127.0.0.1:6060, without authentication (off when empty)")
	return cmd
}

func runUp(ctx context.Context, cfg up.Config, out io.Writer) error {
	fmt.Fprintln(out, "starting nexus: store, API, controllers, then the node agent ...")
	u, err := up.Start(ctx, cfg)
	if err != nil {
		return err
	}
	srv := u.Server()
	fmt.Fprintf(out, "nexus up: node %s ready; API on https://%s (HTTP/2 and HTTP/3)\n", u.NodeName(), srv.APIAddr())
	if !u.ExitsRecorded() {
		fmt.Fprintln(out, "warning: no eBPF exit recorder (see the log): exit codes of containers that end while nexus is down are not known")
	}
	if p := srv.AdminConfig(); p != "" {
		fmt.Fprintf(out, "admin client configuration: %s\n", p)
		prefix := ""
		if !isDefaultConfig(p) {
			prefix = "NEXUS_CONFIG=" + p + " "
		}
		fmt.Fprintf(out, "next, in another terminal:\n  %snexus run web --image %s --replicas 3 --port 8080\n  %snexus ps\n  %snexus logs -f <instance>\n",
			prefix, builtin.Reference, prefix, prefix)
	}
	select {
	case <-ctx.Done():
		slog.Info("stopping (containers keep running; the next nexus up adopts them)")
		u.Stop()
		return nil
	case <-u.Done():
		return u.Err()
	}
}

// isDefaultConfig says whether plain nexus commands use the client
// configuration in path: the default config file ($NEXUS_CONFIG, else
// ~/.nexus/config) holds the same.
func isDefaultConfig(path string) bool {
	def, err := client.ConfigPath("")
	if err != nil {
		return false
	}
	a, err1 := os.ReadFile(path)
	b, err2 := os.ReadFile(def)
	return err1 == nil && err2 == nil && bytes.Equal(a, b)
}
