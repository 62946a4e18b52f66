package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/runtime/image/builtin"
)

// Addresses of nexus up inside the bench's network namespace (nothing
// else listens there), and what the bench deploys.
const (
	apiAddr       = "127.0.0.1:17443"
	storePeerAddr = "127.0.0.1:17380"
	nodeName      = "bench"
	namespace     = types.DefaultNamespace
	workloadName  = "svcbench"
	serviceName   = "svcbench"
	servicePort   = 80
	targetPort    = builtin.Port
	labelKey      = "bench"
	labelValue    = "services"
)

func imageName() string { return builtin.Reference }

// nexusUp is the `nexus up` process under test and an admin client of it.
type nexusUp struct {
	cmd       *exec.Cmd
	datapath  string // --service-datapath, empty for nexus up's default
	reported  string // the node's status.serviceDataPath
	exited    chan struct{}
	startTime time.Duration
	c         *client.Client
	stopped   bool
}

// startUp starts nexus up with its data and HOME in o.dir and waits until
// its node is ready. A start on the data of an earlier one adopts the
// containers that one left running.
func startUp(ctx context.Context, o options, datapath string) (*nexusUp, error) {
	u := &nexusUp{datapath: datapath, exited: make(chan struct{})}
	home := filepath.Join(o.dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, err
	}
	// Appended to: a restart keeps the earlier runs' log.
	logf, err := os.OpenFile(filepath.Join(o.dir, "up.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := []string{"--data-dir", filepath.Join(o.dir, "data"), "up", "--name", nodeName, "--api-addr", apiAddr, "--store-peer-addr", storePeerAddr}
	if datapath != "" {
		args = append(args, "--service-datapath", datapath)
	}
	fmt.Fprintf(logf, "\n=== servicesbench: %s %s\n", o.nexus, strings.Join(args, " "))
	u.cmd = exec.Command(o.nexus, args...)
	u.cmd.Env = append(os.Environ(), "HOME="+home)
	u.cmd.Stdout, u.cmd.Stderr = logf, logf
	// If this driver dies, nexus up stops (its containers stay, for the
	// script's cleanup to remove).
	u.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	began := time.Now()
	if err := u.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s up: %w", o.nexus, err)
	}
	// For the script's cleanup, should this program be killed.
	_ = os.WriteFile(filepath.Join(o.dir, "up.pid"), []byte(strconv.Itoa(u.cmd.Process.Pid)), 0o600)
	go func() { _ = u.cmd.Wait(); close(u.exited) }()
	fail := func(err error) (*nexusUp, error) {
		u.stop()
		return nil, fmt.Errorf("nexus up %s: %w (its log: %s)", strings.Join(args[2:], " "), err, logf.Name())
	}
	if err := u.connect(ctx, filepath.Join(o.dir, "data", "admin.conf")); err != nil {
		return fail(err)
	}
	if err := u.waitNode(ctx); err != nil {
		return fail(err)
	}
	u.startTime = time.Since(began)
	return u, nil
}

// connect waits for admin.conf and makes the admin's client.
func (u *nexusUp) connect(ctx context.Context, conf string) error {
	if err := u.poll(ctx, 2*time.Minute, func() (bool, error) {
		_, err := os.Stat(conf)
		return err == nil, err
	}); err != nil {
		return fmt.Errorf("no %s: %w", conf, err)
	}
	cfg, err := client.LoadConfig(conf)
	if err != nil {
		return err
	}
	r, err := cfg.Resolve("")
	if err != nil {
		return err
	}
	u.c, err = client.New(r.Settings)
	return err
}

// waitNode waits until the agent has (re-)registered the node as Ready
// since this nexus up started.
func (u *nexusUp) waitNode(ctx context.Context) error {
	nodes, _ := types.LookupResource("nodes")
	// The API answers, so this nexus up runs; a heartbeat since it
	// started (times in the API are whole seconds) is from its agent, not
	// the Ready condition an earlier one left.
	since := time.Now().Truncate(time.Second)
	return u.poll(ctx, 2*time.Minute, func() (bool, error) {
		o, err := u.c.Get(ctx, nodes, "", nodeName)
		if err != nil {
			return false, err
		}
		st := o.(*types.Node).Status
		c := types.FindCondition(st.Conditions, "Ready")
		if c == nil || c.Status != types.ConditionTrue {
			return false, fmt.Errorf("node %s is not Ready yet", nodeName)
		}
		if st.LastHeartbeat.Before(since) {
			return false, fmt.Errorf("no heartbeat from this nexus up's agent yet")
		}
		u.reported = st.ServiceDataPath
		if u.datapath != "" && u.reported != u.datapath {
			return false, fmt.Errorf("node %s reports service data path %q, not %s", nodeName, u.reported, u.datapath)
		}
		return true, nil
	})
}

// poll calls done every 50 ms until it says true, nexus up exits, ctx
// ends or limit passes; the error then says the last reason given.
func (u *nexusUp) poll(ctx context.Context, limit time.Duration, done func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		ok, why := done()
		if ok {
			return nil
		}
		select {
		case <-u.exited:
			return fmt.Errorf("nexus up exited (last: %v)", why)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s (last: %v)", limit, why)
		}
	}
}

