// Package embed assembles a node agent: the OCI runtime with the eBPF exit
// recorder, the image store, the node's container networking and the
// agent itself (package agent), started with Start from a config struct, as
// etcd's embed.StartEtcd starts a member. `nexus up` runs one beside its
// server and `nexus agent` runs one alone; both, and tests, share this
// assembly, so a node works the same whichever command runs it.
//
// Layout of the data directory:
//
//	agent/      the agent's files: instances/<uid>/ (each container's log)
//	            and the networking state (network.json)
//	runtime/    the runtime's container state
//	images/     the image store
package embed

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"nexus.dev/nexus/agent"
	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/lifetime"
	"nexus.dev/nexus/networking"
	"nexus.dev/nexus/networking/lb"
	"nexus.dev/nexus/runtime"
	"nexus.dev/nexus/runtime/exitrec"
	"nexus.dev/nexus/runtime/image"
)

// Config is what an agent needs. NodeName, DataDir and Client are
// required.
type Config struct {
	// NodeName is this machine's Node; Client must act as it.
	NodeName string
	// DataDir holds the agent's, the runtime's and the images' files.
	DataDir string
	Client  *client.Client
	// Bridge names the node's bridge (networking.DefaultBridge when empty).
	Bridge string
	// NetworkMode is how containers reach other nodes' containers
	// (networking.ModeAuto when empty).
	NetworkMode networking.Mode
	// ServiceDataPath is how the node balances Service traffic (lb.Auto
	// when empty: eBPF when its hooks load, nftables otherwise).
	ServiceDataPath lb.Choice
	// ExitRecorderDir is where the exit recorder is pinned in bpffs
	// (exitrec.DefaultDir when empty).
	ExitRecorderDir string
	// Labels are the Node's labels when it is first registered.
	Labels map[string]string
	// HeartbeatInterval of the Node (agent.DefaultHeartbeatInterval when 0).
	HeartbeatInterval time.Duration
	// AgentAddress is published in the Node's status: where servers reach
	// the agent for logs and exec ("" when they reach it in-process).
	AgentAddress string
	// CertificateExpiry, when set, says when the node's certificate
	// expires, for the Node's status (nexus nodes shows it).
	CertificateExpiry func() time.Time
	// BuiltinExe is the program the built-in image is made from (default:
	// this process's executable).
	BuiltinExe string
	// Metrics, when set, gets the per-instance metrics.
	Metrics prometheus.Registerer
	Logger  *slog.Logger
}

// Agent is a running node agent with its runtime, images and networking.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	agent *agent.Agent
	rt    *runtime.Runtime
	rec   *exitrec.Recorder
	net   *networking.Node
	svc   *serviceNetwork

	cancel  context.CancelFunc
	runDone chan struct{} // closed when the agent's Run returned
	life    *lifetime.Lifetime
}

