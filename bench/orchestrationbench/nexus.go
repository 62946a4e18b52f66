package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/runtime/image/builtin"
)

// Addresses of nexus up inside the bench's network namespace: nothing else
// listens there.
const (
	apiAddr       = "127.0.0.1:17443"
	storePeerAddr = "127.0.0.1:17380"
	namespace     = types.DefaultNamespace
	// Labels of what the bench creates, to find it again.
	labelKey     = "bench"
	labelLatency = "latency"
	labelIdle    = "idle"
)

// nexusUp is the `nexus up` process under test and an admin client of it.
type nexusUp struct {
	cmd       *exec.Cmd
	pid       int
	dataDir   string
	exited    chan struct{}
	startTime time.Duration

	c       *client.Client
	metrics *http.Client
	tr      *tracker
	watch   *client.Watcher
	instRes *types.Resource
	wlRes   *types.Resource
	stopped bool
}

// startUp starts nexus up with its data and HOME in o.dir, waits until
// its node is registered and follows every Instance.
func startUp(ctx context.Context, o options) (*nexusUp, error) {
	u := &nexusUp{dataDir: filepath.Join(o.dir, "data"), exited: make(chan struct{})}
	home := filepath.Join(o.dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, err
	}
	// Appended to: a restart keeps the earlier run's log.
	logf, err := os.OpenFile(filepath.Join(o.dir, "up.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	u.cmd = exec.Command(o.nexus, "--data-dir", u.dataDir, "up", "--name", "bench", "--api-addr", apiAddr,
		"--store-peer-addr", storePeerAddr, "--node-ipv4-bits", strconv.Itoa(o.nodeIPv4Bits))
	u.cmd.Env = append(os.Environ(), "HOME="+home)
	u.cmd.Stdout, u.cmd.Stderr = logf, logf
	// If this driver dies, nexus up stops (its containers stay, for the
	// script's cleanup to remove).
	u.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	began := time.Now()
	if err := u.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s up: %w", o.nexus, err)
	}
	u.pid = u.cmd.Process.Pid
	// For the script's cleanup, should this program be killed.
	_ = os.WriteFile(filepath.Join(o.dir, "up.pid"), []byte(strconv.Itoa(u.pid)), 0o600)
	go func() { _ = u.cmd.Wait(); close(u.exited) }()
	fail := func(err error) (*nexusUp, error) {
		u.stop()
		return nil, fmt.Errorf("%w (its log: %s)", err, logf.Name())
	}
	if err := u.connect(ctx, filepath.Join(u.dataDir, "admin.conf")); err != nil {
		return fail(err)
	}
	if err := u.waitNode(ctx); err != nil {
		return fail(err)
	}
	u.startTime = time.Since(began)
	u.tr = newTracker()
	if u.watch, err = u.c.Watch(context.Background(), u.instRes, namespace, client.WatchOptions{}); err != nil {
		return fail(fmt.Errorf("watch instances: %w", err))
	}
	go func() {
		for ev := range u.watch.Events() {
			u.tr.observe(ev, time.Now())
		}
	}()
	return u, nil
}

// connect waits for admin.conf and makes the admin's client, and an HTTP
// client with the same credentials for /metrics.
func (u *nexusUp) connect(ctx context.Context, conf string) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(conf); err == nil {
			break
		}
		select {
		case <-u.exited:
			return errors.New("nexus up exited before it wrote admin.conf")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("nexus up wrote no admin.conf within 2 minutes")
		}
	}
	cfg, err := client.LoadConfig(conf)
	if err != nil {
		return err
	}
	r, err := cfg.Resolve("")
	if err != nil {
		return err
	}
	if u.c, err = client.New(r.Settings); err != nil {
		return err
	}
	tc := &tls.Config{RootCAs: r.Settings.RootCAs, MinVersion: tls.VersionTLS13}
	if r.Settings.Certificate != nil {
		tc.Certificates = []tls.Certificate{*r.Settings.Certificate}
	}
	u.metrics = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}}
	u.instRes, _ = types.LookupResource("instances")
	u.wlRes, _ = types.LookupResource("workloads")
	return nil
}

