package agent_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"nexus.dev/nexus/agent"
	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/servertest"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/runtime"
	"nexus.dev/nexus/runtime/image"
)

// testNode is what the agent tests run against: a whole API server, clients
// of it as the admin and as node n1, and n1's runtime and image store.
// Agents for n1 are started on it with run; its containers are removed and
// their root file systems released when the test ends.
type testNode struct {
	c     *servertest.Cluster
	admin *client.Client
	node  *client.Client
	rt    *runtime.Runtime
	imgs  *image.Store
	dir   string // the agent's directory, shared by the agents run on it
	bin   string
}

// startNode starts a test node whose API keeps its objects in store
// (a fresh `nexus store` when nil).
func startNode(t *testing.T, store *apitest.Backend) *testNode {
	t.Helper()
	testutil.RequireRoot(t)
	n := &testNode{bin: testutil.NexusBin(t), dir: t.TempDir()}
	b := store
	if b == nil {
		s := apitest.NexusStore(t)
		b = &s
	}
	n.c = servertest.StartServer(t, *b, servertest.ServerOptions{})
	n.admin = newClient(t, n.c, n.c.User(t, "admin"))
	n.node = newClient(t, n.c, n.c.Node(t, "n1"))
	n.rt = runtime.New(runtime.Config{Root: filepath.Join(t.TempDir(), "run")})
	imgRoot := filepath.Join(t.TempDir(), "images")
	var err error
	if n.imgs, err = image.Open(image.Config{Root: imgRoot}); err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs after the agents have stopped.
	t.Cleanup(func() {
		states, _ := n.rt.List()
		for _, st := range states {
			_ = n.rt.Delete(context.Background(), st.ID, true)
		}
		// Root file systems too, also of a container between two runs
		// (no runtime state, its bundle still mounted).
		prepared, _ := os.ReadDir(filepath.Join(imgRoot, "containers"))
		for _, d := range prepared {
			_ = n.imgs.Release(context.Background(), d.Name())
		}
	})
	return n
}

// run starts an agent for n1 on the node, registered with the API server
// as n1's (for logs and exec), with cfg's changes; it runs until the
// returned stop is called or the test ends.
func (n *testNode) run(t *testing.T, cfg func(*agent.Config)) (a *agent.Agent, stop func()) {
	t.Helper()
	c := agent.Config{NodeName: "n1", Dir: n.dir, Client: n.node, Runtime: n.rt, Images: n.imgs,
		BuiltinExe: n.bin, HeartbeatInterval: time.Second}
	if cfg != nil {
		cfg(&c)
	}
	a, err := agent.New(c)
	if err != nil {
		t.Fatal(err)
	}
	unregister := n.c.Server.Nodes().Register("n1", a)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			unregister()
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("agent: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	return a, stop
}

// create makes an Instance of tmpl bound to n1 and returns it as stored.
func (n *testNode) create(t *testing.T, name string, tmpl types.InstanceTemplate) *types.Instance {
	t.Helper()
	return n.createSpec(t, name, types.InstanceSpec{Template: tmpl})
}

// createSpec creates the Instance name with spec, bound to n1.
func (n *testNode) createSpec(t *testing.T, name string, spec types.InstanceSpec) *types.Instance {
	t.Helper()
	spec.NodeName = "n1"
	inst := &types.Instance{TypeMeta: types.TypeMeta{APIVersion: types.APIVersion, Kind: "Instance"},
		ObjectMeta: types.ObjectMeta{Name: name, Namespace: "default"}, Spec: spec}
	o, err := n.admin.Create(context.Background(), inst)
	if err != nil {
		t.Fatal(err)
	}
	return o.(*types.Instance)
}

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

// freezeStore stops the store's process (SIGSTOP), so every request hangs
// as when the node is cut off from every server, and returns what lets it
// go on (SIGCONT); the test's end lets it go on too.
func freezeStore(t *testing.T, store apitest.Backend) (resume func()) {
	t.Helper()
	if err := store.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	resume = func() { once.Do(func() { _ = store.Process.Signal(syscall.SIGCONT) }) }
	t.Cleanup(resume)
	return resume
}
