package main

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
)

// TestClientTop: nexus top lists what the instances' status says they
// use, sorted as asked, sums it per node against the node's capacity, and
// refuses what it cannot do in words that say what to do instead.
func TestClientTop(t *testing.T) {
	e := newE2E(t)
	pool := x509.NewCertPool()
	pool.AddCert(e.c.Root.Cert)
	admin, err := client.New(client.Settings{Server: e.c.URL(), RootCAs: pool, Certificate: e.c.User(t, "admin")})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx := context.Background()
	e.ok("create", "namespace", "prod")
	node := &types.Node{TypeMeta: types.TypeMeta{APIVersion: types.APIVersion, Kind: "Node"}}
	node.Name = "n1"
	if _, err := admin.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	node.Status.Capacity = types.ResourceList{CPU: 2000, Memory: 4 << 30}
	if _, err := admin.UpdateStatus(ctx, node); err != nil {
		t.Fatal(err)
	}
	sampled := time.Now().UTC().Truncate(time.Second)
	for _, x := range []struct {
		ns, name string
		usage    *types.InstanceUsage
	}{
		{"default", "web-a", &types.InstanceUsage{CPUMillicores: 12, MemoryBytes: 300 << 20, MemoryLimitBytes: 512 << 20, SampledAt: sampled}},
		{"default", "web-b", &types.InstanceUsage{CPUMillicores: 480, MemoryBytes: 20 << 20, OOMKills: 3, SampledAt: sampled}},
		{"default", "web-c", nil}, // not measured yet
		{"prod", "api-a", &types.InstanceUsage{CPUMillicores: 100, MemoryBytes: 100 << 20, MemoryLimitBytes: 200 << 20, SampledAt: sampled}},
	} {
		inst := &types.Instance{TypeMeta: types.TypeMeta{APIVersion: types.APIVersion, Kind: "Instance"},
			ObjectMeta: types.ObjectMeta{Name: x.name, Namespace: x.ns},
			Spec:       types.InstanceSpec{Workload: "web", NodeName: "n1", Template: types.InstanceTemplate{Image: "nexus.local/hello"}}}
		o, err := admin.Create(ctx, inst)
		if err != nil {
			t.Fatal(err)
		}
		inst = o.(*types.Instance)
		inst.Status.Phase, inst.Status.Resources = types.PhaseRunning, x.usage
		if _, err := admin.UpdateStatus(ctx, inst); err != nil {
			t.Fatal(err)
		}
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"top"}, `NAME    WORKLOAD   NODE   CPU(m)   MEMORY   MEM%     OOM
web-a   web        n1     12       300Mi    59%      0
web-b   web        n1     480      20Mi     <none>   3
`},
		{[]string{"top", "instances", "-A", "--sort-by", "memory"}, `NAMESPACE   NAME    WORKLOAD   NODE   CPU(m)   MEMORY   MEM%     OOM
default     web-a   web        n1     12       300Mi    59%      0
prod        api-a   web        n1     100      100Mi    50%      0
default     web-b   web        n1     480      20Mi     <none>   3
`},
		{[]string{"top", "inst", "--sort-by", "cpu", "--no-headers"}, `web-b   web   n1   480   20Mi    <none>   3
web-a   web   n1   12    300Mi   59%      0
`},
		{[]string{"top", "nodes"}, `NODE   CPU(m)   CPU%   MEMORY   MEM%   INSTANCES   OOM
n1     592      30%    420Mi    10%    3           3
`},
	} {
		if got := e.ok(tc.args...); got != tc.want {
			t.Errorf("nexus %v:\n%s\nwant\n%s", tc.args, got, tc.want)
		}
	}
	if r := e.run(nil, "", "top", "-n", "nothing-here"); r.exit != 0 || r.stdout != "" ||
		r.stderr != "No measured instances in namespace nothing-here: an agent reports an instance's use within 10 s of its start (nexus ps shows what runs).\n" {
		t.Errorf("top of an empty namespace: %+v", r)
	}
	e.fails([]string{`cannot show the use of "pods": use instances or nodes`}, "top", "pods")
	e.fails([]string{`--sort-by: cannot sort by "mem": use cpu, memory or name`}, "top", "--sort-by", "mem")
	e.fails([]string{"nexus top nodes sums every namespace's instances: -A, -n and -l apply to nexus top instances"}, "top", "nodes", "-A")
}
