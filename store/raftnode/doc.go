// Package raftnode runs one member of the replicated store: the raft
// algorithm of go.etcd.io/raft/v3 (the engine inside etcd) plus the I/O it
// leaves to its caller, as etcd's server and raftexample do.
//
// raft is a pure state machine: it takes messages and ticks and hands back
// Ready batches. This package persists each batch (entries and HardState in
// one write-ahead-log frame with one fsync, so concurrent proposals share
// fsyncs), sends its messages to peers over the transport (a long-lived
// QUIC stream per peer fed by a bounded queue, so a slow peer never blocks
// the loop), and applies committed entries to a StateMachine, returning each
// result to the proposer waiting on this member.
//
// Snapshots are files of the state machine's bytes plus the raft metadata
// and the member list; after one is taken the in-memory log keeps only the
// last few entries and the WAL segments it covers are deleted. A follower
// too far behind, or a new learner, receives the leader's snapshot file
// streamed in chunks.
//
// Peers authenticate with the cluster's mTLS identities: only server
// identities of the cluster may speak the raft service (ALPN "nexus-raft"),
// in both directions.
package raftnode
