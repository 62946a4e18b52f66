package agent

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	goruntime "runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/buildinfo"
	"nexus.dev/nexus/internal/proc"
)

// Register creates the agent's Node, or takes over the one that exists,
// and publishes its status. Run does it first; an assembly that needs the
// Node before Run (a server allocates its prefixes once it exists) calls
// it before.
func (a *Agent) Register(ctx context.Context) error {
	nodes, _ := types.LookupResource("nodes")
	_, err := a.cfg.Client.Get(ctx, nodes, "", a.cfg.NodeName)
	if client.IsNotFound(err) {
		n := nodes.New().(*types.Node)
		n.Name = a.cfg.NodeName
		n.Labels = a.cfg.Labels
		if _, err = a.cfg.Client.Create(ctx, n); err != nil && !client.IsAlreadyExists(err) {
			return fmt.Errorf("agent: register node %s: %w", a.cfg.NodeName, err)
		}
		a.log.Info("registered the node")
	} else if err != nil {
		return fmt.Errorf("agent: read node %s: %w", a.cfg.NodeName, err)
	}
	return a.publishNode(ctx)
}

// heartbeat renews the node's heartbeat lease every LeaseInterval (fencing
// the node when that fails for longer than the lease) and publishes the
// Node's status every HeartbeatInterval, until ctx ends.
func (a *Agent) heartbeat(ctx context.Context) {
	leaseDone := make(chan struct{})
	go func() { defer close(leaseDone); a.keepLease(ctx) }()
	defer func() { <-leaseDone }()
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		if err := a.publishNode(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("node heartbeat", "err", err)
		}
	}
}

// publishNode writes the Node's status: capacity, addresses, versions,
// the Ready condition and the heartbeat time.
func (a *Agent) publishNode(ctx context.Context) error {
	nodes, _ := types.LookupResource("nodes")
	o, err := a.cfg.Client.Get(ctx, nodes, "", a.cfg.NodeName)
	if err != nil {
		return err
	}
	n := o.(*types.Node)
	now := time.Now().UTC().Truncate(time.Second)
	a.factsOnce.Do(a.readFacts)
	n.Status.Capacity = a.facts.Capacity
	n.Status.Allocatable = a.facts.Capacity
	n.Status.Versions = a.facts.Versions
	n.Status.Tiers = a.facts.Tiers
	n.Status.Addresses = nodeAddresses()
	n.Status.AgentAddress = a.cfg.AgentAddress
	if p := a.servedPrefixes.Load(); p != nil {
		n.Status.ContainerPrefixes = *p
	}
	n.Status.LastHeartbeat = now
	if m := a.serviceMode.Load(); m != nil {
		n.Status.ServiceDataPath = *m
	}
	if f := a.cfg.CertificateExpiry; f != nil {
		n.Status.CertificateExpiry = f().UTC()
	}
	ready := types.Condition{Type: "Ready", Status: types.ConditionTrue, Reason: "AgentReady", Message: "the agent is running"}
	kept := n.Status.Conditions[:0]
	for _, c := range n.Status.Conditions {
		if c.Type == "Ready" {
			if c.Status == ready.Status {
				ready.LastTransitionTime = c.LastTransitionTime
			}
			continue
		}
		kept = append(kept, c)
	}
	if ready.LastTransitionTime.IsZero() {
		ready.LastTransitionTime = now
	}
	n.Status.Conditions = append(kept, ready)
	n.ResourceVersion = ""
	_, err = a.cfg.Client.UpdateStatus(ctx, n)
	return err
}

// nodeFacts is what a heartbeat reports that does not change while the
// agent runs: read once, not every heartbeat.
type nodeFacts struct {
	Capacity types.ResourceList
	Versions types.NodeVersions
	Tiers    []types.Isolation
}

func (a *Agent) readFacts() {
	a.facts.Capacity = types.ResourceList{CPU: types.MilliCPU(goruntime.NumCPU() * 1000), Memory: types.Bytes(memTotal())}
	a.facts.Versions = types.NodeVersions{Nexus: buildinfo.Version, Kernel: kernelRelease(), OS: osName()}
	a.facts.Tiers = []types.Isolation{types.IsolationContainer}
	if _, err := exec.LookPath("runsc"); err == nil {
		a.facts.Tiers = append(a.facts.Tiers, types.IsolationSandbox)
	}
}

// memTotal is the machine's memory in bytes (0 when /proc cannot say).
func memTotal() int64 {
	m, _ := proc.ReadSystemMemory()
	return m.Total
}

// nodeAddresses are the host name and the global unicast addresses of the
// machine's interfaces.
func nodeAddresses() []types.NodeAddress {
	var out []types.NodeAddress
	if h, err := os.Hostname(); err == nil {
		out = append(out, types.NodeAddress{Type: "Hostname", Address: h})
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || !ipn.IP.IsGlobalUnicast() {
			continue
		}
		out = append(out, types.NodeAddress{Type: "InternalIP", Address: ipn.IP.String()})
	}
	return out
}

func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return string(bytes.TrimRight(u.Release[:], "\x00"))
}

func osName() string {
	data, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return goruntime.GOOS
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return goruntime.GOOS
}
