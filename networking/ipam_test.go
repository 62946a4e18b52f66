package networking

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"nexus.dev/nexus/api/apitest"
)

func mustParseCluster(t *testing.T, v6, v4 string, bits int) ClusterPrefixes {
	t.Helper()
	c, err := ParseClusterPrefixes(v6, v4, bits)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIPAM(t *testing.T) {
	for _, b := range apitest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			cli := b.Client(t)
			a, err := NewIPAM(cli, ClusterPrefixes{})
			if err != nil {
				t.Fatal(err)
			}
			// The first node creates the cluster's prefixes: a generated
			// unique local /48 and the default IPv4 range.
			c, err := a.Cluster(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if c.IPv6.Bits() != 48 || c.IPv6.Addr().As16()[0] != 0xfd || c.IPv4 != DefaultIPv4Cluster || c.NodeIPv4Bits != 24 {
				t.Fatalf("cluster prefixes %+v, want a generated fd00::/8 /48, %s and /24 nodes", c, DefaultIPv4Cluster)
			}
			// Another node, configured with nothing, gets the same ones.
			other, _ := NewIPAM(cli, ClusterPrefixes{})
			if c2, err := other.Cluster(ctx); err != nil || c2 != c {
				t.Fatalf("second node's cluster prefixes %+v, %v; want %+v", c2, err, c)
			}

			n1, err := a.AllocateNode(ctx, "node-1")
			if err != nil {
				t.Fatal(err)
			}
			if !c.IPv6.Contains(n1.IPv6.Addr()) || n1.IPv6.Bits() != 64 || !c.IPv4.Contains(n1.IPv4.Addr()) || n1.IPv4.Bits() != 24 {
				t.Fatalf("node-1 got %+v, want a /64 of %s and a /24 of %s", n1, c.IPv6, c.IPv4)
			}
			if again, err := other.AllocateNode(ctx, "node-1"); err != nil || again != n1 {
				t.Fatalf("node-1 asking again got %+v, %v; want its own %+v", again, err, n1)
			}
			n2, err := a.AllocateNode(ctx, "node-2")
			if err != nil {
				t.Fatal(err)
			}
			if n2.IPv6 == n1.IPv6 || n2.IPv4 == n1.IPv4 {
				t.Fatalf("node-2 got %+v, node-1 has %+v: shared", n2, n1)
			}
			// A Node's spec gets the same prefixes, as strings its agent
			// reads back.
			sn, sc, err := other.NodeSpec(ctx, "node-2")
			if err != nil {
				t.Fatal(err)
			}
			if p, pc, err := ParseNodeSpec(sn, sc); err != nil || p != n2 || pc != c {
				t.Fatalf("node-2's spec %q %q reads back as %+v %+v, %v; want %+v %+v", sn, sc, p, pc, err, n2, c)
			}
			if got, err := a.Allocations(ctx); err != nil || fmt.Sprint(got) != fmt.Sprint(map[string][]string{"node-1": n1.Strings(), "node-2": n2.Strings()}) {
				t.Fatalf("Allocations: %v, %v; want node-1's and node-2's", got, err)
			}
			// Released prefixes go to the next node.
			if err := a.ReleaseNode(ctx, "node-1"); err != nil {
				t.Fatal(err)
			}
			if got, err := a.Allocations(ctx); err != nil || len(got) != 1 || got["node-1"] != nil {
				t.Fatalf("Allocations after releasing node-1: %v, %v; want node-2's only", got, err)
			}
			if err := a.ReleaseNode(ctx, "node-1"); err != nil {
				t.Fatalf("releasing a released node: %v, want nil", err)
			}
			n3, err := a.AllocateNode(ctx, "node-3")
			if err != nil || n3 != n1 {
				t.Fatalf("node-3 got %+v, %v; want node-1's released %+v", n3, err, n1)
			}

			// Configured prefixes that differ from the cluster's are refused.
			bad, err := NewIPAM(cli, mustParseCluster(t, "", "10.99.0.0/16", 0))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := bad.AllocateNode(ctx, "node-4"); !errors.Is(err, ErrClusterMismatch) || !strings.Contains(err.Error(), "10.99.0.0/16") {
				t.Fatalf("a node configured with another IPv4 prefix: %v, want ErrClusterMismatch naming it", err)
			}
			same, _ := NewIPAM(cli, mustParseCluster(t, c.IPv6.String(), c.IPv4.String(), 24))
			if _, err := same.AllocateNode(ctx, "node-4"); err != nil {
				t.Fatalf("a node configured with the cluster's own prefixes: %v", err)
			}

			if _, err := a.AllocateNode(ctx, "Node_1"); err == nil || !strings.Contains(err.Error(), "Node_1") {
				t.Fatalf("a bad node name: %v, want an error naming it", err)
			}

			// A record that is not this package's is reported, not used.
			if _, err := cli.Put(ctx, keyNodesPrefix+"node-9", `{"index":1,"ipv6":"nonsense"}`); err != nil {
				t.Fatal(err)
			}
			if _, err := a.AllocateNode(ctx, "node-9"); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("a corrupt node record: %v, want ErrCorrupt", err)
			}
			if got, err := a.Allocations(ctx); err != nil || got["node-9"] != nil || len(got) != 4 {
				t.Fatalf("Allocations with a corrupt record: %v, %v; want node-9 listed without prefixes", got, err)
			}
			if err := a.ReleaseNode(ctx, "node-9"); err != nil {
				t.Fatalf("releasing a corrupt record: %v", err)
			}
		})
	}
}

