package controller

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/scheduler"
)

// inst is a test instance: "name:rev:state" where state is pending
// (unbound), starting (bound, not ready), ready, failed, stopped or
// succeeded, and rev is the template hash it was made from.
func inst(spec string) *types.Instance {
	parts := strings.Split(spec, ":")
	i := &types.Instance{}
	i.Name, i.Spec.Revision = parts[0], parts[1]
	i.Spec.NodeName = "n1"
	switch parts[2] {
	case "pending":
		i.Spec.NodeName, i.Status.Phase = "", types.PhasePending
	case "starting":
		i.Status.Phase = types.PhaseStarting
	case "ready":
		i.Status.Phase, i.Status.Ready = types.PhaseRunning, true
	case "failed":
		i.Status.Phase = types.PhaseFailed
	case "stopped":
		i.Status.Phase = types.PhaseStopped
	case "succeeded":
		i.Status.Phase = types.PhaseSucceeded
	default:
		panic(spec)
	}
	if len(parts) > 3 {
		i.Spec.NodeName = parts[3]
	}
	return i
}

func insts(specs ...string) []*types.Instance {
	var out []*types.Instance
	for _, s := range specs {
		out = append(out, inst(s))
	}
	return out
}

func names(is []*types.Instance) string {
	var n []string
	for _, i := range is {
		n = append(n, i.Name)
	}
	slices.Sort(n)
	return strings.Join(n, ",")
}

func TestControllerDecideService(t *testing.T) {
	one, pct := types.Count(1), types.Percent(25)
	for _, tc := range []struct {
		name            string
		replicas        int32
		surge, unavail  types.IntOrPercent
		have            []string
		create          int
		deleted         string
		ready, updated  int32
		progressReason  string
		availableStatus types.ConditionStatus
	}{
		{"new service", 3, pct, pct, nil, 3, "", 0, 0, ReasonScaling, types.ConditionFalse},
		{"steady", 3, pct, pct, []string{"a:v2:ready", "b:v2:ready", "c:v2:ready"}, 0, "", 3, 3, ReasonRolloutComplete, types.ConditionTrue},
		{"scale down: unbound and unready first", 2, pct, pct, []string{"a:v2:ready", "b:v2:pending", "c:v2:starting", "d:v2:ready"}, 0, "b,c", 2, 4, ReasonScaling, types.ConditionTrue},
		{"failed and stopped are replaced", 3, pct, pct, []string{"a:v2:ready", "b:v2:failed", "c:v2:stopped", "d:v2:ready"}, 1, "b,c", 2, 2, ReasonScaling, types.ConditionFalse},
		{"rollout start, surge 1 unavailable 1", 3, one, one, []string{"a:v1:ready", "b:v1:ready", "c:v1:ready"}, 2, "c", 3, 0, ReasonRollingOut, types.ConditionTrue},
		{"rollout start, 25%: one surge, none unavailable", 3, pct, pct, []string{"a:v1:ready", "b:v1:ready", "c:v1:ready"}, 1, "", 3, 0, ReasonRollingOut, types.ConditionTrue},
		{"rollout waits for new instances to be ready", 3, one, one, []string{"a:v1:ready", "b:v1:ready", "x:v2:starting", "y:v2:starting"}, 0, "", 2, 2, ReasonRollingOut, types.ConditionTrue},
		{"rollout moves on once they are", 3, one, one, []string{"a:v1:ready", "b:v1:ready", "x:v2:ready", "y:v2:starting"}, 1, "b", 3, 2, ReasonRollingOut, types.ConditionTrue},
		{"unready old instances go at once", 3, one, one, []string{"a:v1:starting", "b:v1:ready", "c:v1:ready"}, 2, "a", 2, 0, ReasonRollingOut, types.ConditionTrue},
		{"rollout end", 3, one, one, []string{"a:v1:ready", "x:v2:ready", "y:v2:ready", "z:v2:ready"}, 0, "a", 4, 3, ReasonRollingOut, types.ConditionTrue},
		{"scale to zero", 0, pct, pct, []string{"a:v2:ready"}, 0, "a", 1, 1, ReasonScaling, types.ConditionTrue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &types.Workload{Spec: types.WorkloadSpec{Kind: types.KindService, Replicas: &tc.replicas,
				Strategy: types.UpdateStrategy{MaxSurge: tc.surge, MaxUnavailable: tc.unavail}}}
			p := decide(view{w: w, hash: "v2", instances: insts(tc.have...), now: time.Unix(0, 0)})
			if len(p.create) != tc.create || names(p.delete) != tc.deleted {
				t.Fatalf("create %d delete %q, want %d and %q", len(p.create), names(p.delete), tc.create, tc.deleted)
			}
			st := p.status
			if st.ReadyReplicas != tc.ready || st.UpdatedReplicas != tc.updated || st.DesiredReplicas != tc.replicas || st.Revision != "v2" {
				t.Fatalf("status %+v", st)
			}
			if c := types.FindCondition(st.Conditions, ConditionProgressing); c == nil || c.Reason != tc.progressReason {
				t.Fatalf("Progressing: %+v", c)
			}
			if c := types.FindCondition(st.Conditions, ConditionAvailable); c == nil || c.Status != tc.availableStatus {
				t.Fatalf("Available: %+v", c)
			}
		})
	}
}

