package raftnode

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/transport"
)

// ALPN is the transport service raft members speak to each other.
const ALPN = "nexus-raft"

// StateMachine is what the log replicates. Apply is called in log order, from
// one goroutine, for every committed entry with data; Snapshot and Restore
// are called from that same goroutine between Applies.
type StateMachine interface {
	// Apply applies a committed entry's data at index; results go back to
	// the proposer (if local).
	Apply(index uint64, data []byte) any
	// AppliedIndex is persisted by the state machine atomically with its
	// data; at restart entries up to it are not applied again.
	AppliedIndex() uint64
	// Snapshot writes a consistent snapshot of the state at AppliedIndex.
	Snapshot(w io.Writer) error
	// Restore replaces the state with a snapshot Snapshot wrote.
	Restore(r io.Reader) error
}

// BatchEntry is one committed entry handed to ApplyBatch.
type BatchEntry struct {
	Index uint64
	Data  []byte
}

// BatchStateMachine is a StateMachine that can apply several consecutive
// entries as one unit (one durable commit). The node hands it all the
// normal entries of a Ready at once, which is what lets one fsync serve
// many clients under load; results come back in order.
type BatchStateMachine interface {
	StateMachine
	ApplyBatch(entries []BatchEntry) []any
}

// Peer is a member of the cluster: its raft ID, its server name (the name in
// its identity) and the transport address of its raft service.
type Peer struct {
	ID   uint64 `json:"id"`
	Name string `json:"name"`
	Addr string `json:"addr"`
}

// Member is a Peer as the current configuration knows it.
type Member struct {
	Peer
	Learner bool `json:"learner,omitempty"`
}

// Transport is how a member reaches its peers.
type Transport struct {
	// Dialer carries the outgoing raft streams; it must present a server
	// identity of Cluster.
	Dialer *transport.Dialer
	// Cluster is the trust domain whose servers are accepted as peers.
	Cluster string
}

// Config configures Start.
type Config struct {
	// ID is this member's raft ID, unique in the cluster and never reused.
	ID   uint64
	Name string
	// DataDir holds the WAL ("wal/") and snapshots ("snap/").
	DataDir string
	// Peers are the members of a new cluster (including this one, the same
	// list on every member), or, with Join, where to find the existing
	// members. Ignored once DataDir holds a log.
	Peers []Peer
	// Join starts a member that an existing cluster has already added
	// (AddMember or AddLearner) instead of bootstrapping a new cluster.
	Join bool

	Transport    Transport
	StateMachine StateMachine

	// SnapshotEvery takes a snapshot after this many applied entries
	// (10,000). KeepEntries is how many entries before a snapshot the log
	// keeps for followers that are only a little behind (5,000, capped at
	// SnapshotEvery).
	SnapshotEvery uint64
	KeepEntries   uint64

	// TickInterval is raft's clock (100 ms); ElectionTicks (10) and
	// HeartbeatTicks (1) are counted in it, as in etcd.
	TickInterval   time.Duration
	ElectionTicks  int
	HeartbeatTicks int
	// MaxSizePerMsg bounds the entries in one append message (1 MiB);
	// MaxInflightMsgs bounds the append messages in flight to one
	// follower (256).
	MaxSizePerMsg   uint64
	MaxInflightMsgs int
	// LeaderWait is how long Propose, ReadIndex and membership changes
	// wait for a leader before failing with ErrNoLeader (3 election
	// timeouts).
	LeaderWait time.Duration
	// RequestTimeout bounds how long Propose waits for its entry to be
	// applied once raft took it (etcd's 5 s plus two election timeouts): a
	// proposal forwarded to a leader that failed right then is lost, and
	// its caller is told instead of waiting forever.
	RequestTimeout time.Duration
	// PeerQueue bounds the messages waiting to be sent to one peer (4096);
	// when it is full messages are dropped and raft told the peer is
	// unreachable.
	PeerQueue int
	// WALSegmentSize is the preallocated size of a WAL segment (64 MiB).
	WALSegmentSize int64

	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.ID == 0 {
		return errors.New("raft member ID must not be 0")
	}
	if c.DataDir == "" {
		return errors.New("raft member needs a DataDir")
	}
	if c.StateMachine == nil {
		return errors.New("raft member needs a StateMachine")
	}
	if c.Transport.Dialer == nil || c.Transport.Cluster == "" {
		return errors.New("raft member needs a Transport with a Dialer and the Cluster name")
	}
	for _, p := range c.Peers {
		if p.ID == 0 || p.Addr == "" {
			return fmt.Errorf("peer %+v needs an ID and an Addr", p)
		}
	}
	if c.SnapshotEvery == 0 {
		c.SnapshotEvery = 10000
	}
	if c.KeepEntries == 0 {
		c.KeepEntries = 5000
	}
	c.KeepEntries = min(c.KeepEntries, c.SnapshotEvery)
	if c.TickInterval <= 0 {
		c.TickInterval = 100 * time.Millisecond
	}
	if c.ElectionTicks <= 0 {
		c.ElectionTicks = 10
	}
	if c.HeartbeatTicks <= 0 {
		c.HeartbeatTicks = 1
	}
	if c.ElectionTicks <= c.HeartbeatTicks {
		return fmt.Errorf("ElectionTicks (%d) must be larger than HeartbeatTicks (%d)", c.ElectionTicks, c.HeartbeatTicks)
	}
	if c.MaxSizePerMsg == 0 {
		c.MaxSizePerMsg = 1 << 20
	}
	if c.MaxInflightMsgs <= 0 {
		c.MaxInflightMsgs = 256
	}
	if c.LeaderWait <= 0 {
		c.LeaderWait = 3 * time.Duration(c.ElectionTicks) * c.TickInterval
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 5*time.Second + 2*time.Duration(c.ElectionTicks)*c.TickInterval
	}
	if c.PeerQueue <= 0 {
		c.PeerQueue = 4096
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// AuthorizePeer returns a check that accepts only server identities of
// cluster: what a listener's Authorize should apply to ALPN, and what the
// raft service and the dialer check again.
func AuthorizePeer(cluster string) func(identity.ID) error {
	return func(id identity.ID) error {
		if id.Cluster != cluster || id.Kind != identity.KindServer {
			return fmt.Errorf("%w: %s is not a server of cluster %q, only servers may speak %s", transport.ErrNotAuthorized, id, cluster, ALPN)
		}
		return nil
	}
}
