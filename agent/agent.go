package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/prometheus/client_golang/prometheus"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/netnsutil"
	"nexus.dev/nexus/runtime"
	"nexus.dev/nexus/runtime/image"
)

// Network connects containers to the node's network (package networking
// implements it).
type Network interface {
	// Attach connects the container id, whose network namespace is the
	// file netns, publishes its host ports and returns its addresses.
	Attach(ctx context.Context, id, netns string, ports []types.Port) ([]string, error)
	// Detach undoes Attach; detaching what is not attached is no error.
	Detach(ctx context.Context, id string) error
	// Repair is called once when the agent starts, before any Attach,
	// with the containers that still run (by ID, with their network
	// namespaces): they keep their addresses and have what is missing
	// made again; whatever else a previous agent attached is released.
	Repair(ctx context.Context, running map[string]string) error
}

// Config configures an Agent. NodeName, Dir, Client, Runtime and Images
// are required.
type Config struct {
	// NodeName is the Node this agent is; Client must act as it.
	NodeName string
	// Dir holds the agent's files: instances/<uid>/ with the container's
	// output pipes and log (logs.go).
	Dir     string
	Client  *client.Client
	Runtime *runtime.Runtime
	Images  *image.Store
	// Network, when set, attaches every container; without it a container
	// has a network namespace of its own with only loopback.
	Network Network
	// OpenNetwork, when set instead of Network, opens the node's
	// networking once the server has given the Node its container
	// prefixes (spec.containerPrefixes and spec.clusterPrefixes): Run
	// waits for them after registering, before it starts any container.
	OpenNetwork func(ctx context.Context, node *types.Node) (Network, error)
	// BuiltinExe is the nexus binary the built-in image is made from
	// (default: this process's executable).
	BuiltinExe string
	// Labels are the Node's labels when the agent creates it.
	Labels map[string]string
	// HeartbeatInterval between Node status updates (default 10 s).
	HeartbeatInterval time.Duration
	// AgentAddress, when set, is published in the Node's status
	// (status.agentAddress): where servers reach this agent for logs and
	// exec.
	AgentAddress string
	// LeaseInterval between renewals of the node's heartbeat lease
	// (default 1 s; lease.go).
	LeaseInterval time.Duration
	// CertificateExpiry, when set, says when the node's certificate
	// expires, for the Node's status (nexus nodes shows it).
	CertificateExpiry func() time.Time
	// MaxLogBytes is the size at which a container's log is rotated
	// (default DefaultMaxLogBytes), and MaxLogFiles how many files of it
	// are kept, the current one included (default DefaultMaxLogFiles).
	MaxLogBytes int64
	MaxLogFiles int
	// StatsInterval between reads of the running containers' cgroup
	// counters, for the Instances' status.resources and Metrics (default
	// DefaultStatsInterval).
	StatsInterval time.Duration
	// Metrics, when set, gets the per-instance metrics (nexus_instance_*)
	// while Run runs.
	Metrics prometheus.Registerer
	// Pull is passed to image pulls (registry credentials, transport).
	Pull   image.PullOptions
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultLeaseInterval     = time.Second
	// containerPrefix starts the ID of every container the agent makes.
	containerPrefix = "nx-"
	// Annotations the agent puts in each container's spec, so that a
	// restarted agent knows which Instance a container is.
	annotationInstance = "nexus.dev/instance" // namespace/name
	annotationUID      = "nexus.dev/uid"
)

// Agent runs the Instances bound to one node.
type Agent struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex
	sups map[string]*supervisor // by instance UID
	wg   sync.WaitGroup

	factsOnce sync.Once
	facts     nodeFacts

	// net is Config.Network or what Config.OpenNetwork opened; set by
	// Run before any container starts.
	net Network
	// servedPrefixes are the prefixes the network was opened with, for
	// the Node's status.
	servedPrefixes atomic.Pointer[[]string]
	// serviceMode is the Services' data path, for the Node's status.
	serviceMode atomic.Pointer[string]

	stats *usageStats

	// synced is closed once Run has taken over the instances bound to
	// this node (adopting their containers), so Instance does not answer
	// "not here" for one it is about to adopt.
	synced     chan struct{}
	syncedOnce sync.Once
}

