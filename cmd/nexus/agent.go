package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/agent/embed"
	"nexus.dev/nexus/api"
	"nexus.dev/nexus/networking"
	"nexus.dev/nexus/networking/lb"
	"nexus.dev/nexus/runtime/exitrec"
)

func newAgentCommand(g *globalOptions) *cobra.Command {
	var cfg embed.NodeConfig
	var node nodeFlags
	cmd := &cobra.Command{
		Use:   "agent --join ADDR --token T --ca-pin sha256:...",
		Short: "Run a worker node: join a cluster and run the instances its servers place here",
		Long: `Run a Nexus worker node: the node agent with the OCI runtime, the image store
and the node's container networking, on a machine of its own. Needs root, like
any container runtime.

On its first start the machine joins the cluster: --join names a server (its
join address: host or host:port, default port 7380), --token and --ca-pin come
from 'nexus token create --role agent' on a server. The machine refuses a
server whose CA does not match the pin, makes its own key, and gets a node
certificate for --name (default: the host name). The key, the certificate and
the cluster's trust bundle are kept in <data-dir>/pki (0600), and the API URLs
of the cluster's servers in <data-dir>/node.json; later starts reuse them and
need no token (nor --join).

The agent talks to the API over HTTP/3 with its node certificate, acting only
as its node. It knows every server the cluster publishes (and those given with
--server) and moves to the next within seconds when one stops answering;
its watches resume there. The certificate is renewed through the API at
half-life. Containers get their addresses from the node's prefixes, which the
servers allocate and record in its Node (spec.containerPrefixes); the agent
waits for them, saying so in its log. Logs and exec of its instances reach
it from any server through its endpoint (--listen-addr, port 7444), which
only the cluster's servers may call.

SIGINT or SIGTERM stops the agent and leaves the containers running for the
next start to adopt.`,
		Example: `  # on a server: make a token for one machine
  nexus token create --role agent --uses 1

  # on the new machine: join with what it printed
  nexus agent --join 10.0.0.1 --token nxt1.3f2a.Jk9... --ca-pin sha256:4f1c...e2 --name worker1

  # later starts: the credentials are in the data directory
  nexus agent

  # servers behind names of their own, and the address the servers reach this machine at
  nexus --data-dir /srv/nexus agent --join server1.example.com:7380 --token ... --ca-pin ... \
      --server https://server1.example.com:7443 --server https://server2.example.com:7443 \
      --advertise-addr 10.0.0.21 --label zone=b`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return fmt.Errorf("nexus agent runs containers and needs root: run it with sudo")
			}
			ns, err := node.parse()
			if err != nil {
				return err
			}
			cfg.Labels, cfg.Bridge, cfg.NetworkMode, cfg.ServiceDataPath = ns.labels, ns.bridge, ns.mode, ns.services
			cfg.DataDir = g.dataDir
			cfg.Logger = slog.Default()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runAgent(ctx, cfg, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Join, "join", "", "a server's join address, host or host:port (default port 7380); needed on the first start")
	f.StringVar(&cfg.Token, "token", "", "the join token from 'nexus token create --role agent'; needed on the first start")
	f.StringVar(&cfg.CAPin, "ca-pin", "", "the cluster CA's pin printed with the token (sha256:...); needed on the first start")
	f.StringVar(&cfg.Name, "name", "", "this node's name (default: the host name; a joined node keeps its own)")
	f.StringArrayVar(&cfg.Servers, "server", nil, "an API server's URL, https://HOST:7443, besides those the cluster publishes (repeat for more)")
	f.StringVar(&cfg.ListenAddr, "listen-addr", fmt.Sprintf(":%d", api.DefaultNodePort), "where the agent serves logs and exec to the servers (TCP, mutual TLS)")
	f.StringVar(&cfg.AdvertiseAddr, "advertise-addr", "", "the IP address (optionally with a port) the servers reach this machine at (default: its address towards the first server)")
	node.bind(cmd)
	f.StringVar(&cfg.ExitRecorderDir, "exit-recorder-dir", exitrec.DefaultDir, "where the eBPF exit recorder is pinned in bpffs (one per machine; a test running several agents on one machine gives each its own)")
	return cmd
}

func runAgent(ctx context.Context, cfg embed.NodeConfig, out io.Writer) error {
	fmt.Fprintln(out, "starting the nexus agent ...")
	n, err := embed.StartNode(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "nexus agent: node %s running; API servers %v\n", n.Name(), n.Servers())
	if !n.ExitsRecorded() {
		fmt.Fprintln(out, "warning: no eBPF exit recorder (see the log): exit codes of containers that end while the agent is down are not known")
	}
	select {
	case <-ctx.Done():
		slog.Info("stopping (containers keep running; the next nexus agent adopts them)")
		n.Stop()
		return nil
	case <-n.Done():
		return n.Err()
	}
}

// nodeFlags are the flags of the node a command runs on this machine
// (nexus up, nexus agent).
type nodeFlags struct {
	labels                               []string
	bridge, networkMode, serviceDataPath string
}

// nodeSettings are the node flags' values, checked.
type nodeSettings struct {
	labels   map[string]string
	bridge   string
	mode     networking.Mode
	services lb.Choice
}

func (n *nodeFlags) bind(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringArrayVar(&n.labels, "label", nil, "a label of the node when it is first registered, KEY=VALUE (repeat for more)")
	f.StringVar(&n.bridge, "bridge", networking.DefaultBridge, "the node's bridge for containers")
	f.StringVar(&n.networkMode, "network-mode", string(networking.ModeAuto), "how containers reach other nodes' containers: auto (direct routes to nodes on the same network, VXLAN to the others), routed (direct routes only) or vxlan (VXLAN to every node, for networks that drop unknown addresses)")
	f.StringVar(&n.serviceDataPath, "service-datapath", string(lb.Auto), "how the node balances Service traffic: auto (eBPF when its cgroup hooks load here, else nftables), ebpf (connect-time in cgroup hooks; an error where they cannot load) or nftables (DNAT rules)")
}

// parse checks the flags' values.
func (n *nodeFlags) parse() (nodeSettings, error) {
	s := nodeSettings{bridge: n.bridge}
	var err error
	if s.labels, err = parseLabels(n.labels); err != nil {
		return s, err
	}
	if s.mode, err = networking.ParseMode(n.networkMode); err != nil {
		return s, fmt.Errorf("--network-mode: %w", err)
	}
	if s.services, err = lb.ParseChoice(n.serviceDataPath); err != nil {
		return s, fmt.Errorf("--service-datapath: %w", err)
	}
	return s, nil
}