// TestControllerRolloutNeverBelowMinimum plays whole rollouts step by
// step — each round the plan is carried out, then some instances become
// ready — and checks the bounds after every step, for many shapes.
func TestControllerRolloutNeverBelowMinimum(t *testing.T) {
	for _, replicas := range []int32{1, 2, 3, 5, 10} {
		for _, s := range []struct{ surge, unavail types.IntOrPercent }{
			{types.Count(1), types.Count(0)}, {types.Count(0), types.Count(1)}, {types.Count(1), types.Count(1)},
			{types.Percent(25), types.Percent(25)}, {types.Percent(50), types.Percent(0)}, {types.Count(3), types.Count(2)},
		} {
			name := fmt.Sprintf("%d replicas surge %s unavailable %s", replicas, s.surge, s.unavail)
			t.Run(name, func(t *testing.T) {
				w := &types.Workload{Spec: types.WorkloadSpec{Kind: types.KindService, Replicas: &replicas,
					Strategy: types.UpdateStrategy{MaxSurge: s.surge, MaxUnavailable: s.unavail}}}
				surge, unavail := rollingBounds(w.Spec.Strategy, replicas, defaultServiceMaxUnavailable)
				var cur []*types.Instance
				for k := range replicas {
					cur = append(cur, inst(fmt.Sprintf("old%d:v1:ready", k)))
				}
				made := 0
				for round := 0; round < 100; round++ {
					p := decide(view{w: w, hash: "v2", instances: cur, now: time.Unix(0, 0)})
					if len(p.create) == 0 && len(p.delete) == 0 {
						done := int32(len(cur)) == replicas
						waiting := false
						for _, i := range cur {
							done = done && i.Spec.Revision == "v2" && i.Status.Ready
							waiting = waiting || !i.Status.Ready
						}
						if done {
							return
						}
						if !waiting {
							t.Fatalf("round %d: stuck with %s", round, names(cur))
						}
					}
					cur = slices.DeleteFunc(cur, func(i *types.Instance) bool { return slices.Contains(p.delete, i) })
					if _, r := countLive(cur); r < replicas-unavail {
						t.Fatalf("round %d: %d ready, fewer than %d", round, r, replicas-unavail)
					}
					for range p.create {
						cur = append(cur, inst(fmt.Sprintf("new%d:v2:starting", made)))
						made++
					}
					if n, _ := countLive(cur); n > replicas+surge {
						t.Fatalf("round %d: %d instances, more than %d", round, n, replicas+surge)
					}
					// One new instance becomes ready per round.
					for _, i := range cur {
						if !i.Status.Ready {
							i.Status.Phase, i.Status.Ready = types.PhaseRunning, true
							break
						}
					}
				}
				t.Fatal("no end after 100 rounds")
			})
		}
	}
}

