package controller_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/controller"
	"nexus.dev/nexus/scheduler"
)

// TestControllerNodeLifecycle: a node whose heartbeats stop is NotReady
// (NodeLeaseExpired) and tainted unreachable within its 3 s lease; its
// instances stay for the 10 s grace and are then replaced on the other
// node, except one whose toleration of the taint is longer; when the
// heartbeats come back the taint goes and the node is Ready again.
func TestControllerNodeLifecycle(t *testing.T) {
	e := startEnv(t, false)
	e.node("n1", 8000, nil, nil)
	e.startAgent(running(0))
	e.create(service("web", 4))
	tol := service("tol", 1)
	tol.Spec.Placement.Tolerations = []scheduler.Toleration{{Key: types.TaintUnreachable, Exists: true, Effect: scheduler.NoExecute, Seconds: ptr[int64](120)}}
	e.create(tol)
	onNode := func(workload, node string) (n, ready int) {
		return live(slices.DeleteFunc(e.instancesOf(workload), func(i *types.Instance) bool { return i.Spec.NodeName != node }))
	}
	e.eventually("web and tol ready on n1", 10*time.Second, func() (bool, string) {
		w, wr := onNode("web", "n1")
		o, or := onNode("tol", "n1")
		return wr == 4 && or == 1, fmt.Sprintf("web %d (%d ready), tol %d (%d ready)", w, wr, o, or)
	})
	e.node("n2", 8000, nil, nil)
	n1 := func() *types.Node {
		o, err := e.c.Get(context.Background(), nodes, "", "n1")
		if err != nil {
			t.Fatal(err)
		}
		return o.(*types.Node)
	}
	unreachable := func(n *types.Node) bool {
		return slices.ContainsFunc(n.Spec.Taints, func(t scheduler.Taint) bool {
			return t.Key == types.TaintUnreachable && t.Effect == scheduler.NoExecute
		})
	}

	e.s.StopHeartbeat("n1")
	stopped := time.Now()
	e.eventually("n1 NotReady and tainted", 6*time.Second, func() (bool, string) {
		n := n1()
		c := types.FindCondition(n.Status.Conditions, types.NodeReady)
		return c != nil && c.Status == types.ConditionFalse && c.Reason == types.ReasonNodeLeaseExpired && unreachable(n),
			fmt.Sprintf("conditions %+v, taints %+v", n.Status.Conditions, n.Spec.Taints)
	})
	t.Logf("n1 NotReady %v after its last heartbeat", time.Since(stopped).Round(10*time.Millisecond))
	// Within the grace nothing moves.
	time.Sleep(time.Until(stopped.Add(9 * time.Second)))
	if w, _ := onNode("web", "n1"); w != 4 {
		t.Fatalf("%d of web's 4 instances left n1 within 9 s of its last heartbeat (3 s lease + 10 s grace)", w)
	}
	e.eventually("web replaced on n2", 15*time.Second, func() (bool, string) {
		w1, _ := onNode("web", "n1")
		w2, r2 := onNode("web", "n2")
		return w1 == 0 && r2 == 4, fmt.Sprintf("n1 %d, n2 %d (%d ready)", w1, w2, r2)
	})
	gone := time.Since(stopped)
	t.Logf("web's instances ready on n2 %v after n1's last heartbeat", gone.Round(10*time.Millisecond))
	if gone < 12*time.Second {
		t.Fatalf("instances evicted %v after the last heartbeat, before lease (3 s) + grace (10 s)", gone)
	}
	if o, _ := onNode("tol", "n1"); o != 1 {
		t.Fatalf("tol, which tolerates the taint for 120 s, left n1: %d there", o)
	}
	if got := e.s.Controllers().SchedulerStats().Evicted; got != 4 {
		t.Fatalf("%d evictions counted, want 4", got)
	}

	// The node comes back.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			_, _ = e.c.NodeHeartbeat(ctx, "n1")
			time.Sleep(time.Second)
		}
	}()
	e.eventually("n1 Ready and untainted", 5*time.Second, func() (bool, string) {
		n := n1()
		c := types.FindCondition(n.Status.Conditions, types.NodeReady)
		return c != nil && c.Status == types.ConditionTrue && !unreachable(n), fmt.Sprintf("conditions %+v, taints %+v", n.Status.Conditions, n.Spec.Taints)
	})
	if o, _ := onNode("tol", "n1"); o != 1 {
		t.Fatalf("tol left n1: %d there", o)
	}
}

