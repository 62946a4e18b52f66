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
)

// TestAgentFencesWhenCutOff: with the store frozen (every request hangs,
// as when the node is cut off from every server), the agent's heartbeats
// fail and, once its 3 s lease has run out, it stops the instance marked
// stopOnDisconnect and keeps the other running. When the store is back
// the stopped instance is reported Stopped (with a Fenced event, for its
// workload to replace) and is not started again; the other is untouched.
func TestAgentFencesWhenCutOff(t *testing.T) {
	testutil.RequireRoot(t)
	store := apitest.NexusStore(t)
	n := startNode(t, &store)
	n.run(t, nil)
	admin, rt := n.admin, n.rt
	grace := int64(1)
	create := func(name string, stop bool) string {
		return "nx-" + n.createSpec(t, name, types.InstanceSpec{StopOnDisconnect: stop, Template: types.InstanceTemplate{
			Image:                         builtin.Reference,
			Readiness:                     &types.Probe{HTTP: &types.HTTPProbe{Path: "/healthz", Port: 8080}, PeriodSeconds: 1},
			TerminationGracePeriodSeconds: &grace,
		}}).UID
	}
	fenceID, keepID := create("fence-1", true), create("keep-1", false)
	for _, name := range []string{"fence-1", "keep-1"} {
		waitInstance(t, admin, name, "running and ready", func(i *types.Instance) bool {
			return i.Status.Phase == types.PhaseRunning && i.Status.Ready
		})
	}
	running := func(id string) bool {
		st, err := rt.State(id)
		return err == nil && st.Status == specs.StateRunning
	}

	resume := freezeStore(t, store)
	cut := time.Now()
	for running(fenceID) {
		if time.Since(cut) > 10*time.Second {
			t.Fatal("the stopOnDisconnect instance still runs 10 s after the node was cut off (3 s lease, 1 s grace)")
		}
		time.Sleep(50 * time.Millisecond)
	}
	fencedAfter := time.Since(cut)
	t.Logf("stopOnDisconnect instance stopped %v after the cut", fencedAfter.Round(10*time.Millisecond))
	if fencedAfter < 2*time.Second {
		t.Fatalf("fenced %v after the cut, before the 3 s lease (renewed at most 1 s before) could run out", fencedAfter)
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
