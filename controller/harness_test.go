package controller_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/controller/controllertest"
)

// env is a whole server in the test's process and its admin client.
type env struct {
	t *testing.T
	s *controllertest.Server
	c *client.Client
}

func quiet() *slog.Logger { return controllertest.Quiet() }

func startEnv(t *testing.T, noControllers bool) *env {
	t.Helper()
	s := controllertest.Start(t, controllertest.Options{NoControllers: noControllers})
	return &env{t: t, s: s, c: s.Client}
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

func (e *env) node(name string, cpu types.MilliCPU, labels map[string]string, mutate func(*types.Node)) {
	e.t.Helper()
	e.s.AddNode(e.t, name, cpu, labels, mutate)
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

func running(delay time.Duration) controllertest.Behaviour { return controllertest.Running(delay) }

func (e *env) startAgent(b controllertest.Behaviour) { controllertest.StartAgent(e.t, e.c, b) }
