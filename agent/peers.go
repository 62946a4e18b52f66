package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
)

// PeerNetwork is implemented by a Network that routes to other nodes'
// containers (package networking's, through its adapter).
type PeerNetwork interface {
	// SetPeers makes the routes to other nodes' containers match peers:
	// every other Node that has container prefixes. It is called when
	// one of them comes, goes or changes its prefixes or addresses, and
	// again every peerResync so that what was lost comes back. A peer it
	// cannot route is its error; it routes the others all the same.
	SetPeers(ctx context.Context, peers []*types.Node) error
}

// peerResync is how often the peers are programmed again without a
// change: a route someone deleted comes back within it.
const peerResync = 30 * time.Second

// nodeWatch follows every Node: it hands this node's own Node to the
// agent once the server has given it container prefixes (OpenNetwork
// waits for that), and the other Nodes to the network's SetPeers.
type nodeWatch struct {
	a    *Agent
	own  chan *types.Node // gets this node's Node once it has prefixes
	kick chan struct{}

	mu      sync.Mutex
	nodes   map[string]*types.Node
	sentOwn bool
}

func newNodeWatch(a *Agent) *nodeWatch {
	return &nodeWatch{a: a, own: make(chan *types.Node, 1), kick: make(chan struct{}, 1), nodes: map[string]*types.Node{}}
}

// follow keeps the Nodes until ctx ends (see followAlways): the routes
// stay as they are while the server is away.
func (w *nodeWatch) follow(ctx context.Context) {
	nodes, _ := types.LookupResource("nodes")
	w.a.followAlways(ctx, nodes, func(objs []types.Object) {
		w.mu.Lock()
		w.nodes = map[string]*types.Node{}
		for _, o := range objs {
			n := o.(*types.Node)
			w.nodes[n.Name] = n
		}
		w.mu.Unlock()
		w.changed()
	}, func(ev client.Event) {
		n, ok := ev.Object.(*types.Node)
		if !ok {
			return
		}
		w.mu.Lock()
		if ev.Type == client.Deleted {
			delete(w.nodes, n.Name)
		} else {
			w.nodes[n.Name] = n
		}
		w.mu.Unlock()
		w.changed()
	})
}

// followAlways follows every object of res in the cluster until ctx
// ends: replace gets them all at the start and apply each change. A
// Follow that fails (a server that is away) is started again after a
// backoff, 100 ms doubling to 10 s and back to 100 ms once a list has
// succeeded, and replace gets the objects anew: whatever the caller built
// from them stays as it was meanwhile.
func (a *Agent) followAlways(ctx context.Context, res *types.Resource, replace func([]types.Object), apply func(client.Event)) {
	const initialBackoff = 100 * time.Millisecond
	backoff := initialBackoff
	for ctx.Err() == nil {
		listed := false
		err := a.cfg.Client.Follow(ctx, res, "", client.FollowOptions{
			Initial: func(objs []types.Object) error {
				listed = true
				replace(objs)
				return nil
			},
		}, func(ev client.Event) error {
			apply(ev)
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		if listed {
			backoff = initialBackoff
		}
		a.log.Warn("following the "+res.Plural+" failed; starting again", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// changed passes this node's Node on once it has prefixes, and wakes the
// peer programming.
func (w *nodeWatch) changed() {
	w.mu.Lock()
	own := w.nodes[w.a.cfg.NodeName]
	if own != nil && !w.sentOwn && len(own.Spec.ContainerPrefixes) > 0 {
		w.sentOwn = true
		w.own <- own
	}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// peers returns the other Nodes that have prefixes, by name, and a key
// that changes when what routing depends on does (not with heartbeats).
func (w *nodeWatch) peers() ([]*types.Node, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*types.Node
	for name, n := range w.nodes {
		if name != w.a.cfg.NodeName && len(n.Spec.ContainerPrefixes) > 0 {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b *types.Node) int { return strings.Compare(a.Name, b.Name) })
	var key strings.Builder
	for _, n := range out {
		fmt.Fprintf(&key, "%s %v %v\n", n.Name, n.Spec.ContainerPrefixes, n.Status.Addresses)
	}
	return out, key.String()
}

// program hands the peers to net whenever they change, and every
// peerResync, until ctx ends.
func (w *nodeWatch) program(ctx context.Context, net PeerNetwork) {
	t := time.NewTicker(peerResync)
	defer t.Stop()
	var last string
	var failed bool
	for {
		resync := false
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		case <-t.C:
			resync = true
		}
		peers, key := w.peers()
		if key == last && !failed && !resync {
			continue
		}
		err := net.SetPeers(ctx, peers)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// A peer that cannot be routed (yet) is tried again at the
			// next change or resync; the others are routed.
			w.a.log.Warn("route to the other nodes' containers", "err", err)
		}
		last, failed = key, err != nil
	}
}

// openNetwork returns the node's networking: Config.Network, or the one
// Config.OpenNetwork opens once the server has given this node its
// prefixes (waiting for them; nil, nil when ctx ends first).
func (a *Agent) openNetwork(ctx context.Context, w *nodeWatch) (Network, error) {
	if a.cfg.OpenNetwork == nil {
		return a.cfg.Network, nil
	}
	var own *types.Node
	select {
	case own = <-w.own:
	case <-ctx.Done():
		return nil, nil
	case <-time.After(time.Second):
		a.log.Info("waiting for the server to give this node its container prefixes (spec.containerPrefixes)")
		select {
		case own = <-w.own:
		case <-ctx.Done():
			return nil, nil
		}
	}
	n, err := a.cfg.OpenNetwork(ctx, own)
	if err != nil {
		return nil, fmt.Errorf("agent: open the node's networking with prefixes %v: %w", own.Spec.ContainerPrefixes, err)
	}
	if n == nil {
		return nil, errors.New("agent: OpenNetwork returned no network")
	}
	p := slices.Clone(own.Spec.ContainerPrefixes)
	a.servedPrefixes.Store(&p)
	return n, nil
}
