package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/client/printers"
	"nexus.dev/nexus/api/types"
)

func newExposeCommand() *cobra.Command {
	var (
		o             client.ExposeOptions
		protocol, typ string
		co            = &clientOptions{}
	)
	cmd := &cobra.Command{
		Use:   "expose workload/NAME --port PORT [--target-port PORT] [--name NAME] [--protocol TCP|UDP] [--type ClusterIP|NodePort] [--node-port N] [--session-affinity None|ClientIP] [--headless]",
		Short: "Put a Service in front of a workload's instances",
		Long: `Create a Service that selects the instances of a workload by its template's
labels (spec.template.labels; a workload without any is refused) and serves
one port: --port on the service's virtual IPs, forwarded to --target-port of
the instances (default: the same port). The server gives the service a
virtual IPv6 address and, when the cluster has IPv4, an IPv4 one, and prints
them; the service's name (default: the workload's) resolves to them in the
cluster's DNS.

--type NodePort also serves the port on every node's addresses, on a node
port from 30000-32767 (--node-port to choose one). --session-affinity
ClientIP sends each client to the backend it reached last (for 3 hours
after its last connection). --headless gives the service no virtual IP: its
name resolves to the ready instances' own addresses.

nexus get svc shows the service and how many of its backends are ready;
nexus describe svc NAME lists each backend with its node, addresses and
readiness.`,
		Example: `  nexus expose workload/web --port 80 --target-port 8080
  nexus expose wl/web --port 80 --target-port 8080 --type NodePort
  nexus expose workload/web --name web-public --port 443 --target-port 8443 --type NodePort --node-port 30443
  nexus expose workload/dns --port 53 --protocol UDP
  nexus expose workload/db --port 5432 --headless`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, name, ok := strings.Cut(args[0], "/")
			if r, found := types.LookupResource(kind); !ok || !found || r.Kind != "Workload" || name == "" {
				return fmt.Errorf("%q: name the workload as workload/NAME, e.g. nexus expose workload/web --port 80", args[0])
			}
			o.Protocol, o.Type = types.Protocol(strings.ToUpper(protocol)), types.ServiceType(typ)
			s, err := co.connect()
			if err != nil {
				return err
			}
			defer s.c.Close()
			wlRes, _ := types.LookupResource("workloads")
			w, err := s.c.Get(cmd.Context(), wlRes, s.namespace, name)
			if err != nil {
				return s.explain(err)
			}
			svc, err := client.ServiceFor(w.(*types.Workload), o)
			if err != nil {
				return err
			}
			got, err := s.c.Create(cmd.Context(), svc)
			if err != nil {
				return s.explain(err)
			}
			created := got.(*types.Service)
			p := created.Spec.Ports[0]
			port := fmt.Sprintf("%d->%d/%s", p.Port, p.TargetPort, p.Protocol)
			if p.NodePort != 0 {
				port += fmt.Sprintf(", node port %d", p.NodePort)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s exposed: virtual IPs %s, port %s\n", printers.Ref(created), printers.VirtualIPs(created), port)
			return nil
		},
	}
	co.bind(cmd)
	f := cmd.Flags()
	f.StringVar(&o.Name, "name", "", "name of the service (default: the workload's)")
	f.Int32Var(&o.Port, "port", 0, "the service's port (required)")
	f.Int32Var(&o.TargetPort, "target-port", 0, "the instances' port (default: --port)")
	f.StringVar(&protocol, "protocol", "TCP", "TCP or UDP")
	f.StringVar(&typ, "type", string(types.ServiceClusterIP), "ClusterIP (inside the cluster) or NodePort (also on every node's addresses)")
	f.Int32Var(&o.NodePort, "node-port", 0, "node port of a NodePort service, 30000-32767 (default: a free one)")
	f.StringVar(&o.SessionAffinity, "session-affinity", "", "None (default) or ClientIP: a client keeps its backend")
	f.BoolVar(&o.Headless, "headless", false, "no virtual IP: the name resolves to the ready instances' addresses")
	_ = cmd.MarkFlagRequired("port")
	return cmd
}
