package controller

import (
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/scheduler"
)

func secs(n int64) *int64 { return &n }

// TestControllerUnreachableToleration: how long an instance stays on an
// unreachable node, read from its tolerations as Kubernetes reads
// tolerationSeconds.
func TestControllerUnreachableToleration(t *testing.T) {
	def := 10 * time.Second
	for _, tc := range []struct {
		name    string
		tols    []scheduler.Toleration
		want    time.Duration
		forever bool
	}{
		{"none: the default", nil, def, false},
		{"another taint: the default", []scheduler.Toleration{{Key: "gpu", Exists: true, Effect: scheduler.NoExecute, Seconds: secs(1)}}, def, false},
		{"NoSchedule only: the default", []scheduler.Toleration{{Key: types.TaintUnreachable, Exists: true, Effect: scheduler.NoSchedule}}, def, false},
		{"bounded", []scheduler.Toleration{{Key: types.TaintUnreachable, Exists: true, Effect: scheduler.NoExecute, Seconds: secs(30)}}, 30 * time.Second, false},
		{"zero: at once", []scheduler.Toleration{{Key: types.TaintUnreachable, Exists: true, Effect: scheduler.NoExecute, Seconds: secs(0)}}, 0, false},
		{"unbounded: for ever", []scheduler.Toleration{{Key: types.TaintUnreachable, Exists: true, Effect: scheduler.NoExecute}}, 0, true},
		{"tolerate everything: for ever", []scheduler.Toleration{{Exists: true}}, 0, true},
		{"the least of several", []scheduler.Toleration{
			{Key: types.TaintUnreachable, Exists: true, Seconds: secs(60)},
			{Exists: true, Effect: scheduler.NoExecute},
			{Key: types.TaintUnreachable, Exists: true, Effect: scheduler.NoExecute, Seconds: secs(5)},
		}, 5 * time.Second, false},
		{"a century is for ever enough (no overflow)", []scheduler.Toleration{{Key: types.TaintUnreachable, Exists: true, Effect: scheduler.NoExecute, Seconds: secs(1 << 62)}}, types.MaxTolerationSeconds * time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, forever := types.UnreachableToleration(tc.tols, def)
			if d != tc.want || forever != tc.forever {
				t.Fatalf("got %v forever=%v, want %v forever=%v", d, forever, tc.want, tc.forever)
			}
		})
	}
}

// TestControllerDecideNode: a node without a lease is NotReady and
// tainted at once and its instances go when their toleration has passed,
// each at its own time; a node whose lease is back loses the taint and
// the NodeLeaseExpired verdict, and nothing is evicted from it.
func TestControllerDecideNode(t *testing.T) {
	lost := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	readyTrue := []types.Condition{{Type: types.NodeReady, Status: types.ConditionTrue, Reason: "AgentReady"}}
	expired := []types.Condition{{Type: types.NodeReady, Status: types.ConditionFalse, Reason: types.ReasonNodeLeaseExpired}}
	node := func(conds []types.Condition, tainted bool) *types.Node {
		n := &types.Node{}
		n.Name = "n1"
		n.Status.Conditions = conds
		n.Spec.Taints = []scheduler.Taint{{Key: "gpu", Effect: scheduler.NoSchedule}}
		if tainted {
			n.Spec.Taints = append(n.Spec.Taints, unreachableTaint)
		}
		return n
	}
	// web-* tolerate the default 10 s, slow-1 30 s, daemon-1 for ever.
	tolerates := func(i *types.Instance) (time.Duration, bool) {
		switch {
		case strings.HasPrefix(i.Name, "slow"):
			return 30 * time.Second, false
		case strings.HasPrefix(i.Name, "daemon"):
			return 0, true
		}
		return 10 * time.Second, false
	}
	all := insts("web-1:a:ready", "web-2:a:starting", "slow-1:a:ready", "daemon-1:a:ready")
	for _, tc := range []struct {
		name        string
		node        *types.Node
		held        bool
		lostAt      time.Duration // after lost
		now         time.Duration // after lost
		ready       string        // "" unchanged, else status/reason
		add, remove bool
		evict       string
		requeue     time.Duration
	}{
		{name: "lease just lost", node: node(readyTrue, false), now: 0, ready: "False/NodeLeaseExpired", add: true, requeue: 10 * time.Second},
		{name: "marked already, within grace", node: node(expired, true), now: 4 * time.Second, requeue: 6 * time.Second},
		{name: "default grace over", node: node(expired, true), now: 10 * time.Second, evict: "web-1,web-2", requeue: 20 * time.Second},
		{name: "every bounded toleration over", node: node(expired, true), now: 31 * time.Second, evict: "slow-1,web-1,web-2"},
		{name: "another NotReady reason is replaced", node: node([]types.Condition{{Type: types.NodeReady, Status: types.ConditionFalse, Reason: "AgentStopping"}}, true), now: time.Second, ready: "False/NodeLeaseExpired", requeue: 9 * time.Second},
		{name: "not lost yet (a new node's first lease duration)", node: node(readyTrue, false), lostAt: 3 * time.Second, now: time.Second, requeue: 2 * time.Second},
		{name: "lease back: taint and verdict go", node: node(expired, true), held: true, now: 40 * time.Second, ready: "True/NodeLeaseRenewed", remove: true},
		{name: "lease held, agent says ready: nothing", node: node(readyTrue, false), held: true, now: 40 * time.Second},
		{name: "lease held, agent says not ready: its word stands", node: node([]types.Condition{{Type: types.NodeReady, Status: types.ConditionFalse, Reason: "AgentStopping"}}, false), held: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := decideNode(nodeView{node: tc.node, held: tc.held, lostAt: lost.Add(tc.lostAt), now: lost.Add(tc.now), instances: all, tolerates: tolerates})
			ready := ""
			if p.ready != nil {
				ready = string(p.ready.Status) + "/" + p.ready.Reason
				if p.ready.Type != types.NodeReady || p.ready.Message == "" {
					t.Fatalf("condition %+v: want a Ready condition with a message", p.ready)
				}
			}
			if ready != tc.ready || p.addTaint != tc.add || p.removeTaint != tc.remove || names(p.evict) != tc.evict || p.requeue != tc.requeue {
				t.Fatalf("got ready %q add %v remove %v evict %q requeue %v; want %q %v %v %q %v",
					ready, p.addTaint, p.removeTaint, names(p.evict), p.requeue, tc.ready, tc.add, tc.remove, tc.evict, tc.requeue)
			}
		})
	}
}

// TestControllerDaemonStaysOnUnreachableNode: the unreachable taint does
// not make a node ineligible for a daemon (its instance stays, as a
// DaemonSet's pod does), while any other untolerated NoExecute taint does.
func TestControllerDaemonStaysOnUnreachableNode(t *testing.T) {
	w := &types.Workload{}
	w.Spec.Kind = types.KindDaemon
	n := &types.Node{}
	n.Name = "n1"
	n.Spec.Taints = []scheduler.Taint{unreachableTaint}
	if !eligible(w, n) {
		t.Fatal("an unreachable node is not eligible for a daemon")
	}
	n.Spec.Taints = append(n.Spec.Taints, scheduler.Taint{Key: "maintenance", Effect: scheduler.NoExecute})
	if eligible(w, n) {
		t.Fatal("a node with an untolerated NoExecute taint is eligible for a daemon")
	}
}
