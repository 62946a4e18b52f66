// Package controllertest runs a whole control-plane server in a test's
// process (server.Start: CA, embedded store member, API and, unless told
// otherwise, the controllers) and an agent stand-in that reports instance
// status the way a node agent does, for tests of the controllers and of
// the commands that drive them. It is to the controllers what httptest is
// to a handler: real components, no fakes, set up in a line.
package controllertest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/server"
)

// Server is a running server with an admin client.
type Server struct {
	*server.Server
	Client  *client.Client
	DataDir string
	// AdminConfig is the admin's client configuration file.
	AdminConfig string

	mu    sync.Mutex
	beats map[string]context.CancelFunc // heartbeats of the added nodes
}

// Options adjust Start.
type Options struct {
	// NoControllers starts the server without its controllers.
	NoControllers bool
}

// Quiet is a logger that drops everything.
func Quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// logOnFailure is a logger whose warnings and errors the test prints if
// it fails (the server's controllers say there why they did not act).
func logOnFailure(t testing.TB) *slog.Logger {
	var mu sync.Mutex
	var buf bytes.Buffer
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if t.Failed() && buf.Len() > 0 {
			t.Logf("the server's warnings and errors:\n%s", buf.String())
		}
	})
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		if buf.Len() < 1<<20 {
			buf.Write(p)
		}
		return len(p), nil
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// Start starts a server on loopback in a temporary directory; it stops
// when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	dir := t.TempDir()
	s, err := server.Start(context.Background(), server.Config{DataDir: dir, Name: "s1", Cluster: "test",
		APIAddr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp")), StorePeerAddr: fmt.Sprintf("[::1]:%d", testutil.FreePort(t, "udp")),
		NoControllers: opts.NoControllers, Logger: logOnFailure(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	conf := filepath.Join(dir, server.AdminConfigFile)
	cfg, err := client.LoadConfig(conf)
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
	return &Server{Server: s, Client: c, DataDir: dir, AdminConfig: conf, beats: map[string]context.CancelFunc{}}
}

// AddNode registers a node that is Ready with cpu millicores and 8 GiB
// allocatable, and heartbeats for it every second until the test ends (or
// StopHeartbeat), as its agent would; mutate (if not nil) adjusts it
// before it is created.
func (s *Server) AddNode(t testing.TB, name string, cpu types.MilliCPU, labels map[string]string, mutate func(*types.Node)) {
	t.Helper()
	n := &types.Node{TypeMeta: types.TypeMeta{APIVersion: types.APIVersion, Kind: "Node"}}
	n.Name, n.Labels = name, labels
	if mutate != nil {
		mutate(n)
	}
	o, err := s.Client.Create(context.Background(), n)
	if err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
	n = o.(*types.Node)
	n.Status.Capacity = types.ResourceList{CPU: cpu, Memory: 8 << 30}
	n.Status.Allocatable = n.Status.Capacity
	n.Status.Tiers = []types.Isolation{types.IsolationContainer}
	n.Status.Conditions = []types.Condition{{Type: "Ready", Status: types.ConditionTrue, LastTransitionTime: time.Now()}}
	// Unconditional, as an agent's: the node-IPAM controller writes the
	// Node's spec meanwhile.
	n.ResourceVersion = ""
	if _, err := s.Client.UpdateStatus(context.Background(), n); err != nil {
		t.Fatalf("node %s status: %v", name, err)
	}
	if _, err := s.Client.NodeHeartbeat(context.Background(), name); err != nil {
		t.Fatalf("node %s heartbeat: %v", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_, _ = s.Client.NodeHeartbeat(ctx, name)
			}
		}
	}()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	s.mu.Lock()
	s.beats[name] = stop
	s.mu.Unlock()
}

// StopHeartbeat stops the heartbeats of a node AddNode added, as when its
// agent dies or is cut off: its lease runs out in the lease duration.
func (s *Server) StopHeartbeat(name string) {
	s.mu.Lock()
	stop := s.beats[name]
	delete(s.beats, name)
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Behaviour is what a stand-in container does: given an instance as it
// is now, the status its agent reports next (nil: nothing) and after how
// long.
type Behaviour func(i *types.Instance) (*types.InstanceStatus, time.Duration)

// Running is the usual behaviour: a bound instance starts, with an IPv6
// and an IPv4 address, and is ready after delay.
func Running(delay time.Duration) Behaviour {
	return func(i *types.Instance) (*types.InstanceStatus, time.Duration) {
		if i.Spec.NodeName == "" || i.Status.Phase == types.PhaseRunning || i.Status.Phase == types.PhaseFailed ||
			i.Status.Phase == types.PhaseSucceeded || i.Status.Phase == types.PhaseStopped {
			return nil, 0
		}
		st := i.Status
		st.Phase, st.Ready, st.StartedAt = types.PhaseRunning, true, time.Now().UTC()
		st.Addresses = []string{"fd00::1", "10.0.0.1"}
		return &st, delay
	}
}

// agent follows every instance and applies its behaviour, one step at a
// time per instance, each status written with a compare-and-swap.
type agent struct {
	c      *client.Client
	behave Behaviour
	mu     sync.Mutex
	busy   map[string]bool
}

// StartAgent runs a stand-in for the node agents until the test ends.
func StartAgent(t testing.TB, c *client.Client, b Behaviour) {
	a := &agent{c: c, behave: b, busy: map[string]bool{}}
	inst, _ := types.LookupResource("instances")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = c.Follow(ctx, inst, "", client.FollowOptions{}, func(ev client.Event) error {
			if ev.Type != client.Deleted {
				a.handle(ctx, &wg, inst, ev.Object.(*types.Instance))
			}
			return nil
		})
	}()
}

func (a *agent) handle(ctx context.Context, wg *sync.WaitGroup, r *types.Resource, i *types.Instance) {
	next, delay := a.behave(i)
	if next == nil {
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
	wg.Add(1)
	go func() {
		defer wg.Done()
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
			o, err := a.c.Get(ctx, r, i.Namespace, i.Name)
			if err != nil {
				return
			}
			cur := o.(*types.Instance)
			next, _ := a.behave(cur)
			if next == nil {
				return
			}
			cur.Status = *next
			got, err := a.c.UpdateStatus(ctx, cur)
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