func countLive(is []*types.Instance) (n, r int32) {
	for _, i := range is {
		if !terminal(i.Status.Phase) {
			n++
			if ready(i) {
				r++
			}
		}
	}
	return n, r
}

func TestControllerDecideJob(t *testing.T) {
	complete := []types.Condition{{Type: ConditionComplete, Status: types.ConditionTrue}}
	for _, tc := range []struct {
		name                       string
		completions, parallelism   int32
		backoff                    int32
		conds                      []types.Condition
		have                       []string
		create                     int
		deleted, condition, reason string
	}{
		{"start", 5, 2, 6, nil, nil, 2, "", "", ""},
		{"running at parallelism", 5, 2, 6, nil, []string{"a:v:ready", "b:v:starting"}, 0, "", "", ""},
		{"one left to run", 5, 2, 6, nil, []string{"a:v:succeeded", "b:v:succeeded", "c:v:succeeded", "d:v:succeeded", "e:v:ready"}, 0, "", "", ""},
		{"a finished instance makes room", 5, 2, 6, nil, []string{"a:v:succeeded", "b:v:ready"}, 1, "", "", ""},
		{"failures count, stopped ones are replaced", 5, 2, 6, nil, []string{"a:v:failed", "b:v:stopped"}, 2, "b", "", ""},
		{"complete", 2, 2, 6, nil, []string{"a:v:succeeded", "b:v:succeeded"}, 0, "", ConditionComplete, ReasonCompletionsReached},
		{"backoff limit exceeded stops the rest", 5, 2, 1, nil, []string{"a:v:failed", "b:v:failed", "c:v:ready"}, 0, "c", ConditionFailed, ReasonBackoffLimitExceeded},
		{"at the backoff limit it goes on", 5, 1, 2, nil, []string{"a:v:failed", "b:v:failed"}, 1, "", "", ""},
		{"a complete job stays complete", 2, 2, 6, complete, []string{"a:v:succeeded"}, 0, "", ConditionComplete, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &types.Workload{Spec: types.WorkloadSpec{Kind: types.KindJob, Completions: &tc.completions, Parallelism: &tc.parallelism, BackoffLimit: &tc.backoff},
				Status: types.WorkloadStatus{Conditions: tc.conds}}
			p := decide(view{w: w, hash: "v", instances: insts(tc.have...), now: time.Unix(100, 0)})
			if len(p.create) != tc.create || names(p.delete) != tc.deleted {
				t.Fatalf("create %d delete %q, want %d and %q", len(p.create), names(p.delete), tc.create, tc.deleted)
			}
			if tc.condition == "" {
				if len(p.status.Conditions) != 0 || !p.status.CompletionTime.IsZero() {
					t.Fatalf("unfinished job: %+v", p.status)
				}
				return
			}
			c := types.FindCondition(p.status.Conditions, tc.condition)
			if c == nil || c.Status != types.ConditionTrue || (tc.reason != "" && (c.Reason != tc.reason || p.status.CompletionTime.IsZero())) {
				t.Fatalf("conditions %+v", p.status.Conditions)
			}
		})
	}
}

