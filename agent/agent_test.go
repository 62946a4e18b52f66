package agent_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"nexus.dev/nexus/agent"
	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/servertest"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/runtime"
	"nexus.dev/nexus/runtime/image"
	"nexus.dev/nexus/runtime/image/builtin"
)

func newClient(t *testing.T, c *servertest.Cluster, cert *tls.Certificate) *client.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(c.Root.Cert)
	cli, err := client.New(client.Settings{Server: c.URL(), RootCAs: pool, Certificate: cert})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// waitInstance polls the instance until ok says it is as wanted.
func waitInstance(t *testing.T, cli *client.Client, name string, what string, ok func(*types.Instance) bool) *types.Instance {
	t.Helper()
	instances, _ := types.LookupResource("instances")
	deadline := time.Now().Add(60 * time.Second)
	var last *types.Instance
	for time.Now().Before(deadline) {
		o, err := cli.Get(context.Background(), instances, "default", name)
		if err == nil {
			last = o.(*types.Instance)
			if ok(last) {
				return last
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if last != nil {
		t.Fatalf("instance %s not %s within 60 s: status %+v", name, what, last.Status)
	}
	t.Fatalf("instance %s not %s within 60 s", name, what)
	return nil
}

// startAgent runs an agent for node n1 against a whole API server with
// a real runtime and image store, and returns an admin client and the
// runtime. Its containers are removed at the end.
func startAgent(t *testing.T) (*client.Client, *runtime.Runtime) {
	t.Helper()
	testutil.RequireRoot(t)
	return startAgentOn(t, apitest.NexusStore(t))
}

// startAgentOn is startAgent with the API's objects in the store b.
func startAgentOn(t *testing.T, b apitest.Backend) (*client.Client, *runtime.Runtime) {
	t.Helper()
	testutil.RequireRoot(t)
	bin := testutil.NexusBin(t)
	c := servertest.StartServer(t, b, servertest.ServerOptions{})
	admin := newClient(t, c, c.User(t, "admin"))
	node := newClient(t, c, c.Node(t, "n1"))

	rt := runtime.New(runtime.Config{Root: filepath.Join(t.TempDir(), "run")})
	imgRoot := filepath.Join(t.TempDir(), "images")
	imgs, err := image.Open(image.Config{Root: imgRoot})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{NodeName: "n1", Dir: t.TempDir(), Client: node, Runtime: rt, Images: imgs,
		BuiltinExe: bin, HeartbeatInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		states, _ := rt.List()
		for _, st := range states {
			_ = rt.Delete(context.Background(), st.ID, true)
		}
		// Root file systems too, also of a container between restarts.
		prepared, _ := os.ReadDir(filepath.Join(imgRoot, "containers"))
		for _, d := range prepared {
			_ = imgs.Release(context.Background(), d.Name())
		}
	})
	return admin, rt
}

// TestAgentRunsAnInstance: an Instance bound to the agent's node runs the
// built-in image as a container, turns ready by its HTTP readiness probe,
// is restarted (restarts goes up) when its process is killed, and is
// stopped and removed when the Instance is deleted.
func TestAgentRunsAnInstance(t *testing.T) {
	admin, rt := startAgent(t)

	grace := int64(2)
	inst := &types.Instance{ObjectMeta: types.ObjectMeta{Name: "web-1", Namespace: "default"},
		Spec: types.InstanceSpec{NodeName: "n1", Template: types.InstanceTemplate{
			Image:                         builtin.Reference,
			Args:                          []string{"--listen", "0.0.0.0", "--port", "8080"},
			Readiness:                     &types.Probe{HTTP: &types.HTTPProbe{Path: "/healthz", Port: 8080}, PeriodSeconds: 1},
			TerminationGracePeriodSeconds: &grace,
		}}}
	inst.TypeMeta = types.TypeMeta{APIVersion: types.APIVersion, Kind: "Instance"}
	created, err := admin.Create(context.Background(), inst)
	if err != nil {
		t.Fatal(err)
	}
	uid := created.GetObjectMeta().UID
	id := "nx-" + uid

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
	if n := no.(*types.Node); n.Status.Capacity.CPU == 0 || n.Status.LastHeartbeat.IsZero() {
		t.Fatalf("node status %+v: no capacity or heartbeat", n.Status)
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
	admin, _ := startAgent(t)
	ctx := context.Background()
	grace := int64(1)
	inst := &types.Instance{ObjectMeta: types.ObjectMeta{Name: "sec-1", Namespace: "default"},
		Spec: types.InstanceSpec{NodeName: "n1", Template: types.InstanceTemplate{
			Image: builtin.Reference,
			Env: []types.EnvVar{{Name: "PORT", ValueFrom: &types.EnvSource{
				SecretKeyRef: &types.SecretKeySelector{Name: "web-port", Key: "port"}}}},
			Readiness:                     &types.Probe{HTTP: &types.HTTPProbe{Path: "/healthz", Port: 8181}, PeriodSeconds: 1},
			TerminationGracePeriodSeconds: &grace,
		}}}
	inst.TypeMeta = types.TypeMeta{APIVersion: types.APIVersion, Kind: "Instance"}
	if _, err := admin.Create(ctx, inst); err != nil {
		t.Fatal(err)
	}
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

	live := &types.Instance{ObjectMeta: types.ObjectMeta{Name: "live-1", Namespace: "default"},
		Spec: types.InstanceSpec{NodeName: "n1", Template: types.InstanceTemplate{
			Image:                         builtin.Reference,
			Liveness:                      &types.Probe{TCP: &types.TCPProbe{Port: 9999}, PeriodSeconds: 1, FailureThreshold: 2},
			TerminationGracePeriodSeconds: &grace,
		}}}
	live.TypeMeta = inst.TypeMeta
	if _, err := admin.Create(ctx, live); err != nil {
		t.Fatal(err)
	}
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
	admin, rt := startAgentOn(t, store)
	ctx := context.Background()
	grace := int64(1)
	inst := &types.Instance{ObjectMeta: types.ObjectMeta{Name: "out-1", Namespace: "default"},
		Spec: types.InstanceSpec{NodeName: "n1", Template: types.InstanceTemplate{
			Image:                         builtin.Reference,
			Readiness:                     &types.Probe{HTTP: &types.HTTPProbe{Path: "/healthz", Port: 8080}, PeriodSeconds: 1},
			TerminationGracePeriodSeconds: &grace,
		}}}
	inst.TypeMeta = types.TypeMeta{APIVersion: types.APIVersion, Kind: "Instance"}
	created, err := admin.Create(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	id := "nx-" + created.GetObjectMeta().UID
	waitInstance(t, admin, "out-1", "running and ready", func(i *types.Instance) bool {
		return i.Status.Phase == types.PhaseRunning && i.Status.Ready
	})

	if err := store.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = store.Process.Signal(syscall.SIGCONT)
		}
	}
	defer resume()
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
	time.Sleep(outage - outage/3 - time.Since(deadline.Add(-20*time.Second)))
	resume()
	got := waitInstance(t, admin, "out-1", "caught up after the outage", func(i *types.Instance) bool {
		return i.Status.Restarts == 1 && i.Status.Phase == types.PhaseRunning && i.Status.Ready
	})
	if got.Status.LastExit == nil || got.Status.LastExit.Signal == "" {
		t.Fatalf("last exit %+v: want the SIGKILL", got.Status.LastExit)
	}
}
