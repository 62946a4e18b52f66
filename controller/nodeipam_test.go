package controller_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/controller"
	"nexus.dev/nexus/networking"
)

// prefixesOf waits until node has container prefixes and returns them as
// its agent reads them.
func (e *env) prefixesOf(node string) networking.NodePrefixes {
	e.t.Helper()
	var p networking.NodePrefixes
	e.eventually("node "+node+" has prefixes", 10*time.Second, func() (bool, string) {
		o, err := e.c.Get(context.Background(), nodes, "", node)
		if err != nil {
			return false, err.Error()
		}
		n := o.(*types.Node)
		p, _, err = networking.ParseNodeSpec(n.Spec.ContainerPrefixes, n.Spec.ClusterPrefixes)
		return err == nil, fmt.Sprintf("spec %q %q: %v", n.Spec.ContainerPrefixes, n.Spec.ClusterPrefixes, err)
	})
	return p
}

func TestControllerNodePrefixes(t *testing.T) {
	e := startEnv(t, false)
	e.node("n1", 1000, nil, nil)
	p1 := e.prefixesOf("n1")

	// A node that claims n1's prefixes when it registers gets its own.
	e.node("n2", 1000, nil, func(n *types.Node) {
		n.Spec.ContainerPrefixes = p1.Strings()
		n.Spec.ClusterPrefixes = []string{"fc00::/7", "10.0.0.0/8"}
	})
	e.eventually("n2's claimed prefixes replaced", 10*time.Second, func() (bool, string) {
		p2 := e.prefixesOf("n2")
		return p2.IPv6 != p1.IPv6 && p2.IPv4 != p1.IPv4, fmt.Sprintf("n2 has %v, n1 %v", p2, p1)
	})
	// Heartbeats (status updates) keep them.
	o, err := e.c.Get(context.Background(), nodes, "", "n2")
	if err != nil {
		t.Fatal(err)
	}
	n2 := o.(*types.Node)
	if _, err := e.c.UpdateStatus(context.Background(), n2); err != nil {
		t.Fatal(err)
	}
	if p := e.prefixesOf("n2"); p.Strings()[0] != n2.Spec.ContainerPrefixes[0] {
		t.Fatalf("n2's prefixes changed with a status update: %v, had %v", p, n2.Spec.ContainerPrefixes)
	}

	// A deleted node's prefixes go to the next node.
	if _, err := e.c.Delete(context.Background(), nodes, "", "n1", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("n1's prefixes released", 10*time.Second, func() (bool, string) {
		allocs, err := ipamOf(t, e).Allocations(context.Background())
		_, held := allocs["n1"]
		return err == nil && !held, fmt.Sprintf("allocations %v, %v", allocs, err)
	})
	e.node("n3", 1000, nil, nil)
	if p3 := e.prefixesOf("n3"); p3 != p1 {
		t.Fatalf("n3 got %v, want n1's released %v", p3, p1)
	}
}

func ipamOf(t *testing.T, e *env) *networking.IPAM {
	t.Helper()
	ipam, err := networking.NewIPAM(e.s.Server.Client(), networking.ClusterPrefixes{})
	if err != nil {
		t.Fatal(err)
	}
	return ipam
}

// TestControllerNodePrefixesSweep: what changed while no controller ran is
// put right when one starts: a Node without prefixes gets them, and the
// prefixes of a node deleted meanwhile are released.
func TestControllerNodePrefixesSweep(t *testing.T) {
	e := startEnv(t, true)
	ipam := ipamOf(t, e)
	if _, err := ipam.AllocateNode(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	e.node("here", 1000, nil, nil)
	time.Sleep(200 * time.Millisecond)
	if o, err := e.c.Get(context.Background(), nodes, "", "here"); err != nil || len(o.(*types.Node).Spec.ContainerPrefixes) != 0 {
		t.Fatalf("node without a controller: %v, %v; want no prefixes yet", o, err)
	}

	c, err := controller.New(controller.Config{Client: e.c, Logger: quiet(), NoWorkloads: true, NoScheduler: true, NoEndpoints: true, NodeIPAM: ipam})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Go(func() { _ = c.Run(ctx) })
	e.prefixesOf("here")
	e.eventually("gone's prefixes released", 10*time.Second, func() (bool, string) {
		allocs, err := ipam.Allocations(context.Background())
		_, held := allocs["gone"]
		return err == nil && !held, fmt.Sprintf("allocations %v, %v", allocs, err)
	})
}