// Start opens the runtime, the exit recorder and the image store,
// registers the Node (waiting for an API server to answer), and runs the
// agent until Stop; the agent opens the node's networking once the servers
// have given the Node its prefixes. It returns once the agent runs.
func Start(ctx context.Context, cfg Config) (_ *Agent, err error) {
	switch {
	case cfg.NodeName == "" || cfg.DataDir == "":
		return nil, errors.New("agent: a node name and a data directory are required")
	case cfg.Client == nil:
		return nil, errors.New("agent: an API client is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &Agent{cfg: cfg, log: cfg.Logger.With("node", cfg.NodeName)}
	a.life = lifetime.New(a.shutdown)
	defer func() {
		if err != nil {
			a.Stop()
		}
	}()
	agentDir := filepath.Join(cfg.DataDir, "agent")
	if err := os.MkdirAll(agentDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent directory: %w", err)
	}
	// The exit recorder keeps a container's exit status while no agent
	// runs (after a crash or during an upgrade). Without BPF the agent
	// still works; it cannot tell how a container ended while it was away.
	rtCfg := runtime.Config{Root: filepath.Join(cfg.DataDir, "runtime"), Logger: a.log.With("component", "runtime")}
	if a.rec, err = exitrec.Open(cfg.ExitRecorderDir); err != nil {
		a.log.Warn("no exit recorder: a container that exits while nexus is down is restarted with its exit status unknown", "err", err)
	} else {
		rtCfg.Exits = a.rec
	}
	a.rt = runtime.New(rtCfg)
	imgs, err := image.Open(image.Config{Root: filepath.Join(cfg.DataDir, "images"), Logger: a.log.With("component", "images")})
	if err != nil {
		return nil, err
	}
	if a.agent, err = agent.New(agent.Config{NodeName: cfg.NodeName, Dir: agentDir, Client: cfg.Client, Runtime: a.rt, Images: imgs,
		OpenNetwork: func(_ context.Context, n *types.Node) (agent.Network, error) { return a.openNetwork(agentDir, n) },
		BuiltinExe:  cfg.BuiltinExe, Labels: cfg.Labels, HeartbeatInterval: cfg.HeartbeatInterval,
		AgentAddress: cfg.AgentAddress, CertificateExpiry: cfg.CertificateExpiry, Metrics: cfg.Metrics, Logger: cfg.Logger.With("component", "agent")}); err != nil {
		return nil, err
	}
	if err := a.register(ctx); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.runDone = make(chan struct{})
	go func() {
		defer close(a.runDone)
		if err := a.agent.Run(rctx); err != nil && rctx.Err() == nil {
			a.fail(fmt.Errorf("agent: %w", err))
		}
	}()
	return a, nil
}

// register registers the Node, waiting while no API server answers (a
// node that starts before its servers, or while they restart).
func (a *Agent) register(ctx context.Context) error {
	for {
		err := a.agent.Register(ctx)
		if err == nil || !client.IsConnectionError(err) {
			return err
		}
		a.log.Warn("no API server answers: registering the node again in a second", "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}

// openNetwork opens the node's networking with the prefixes the servers
// gave its Node (the agent calls it once they are there); the agent
// repairs what a previous run left (Network.Repair) before it attaches
// anything.
func (a *Agent) openNetwork(agentDir string, node *types.Node) (agent.Network, error) {
	prefixes, cluster, err := networking.ParseNodeSpec(node.Spec.ContainerPrefixes, node.Spec.ClusterPrefixes)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", node.Name, err)
	}
	if a.net, err = networking.New(networking.Config{Prefixes: prefixes, Cluster: cluster, DataDir: agentDir,
		Bridge: a.cfg.Bridge, Mode: a.cfg.NetworkMode, Logger: a.log.With("component", "networking")}); err != nil {
		return nil, err
	}
	a.log.Info("container networking", "bridge", cmp.Or(a.cfg.Bridge, networking.DefaultBridge),
		"ipv6", prefixes.IPv6.String(), "ipv4", prefixes.IPv4.String())
	if a.svc, err = openServices(a.net, prefixes, a.cfg.ServiceDataPath, a.log.With("component", "services")); err != nil {
		return nil, err
	}
	return a.svc, nil
}

// nodeNetwork adapts a networking.Node to the agent.
type nodeNetwork struct{ n *networking.Node }

func (w nodeNetwork) Attach(ctx context.Context, id, netns string, ports []types.Port) ([]string, error) {
	var pub []networking.Port
	for _, p := range ports {
		if p.HostPort == 0 {
			continue
		}
		pub = append(pub, networking.Port{Port: int(p.Port), HostPort: int(p.HostPort), Protocol: networking.Protocol(p.Protocol)})
	}
	at, err := w.n.Attach(ctx, networking.ContainerRef{ID: id, NetNSPath: netns, Ports: pub})
	if err != nil {
		return nil, err
	}
	return at.Addresses(), nil
}

func (w nodeNetwork) Detach(ctx context.Context, id string) error { return w.n.Detach(ctx, id) }

// SetPeers routes to the other nodes' containers, through their
// addresses.
func (w nodeNetwork) SetPeers(ctx context.Context, nodes []*types.Node) error {
	var peers []networking.Peer
	var errs []error
	for _, n := range nodes {
		var addrs []string
		for _, a := range n.Status.Addresses {
			if a.Type == "InternalIP" || a.Type == "ExternalIP" {
				addrs = append(addrs, a.Address)
			}
		}
		p, err := networking.ParsePeer(n.Name, addrs, n.Spec.ContainerPrefixes)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		peers = append(peers, p)
	}
	return errors.Join(append(errs, w.n.SetPeers(ctx, peers))...)
}

// Repair keeps the running containers with the ports they published.
func (w nodeNetwork) Repair(ctx context.Context, running map[string]string) error {
	attached := w.n.Attachments()
	keep := make([]networking.ContainerRef, 0, len(running))
	for id, netns := range running {
		keep = append(keep, networking.ContainerRef{ID: id, NetNSPath: netns, Ports: attached[id].Ports})
	}
	_, err := w.n.Repair(ctx, keep)
	return err
}

func (a *Agent) fail(err error) { a.life.Fail(a.log, "agent stopping", err) }

// Agent is the node agent (the API reaches it for logs and exec).
func (a *Agent) Agent() *agent.Agent { return a.agent }

// ExitsRecorded says whether the eBPF exit recorder runs, so a container
// that exits while nexus is down has its exit status known.
func (a *Agent) ExitsRecorded() bool { return a.rec != nil }

// Done is closed once the agent has stopped.
func (a *Agent) Done() <-chan struct{} { return a.life.Done() }

// Err is why the agent stopped on its own (nil after Stop).
func (a *Agent) Err() error { return a.life.Err() }

// Stop stops the agent (its containers keep running, for the next start
// to adopt) and closes what it opened, and waits until it has.
func (a *Agent) Stop() { a.life.Stop() }

func (a *Agent) shutdown() {
	if a.cancel != nil {
		a.cancel()
		<-a.runDone
	}
	if a.svc != nil {
		a.svc.close()
	}
	if a.net != nil {
		a.net.Close()
	}
	if a.rt != nil {
		a.rt.Close()
	}
	if a.rec != nil {
		a.rec.Close()
	}
}
