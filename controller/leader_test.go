package controller_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/controller"
	"nexus.dev/nexus/store/embed"
)

// candidate is one server's side of the election in a test: its own store
// client, through a proxy that can cut it off (the store's view of a
// kill -9 or a partition: no resign, no revoke, the lease left to run
// out), and the controllers of each term it leads.
type candidate struct {
	name  string
	store *clientv3.Client
	proxy *proxy
	done  chan struct{}

	mu    sync.Mutex
	terms []*term
}

type term struct {
	ctrl       *controller.Controllers
	start, end time.Time
}

func (c *candidate) current() *term {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.terms); n > 0 && c.terms[n-1].end.IsZero() {
		return c.terms[n-1]
	}
	return nil
}

func (c *candidate) bound() (n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.terms {
		n += t.ctrl.SchedulerStats().Bound
	}
	return n
}

// TestLeaderTakeover: two candidates run the controllers under the
// election, one at a time. A leader whose lease is revoked stops at once
// and the other takes over; a leader whose process dies (its store client
// closed, its lease left to run out) is replaced within 2 s. Workloads
// keep being served across both changes and no instance is bound twice.
func TestLeaderTakeover(t *testing.T) {
	e := startEnv(t, true)
	e.node("n1", 8000, nil, nil)
	e.node("n2", 8000, nil, nil)
	e.startAgent(running(0))
	admin, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + filepath.Join(e.s.DataDir, "store.sock")}, DialTimeout: 5 * time.Second, Logger: embed.QuietClientLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	start := func(name string) *candidate {
		px := startProxy(t, filepath.Join(e.s.DataDir, "store.sock"))
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + px.path}, DialTimeout: 5 * time.Second, Logger: embed.QuietClientLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		c := &candidate{name: name, store: cli, proxy: px, done: make(chan struct{})}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(c.done)
			err := controller.RunElected(ctx, controller.ElectionConfig{Store: cli, Name: name, Logger: quiet(),
				Lead: func(ctx context.Context) error {
					ctrl, err := controller.New(controller.Config{Client: e.c, Store: cli, Logger: quiet()})
					if err != nil {
						return err
					}
					tm := &term{ctrl: ctrl, start: time.Now()}
					c.mu.Lock()
					c.terms = append(c.terms, tm)
					c.mu.Unlock()
					err = ctrl.Run(ctx)
					c.mu.Lock()
					tm.end = time.Now()
					c.mu.Unlock()
					return err
				}})
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
		return c
	}
	leader := func() string {
		name, err := controller.Leader(context.Background(), admin, "")
		if err != nil {
			t.Fatal(err)
		}
		return name
	}
	leading := func(c *candidate, within time.Duration) time.Time {
		t.Helper()
		e.eventually(c.name+" leads", within, func() (bool, string) {
			l := leader()
			return l == c.name && c.current() != nil, "the election names " + fmt.Sprintf("%q", l)
		})
		return c.current().start
	}
	settled := func(n int) {
		t.Helper()
		e.eventually(fmt.Sprintf("%d ready instances", n), 15*time.Second, func() (bool, string) {
			insts := e.instancesOf("web")
			l, r := live(insts)
			return len(insts) == n && r == n, fmt.Sprintf("%d instances, %d live, %d ready", len(insts), l, r)
		})
	}

	a := start("a")
	leading(a, 5*time.Second)
	b := start("b")
	e.create(service("web", 3))
	settled(3)
	if b.current() != nil || leader() != "a" {
		t.Fatalf("b leads beside a (election names %q)", leader())
	}

	// a's lease is revoked: a stops at once, b takes over at once.
	got, err := admin.Get(context.Background(), controller.ElectionKey+"/", clientv3.WithFirstCreate()...)
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "a" {
		t.Fatalf("election key: %+v %v", got, err)
	}
	aTerm := a.current()
	revoked := time.Now()
	if _, err := admin.Revoke(context.Background(), clientv3.LeaseID(got.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	bStart := leading(b, 2*time.Second)
	// a may still be recording its end when b starts (both learn of the
	// revoke from the store at once): give it until 500 ms after it.
	var aEnd time.Time
	for deadline := revoked.Add(500 * time.Millisecond); ; time.Sleep(5 * time.Millisecond) {
		a.mu.Lock()
		aEnd = aTerm.end
		a.mu.Unlock()
		if !aEnd.IsZero() || time.Now().After(deadline) {
			break
		}
	}
	if aEnd.IsZero() || aEnd.Sub(revoked) > 500*time.Millisecond {
		t.Fatalf("a's controllers ran on %v after its lease was revoked", aEnd.Sub(revoked))
	}
	t.Logf("revoked: a stopped after %v, b led after %v", aEnd.Sub(revoked).Round(time.Millisecond), bStart.Sub(revoked).Round(time.Millisecond))
	e.update("web", func(w *types.Workload) { w.Spec.Replicas = ptr[int32](5) })
	settled(5)

	// b is cut off from the store: nothing resigns or revokes; b stops
	// before its 1 s lease runs out, and a (campaigning again) leads once
	// it has.
	bTerm := b.current()
	killed := time.Now()
	b.proxy.cut()
	aStart := leading(a, 5*time.Second)
	takeover := aStart.Sub(killed)
	b.mu.Lock()
	bEnd := bTerm.end
	b.mu.Unlock()
	t.Logf("cut off: b stopped after %v, a led after %v", bEnd.Sub(killed).Round(time.Millisecond), takeover.Round(time.Millisecond))
	if bEnd.IsZero() || !bEnd.Before(aStart) {
		t.Fatalf("b's controllers still ran when a's started (b stopped %v after the cut, a started %v after)", bEnd.Sub(killed), takeover)
	}
	if takeover > 2*time.Second {
		t.Fatalf("a took over %v after b died, want within 2 s", takeover)
	}
	if takeover < 500*time.Millisecond {
		t.Fatalf("a took over %v after b died, before b's 1 s lease could run out", takeover)
	}
	e.update("web", func(w *types.Workload) { w.Spec.Replicas = ptr[int32](7) })
	settled(7)

	// Every instance was bound once, by one of the terms' schedulers.
	if n := a.bound() + b.bound(); n != 7 {
		t.Fatalf("%d binds by the schedulers of every term for 7 instances", n)
	}
}

// proxy passes a unix socket's connections on to another until cut.
type proxy struct {
	path string
	l    net.Listener

	mu    sync.Mutex
	conns []net.Conn
	done  bool
}

func startProxy(t *testing.T, to string) *proxy {
	t.Helper()
	p := &proxy{path: filepath.Join(t.TempDir(), "proxy.sock")}
	var err error
	if p.l, err = net.Listen("unix", p.path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.cut)
	go func() {
		for {
			c, err := p.l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", to)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.done {
				p.mu.Unlock()
				c.Close()
				up.Close()
				return
			}
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

// cut closes every connection and takes no more.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = true
	p.l.Close()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
