package api

import (
	"context"
	"io"
	"sync"

	"nexus.dev/nexus/api/types"
)

// NodeConn is how the API server reaches one node's agent, for what only
// the agent has: an instance's container log and exec. The agent of
// `nexus up` registers itself in the same process; agents on other
// machines will register over their QUIC session with a server (until
// then their instances' logs and exec are 503: not connected).
type NodeConn interface {
	// Logs streams the log of inst's container as opts select. The
	// stream ends at the log's end unless opts.Follow, then when ctx ends
	// (or the instance leaves the node). An error wrapping
	// fs.ErrNotExist means the node has no log for inst (the API answers
	// 404); any other, that the node failed (502).
	Logs(ctx context.Context, inst *types.Instance, opts types.LogOptions) (io.ReadCloser, error)
	// Exec runs a process in inst's container with its stdio on s, and
	// returns its exit code once it has exited and its output is written;
	// the process is killed when ctx ends. A process that could not be
	// started gives an error and the code a shell would (127: command not
	// found, 126: not runnable; see types.ExecResult), any other failure
	// an error and -1.
	Exec(ctx context.Context, inst *types.Instance, opts types.ExecOptions, s types.ExecStreams) (int, error)
}

// Nodes are the node agents this server can reach, by node name.
type Nodes struct {
	mu    sync.Mutex
	conns map[string]NodeConn
}

// Register makes c the way to node (replacing an earlier one) until the
// returned function is called.
func (n *Nodes) Register(node string, c NodeConn) (unregister func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.conns == nil {
		n.conns = map[string]NodeConn{}
	}
	n.conns[node] = c
	return func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.conns[node] == c {
			delete(n.conns, node)
		}
	}
}

// Get returns the way to node, if its agent is connected.
func (n *Nodes) Get(node string) (NodeConn, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	c, ok := n.conns[node]
	return c, ok
}