// New checks cfg and returns an Agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	switch {
	case cfg.NodeName == "":
		return nil, errors.New("agent: no node name")
	case cfg.Dir == "":
		return nil, errors.New("agent: no directory for its files")
	case cfg.Client == nil || cfg.Runtime == nil || cfg.Images == nil:
		return nil, errors.New("agent: needs an API client, a runtime and an image store")
	case cfg.Network != nil && cfg.OpenNetwork != nil:
		return nil, errors.New("agent: Network and OpenNetwork are both set: give one")
	}
	if why := types.ValidateName(cfg.NodeName); why != "" {
		return nil, fmt.Errorf("agent: node name %q %s", cfg.NodeName, why)
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.LeaseInterval <= 0 {
		cfg.LeaseInterval = DefaultLeaseInterval
	}
	if cfg.MaxLogBytes <= 0 {
		cfg.MaxLogBytes = DefaultMaxLogBytes
	}
	if cfg.MaxLogFiles <= 0 {
		cfg.MaxLogFiles = DefaultMaxLogFiles
	}
	if cfg.StatsInterval <= 0 {
		cfg.StatsInterval = DefaultStatsInterval
	}
	if cfg.BuiltinExe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("agent: find this program for the built-in image: %w", err)
		}
		cfg.BuiltinExe = exe
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "instances"), 0o700); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a := &Agent{cfg: cfg, log: cfg.Logger.With("node", cfg.NodeName), sups: map[string]*supervisor{}, synced: make(chan struct{})}
	a.stats = newUsageStats(a, cfg.StatsInterval)
	return a, nil
}

