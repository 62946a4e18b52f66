package controller_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/server"
)

// env is a whole control-plane server in the test's process (CA, embedded
// store member, API, and unless asked otherwise its controllers) and an
// admin client of it.
type env struct {
	t   *testing.T
	s   *server.Server
	c   *client.Client
	dir string
}

func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "[::1]:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startEnv(t *testing.T, noControllers bool) *env {
	t.Helper()
	dir := t.TempDir()
	s, err := server.Start(context.Background(), server.Config{DataDir: dir, Name: "s1", Cluster: "test",
		APIAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp")), StorePeerAddr: fmt.Sprintf("[::1]:%d", freePort(t, "udp")),
		NoControllers: noControllers, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	cfg, err := client.LoadConfig(filepath.Join(dir, server.AdminConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	r, err := cfg.Resolve("")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(r.Settings)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &env{t: t, s: s, c: c, dir: dir}
}

func res(name string) *types.Resource {
	r, ok := types.LookupResource(name)
	if !ok {
		panic(name)
	}
	return r
}

var (
	workloads = res("workloads")
	instances = res("instances")
	nodes     = res("nodes")
)

// node registers a ready node with cpu millicores and memory, as its
// agent would.
func (e *env) node(name string, cpu types.MilliCPU, labels map[string]string, mutate func(*types.Node)) {
	e.t.Helper()
	n := &types.Node{TypeMeta: types.TypeMeta{APIVersion: "v1", Kind: "Node"}}
	n.Name, n.Labels = name, labels
	if mutate != nil {
		mutate(n)
	}
	o, err := e.c.Create(context.Background(), n)
	if err != nil {
		e.t.Fatalf("create node %s: %v", name, err)
	}
	n = o.(*types.Node)
	n.Status.Capacity = types.ResourceList{CPU: cpu, Memory: 8 << 30}
	n.Status.Allocatable = n.Status.Capacity
	n.Status.Tiers = []types.Isolation{types.IsolationContainer}
	n.Status.Conditions = []types.Condition{{Type: "Ready", Status: types.ConditionTrue, LastTransitionTime: time.Now()}}
	if _, err := e.c.UpdateStatus(context.Background(), n); err != nil {
		e.t.Fatalf("node %s status: %v", name, err)
	}
}

func service(name string, replicas int32) *types.Workload {
	w := &types.Workload{TypeMeta: types.TypeMeta{APIVersion: "v1", Kind: "Workload"}}
	w.Name, w.Namespace = name, "default"
	w.Spec.Kind = types.KindService
	w.Spec.Replicas = &replicas
	w.Spec.Template = types.InstanceTemplate{Image: "nexus.local/hello", Labels: map[string]string{"app": name},
		Ports: []types.Port{{Port: 8080}}, Env: []types.EnvVar{{Name: "GREETING", Value: "hello"}}}
	return w
}

func (e *env) create(o types.Object) types.Object {
	e.t.Helper()
	got, err := e.c.Create(context.Background(), o)
	if err != nil {
		e.t.Fatalf("create %s: %v", o.GetObjectMeta().Name, err)
	}
	return got
}

// update reads the workload, changes it and writes it back, again on a
// conflict (the controller writes its status meanwhile).
func (e *env) update(name string, change func(*types.Workload)) {
	e.t.Helper()
	for range 10 {
		o, err := e.c.Get(context.Background(), workloads, "default", name)
		if err != nil {
			e.t.Fatal(err)
		}
		w := o.(*types.Workload)
		change(w)
		_, err = e.c.Update(context.Background(), w)
		if client.IsConflict(err) {
			continue
		}
		if err != nil {
			e.t.Fatalf("update workload %s: %v", name, err)
		}
		return
	}
	e.t.Fatalf("update workload %s: conflicts all the time", name)
}

func (e *env) instancesOf(workload string) []*types.Instance {
	e.t.Helper()
	objs, _, err := e.c.List(context.Background(), instances, "default", client.ListOptions{FieldSelector: "spec.workload=" + workload})
	if err != nil {
		e.t.Fatal(err)
	}
	out := make([]*types.Instance, len(objs))
	for i, o := range objs {
		out[i] = o.(*types.Instance)
	}
	return out
}

func (e *env) workload(name string) *types.Workload {
	e.t.Helper()
	o, err := e.c.Get(context.Background(), workloads, "default", name)
	if err != nil {
		e.t.Fatal(err)
	}
	return o.(*types.Workload)
}

// eventually polls cond until it holds, failing the test after timeout
// with what cond last said.
func (e *env) eventually(what string, timeout time.Duration, cond func() (bool, string)) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not within %s; last: %s", what, timeout, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func live(insts []*types.Instance) (n, ready int) {
	for _, i := range insts {
		switch i.Status.Phase {
		case types.PhaseSucceeded, types.PhaseFailed, types.PhaseStopped:
			continue
		}
		n++
		if i.Status.Ready {
			ready++
		}
	}
	return n, ready
}

// agent stands in for the node agents: it follows instances and reports
// the status an agent would as it runs each one bound to a node. behave
// says what the "container" does: the status to report next for an
// instance (nil: nothing to report), and after how long.
type agent struct {
	e      *env
	behave func(i *types.Instance) (*types.InstanceStatus, time.Duration)
	mu     sync.Mutex
	busy   map[string]bool
}

// running is the usual behaviour: a bound instance starts and is ready
// after delay.
func running(delay time.Duration) func(i *types.Instance) (*types.InstanceStatus, time.Duration) {
	return func(i *types.Instance) (*types.InstanceStatus, time.Duration) {
		if i.Spec.NodeName == "" || i.Status.Phase == types.PhaseRunning || i.Status.Phase == types.PhaseFailed {
			return nil, 0
		}
		st := i.Status
		st.Phase, st.Ready, st.StartedAt = types.PhaseRunning, true, time.Now().UTC()
		st.Addresses = []string{"fd00::1", "10.0.0.1"}
		return &st, delay
	}
}

func (e *env) startAgent(behave func(i *types.Instance) (*types.InstanceStatus, time.Duration)) *agent {
	a := &agent{e: e, behave: behave, busy: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	e.t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		_ = e.c.Follow(ctx, instances, "", client.FollowOptions{}, func(ev client.Event) error {
			if ev.Type != client.Deleted {
				a.handle(ctx, ev.Object.(*types.Instance))
			}
			return nil
		})
	}()
	return a
}

func (a *agent) handle(ctx context.Context, i *types.Instance) {
	st, delay := a.behave(i)
	if st == nil {
		return
	}
	key := i.Namespace + "/" + i.Name
	a.mu.Lock()
	if a.busy[key] {
		a.mu.Unlock()
		return
	}
	a.busy[key] = true
	a.mu.Unlock()
	go func() {
		defer func() {
			a.mu.Lock()
			delete(a.busy, key)
			a.mu.Unlock()
		}()
		for conflicts := 0; conflicts < 5; {
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			o, err := a.e.c.Get(ctx, instances, i.Namespace, i.Name)
			if err != nil {
				return
			}
			cur := o.(*types.Instance)
			next, _ := a.behave(cur)
			if next == nil {
				return
			}
			cur.Status = *next
			got, err := a.e.c.UpdateStatus(ctx, cur)
			switch {
			case client.IsConflict(err):
				conflicts++
				delay = 0
				continue
			case err != nil:
				return
			}
			// The next step, if the behaviour has one, after its delay.
			if next, delay = a.behave(got.(*types.Instance)); next == nil {
				return
			}
		}
	}()
}
