package agent

import (
	"context"
	"testing"
	"time"

	"nexus.dev/nexus/api/types"
)

// TestInstanceWaitsForTheTakeOver: until Run has taken over the node's
// instances, Instance waits (an agent that just restarted would otherwise
// answer "not on this node" for one it is about to adopt), gives up when
// its context ends, and then finds what the agent supervises.
func TestInstanceWaitsForTheTakeOver(t *testing.T) {
	inst := &types.Instance{ObjectMeta: types.ObjectMeta{Name: "web-1", Namespace: "default", UID: "u1"}}
	a := &Agent{sups: map[string]*supervisor{"u1": {inst: inst}}, synced: make(chan struct{})}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if got, ok := a.Instance(ctx, "default", "web-1"); ok {
		t.Fatalf("Instance before the take-over: %v, want a wait that ends with the context", got)
	}

	found := make(chan bool, 1)
	go func() {
		_, ok := a.Instance(context.Background(), "default", "web-1")
		found <- ok
	}()
	select {
	case ok := <-found:
		t.Fatalf("Instance answered %v before the take-over", ok)
	case <-time.After(50 * time.Millisecond):
	}
	a.syncedOnce.Do(func() { close(a.synced) })
	if !<-found {
		t.Fatal("Instance does not find web-1 after the take-over")
	}
	if _, ok := a.Instance(context.Background(), "default", "web-2"); ok {
		t.Fatal("Instance found web-2, which the agent does not supervise")
	}
}
