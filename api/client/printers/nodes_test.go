package printers

import (
	"bytes"
	"testing"
	"time"

	"nexus.dev/nexus/api/types"
)

// TestNodesTable: `nexus nodes` sums the requests of the live instances
// bound to each node against its allocatable, counts them, and shows
// state, roles (agent when no label says more), every IP address,
// versions and when the certificate expires.
func TestNodesTable(t *testing.T) {
	objs := objects()
	n1 := objs["node"].(*types.Node)
	n1.Status.Allocatable = types.ResourceList{CPU: 3500, Memory: 7 << 30}
	n1.Status.Addresses = append(n1.Status.Addresses, types.NodeAddress{Type: "InternalIP", Address: "fd00::1"})
	n2 := meta(&types.Node{Status: types.NodeStatus{
		Conditions:        []types.Condition{{Type: "Ready", Status: types.ConditionFalse, Reason: types.ReasonNodeLeaseExpired}},
		CertificateExpiry: now.Add(-time.Minute)}}, "", "n2", time.Hour).(*types.Node)
	inst := func(node string, phase types.InstancePhase, cpu types.MilliCPU, mem types.Bytes) *types.Instance {
		i := &types.Instance{}
		i.Spec.NodeName, i.Status.Phase = node, phase
		i.Spec.Template.Resources.Requests = types.ResourceList{CPU: cpu, Memory: mem}
		return i
	}
	insts := []*types.Instance{
		inst("n1", types.PhaseRunning, 500, 1<<30),
		inst("n1", types.PhaseStarting, 1250, 512<<20),
		inst("n1", types.PhaseFailed, 4000, 4<<30), // finished: holds nothing
		inst("", types.PhasePending, 100, 1<<20),   // not bound
		inst("gone", types.PhaseRunning, 100, 1<<20),
	}
	var b bytes.Buffer
	if err := Nodes(&b, []*types.Node{n2, n1}, insts, Options{Now: func() time.Time { return now }}); err != nil {
		t.Fatal(err)
	}
	want := `
NAME   STATUS                     ROLES          ADDRESSES          CPU(REQ/ALLOC)      MEMORY(REQ/ALLOC)   INSTANCES   VERSION   KERNEL   CERT-EXPIRES   AGE
n1     Ready,SchedulingDisabled   agent,server   10.0.0.1,fd00::1   1750m/3500m (50%)   1536Mi/7Gi (21%)    2           v0.3.0    6.1.0    in 11h         2d2h
n2     NotReady                   agent          <none>             0/<none>            0/<none>            0           <none>    <none>   expired        60m
`[1:]
	if got := b.String(); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}

	// -o wide adds the service data path and the OS.
	b.Reset()
	if err := Nodes(&b, []*types.Node{n2, n1}, insts, Options{Format: Wide, Now: func() time.Time { return now }}); err != nil {
		t.Fatal(err)
	}
	want = `
NAME   STATUS                     ROLES          ADDRESSES          CPU(REQ/ALLOC)      MEMORY(REQ/ALLOC)   INSTANCES   VERSION   KERNEL   CERT-EXPIRES   AGE    SERVICE-DATAPATH   OS
n1     Ready,SchedulingDisabled   agent,server   10.0.0.1,fd00::1   1750m/3500m (50%)   1536Mi/7Gi (21%)    2           v0.3.0    6.1.0    in 11h         2d2h   ebpf               Debian 12
n2     NotReady                   agent          <none>             0/<none>            0/<none>            0           <none>    <none>   expired        60m    <none>             <none>
`[1:]
	if got := b.String(); got != want {
		t.Fatalf("wide: got\n%s\nwant\n%s", got, want)
	}
}