// waitNode waits until the agent has registered the node as Ready.
func (u *nexusUp) waitNode(ctx context.Context) error {
	nodes, _ := types.LookupResource("nodes")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		o, err := u.c.Get(ctx, nodes, "", "bench")
		if err == nil {
			if c := types.FindCondition(o.(*types.Node).Status.Conditions, "Ready"); c != nil && c.Status == types.ConditionTrue {
				return nil
			}
		}
		select {
		case <-u.exited:
			return errors.New("nexus up exited before its node was ready")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node bench not ready within 2 minutes (last error: %v)", err)
		}
	}
}

// stop sends nexus up SIGINT and waits for it (SIGKILL after a minute).
func (u *nexusUp) stop() {
	if u.stopped {
		return
	}
	u.stopped = true
	if u.watch != nil {
		u.watch.Stop()
	}
	if u.c != nil {
		u.c.Close()
	}
	_ = u.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-u.exited:
	case <-time.After(time.Minute):
		fmt.Fprintln(os.Stderr, "nexus up did not stop within a minute of SIGINT: killing it")
		_ = u.cmd.Process.Kill()
		<-u.exited
	}
}

// benchInstance is an Instance of the built-in image with an HTTP
// readiness probe on its port, so that "ready" means it serves.
func benchInstance(name string, probePeriod int) *types.Instance {
	grace := int64(5)
	return &types.Instance{
		TypeMeta:   types.TypeMeta{APIVersion: types.APIVersion, Kind: "Instance"},
		ObjectMeta: types.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{labelKey: labelLatency}},
		Spec: types.InstanceSpec{Template: types.InstanceTemplate{
			Image:                         builtin.Reference,
			Ports:                         []types.Port{{Port: builtin.Port}},
			Readiness:                     &types.Probe{HTTP: &types.HTTPProbe{Port: builtin.Port}, PeriodSeconds: int32(probePeriod)},
			TerminationGracePeriodSeconds: &grace,
		}},
	}
}

// startOne creates one Instance and waits until it is running, ready and
// answers HTTP on its IPv4 address. Times are from just before the create
// request was sent.
func (u *nexusUp) startOne(ctx context.Context, name string, probePeriod int) (timeline, error) {
	u.tr.expect(name)
	t0 := time.Now()
	if _, err := u.c.Create(ctx, benchInstance(name, probePeriod)); err != nil {
		return timeline{}, fmt.Errorf("create instance %s: %w", name, err)
	}
	created := time.Now()
	u.tr.update(name, func(t *timeline) { t.t0, t.created = t0, created })
	got, err := u.tr.wait(ctx, name, time.Minute, func(t *timeline) bool { return !t.running.IsZero() || t.failed() })
	if err == nil && got.failed() {
		err = errors.New(got.message)
	}
	if err != nil {
		return got, fmt.Errorf("instance %s did not run: %w", name, err)
	}
	if got.ipv4 == "" {
		return got, fmt.Errorf("instance %s runs without an IPv4 address (status addresses: %v)", name, got.addresses)
	}
	if took := got.started.Sub(t0); took > 500*time.Millisecond {
		u.explain(ctx, name, took)
	}
	serving, err := waitServing(ctx, net.JoinHostPort(got.ipv4, strconv.Itoa(builtin.Port)), 30*time.Second)
	if err != nil {
		return got, fmt.Errorf("instance %s: %w", name, err)
	}
	u.tr.update(name, func(t *timeline) { t.serving = serving })
	if got, err = u.tr.wait(ctx, name, time.Minute, func(t *timeline) bool { return !t.ready.IsZero() }); err != nil {
		return got, fmt.Errorf("instance %s not ready: %w", name, err)
	}
	return got, nil
}

// explain says on standard error what the agent recorded about a slow
// start (its events), so that an outlier in the results can be told.
func (u *nexusUp) explain(ctx context.Context, name string, took time.Duration) {
	o, err := u.c.Get(ctx, u.instRes, namespace, name)
	if err != nil {
		return
	}
	var evs []string
	for _, e := range o.(*types.Instance).Status.Events {
		evs = append(evs, fmt.Sprintf("%s %s %s %q", e.LastTime.Format("15:04:05.000"), e.Type, e.Reason, e.Message))
	}
	fmt.Fprintf(os.Stderr, "  note: instance %s ran %s after its create; its events: %s\n", name, took.Round(time.Millisecond), strings.Join(evs, "; "))
}

