package networking

import "net/netip"

// Gateways are the bridge's addresses in the node's prefixes (the first
// of each; IPv4 invalid when the node has no IPv4 prefix): the
// containers' default routes, and where the node's own services for its
// containers (the cluster DNS) listen.
func (p NodePrefixes) Gateways() (v6, v4 netip.Addr) { return p.gateways() }