func TestControllerDecideDaemon(t *testing.T) {
	node := func(name string, labels map[string]string, f func(*types.Node)) *types.Node {
		n := &types.Node{}
		n.Name, n.Labels = name, labels
		if f != nil {
			f(n)
		}
		return n
	}
	edge := map[string]string{"role": "edge"}
	nodes := []*types.Node{
		node("a", edge, nil),
		node("b", edge, func(n *types.Node) { n.Spec.Taints = []scheduler.Taint{{Key: "gpu", Effect: scheduler.NoSchedule}} }),
		node("c", edge, func(n *types.Node) {
			n.Spec.Taints = []scheduler.Taint{{Key: "slow", Effect: scheduler.PreferNoSchedule}}
		}),
		node("d", edge, func(n *types.Node) { n.Spec.Unschedulable = true }),
		node("e", map[string]string{"role": "core"}, nil),
	}
	for _, tc := range []struct {
		name        string
		tolerations []scheduler.Toleration
		have        []string
		create      string
		deleted     string
		desired     int32
	}{
		{"eligible nodes get one each", nil, nil, "a,c", "", 2},
		{"tolerated taint", []scheduler.Toleration{{Key: "gpu", Exists: true}}, nil, "a,b,c", "", 3},
		{"ineligible and missing nodes lose theirs, duplicates go", nil,
			[]string{"x:v2:ready:a", "y:v2:starting:a", "z:v2:ready:e", "w:v2:ready:gone", "u:v2:ready:c"}, "", "w,y,z", 2},
		{"rollout: one node at a time", nil, []string{"x:v1:ready:a", "y:v1:ready:c"}, "", "y", 2},
		{"rollout: waits while a node has no ready instance", nil, []string{"x:v2:starting:a", "y:v1:ready:c"}, "", "", 2},
		{"rollout: an unready old one goes at once", nil, []string{"x:v1:starting:a", "y:v1:ready:c"}, "", "x", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &types.Workload{Spec: types.WorkloadSpec{Kind: types.KindDaemon,
				Placement: types.Placement{Constraints: []string{"role=edge"}, Tolerations: tc.tolerations}}}
			p := decide(view{w: w, hash: "v2", instances: insts(tc.have...), nodes: nodes, now: time.Unix(0, 0)})
			if strings.Join(p.create, ",") != tc.create || names(p.delete) != tc.deleted || p.status.DesiredReplicas != tc.desired {
				t.Fatalf("create %v delete %q desired %d, want %q, %q, %d", p.create, names(p.delete), p.status.DesiredReplicas, tc.create, tc.deleted, tc.desired)
			}
		})
	}
}

func TestControllerDaemonNode(t *testing.T) {
	i := &types.Instance{}
	i.Spec.Placement.Constraints = []string{"role=edge", "node.id=n7"}
	if got := DaemonNode(i); got != "n7" {
		t.Fatalf("unbound: %q", got)
	}
	i.Spec.NodeName = "n7"
	if got := DaemonNode(i); got != "n7" {
		t.Fatalf("bound: %q", got)
	}
}

func TestControllerRecordRevision(t *testing.T) {
	tmpl := func(img string) types.InstanceTemplate { return types.InstanceTemplate{Image: img} }
	now := time.Unix(1000, 0)
	var h []types.TemplateRevision
	h = recordRevision(h, "a", tmpl("a"), "", now, 3)
	h = recordRevision(h, "a", tmpl("a"), "", now, 3)
	h = recordRevision(h, "b", tmpl("b"), "to b", now, 3)
	h = recordRevision(h, "c", tmpl("c"), "", now, 3)
	// Going back to a renumbers it: 2 (b), 3 (c), 4 (a).
	h = recordRevision(h, "a", tmpl("a"), "", now, 3)
	got := ""
	for _, r := range h {
		got += fmt.Sprintf("%d%s ", r.Revision, r.Hash)
	}
	if got != "2b 3c 4a " || h[0].ChangeCause != "to b" {
		t.Fatalf("history %q", got)
	}
	h = recordRevision(h, "d", tmpl("d"), "", now, 3)
	if h[0].Hash != "c" || h[2].Revision != 5 || len(h) != 3 {
		t.Fatalf("the oldest is dropped past the limit: %+v", h)
	}
	w := &types.Workload{Spec: types.WorkloadSpec{Template: tmpl("d")}, Status: types.WorkloadStatus{History: h}}
	for _, r := range h {
		r.Hash = TemplateHash(&r.Template)
	}
	w.Status.History = nil
	for _, img := range []string{"b", "c", "d"} {
		t := tmpl(img)
		w.Status.History = recordRevision(w.Status.History, TemplateHash(&t), t, "", now, 10)
	}
	if prev, ok := FindRevision(w, 0); !ok || prev.Template.Image != "c" || prev.Revision != 2 {
		t.Fatalf("previous revision: %+v %v", prev, ok)
	}
	if r, ok := FindRevision(w, 1); !ok || r.Template.Image != "b" {
		t.Fatalf("revision 1: %+v %v", r, ok)
	}
	if _, ok := FindRevision(w, 9); ok {
		t.Fatal("revision 9 found")
	}
}