// removeAll deletes every Workload and Instance and waits until the node
// runs no container of them.
func (u *nexusUp) removeAll(ctx context.Context) error {
	if u.c == nil || u.stopped {
		return nil
	}
	for _, r := range []*types.Resource{u.wlRes, u.instRes} {
		objs, _, err := u.c.List(ctx, r, namespace, client.ListOptions{})
		if err != nil {
			return fmt.Errorf("list %s to delete them: %w", r.Plural, err)
		}
		for _, o := range objs {
			if _, err := u.c.Delete(ctx, r, namespace, o.GetObjectMeta().Name, client.DeleteOptions{}); err != nil && !client.IsNotFound(err) {
				return fmt.Errorf("delete %s %s: %w", r.Plural, o.GetObjectMeta().Name, err)
			}
		}
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		objs, _, err := u.c.List(ctx, u.instRes, namespace, client.ListOptions{})
		left := len(u.containers())
		if err == nil && len(objs) == 0 && left == 0 {
			u.tr.forget()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after 10 minutes %d instances and %d containers are left", len(objs), left)
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// containers are the IDs of the agent's containers in the runtime's state
// directory (the runtime removes one after its processes are gone).
func (u *nexusUp) containers() map[string]bool {
	entries, _ := os.ReadDir(filepath.Join(u.dataDir, "runtime"))
	ids := map[string]bool{}
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "nx-") {
			ids[e.Name()] = true
		}
	}
	return ids
}

// memory reads nexus up's resident memory and, from its /metrics, the Go
// heap and goroutines.
func (u *nexusUp) memory(ctx context.Context) memReading {
	m := readProcMem(u.pid)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+apiAddr+"/metrics", nil)
	if err != nil {
		return m
	}
	resp, err := u.metrics.Do(req)
	if err != nil {
		return m
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "go_memstats_heap_inuse_bytes":
			m.heapMiB = v / (1 << 20)
		case "go_goroutines":
			m.goroutines = int(v)
		}
	}
	return m
}

// waitServing polls http://addr/ every millisecond (a new connection each
// time) until it answers 200, and returns when it did. When that took
// over half a second it says why on standard error (the failed attempts),
// so that a slow outlier in the results can be told from the bench's own.
func waitServing(ctx context.Context, addr string, limit time.Duration) (time.Time, error) {
	// What the connect of the current attempt did, for the note below
	// (the transport dials on a goroutine of its own).
	var dialed atomic.Pointer[string]
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		t := time.Now()
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		msg := fmt.Sprintf("connect %s: %v", time.Since(t).Round(time.Millisecond), err)
		dialed.Store(&msg)
		return c, err
	}
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, DialContext: dial}}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	began := time.Now()
	var failed []string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
		t := time.Now()
		none := "no connect"
		dialed.Store(&none)
		resp, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				if took := time.Since(began); took > 500*time.Millisecond {
					if n := len(failed); n > 6 {
						failed = append(append(failed[:3:3], fmt.Sprintf("(%d more)", n-6)), failed[n-3:]...)
					}
					fmt.Fprintf(os.Stderr, "  note: http://%s/ answered after %s; failed attempts (start, error, duration): %s\n",
						addr, took.Round(time.Millisecond), strings.Join(failed, "; "))
				}
				return time.Now(), nil
			}
			err = errors.New(resp.Status)
		}
		failed = append(failed, fmt.Sprintf("+%s %v %s (%s)", t.Sub(began).Round(time.Millisecond), err, time.Since(t).Round(time.Millisecond), *dialed.Load()))
		if !sleep(ctx, time.Millisecond) {
			return time.Time{}, fmt.Errorf("http://%s/ did not answer within %s: %s", addr, limit, failed[len(failed)-1])
		}
	}
}
