// Package up assembles `nexus up`: a control-plane server (its store, API,
// controllers and scheduler; package server) and, in the same process, the
// node agent with the OCI runtime, the image store, the exit recorder and
// the node's container networking, so that one command gives a working
// single-machine orchestrator. Tests start one with Start as the command
// does.
//
// Layout of the data directory, beside the server's (see package server):
//
//	agent/      the agent's files: instances/<uid>/ (each container's log)
//	            and the networking state (network.json)
//	runtime/    the runtime's container state
//	images/     the image store
package up

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"nexus.dev/nexus/agent"
	"nexus.dev/nexus/api"
	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/networking"
	"nexus.dev/nexus/runtime"
	"nexus.dev/nexus/runtime/exitrec"
	"nexus.dev/nexus/runtime/image"
	"nexus.dev/nexus/server"
)

// Config is what `nexus up` needs. Server.DataDir is required.
type Config struct {
	Server server.Config
	// NodeName is this machine's Node (default: the server's name).
	NodeName string
	// Labels are the Node's labels when it is first registered.
	Labels map[string]string
	// Bridge names the node's bridge (networking.DefaultBridge when empty).
	Bridge string
	// NetworkMode is how containers reach other nodes' containers
	// (networking.ModeAuto when empty).
	NetworkMode networking.Mode
	// ExitRecorderDir is where the exit recorder is pinned in bpffs
	// (exitrec.DefaultDir when empty).
	ExitRecorderDir string
	// HeartbeatInterval of the Node (agent.DefaultHeartbeatInterval when 0).
	HeartbeatInterval time.Duration
	// BuiltinExe is the program the built-in image is made from (default:
	// this process's executable).
	BuiltinExe string
	Logger     *slog.Logger
}

var _ api.NodeConn = (*agent.Agent)(nil)

// Node is a running `nexus up`: a server and an agent.
type Node struct {
	cfg    Config
	log    *slog.Logger
	srv    *server.Server
	net    *networking.Node
	rt     *runtime.Runtime
	rec    *exitrec.Recorder
	client *client.Client

	cancel     context.CancelFunc
	agentDone  chan struct{} // closed when the agent's Run returned
	unregister func()        // takes the agent out of the API's nodes
	done       chan struct{}
	errOnce    sync.Once
	err        error
	stopOnce   sync.Once
}

// Start starts the server, then the agent of this machine's node, and
// returns once the API answers and the agent runs.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Server.Logger = cfg.Logger
	srv, err := server.Start(ctx, cfg.Server)
	if err != nil {
		return nil, err
	}
	if cfg.NodeName == "" {
		cfg.NodeName = srv.Name()
	}
	u := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.NodeName), srv: srv, done: make(chan struct{})}
	defer func() {
		if err != nil {
			u.Stop()
		}
	}()
	if err := u.startAgent(ctx); err != nil {
		return nil, err
	}
	return u, nil
}