func TestControllerSnapshot(t *testing.T) {
	ready := []types.Condition{{Type: "Ready", Status: types.ConditionTrue}}
	n1 := &types.Node{Status: types.NodeStatus{Allocatable: types.ResourceList{CPU: 2000, Memory: 4 << 30}, Conditions: ready}}
	n1.Name = "n1"
	n2 := &types.Node{Spec: types.NodeSpec{Unschedulable: true}, Status: types.NodeStatus{Capacity: types.ResourceList{CPU: 1000}}}
	n2.Name = "n2"
	req := func(i *types.Instance, cpu types.MilliCPU, hostPort int32) *types.Instance {
		i.Namespace, i.Spec.Workload = "default", "web"
		i.Spec.Template.Resources.Requests.CPU = cpu
		if hostPort != 0 {
			i.Spec.Template.Ports = []types.Port{{Port: 80, HostPort: hostPort}}
		}
		return i
	}
	snap := snapshot([]*types.Node{n2, n1}, []*types.Instance{
		req(inst("a:v:ready:n1"), 500, 8080),
		req(inst("b:v:starting:n1"), 300, 0),
		req(inst("c:v:succeeded:n1"), 1000, 0), // finished: holds nothing
		req(inst("d:v:pending"), 1000, 0),      // not bound
		req(inst("e:v:ready:gone"), 1000, 0),   // its node is gone
	})
	if len(snap.Nodes) != 2 || snap.Nodes[0].ID != "n1" || !snap.Nodes[0].Ready || snap.Nodes[1].Ready {
		t.Fatalf("nodes %+v", snap.Nodes)
	}
	if a := snap.Nodes[0].Allocated; a.MilliCPU != 800 || snap.Nodes[0].Capacity.MilliCPU != 2000 {
		t.Fatalf("n1 allocated %+v", a)
	}
	if len(snap.Allocations) != 2 || snap.Allocations[0].Group != "default/web" || !slices.Equal(snap.Allocations[0].Ports, []scheduler.Port{8080}) {
		t.Fatalf("allocations %+v", snap.Allocations)
	}
	if n := snap.Nodes[1]; n.Capacity.MilliCPU != 1000 || len(n.Taints) != 1 || n.Taints[0].Key != types.TaintUnschedulable {
		t.Fatalf("cordoned node %+v", n)
	}
	if _, err := scheduler.NewState(snap); err != nil {
		t.Fatalf("the scheduler refuses the snapshot: %v", err)
	}
}

func TestControllerQueue(t *testing.T) {
	q := newQueue()
	q.add("a")
	q.add("b")
	q.add("a")
	k, _ := q.get()
	if k != "a" {
		t.Fatalf("first %q", k)
	}
	// Added while being worked on: handed out again after done, not to a
	// second worker now.
	q.add("a")
	if k, _ := q.get(); k != "b" {
		t.Fatalf("second %q", k)
	}
	q.done("b")
	q.done("a")
	if k, _ := q.get(); k != "a" {
		t.Fatalf("third %q", k)
	}
	q.done("a")
	q.close()
	if _, ok := q.get(); ok {
		t.Fatal("a closed queue hands out keys")
	}
}

func TestControllerInstanceName(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		n := InstanceName("web")
		if len(n) != 9 || !strings.HasPrefix(n, "web-") || types.ValidateName(n) != "" {
			t.Fatalf("name %q", n)
		}
		seen[n] = true
	}
	if len(seen) < 95 {
		t.Fatalf("only %d distinct names of 100", len(seen))
	}
	long := strings.Repeat("a", 56) + "-" + strings.Repeat("b", 6)
	if n := InstanceName(long); len(n) > 63 || types.ValidateName(n) != "" {
		t.Fatalf("long name %q: %s", n, types.ValidateName(n))
	}
}
