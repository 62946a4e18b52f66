package controller_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/controller"
)

// TestControllerDrain: draining a node moves a service's four instances
// to the other node while never fewer than three (replicas -
// maxUnavailable 1) are ready, as polled throughout; the node ends
// cordoned, and uncordon makes it schedulable again.
func TestControllerDrain(t *testing.T) {
	e := startEnv(t, false)
	e.node("n1", 8000, nil, nil)
	e.startAgent(running(300 * time.Millisecond))
	w := service("web", 4)
	w.Spec.Strategy = types.UpdateStrategy{MaxSurge: types.Count(1), MaxUnavailable: types.Count(1)}
	e.create(w)
	e.eventually("4 ready on n1", 10*time.Second, func() (bool, string) {
		_, r := live(e.instancesOf("web"))
		return r == 4, fmt.Sprintf("%d ready", r)
	})
	e.node("n2", 8000, nil, nil)

	ctx, cancel := context.WithCancel(context.Background())
	var minReady atomic.Int32
	minReady.Store(4)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if _, r := live(e.instancesOf("web")); int32(r) < minReady.Load() {
				minReady.Store(int32(r))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	var steps []controller.DrainProgress
	dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
	err := controller.Drain(dctx, e.c, "n1", controller.DrainOptions{Poll: 100 * time.Millisecond,
		Progress: func(p controller.DrainProgress) { steps = append(steps, p) }})
	dcancel()
	cancel()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if m := minReady.Load(); m < 3 {
		t.Fatalf("%d instances ready at one point of the drain, want at least 3", m)
	}
	deleted := 0
	for _, s := range steps {
		deleted += len(s.Deleted)
		if len(s.Deleted) > 1 {
			t.Fatalf("a step deleted %v: more than maxUnavailable 1 at once", s.Deleted)
		}
	}
	if deleted != 4 || steps[len(steps)-1].Remaining != 0 {
		t.Fatalf("steps %+v: want 4 deletions and nothing left", steps)
	}
	for _, i := range e.instancesOf("web") {
		if i.Spec.NodeName != "n2" {
			t.Fatalf("instance %s on %q after the drain", i.Name, i.Spec.NodeName)
		}
	}
	o, err := e.c.Get(context.Background(), nodes, "", "n1")
	if err != nil || !o.(*types.Node).Spec.Unschedulable {
		t.Fatalf("n1 after the drain: %+v %v, want cordoned", o, err)
	}
	if changed, err := controller.Cordon(context.Background(), e.c, "n1", false); err != nil || !changed {
		t.Fatalf("uncordon: %v %v", changed, err)
	}
	if changed, err := controller.Cordon(context.Background(), e.c, "n1", false); err != nil || changed {
		t.Fatalf("uncordon again: %v %v, want no change", changed, err)
	}
}