// describeDatapath says which service data path nexus up was asked for
// and which its node reports.
func (u *nexusUp) describeDatapath() string {
	asked := "its default service data path"
	if u.datapath != "" {
		asked = "--service-datapath " + u.datapath
	}
	reported := u.reported
	if reported == "" {
		reported = "none"
	}
	return fmt.Sprintf(" with %s; node %s reports status.serviceDataPath %s", asked, nodeName, reported)
}

// stop sends nexus up SIGINT, which leaves the containers running, and
// waits for it (SIGKILL after a minute).
func (u *nexusUp) stop() {
	if u.stopped {
		return
	}
	u.stopped = true
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

// deployment is what the bench runs: the ready instances' addresses and
// the service's virtual IPs, of the bench's address family.
type deployment struct {
	instances []string // instance addresses
	names     []string // instance names, for the service check
	vips      []string // every virtual IP of the service
	family    int
}

func (d *deployment) instanceTargets() []string {
	out := make([]string, len(d.instances))
	for i, a := range d.instances {
		out[i] = net.JoinHostPort(a, strconv.Itoa(targetPort))
	}
	return out
}

// vipTarget is the service's address and port of the bench's family, or
// "" when it has none.
func (d *deployment) vipTarget() string {
	for _, v := range d.vips {
		if a, err := netip.ParseAddr(v); err == nil && familyOf(a) == d.family {
			return net.JoinHostPort(v, strconv.Itoa(servicePort))
		}
	}
	return ""
}

func familyOf(a netip.Addr) int {
	if a.Unmap().Is4() {
		return 4
	}
	return 6
}

// deploy runs the workload, waits for its instances to be ready and, when
// a mode needs one, makes the Service and waits until its virtual IP
// reaches every instance.
func (u *nexusUp) deploy(ctx context.Context, o options) (*deployment, error) {
	replicas := int32(o.replicas)
	grace := int64(5)
	w := &types.Workload{
		TypeMeta:   types.TypeMeta{APIVersion: types.APIVersion, Kind: "Workload"},
		ObjectMeta: types.ObjectMeta{Name: workloadName, Namespace: namespace},
		Spec: types.WorkloadSpec{Kind: types.KindService, Replicas: &replicas, Template: types.InstanceTemplate{
			Image:                         builtin.Reference,
			Labels:                        map[string]string{labelKey: labelValue},
			Ports:                         []types.Port{{Port: targetPort}},
			Readiness:                     &types.Probe{HTTP: &types.HTTPProbe{Port: targetPort, Path: "/healthz"}, PeriodSeconds: 1},
			TerminationGracePeriodSeconds: &grace,
		}},
	}
	if _, err := u.c.Create(ctx, w); err != nil {
		return nil, fmt.Errorf("create workload %s: %w", workloadName, err)
	}
	d := &deployment{family: o.family}
	instRes, _ := types.LookupResource("instances")
	err := u.poll(ctx, 3*time.Minute, func() (bool, error) {
		objs, _, err := u.c.List(ctx, instRes, namespace, client.ListOptions{LabelSelector: labelKey + "=" + labelValue})
		if err != nil {
			return false, err
		}
		d.instances, d.names = nil, nil
		var why []string
		for _, obj := range objs {
			inst := obj.(*types.Instance)
			addr := addressOf(inst.Status.Addresses, o.family)
			if !inst.Status.Ready || addr == "" {
				why = append(why, fmt.Sprintf("%s: %s, ready %v, addresses %v", inst.Name, inst.Status.Phase, inst.Status.Ready, inst.Status.Addresses))
				continue
			}
			d.instances = append(d.instances, addr)
			d.names = append(d.names, inst.Name)
		}
		return len(d.instances) == o.replicas, fmt.Errorf("%d of %d instances ready with an IPv%d address (%s)", len(d.instances), o.replicas, o.family, strings.Join(why, "; "))
	})
	if err != nil {
		return nil, fmt.Errorf("workload %s: %w", workloadName, err)
	}
	if !slices.Contains(o.modes, modeEBPF) && !slices.Contains(o.modes, modeNFTables) {
		return d, nil
	}
	svc := &types.Service{
		TypeMeta:   types.TypeMeta{APIVersion: types.APIVersion, Kind: "Service"},
		ObjectMeta: types.ObjectMeta{Name: serviceName, Namespace: namespace},
		Spec: types.ServiceSpec{
			Selector: map[string]string{labelKey: labelValue},
			Ports:    []types.ServicePort{{Name: "http", Port: servicePort, TargetPort: targetPort, Protocol: "TCP"}},
		},
	}
	created, err := u.c.Create(ctx, svc)
	if err != nil {
		return nil, fmt.Errorf("create service %s: %w", serviceName, err)
	}
	d.vips = created.(*types.Service).Spec.VirtualIPs
	if d.vipTarget() == "" {
		return d, nil // run says which mode lacks it
	}
	return d, u.waitService(ctx, d, o)
}

// addressOf is the first of addrs of the family, or "".
func addressOf(addrs []string, family int) string {
	for _, s := range addrs {
		if a, err := netip.ParseAddr(s); err == nil && familyOf(a) == family {
			return a.String()
		}
	}
	return ""
}

// waitService waits until new connections to the service's virtual IP
// have reached every instance: the agent has programmed its data path
// with all of them (after a start, or a restart with another data path).
func (u *nexusUp) waitService(ctx context.Context, d *deployment, o options) error {
	vip := d.vipTarget()
	if vip == "" {
		return nil
	}
	seen := map[string]bool{}
	err := u.poll(ctx, time.Minute, func() (bool, error) {
		host, err := whoAnswers(ctx, vip)
		if err != nil {
			return false, err
		}
		seen[host] = true
		var missing []string
		for _, n := range d.names {
			if !seen[n] {
				missing = append(missing, n)
			}
		}
		return len(missing) == 0, fmt.Errorf("no answer yet from %s", strings.Join(missing, ", "))
	})
	if err != nil {
		return fmt.Errorf("service %s at %s (%s data path) does not reach all %d instances: %w", serviceName, vip, u.datapath, o.replicas, err)
	}
	return nil
}

// whoAnswers asks the built-in image's "/" over a new connection and
// returns the host name in its first line ("hello from NAME").
func whoAnswers(ctx context.Context, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := dialHTTP(ctx, addr)
	if err != nil {
		return "", err
	}
	defer c.close()
	body, err := c.getBody(reqReportClose)
	if err != nil {
		return "", err
	}
	first, _, _ := strings.Cut(string(body), "\n")
	host, ok := strings.CutPrefix(first, "hello from ")
	if !ok {
		return "", fmt.Errorf("%s answered %q, not the built-in image's report", addr, first)
	}
	return host, nil
}

// removeAll deletes the service and the workload and waits until the node
// runs none of its containers.
func (u *nexusUp) removeAll(ctx context.Context) error {
	if u.c == nil || u.stopped {
		return nil
	}
	svcRes, _ := types.LookupResource("services")
	wlRes, _ := types.LookupResource("workloads")
	instRes, _ := types.LookupResource("instances")
	for _, d := range []struct {
		r    *types.Resource
		name string
	}{{svcRes, serviceName}, {wlRes, workloadName}} {
		if _, err := u.c.Delete(ctx, d.r, namespace, d.name, client.DeleteOptions{}); err != nil && !client.IsNotFound(err) {
			return fmt.Errorf("delete %s %s: %w", d.r.Plural, d.name, err)
		}
	}
	err := u.poll(ctx, 5*time.Minute, func() (bool, error) {
		objs, _, err := u.c.List(ctx, instRes, namespace, client.ListOptions{LabelSelector: labelKey + "=" + labelValue})
		if err != nil {
			return false, err
		}
		return len(objs) == 0, fmt.Errorf("%d instances left", len(objs))
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("remove the workload: %w", err)
	}
	return err
}