// TestIPAMConcurrentAllocators races more allocators than the cluster has
// prefixes, over several clients: every prefix goes to one node only, and
// the rest are told the range is exhausted.
func TestIPAMConcurrentAllocators(t *testing.T) {
	const nodes = 40
	for _, b := range apitest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			// 32 prefix pairs: a /19 of /24s, the last kept for services.
			want := mustParseCluster(t, "fd00:6e78:7401::/48", "10.71.32.0/19", 24)
			var ipams []*IPAM
			for range 4 {
				a, err := NewIPAM(b.Client(t), want)
				if err != nil {
					t.Fatal(err)
				}
				ipams = append(ipams, a)
			}
			var (
				wg   sync.WaitGroup
				mu   sync.Mutex
				got  = map[string]NodePrefixes{}
				errs []error
			)
			for i := range nodes {
				wg.Go(func() {
					node := fmt.Sprintf("node-%d", i)
					p, err := ipams[i%len(ipams)].AllocateNode(ctx, node)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						errs = append(errs, err)
						return
					}
					got[node] = p
				})
			}
			wg.Wait()
			if len(got) != 31 || len(errs) != nodes-31 {
				t.Fatalf("%d nodes got prefixes and %d failed (%v); want 31 and %d", len(got), len(errs), errors.Join(errs...), nodes-31)
			}
			for _, err := range errs {
				if !errors.Is(err, ErrExhausted) {
					t.Fatalf("a losing allocator: %v, want ErrExhausted", err)
				}
			}
			seen6, seen4 := map[netip.Prefix]string{}, map[netip.Prefix]string{}
			for node, p := range got {
				if other, dup := seen6[p.IPv6]; dup {
					t.Fatalf("%s and %s both got %s", node, other, p.IPv6)
				}
				if other, dup := seen4[p.IPv4]; dup {
					t.Fatalf("%s and %s both got %s", node, other, p.IPv4)
				}
				seen6[p.IPv6], seen4[p.IPv4] = node, node
				if v6, v4 := want.ServiceRanges(); p.IPv6.Overlaps(v6) || p.IPv4.Overlaps(v4) {
					t.Fatalf("%s got %+v, which overlaps the service ranges %s and %s", node, p, v6, v4)
				}
				// What the store says is what the allocator returned.
				if again, err := ipams[0].AllocateNode(ctx, node); err != nil || again != p {
					t.Fatalf("%s asking again got %+v, %v; want %+v", node, again, err, p)
				}
			}
		})
	}
}
