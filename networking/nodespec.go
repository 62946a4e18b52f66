package networking

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A Node object of the API records its prefixes in its spec as strings,
// IPv6 first: spec.containerPrefixes = [node's /64, node's IPv4 prefix] and
// spec.clusterPrefixes = [cluster's IPv6 prefix, cluster's IPv4 prefix].
// The server fills them from IPAM (NodeSpec); an agent reads them back with
// ParseNodeSpec and peers' with ParsePeer. This package does not import the
// API's types, so these functions take and return the strings.

// ErrNoPrefixes means a Node has no container prefixes yet: the server has
// not allocated them (the node-IPAM controller does it moments after the
// Node is created).
var ErrNoPrefixes = errors.New("the node has no container prefixes yet")

// Strings returns p as a Node's spec.containerPrefixes lists it.
func (p NodePrefixes) Strings() []string { return []string{p.IPv6.String(), p.IPv4.String()} }

// Strings returns c as a Node's spec.clusterPrefixes lists it; the node
// prefix length is that of the node's own IPv4 prefix.
func (c ClusterPrefixes) Strings() []string { return []string{c.IPv6.String(), c.IPv4.String()} }

// NodeSpec returns node's prefixes, allocating them if it has none (as
// AllocateNode does), and the cluster's, as a Node's spec records them.
func (a *IPAM) NodeSpec(ctx context.Context, node string) (containerPrefixes, clusterPrefixes []string, err error) {
	p, err := a.AllocateNode(ctx, node)
	if err != nil {
		return nil, nil, err
	}
	c, err := a.Cluster(ctx)
	if err != nil {
		return nil, nil, err
	}
	return p.Strings(), c.Strings(), nil
}

// Allocations returns every node's prefixes, by node name, as its spec
// lists them (nil for a record that cannot be read: ReleaseNode removes
// it), in one read: a controller compares them with the Nodes, and
// releases the prefixes of a node deleted while it was not watching.
func (a *IPAM) Allocations(ctx context.Context) (map[string][]string, error) {
	resp, err := a.cli.Get(ctx, keyNodesPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list the nodes' prefixes under %s: %w", keyNodesPrefix, err)
	}
	out := make(map[string][]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		node := strings.TrimPrefix(string(kv.Key), keyNodesPrefix)
		out[node] = nil
		if rec, err := decodeNode(kv.Value); err == nil {
			out[node] = rec.NodePrefixes.Strings()
		}
	}
	return out, nil
}

// ParseNodeSpec parses a Node's spec.containerPrefixes and
// spec.clusterPrefixes into what New takes. Empty container prefixes are
// ErrNoPrefixes (wait for the server); anything else that is not a /64 and
// an IPv4 prefix inside the cluster's is an error wrapping ErrBadPrefix
// that names the field.
func ParseNodeSpec(containerPrefixes, clusterPrefixes []string) (NodePrefixes, ClusterPrefixes, error) {
	if len(containerPrefixes) == 0 {
		return NodePrefixes{}, ClusterPrefixes{}, ErrNoPrefixes
	}
	p, err := parseNodePrefixes("spec.containerPrefixes", containerPrefixes)
	if err != nil {
		return NodePrefixes{}, ClusterPrefixes{}, err
	}
	v6, v4, err := parsePair("spec.clusterPrefixes", clusterPrefixes)
	if err != nil {
		return NodePrefixes{}, ClusterPrefixes{}, err
	}
	c := ClusterPrefixes{IPv6: v6, IPv4: v4, NodeIPv4Bits: p.IPv4.Bits()}
	if err := c.complete(); err != nil {
		return NodePrefixes{}, ClusterPrefixes{}, fmt.Errorf("spec.clusterPrefixes: %w", err)
	}
	if !c.IPv6.Contains(p.IPv6.Addr()) || !c.IPv4.Contains(p.IPv4.Addr()) {
		return NodePrefixes{}, ClusterPrefixes{}, fmt.Errorf("%w: spec.containerPrefixes %s and %s are not inside spec.clusterPrefixes %s and %s",
			ErrBadPrefix, p.IPv6, p.IPv4, c.IPv6, c.IPv4)
	}
	return p, c, nil
}

// parseNodePrefixes parses a node's prefixes as its spec lists them.
func parseNodePrefixes(field string, s []string) (NodePrefixes, error) {
	v6, v4, err := parsePair(field, s)
	if err != nil {
		return NodePrefixes{}, err
	}
	p := NodePrefixes{IPv6: v6, IPv4: v4}
	if err := p.validate(); err != nil {
		return NodePrefixes{}, fmt.Errorf("%s: %w", field, err)
	}
	return p, nil
}

// parsePair parses [IPv6 prefix, IPv4 prefix].
func parsePair(field string, s []string) (v6, v4 netip.Prefix, err error) {
	if len(s) != 2 {
		return v6, v4, fmt.Errorf("%w: %s has %d entries, want 2: an IPv6 prefix, then an IPv4 prefix", ErrBadPrefix, field, len(s))
	}
	if v6, err = parsePrefix(field+"[0]", s[0]); err != nil {
		return v6, v4, err
	}
	if v4, err = parsePrefix(field+"[1]", s[1]); err != nil {
		return v6, v4, err
	}
	if !v6.Addr().Is6() || v6.Addr().Is4In6() || !v4.Addr().Is4() {
		return v6, v4, fmt.Errorf("%w: %s is [%s, %s], want an IPv6 prefix, then an IPv4 prefix", ErrBadPrefix, field, s[0], s[1])
	}
	return v6, v4, nil
}
