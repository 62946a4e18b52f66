// Package networking connects containers on one node: each node gets an IPv6
// /64 and an IPv4 /24 (by default) out of the cluster's prefixes, allocated
// through the store so that no two nodes share one (IPAM); each container
// gets one address of each family from its node's prefixes, a veth pair
// whose inner end is eth0 in the container's network namespace and whose
// outer end is a port of the node's bridge, default routes via the bridge,
// outbound NAT, and DNAT rules for the ports it publishes on the node.
//
// The node agent owns a Node: it calls Setup once at start, Attach after the
// runtime has created a container's network namespace and before the
// container's process runs, Detach when the container is removed, and Repair
// after a restart with the containers it still has. Everything a Node
// creates lives in one network namespace (the host's in production, one a
// test made in tests): the bridge, the veths' outer ends and one nftables
// table of its own, so the rest of the host's configuration is never touched.
// Assignments survive a restart in a state file written atomically.
//
// Across nodes, containers talk without NAT: the server records each
// node's prefixes in its Node object (IPAM.NodeSpec; ParseNodeSpec reads
// them back), and the agent hands the other nodes to SetPeers, which routes
// their prefixes directly via their addresses on a shared network or
// through kernel VXLAN (Mode, peers.go).
//
// Services: Node.ServiceNAT is the nftables data path for the node's
// service table (package lb), in the same table. It balances every new
// connection to a service by DNAT where eBPF connect-time balancing
// cannot run, and, in both modes, translates the node-port packets that
// arrive from outside the node (services.go).
package networking
