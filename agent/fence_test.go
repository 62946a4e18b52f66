package agent_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/runtime"
	"nexus.dev/nexus/runtime/image/builtin"
	"nexus.dev/nexus/scheduler"
)

// TestAgentFencesWhenCutOff: with the store frozen (every request hangs,
// as when the node is cut off from every server), the agent's heartbeats
// fail, and each instance marked stopOnDisconnect is stopped once the 3 s
// lease plus half its toleration of the unreachable taint has run out:
// one tolerating it 2 s at 3+1 s, one without a toleration at 3+5 s (half
// the 10 s eviction grace), and the one not marked stopOnDisconnect keeps
// running. When the store is back a stopped instance is reported Stopped
// (with a Fenced event, for its workload to replace) and is not started
// again; the other is untouched.
func TestAgentFencesWhenCutOff(t *testing.T) {
	testutil.RequireRoot(t)
	store := apitest.NexusStore(t)
	n := startNode(t, &store)
	n.run(t, nil)
	admin, rt := n.admin, n.rt
	grace, twoSeconds := int64(1), int64(2)
	create := func(name string, stop bool, tols []scheduler.Toleration) string {
		return "nx-" + n.createSpec(t, name, types.InstanceSpec{StopOnDisconnect: stop, Placement: types.Placement{Tolerations: tols}, Template: types.InstanceTemplate{
			Image:                         builtin.Reference,
			Readiness:                     &types.Probe{HTTP: &types.HTTPProbe{Path: "/healthz", Port: 8080}, PeriodSeconds: 1},
			TerminationGracePeriodSeconds: &grace,
		}}).UID
	}
	fastID := create("fence-fast", true, []scheduler.Toleration{{Key: types.TaintUnreachable, Exists: true, Effect: scheduler.NoExecute, Seconds: &twoSeconds}})
	fenceID, keepID := create("fence-1", true, nil), create("keep-1", false, nil)
	for _, name := range []string{"fence-fast", "fence-1", "keep-1"} {
		waitInstance(t, admin, name, "running and ready", func(i *types.Instance) bool {
			return i.Status.Phase == types.PhaseRunning && i.Status.Ready
		})
	}
	running := func(id string) bool {
		st, err := rt.State(id)
		return err == nil && st.Status == specs.StateRunning
	}
	// stoppedAfter waits until id no longer runs and returns how long
	// after cut that was.
	stoppedAfter := func(id string, cut time.Time) time.Duration {
		for running(id) {
			if time.Since(cut) > 15*time.Second {
				t.Fatalf("the stopOnDisconnect instance %s still runs 15 s after the node was cut off (3 s lease, at most 5 s of toleration, 1 s grace)", id)
			}
			time.Sleep(50 * time.Millisecond)
		}
		return time.Since(cut)
	}

	resume := freezeStore(t, store)
	cut := time.Now()
	fastAfter := stoppedAfter(fastID, cut)
	t.Logf("the instance tolerating 2 s stopped %v after the cut", fastAfter.Round(10*time.Millisecond))
	if fastAfter < 2*time.Second {
		t.Fatalf("fenced %v after the cut, before its 3 s lease (renewed at most 1 s before) and 1 s of toleration could run out", fastAfter)
	}
	if !running(fenceID) {
		t.Fatalf("the instance without a toleration stopped with the one tolerating 2 s (%v after the cut): it is due at 3 s + 5 s", fastAfter)
	}
	fencedAfter := stoppedAfter(fenceID, cut)
	t.Logf("the instance without a toleration stopped %v after the cut", fencedAfter.Round(10*time.Millisecond))
	if fencedAfter < 6*time.Second {
		t.Fatalf("fenced %v after the cut, before its 3 s lease (renewed at most 1 s before) and half its 10 s eviction grace could run out", fencedAfter)
	}
	// Stopped, then deleted: the delete follows the stop by a moment.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, err := rt.State(fenceID)
		if errors.Is(err, runtime.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fenced container is left behind 5 s after it stopped: %v", err)
		}
	}
	if !running(keepID) {
		t.Fatal("the instance not marked stopOnDisconnect was stopped too")
	}

	resume()
	got := waitInstance(t, admin, "fence-1", "reported Stopped", func(i *types.Instance) bool {
		return i.Status.Phase == types.PhaseStopped
	})
	if got.Status.Ready || !strings.Contains(got.Status.Message, "stopOnDisconnect") ||
		!slices.ContainsFunc(got.Status.Events, func(e types.InstanceEvent) bool { return e.Reason == "Fenced" && e.Type == types.EventWarning }) {
		t.Fatalf("fenced instance status: %+v", got.Status)
	}
	waitInstance(t, admin, "keep-1", "still running and ready", func(i *types.Instance) bool {
		return i.Status.Phase == types.PhaseRunning && i.Status.Ready
	})
	// Not started again once the agent reaches the API.
	time.Sleep(3 * time.Second)
	if _, err := rt.State(fenceID); !errors.Is(err, runtime.ErrNotExist) {
		t.Fatalf("the fenced instance's container is back: %v", err)
	}
	instances, _ := types.LookupResource("instances")
	if _, err := admin.Delete(context.Background(), instances, "default", "fence-1", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}