// TestNodeGraceOutlivesALeadershipBlip: the server loses the controllers'
// leadership for a moment (its election key is deleted, as when its
// keep-alives are answered late on a busy machine) and wins it again
// while a node is unreachable. The new term evicts the node's instances
// when the node's grace runs out, counted from when its lease went, not
// from the term's start: terms used to follow the leases themselves, and
// the node then counted as just seen, which put off the eviction by the
// old term's length (TestControllerNodeLifecycle failed so in make test).
func TestNodeGraceOutlivesALeadershipBlip(t *testing.T) {
	e := startEnv(t, false)
	e.node("n1", 8000, nil, nil)
	e.startAgent(running(0))
	e.create(service("web", 2))
	onNode := func(node string) (n, ready int) {
		return live(slices.DeleteFunc(e.instancesOf("web"), func(i *types.Instance) bool { return i.Spec.NodeName != node }))
	}
	e.eventually("web ready on n1", 10*time.Second, func() (bool, string) {
		n, r := onNode("n1")
		return r == 2, fmt.Sprintf("%d (%d ready)", n, r)
	})
	e.node("n2", 8000, nil, nil)
	e.s.StopHeartbeat("n1")
	stopped := time.Now()
	time.Sleep(5 * time.Second)
	first := e.s.Controllers()
	if _, err := e.s.Server.Client().Delete(context.Background(), controller.ElectionKey+"/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	var termStart time.Time
	e.eventually("a new term of the controllers", 10*time.Second, func() (bool, string) {
		c := e.s.Controllers()
		termStart = time.Now()
		return c != nil && c != first, "the first term's controllers still run"
	})
	e.eventually("web replaced on n2", 25*time.Second, func() (bool, string) {
		n1, _ := onNode("n1")
		n2, r2 := onNode("n2")
		return n1 == 0 && r2 == 2, fmt.Sprintf("n1 %d, n2 %d (%d ready)", n1, n2, r2)
	})
	gone := time.Since(stopped)
	fromTerm := time.Since(termStart)
	t.Logf("web evicted and ready on n2 %v after n1's last heartbeat, %v into the new term", gone.Round(10*time.Millisecond), fromTerm.Round(10*time.Millisecond))
	// Counted from the new term, the node would have had a lease (3 s)
	// and the grace (10 s) still to run.
	if fromTerm >= 13*time.Second {
		t.Fatalf("web evicted %v into the new term: its grace was counted again from the term's start", fromTerm)
	}
}

// TestControllerStopOnDisconnectFollowsReplicas: the instances of a
// service carry stopOnDisconnect (which the agent reads when cut off):
// off with one replica, on for all of them once scaled to three, off again
// at one, and as set when the workload sets it.
func TestControllerStopOnDisconnectFollowsReplicas(t *testing.T) {
	e := startEnv(t, false)
	e.node("n1", 8000, nil, nil)
	e.startAgent(running(0))
	e.create(service("web", 1))
	flags := func(n int, want bool) func() (bool, string) {
		return func() (bool, string) {
			insts := e.instancesOf("web")
			var got []bool
			ok := len(insts) == n
			for _, i := range insts {
				got = append(got, i.Spec.StopOnDisconnect)
				ok = ok && i.Spec.StopOnDisconnect == want
			}
			return ok, fmt.Sprintf("stopOnDisconnect of the instances: %v", got)
		}
	}
	e.eventually("one instance, not stopped on disconnect", 10*time.Second, flags(1, false))
	e.update("web", func(w *types.Workload) { w.Spec.Replicas = ptr[int32](3) })
	e.eventually("three instances, all stopped on disconnect", 10*time.Second, flags(3, true))
	e.update("web", func(w *types.Workload) { w.Spec.Replicas = ptr[int32](1) })
	e.eventually("one instance again, not stopped on disconnect", 10*time.Second, flags(1, false))
	e.update("web", func(w *types.Workload) { w.Spec.StopOnDisconnect = ptr(true) })
	e.eventually("set on the workload", 10*time.Second, flags(1, true))
}
