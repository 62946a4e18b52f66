package agent_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/agent"
	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
)

// peerRecorder is the node's network as the agent sees it, recording what
// the agent hands it: it attaches nothing (the test starts no container).
type peerRecorder struct {
	peers chan string // each SetPeers call: "name=prefixes@addresses ..."
}

func (r *peerRecorder) Attach(context.Context, string, string, []types.Port) ([]string, error) {
	return nil, fmt.Errorf("no container is attached in this test")
}
func (r *peerRecorder) Detach(context.Context, string) error            { return nil }
func (r *peerRecorder) Repair(context.Context, map[string]string) error { return nil }

func (r *peerRecorder) SetPeers(_ context.Context, nodes []*types.Node) error {
	var s []string
	for _, n := range nodes {
		var addrs []string
		for _, a := range n.Status.Addresses {
			addrs = append(addrs, a.Address)
		}
		s = append(s, n.Name+"="+strings.Join(n.Spec.ContainerPrefixes, ",")+"@"+strings.Join(addrs, ","))
	}
	r.peers <- strings.Join(s, " ")
	return nil
}

var _ agent.PeerNetwork = (*peerRecorder)(nil)

// TestAgentOpensNetworkWithServerPrefixesAndFollowsPeers: an agent with
// OpenNetwork starts nothing until its Node has prefixes, opens its network
// with them and reports them in the Node's status; it hands the network
// the other Nodes that have prefixes, again when one changes or goes.
func TestAgentOpensNetworkWithServerPrefixesAndFollowsPeers(t *testing.T) {
	n := startNode(t, nil)
	ctx := context.Background()
	nodes, _ := types.LookupResource("nodes")
	rec := &peerRecorder{peers: make(chan string, 100)}
	opened := make(chan *types.Node, 1)
	n.run(t, func(c *agent.Config) {
		c.OpenNetwork = func(_ context.Context, node *types.Node) (agent.Network, error) {
			opened <- node
			return rec, nil
		}
	})
	// A peer with prefixes and addresses, and one the server has not
	// given prefixes yet.
	mkNode := func(name string, prefixes []string, addr string) {
		o := &types.Node{TypeMeta: types.TypeMeta{APIVersion: types.APIVersion, Kind: "Node"}, ObjectMeta: types.ObjectMeta{Name: name}}
		o.Spec.ContainerPrefixes = prefixes
		if prefixes != nil {
			o.Spec.ClusterPrefixes = []string{"fd00:6e78:7400::/48", "10.71.0.0/16"}
		}
		got, err := n.admin.Create(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		o = got.(*types.Node)
		o.Status.Addresses = []types.NodeAddress{{Type: "InternalIP", Address: addr}}
		if _, err := n.admin.UpdateStatus(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	mkNode("n2", []string{"fd00:6e78:7400:2::/64", "10.71.2.0/24"}, "fd01::2")
	mkNode("n3", nil, "fd01::3")

	select {
	case node := <-opened:
		t.Fatalf("the network was opened before the node had prefixes: %v", node.Spec)
	case <-time.After(500 * time.Millisecond):
	}
	own := []string{"fd00:6e78:7400:1::/64", "10.71.1.0/24"}
	setSpec(t, n.admin, "n1", func(s *types.NodeSpec) {
		s.ContainerPrefixes, s.ClusterPrefixes = own, []string{"fd00:6e78:7400::/48", "10.71.0.0/16"}
	})
	select {
	case node := <-opened:
		if !slices.Equal(node.Spec.ContainerPrefixes, own) {
			t.Fatalf("the network was opened with %v, want %v", node.Spec.ContainerPrefixes, own)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the network was not opened 10 s after the node got its prefixes")
	}
	wantPeers(t, rec, "n2=fd00:6e78:7400:2::/64,10.71.2.0/24@fd01::2")
	deadline := time.Now().Add(10 * time.Second)
	for {
		o, err := n.admin.Get(ctx, nodes, "", "n1")
		if err != nil {
			t.Fatal(err)
		}
		if got := o.(*types.Node).Status.ContainerPrefixes; slices.Equal(got, own) {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("status.containerPrefixes %v, want the served %v", got, own)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// n3 gets prefixes, n2 new ones; then n2 goes.
	setSpec(t, n.admin, "n3", func(s *types.NodeSpec) {
		s.ContainerPrefixes, s.ClusterPrefixes = []string{"fd00:6e78:7400:3::/64", "10.71.3.0/24"}, []string{"fd00:6e78:7400::/48", "10.71.0.0/16"}
	})
	wantPeers(t, rec, "n2=fd00:6e78:7400:2::/64,10.71.2.0/24@fd01::2 n3=fd00:6e78:7400:3::/64,10.71.3.0/24@fd01::3")
	setSpec(t, n.admin, "n2", func(s *types.NodeSpec) { s.ContainerPrefixes = []string{"fd00:6e78:7400:4::/64", "10.71.4.0/24"} })
	wantPeers(t, rec, "n2=fd00:6e78:7400:4::/64,10.71.4.0/24@fd01::2 n3=fd00:6e78:7400:3::/64,10.71.3.0/24@fd01::3")
	if _, err := n.admin.Delete(ctx, nodes, "", "n2", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wantPeers(t, rec, "n3=fd00:6e78:7400:3::/64,10.71.3.0/24@fd01::3")
}

// wantPeers waits until the agent hands the network want.
func wantPeers(t *testing.T, rec *peerRecorder, want string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	var last string
	for {
		select {
		case last = <-rec.peers:
			if last == want {
				return
			}
		case <-timeout:
			t.Fatalf("peers handed to the network: last %q, want %q", last, want)
		}
	}
}

// setSpec changes a Node's spec as the admin (again after a conflict with
// a heartbeat).
func setSpec(t *testing.T, c *client.Client, name string, change func(*types.NodeSpec)) {
	t.Helper()
	nodes, _ := types.LookupResource("nodes")
	for range 20 {
		o, err := c.Get(context.Background(), nodes, "", name)
		if err != nil {
			t.Fatal(err)
		}
		nd := o.(*types.Node)
		change(&nd.Spec)
		if _, err = c.Update(context.Background(), nd); err == nil {
			return
		} else if !client.IsConflict(err) {
			t.Fatal(err)
		}
	}
	t.Fatalf("node %s: conflicts on every try", name)
}