// Run registers the node, adopts the containers a previous agent left,
// and runs the node's Instances until ctx ends. Containers keep running
// when it returns: only an Instance's deletion stops its container.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.Register(ctx); err != nil {
		return err
	}
	// Returning early with an error must stop the heartbeat and the
	// supervisors too, or Run would wait for them for ever.
	ctx, cancel := context.WithCancel(ctx)
	stopStats, err := a.stats.start(ctx)
	if err != nil {
		cancel()
		return err
	}
	defer stopStats()
	hbDone := make(chan struct{})
	go func() { defer close(hbDone); a.heartbeat(ctx) }()
	defer func() {
		<-hbDone
		a.wg.Wait()
	}()
	defer cancel()
	// The Nodes are followed for this node's prefixes and for the routes
	// to the other nodes' containers.
	nw := newNodeWatch(a)
	wctx, stopWatch := context.WithCancel(ctx)
	var watchers sync.WaitGroup
	defer func() { stopWatch(); watchers.Wait() }()
	if a.cfg.OpenNetwork != nil || isPeerNetwork(a.cfg.Network) {
		watchers.Go(func() { nw.follow(wctx) })
	}
	if a.net, err = a.openNetwork(ctx, nw); err != nil || ctx.Err() != nil {
		return err
	}
	if sn, ok := a.net.(ServiceNetwork); ok {
		mode := sn.ServiceMode()
		a.serviceMode.Store(&mode)
	}
	if a.cfg.OpenNetwork != nil {
		// The status shows the prefixes and the service data path now,
		// not at the next heartbeat.
		if err := a.publishNode(ctx); err != nil {
			a.log.Warn("node status", "err", err)
		}
	}
	if pn, ok := a.net.(PeerNetwork); ok {
		watchers.Go(func() { nw.program(wctx, pn) })
	}
	left, running, err := a.leftContainers()
	if err != nil {
		return err
	}
	if n := a.net; n != nil {
		// A container that cannot be repaired is attached again by its
		// supervisor (or restarted); the others are in order.
		if err := n.Repair(ctx, running); err != nil {
			a.log.Warn("repair the node's container networking", "err", err)
		}
	}
	// Services once the node's networking is set up (Repair does that).
	if sn, ok := a.net.(ServiceNetwork); ok {
		sw := newServiceWatch(a)
		watchers.Go(func() { sw.run(wctx, sn) })
	}
	instances, _ := types.LookupResource("instances")
	err = a.cfg.Client.Follow(ctx, instances, "", client.FollowOptions{
		FieldSelector: "spec.nodeName=" + a.cfg.NodeName,
		Initial: func(objs []types.Object) error {
			for _, o := range objs {
				a.observe(ctx, o.(*types.Instance), left)
			}
			// Containers whose Instance is gone, or bound elsewhere now.
			for uid, id := range left {
				if a.supervisor(uid) == nil {
					a.log.Info("removing a container whose instance is gone", "container", id)
					a.removeOrphan(context.WithoutCancel(ctx), id)
				}
			}
			a.syncedOnce.Do(func() { close(a.synced) })
			return nil
		},
		OnResume: func(err error) { a.log.Info("instance watch resumed", "after", err) },
	}, func(ev client.Event) error {
		inst, ok := ev.Object.(*types.Instance)
		if !ok {
			return nil
		}
		if ev.Type == client.Deleted {
			a.forget(inst.UID)
			return nil
		}
		a.observe(ctx, inst, nil)
		return nil
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func isPeerNetwork(n Network) bool {
	_, ok := n.(PeerNetwork)
	return ok
}

func (a *Agent) supervisor(uid string) *supervisor {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sups[uid]
}

// Instance is the Instance namespace/name bound to this node, as the
// agent last saw it: how the agent's endpoint for the API servers
// (api.ServeNode) finds what a log or exec names. Until Run has taken over
// the node's instances (at start, and after a restart) it waits for that,
// or for ctx.
func (a *Agent) Instance(ctx context.Context, namespace, name string) (*types.Instance, bool) {
	select {
	case <-a.synced:
	case <-ctx.Done():
		return nil, false
	}
	for _, s := range a.supervisors() {
		s.mu.Lock()
		inst := s.inst
		s.mu.Unlock()
		if inst.Namespace == namespace && inst.Name == name {
			return inst, true
		}
	}
	return nil, false
}

// observe hands an Instance's latest version to its supervisor, starting
// one (adopting a container left by an earlier agent when there is one).
func (a *Agent) observe(ctx context.Context, inst *types.Instance, left map[string]string) {
	if inst.Spec.NodeName != a.cfg.NodeName {
		a.forget(inst.UID)
		return
	}
	a.mu.Lock()
	s := a.sups[inst.UID]
	if s == nil {
		_, adopt := left[inst.UID]
		s = newSupervisor(a, inst, adopt)
		a.sups[inst.UID] = s
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			s.run(ctx)
			a.mu.Lock()
			if a.sups[inst.UID] == s {
				delete(a.sups, inst.UID)
			}
			a.mu.Unlock()
		}()
	}
	a.mu.Unlock()
	s.update(inst)
}

// forget stops and removes the container of an Instance that was deleted
// or bound elsewhere.
func (a *Agent) forget(uid string) {
	if s := a.supervisor(uid); s != nil {
		s.remove()
	}
}

// leftContainers returns the containers of this agent that exist now, by
// Instance UID, and the network namespaces of those that run, by ID.
func (a *Agent) leftContainers() (left, running map[string]string, err error) {
	states, err := a.cfg.Runtime.List()
	if err != nil {
		return nil, nil, fmt.Errorf("agent: list the runtime's containers: %w", err)
	}
	left, running = map[string]string{}, map[string]string{}
	for _, st := range states {
		if !strings.HasPrefix(st.ID, containerPrefix) {
			continue
		}
		uid := st.Annotations[annotationUID]
		if uid == "" {
			uid = strings.TrimPrefix(st.ID, containerPrefix)
		}
		left[uid] = st.ID
		if st.Status == specs.StateRunning && st.Pid > 0 {
			running[st.ID] = netnsutil.ProcPath(st.Pid)
		}
	}
	return left, running, nil
}

// removeOrphan stops and removes a container no Instance wants.
func (a *Agent) removeOrphan(ctx context.Context, id string) {
	uid := strings.TrimPrefix(id, containerPrefix)
	c := &container{a: a, id: id, dir: a.instanceDir(uid)}
	if err := c.stop(ctx, 10*time.Second); err != nil {
		a.log.Warn("stop an orphaned container", "container", id, "err", err)
	}
	if err := c.remove(ctx); err != nil {
		a.log.Warn("remove an orphaned container", "container", id, "err", err)
	}
	_ = os.RemoveAll(c.dir)
}

func (a *Agent) instanceDir(uid string) string {
	return filepath.Join(a.cfg.Dir, "instances", uid)
}