func (u *Node) startAgent(ctx context.Context) error {
	cfg := u.cfg
	dataDir := cfg.Server.DataDir
	agentDir := filepath.Join(dataDir, "agent")
	if err := os.MkdirAll(agentDir, 0o700); err != nil {
		return fmt.Errorf("agent directory: %w", err)
	}
	creds, err := u.srv.NodeCredentials(cfg.NodeName)
	if err != nil {
		return fmt.Errorf("the agent's credentials: %w", err)
	}
	if u.client, err = u.srv.LocalClient(creds, "nexus-agent"); err != nil {
		return fmt.Errorf("the agent's API client: %w", err)
	}

	// The exit recorder keeps a container's exit status while no agent
	// runs (after a crash or during an upgrade). Without BPF the agent
	// still works; it cannot tell how a container ended while it was away.
	rtCfg := runtime.Config{Root: filepath.Join(dataDir, "runtime"), Logger: u.log.With("component", "runtime")}
	if u.rec, err = exitrec.Open(cfg.ExitRecorderDir); err != nil {
		u.log.Warn("no exit recorder: a container that exits while nexus is down is restarted with its exit status unknown", "err", err)
	} else {
		rtCfg.Exits = u.rec
	}
	u.rt = runtime.New(rtCfg)
	imgs, err := image.Open(image.Config{Root: filepath.Join(dataDir, "images"), Logger: u.log.With("component", "images")})
	if err != nil {
		return err
	}

	a, err := agent.New(agent.Config{NodeName: cfg.NodeName, Dir: agentDir, Client: u.client, Runtime: u.rt, Images: imgs,
		OpenNetwork: func(_ context.Context, n *types.Node) (agent.Network, error) { return u.openNetwork(agentDir, n) },
		BuiltinExe:  cfg.BuiltinExe, Labels: cfg.Labels,
		HeartbeatInterval: cfg.HeartbeatInterval, Logger: cfg.Logger.With("component", "agent"),
		CertificateExpiry: func() time.Time { return creds.Leaf().NotAfter },
		// The instances' metrics are served on the API's /metrics.
		Metrics: u.srv.API().Registry()})
	if err != nil {
		return err
	}
	// The API reaches the agent in this process for logs and exec.
	u.unregister = u.srv.API().Nodes().Register(cfg.NodeName, a)
	actx, cancel := context.WithCancel(context.Background())
	u.cancel = cancel
	u.agentDone = make(chan struct{})
	go func() {
		defer close(u.agentDone)
		err := a.Run(actx)
		if err != nil && actx.Err() == nil {
			u.fail(fmt.Errorf("agent: %w", err))
		}
	}()
	go func() {
		select {
		case <-u.srv.Done():
			if err := u.srv.Err(); err != nil {
				u.fail(err)
			}
		case <-actx.Done():
		}
	}()
	return nil
}

// openNetwork opens the node's networking with the prefixes the server
// gave its Node (the agent calls it once they are there); the agent
// repairs what a previous run left (Network.Repair) before it attaches
// anything.
func (u *Node) openNetwork(agentDir string, node *types.Node) (agent.Network, error) {
	prefixes, cluster, err := networking.ParseNodeSpec(node.Spec.ContainerPrefixes, node.Spec.ClusterPrefixes)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", node.Name, err)
	}
	if u.net, err = networking.New(networking.Config{Prefixes: prefixes, Cluster: cluster, DataDir: agentDir,
		Bridge: u.cfg.Bridge, Mode: u.cfg.NetworkMode, Logger: u.log.With("component", "networking")}); err != nil {
		return nil, err
	}
	u.log.Info("container networking", "bridge", cmp.Or(u.cfg.Bridge, networking.DefaultBridge),
		"ipv6", prefixes.IPv6.String(), "ipv4", prefixes.IPv4.String())
	return nodeNetwork{u.net}, nil
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
	a, err := w.n.Attach(ctx, networking.ContainerRef{ID: id, NetNSPath: netns, Ports: pub})
	if err != nil {
		return nil, err
	}
	return a.Addresses(), nil
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

func (u *Node) fail(err error) {
	u.errOnce.Do(func() {
		u.err = err
		u.log.Error("stopping", "err", err)
	})
	go u.Stop()
}

// Server is the control-plane server.
func (u *Node) Server() *server.Server { return u.srv }

// NodeName is this machine's node.
func (u *Node) NodeName() string { return u.cfg.NodeName }

// ExitsRecorded says whether the eBPF exit recorder runs, so a container
// that exits while nexus is down has its exit status known.
func (u *Node) ExitsRecorded() bool { return u.rec != nil }

// Done is closed once the node has stopped.
func (u *Node) Done() <-chan struct{} { return u.done }

// Err is why the node stopped on its own (nil after Stop).
func (u *Node) Err() error {
	select {
	case <-u.done:
		return u.err
	default:
		return nil
	}
}

// Stop stops the agent (its containers keep running, for the next start
// to adopt) and the server, and waits until both have.
func (u *Node) Stop() {
	u.stopOnce.Do(func() {
		if u.cancel != nil {
			u.cancel()
		}
		if u.agentDone != nil {
			<-u.agentDone
		}
		if u.unregister != nil {
			u.unregister()
		}
		if u.client != nil {
			u.client.Close()
		}
		if u.net != nil {
			u.net.Close()
		}
		if u.rt != nil {
			u.rt.Close()
		}
		u.srv.Stop()
		if u.rec != nil {
			u.rec.Close()
		}
		close(u.done)
	})
	<-u.done
}
