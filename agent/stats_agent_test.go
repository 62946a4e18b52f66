package agent_test

import (
	"context"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/agent"
	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/runtime/image/builtin"
)

// statsNode is an API server and an agent for node n1 that samples every
// 300 ms into the API's own /metrics registry, as nexus up wires it.
type statsNode struct{ *testNode }

func startStatsNode(t *testing.T) *statsNode {
	t.Helper()
	n := startNode(t, nil)
	n.run(t, func(c *agent.Config) {
		c.StatsInterval = 300 * time.Millisecond
		c.Metrics = n.c.Server.Registry()
	})
	return &statsNode{n}
}

// create makes an Instance of the built-in image on n1 running hello with
// args, under a memory limit.
func (n *statsNode) create(t *testing.T, name string, limit types.Bytes, policy types.RestartPolicy, args ...string) {
	t.Helper()
	grace := int64(1)
	inst := &types.Instance{TypeMeta: types.TypeMeta{APIVersion: types.APIVersion, Kind: "Instance"},
		ObjectMeta: types.ObjectMeta{Name: name, Namespace: "default"},
		Spec: types.InstanceSpec{NodeName: "n1", Workload: "load", Template: types.InstanceTemplate{
			Image:                         builtin.Reference,
			Args:                          append([]string{"--listen", "127.0.0.1", "--port", "8080"}, args...),
			Resources:                     types.Resources{Limits: types.ResourceList{Memory: limit}},
			RestartPolicy:                 policy,
			TerminationGracePeriodSeconds: &grace,
		}}}
	if _, err := n.admin.Create(context.Background(), inst); err != nil {
		t.Fatal(err)
	}
}

// metrics scrapes the API's /metrics as the admin and returns the lines of
// the nexus_instance_* series of instance name.
func (n *statsNode) metrics(t *testing.T, name string) map[string]float64 {
	t.Helper()
	hc := n.c.HTTPClient(t, n.c.User(t, "admin"), false)
	resp, err := hc.Get(n.c.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %v: %s", resp.StatusCode, err, body)
	}
	out := map[string]float64{}
	line := regexp.MustCompile(`(?m)^(nexus_instance_\w+)\{([^}]*)\} (\S+)$`)
	for _, m := range line.FindAllStringSubmatch(string(body), -1) {
		if !strings.Contains(m[2], `instance="`+name+`"`) {
			continue
		}
		for _, l := range []string{`namespace="default"`, `node="n1"`, `workload="load"`} {
			if !strings.Contains(m[2], l) {
				t.Errorf("%s{%s}: no label %s", m[1], m[2], l)
			}
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("%s: %v", m[0], err)
		}
		out[m[1]] = v
	}
	return out
}

// TestAgentReportsResourceUse: a container holding 48 MiB and keeping
// 300 millicores busy shows about that in its Instance's status and on
// the API's /metrics, with its limit; its series go when it is deleted.
func TestAgentReportsResourceUse(t *testing.T) {
	n := startStatsNode(t)
	n.create(t, "load-1", 128<<20, "", "--hold-memory", "48Mi", "--burn-cpu", "300m")

	got := waitInstance(t, n.admin, "load-1", "reporting its memory and CPU", func(i *types.Instance) bool {
		r := i.Status.Resources
		return i.Status.Phase == types.PhaseRunning && r != nil && r.MemoryBytes >= 48<<20 && r.CPUMillicores >= 50
	})
	r := got.Status.Resources
	t.Logf("status.resources: %+v", *r)
	// The hello server itself needs a few MiB beside what it holds.
	if r.MemoryBytes > 96<<20 || r.MemoryLimitBytes != 128<<20 || r.CPUMillicores > 1100 || r.OOMKills != 0 || r.Pids < 1 ||
		time.Since(r.SampledAt) > time.Minute {
		t.Fatalf("resources %+v: want 48-96 MiB of 128 MiB, 50-1100m, no OOM kill, a pid, a recent time", *r)
	}

	m := n.metrics(t, "load-1")
	if ws := m["nexus_instance_memory_working_set_bytes"]; ws < 48<<20 || ws > 96<<20 {
		t.Errorf("working set metric %v, want 48-96 MiB (all: %v)", ws, m)
	}
	if m["nexus_instance_memory_limit_bytes"] != 128<<20 || m["nexus_instance_cpu_seconds_total"] <= 0 ||
		m["nexus_instance_pids"] < 1 {
		t.Errorf("metrics %v: want the limit, CPU time and pids", m)
	}
	for _, name := range []string{"nexus_instance_oom_kills_total", "nexus_instance_restarts_total"} {
		if v, ok := m[name]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v), want 0", name, v, ok)
		}
	}

	instances, _ := types.LookupResource("instances")
	if _, err := n.admin.Delete(context.Background(), instances, "default", "load-1", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(n.metrics(t, "load-1")) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("metrics of load-1 still served 30 s after its deletion: %v", n.metrics(t, "load-1"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAgentReportsOOMKills: a container that allocates 64 MiB under a
// 32 MiB limit is OOM-killed at every start; its status says so in
// lastExit and counts the kills across restarts, as does /metrics.
func TestAgentReportsOOMKills(t *testing.T) {
	n := startStatsNode(t)
	n.create(t, "hog-1", 32<<20, types.RestartOnFailure, "--hold-memory", "64Mi")

	got := waitInstance(t, n.admin, "hog-1", "OOM-killed twice", func(i *types.Instance) bool {
		return i.Status.Restarts >= 2 && i.Status.Resources != nil && i.Status.Resources.OOMKills >= 2
	})
	if e := got.Status.LastExit; e == nil || e.Reason != "OOMKilled" || !e.OOMKilled {
		t.Fatalf("last exit %+v: want OOMKilled", e)
	}
	if r := got.Status.Resources; r.OOMKills > int64(got.Status.Restarts)+1 || r.MemoryLimitBytes != 32<<20 {
		t.Fatalf("resources %+v after %d restarts: want one kill per run and the 32 MiB limit", *r, got.Status.Restarts)
	}
	t.Logf("after %d restarts: status.resources %+v", got.Status.Restarts, *got.Status.Resources)
	m := n.metrics(t, "hog-1")
	if m["nexus_instance_oom_kills_total"] < 2 || m["nexus_instance_restarts_total"] < 2 {
		t.Fatalf("metrics %v: want at least 2 OOM kills and 2 restarts", m)
	}
}
