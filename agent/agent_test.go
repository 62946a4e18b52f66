package agent_test

import (
	"context"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"nexus.dev/nexus/agent"
	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/runtime/image/builtin"
)

// TestAgentRunsAnInstance: an Instance bound to the agent's node runs the
// built-in image as a container, turns ready by its HTTP readiness probe,
// is restarted (restarts goes up) when its process is killed, and is
// stopped and removed when the Instance is deleted.
func TestAgentRunsAnInstance(t *testing.T) {
	n := startNode(t, nil)
	expiry := time.Now().Add(12 * time.Hour).UTC().Truncate(time.Second)
	n.run(t, func(c *agent.Config) { c.CertificateExpiry = func() time.Time { return expiry } })
	admin, rt := n.admin, n.rt

	grace := int64(2)
	created := n.create(t, "web-1", types.InstanceTemplate{
		Image:                         builtin.Reference,
		Args:                          []string{"--listen", "0.0.0.0", "--port", "8080"},
		Readiness:                     &types.Probe{HTTP: &types.HTTPProbe{Path: "/healthz", Port: 8080}, PeriodSeconds: 1},
		TerminationGracePeriodSeconds: &grace,
	})
	id := "nx-" + created.UID

	got := waitInstance(t, admin, "web-1", "running and ready", func(i *types.Instance) bool {
		return i.Status.Phase == types.PhaseRunning && i.Status.Ready
	})
	if got.Status.Restarts != 0 {
		t.Fatalf("restarts %d before any exit", got.Status.Restarts)
	}

	if err := rt.Kill(id, syscall.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	got = waitInstance(t, admin, "web-1", "restarted and ready", func(i *types.Instance) bool {
		return i.Status.Restarts >= 1 && i.Status.Phase == types.PhaseRunning && i.Status.Ready
	})
	if got.Status.LastExit == nil || got.Status.LastExit.Signal == "" {
		t.Fatalf("last exit %+v: want the SIGKILL", got.Status.LastExit)
	}

	nodes, _ := types.LookupResource("nodes")
	no, err := admin.Get(context.Background(), nodes, "", "n1")
	if err != nil {
		t.Fatal(err)
	}
	if n := no.(*types.Node); n.Status.Capacity.CPU == 0 || n.Status.LastHeartbeat.IsZero() || !n.Status.CertificateExpiry.Equal(expiry) {
		t.Fatalf("node status %+v: no capacity or heartbeat, or not the certificate's expiry %v", n.Status, expiry)
	}

	instances, _ := types.LookupResource("instances")
	if _, err := admin.Delete(context.Background(), instances, "default", "web-1", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		states, err := rt.List()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(states, func(s specs.State) bool { return s.ID == id }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s still exists 30 s after its instance was deleted", id)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAgentSecretsAndLiveness: an environment variable from a Secret that
// does not exist yet holds the instance in Preparing with a message that
// says so; once the Secret exists the container gets its value (the hello
// server listens on $PORT, and the readiness probe finds it there). A
// liveness probe that fails stops the container, which is restarted with
// the reason LivenessFailed and an Unhealthy event.
func TestAgentSecretsAndLiveness(t *testing.T) {
	n := startNode(t, nil)
	n.run(t, nil)
	admin, ctx := n.admin, context.Background()
	grace := int64(1)
	n.create(t, "sec-1", types.InstanceTemplate{
		Image: builtin.Reference,
		Env: []types.EnvVar{{Name: "PORT", ValueFrom: &types.EnvSource{
			SecretKeyRef: &types.SecretKeySelector{Name: "web-port", Key: "port"}}}},
		Readiness:                     &types.Probe{HTTP: &types.HTTPProbe{Path: "/healthz", Port: 8181}, PeriodSeconds: 1},
		TerminationGracePeriodSeconds: &grace,
	})
	waitInstance(t, admin, "sec-1", "waiting for its Secret", func(i *types.Instance) bool {
		return i.Status.Phase == types.PhasePreparing && strings.Contains(i.Status.Message, "ConfigError: env PORT: secret default/web-port does not exist")
	})
	sec := &types.Secret{TypeMeta: types.TypeMeta{APIVersion: types.APIVersion, Kind: "Secret"},
		ObjectMeta: types.ObjectMeta{Name: "web-port", Namespace: "default"}, Data: map[string][]byte{"port": []byte("8181")}}
	if _, err := admin.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	got := waitInstance(t, admin, "sec-1", "ready on the port from the Secret", func(i *types.Instance) bool {
		return i.Status.Phase == types.PhaseRunning && i.Status.Ready
	})
	if !slices.ContainsFunc(got.Status.Events, func(e types.InstanceEvent) bool { return e.Reason == "ConfigError" && e.Type == types.EventWarning }) ||
		!slices.ContainsFunc(got.Status.Events, func(e types.InstanceEvent) bool { return e.Reason == "Ready" }) {
		t.Fatalf("events %+v: want the ConfigError and Ready", got.Status.Events)
	}

	n.create(t, "live-1", types.InstanceTemplate{
		Image:                         builtin.Reference,
		Liveness:                      &types.Probe{TCP: &types.TCPProbe{Port: 9999}, PeriodSeconds: 1, FailureThreshold: 2},
		TerminationGracePeriodSeconds: &grace,
	})
	got = waitInstance(t, admin, "live-1", "restarted after a failed liveness probe", func(i *types.Instance) bool {
		return i.Status.Restarts >= 1 && i.Status.LastExit != nil
	})
	if got.Status.LastExit.Reason != "LivenessFailed" {
		t.Fatalf("last exit %+v: want LivenessFailed", got.Status.LastExit)
	}
	if !slices.ContainsFunc(got.Status.Events, func(e types.InstanceEvent) bool {
		return e.Reason == "Unhealthy" && strings.Contains(e.Message, "the liveness probe fails")
	}) {
		t.Fatalf("events %+v: no Unhealthy", got.Status.Events)
	}
}

// TestAgentOutlivesAStoreOutage: with the store stopped for a minute (its
// process frozen, so every request hangs as on a lost network), the agent
// keeps its container running and still restarts it when it dies; once the
// store is back, the status catches up with what happened.
func TestAgentOutlivesAStoreOutage(t *testing.T) {
	testutil.RequireRoot(t)
	store := apitest.NexusStore(t)
	n := startNode(t, &store)
	n.run(t, nil)
	admin, rt := n.admin, n.rt
	grace := int64(1)
	created := n.create(t, "out-1", types.InstanceTemplate{
		Image:                         builtin.Reference,
		Readiness:                     &types.Probe{HTTP: &types.HTTPProbe{Path: "/healthz", Port: 8080}, PeriodSeconds: 1},
		TerminationGracePeriodSeconds: &grace,
	})
	id := "nx-" + created.UID
	waitInstance(t, admin, "out-1", "running and ready", func(i *types.Instance) bool {
		return i.Status.Phase == types.PhaseRunning && i.Status.Ready
	})

	resume := freezeStore(t, store)
	stopped := time.Now()
	outage := 60 * time.Second
	t.Logf("store stopped for %v", outage)
	time.Sleep(outage / 3)
	st, err := rt.State(id)
	if err != nil || st.Status != specs.StateRunning {
		t.Fatalf("container during the outage: %+v %v", st, err)
	}
	if err := rt.Kill(id, syscall.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	// Restarted by the agent alone (after a 1 s back-off).
	deadline := time.Now().Add(20 * time.Second)
	for {
		st2, err := rt.State(id)
		if err == nil && st2.Status == specs.StateRunning && st2.Pid != st.Pid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container not restarted during the outage: %+v %v", st2, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Until(stopped.Add(outage)))
	resume()
	got := waitInstance(t, admin, "out-1", "caught up after the outage", func(i *types.Instance) bool {
		return i.Status.Restarts == 1 && i.Status.Phase == types.PhaseRunning && i.Status.Ready
	})
	if got.Status.LastExit == nil || got.Status.LastExit.Signal == "" {
		t.Fatalf("last exit %+v: want the SIGKILL", got.Status.LastExit)
	}
}
