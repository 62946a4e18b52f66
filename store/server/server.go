// Package server is Nexus's etcd-compatible store member: the etcd v3 gRPC
// API (KV, Watch, Lease, Cluster, Maintenance) on top of a raft member
// (store/raftnode) replicating an MVCC state machine (store/mvcc). Every
// write is an etcd InternalRaftRequest in the raft log; linearizable reads
// wait for a ReadIndex barrier; serializable reads are served locally.
// etcd's own clients and etcdctl talk to it unchanged.
package server

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/internal/proc"
	"nexus.dev/nexus/store/mvcc"
	"nexus.dev/nexus/store/raftnode"
	"nexus.dev/nexus/transport"
)

// Version is the etcd API version this server reports (etcdctl and
// clients use it to pick features).
const Version = "3.5.0"

// Config configures a store member.
type Config struct {
	Name    string
	ID      uint64 // raft member ID; 0 derives it from Name
	DataDir string
	// Cluster is the trust domain; only its servers are raft peers.
	Cluster string
	// Peers of a new cluster (all members, the same list on each); with
	// Join, where the existing members are.
	Peers []raftnode.Peer
	Join  bool
	// Dialer carries raft traffic to peers (QUIC with mutual TLS).
	Dialer *transport.Dialer
	// ClientURLs are advertised in member lists.
	ClientURLs []string
	// Raft timing and snapshots; zero values use raftnode's defaults.
	TickInterval  time.Duration
	SnapshotEvery uint64
	// QuotaBytes bounds the size of the member's database file, as etcd's
	// --quota-backend-bytes (see quota.go): 0 means DefaultQuotaBytes, a
	// negative value no quota.
	QuotaBytes int64
	Store      mvcc.Options
	Logger     *slog.Logger
}

// MemberID derives a stable raft ID from a member name, as etcd derives
// member IDs from names and URLs.
func MemberID(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	id := h.Sum64()
	if id == 0 {
		id = 1
	}
	return id
}

// Server is one store member.
type Server struct {
	cfg        Config
	kv         *mvcc.Store
	node       *raftnode.Node
	log        *slog.Logger
	clusterID  uint64
	reqID      atomic.Uint64
	quota      int64      // bytes; 0: none
	raiseAlarm chan int64 // quotaAfterApply to alarmLoop: the size found
	stop       context.CancelFunc
	wg         sync.WaitGroup // leaseLoop and alarmLoop
}

// Start opens the member's data and joins or forms the cluster.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Name == "" || cfg.DataDir == "" || cfg.Cluster == "" || cfg.Dialer == nil {
		return nil, errors.New("store: a member needs a Name, a DataDir, a Cluster and a Dialer")
	}
	if cfg.ID == 0 {
		cfg.ID = MemberID(cfg.Name)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("store %s: %w", cfg.Name, err)
	}
	dbPath := filepath.Join(cfg.DataDir, "db")
	if err := discardUnsyncedDB(dbPath, log); err != nil {
		return nil, fmt.Errorf("store %s: %w", cfg.Name, err)
	}
	if err := markUnsynced(dbPath); err != nil {
		return nil, fmt.Errorf("store %s: %w", cfg.Name, err)
	}
	// The database is a cache of raft's snapshot + WAL (both fsynced), so
	// its commits skip fsync; see discardUnsyncedDB for the recovery.
	cfg.Store.NoSync = true
	kv, err := mvcc.Open(dbPath, cfg.Store)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", cfg.Name, err)
	}
	s := &Server{cfg: cfg, kv: kv, log: log, clusterID: MemberID("cluster/" + cfg.Cluster),
		quota: quotaBytes(cfg.QuotaBytes), raiseAlarm: make(chan int64, 1)}
	if s.quota > MaxQuotaBytes {
		log.Warn("the space quota is larger than etcd suggests; large databases make snapshots and restarts slow", "quota", s.quota, "suggested max", int64(MaxQuotaBytes))
	}
	s.reqID.Store(uint64(time.Now().UnixNano()))
	node, err := raftnode.Start(ctx, raftnode.Config{
		ID: cfg.ID, Name: cfg.Name, DataDir: filepath.Join(cfg.DataDir, "raft"),
		Peers: cfg.Peers, Join: cfg.Join,
		Transport:     raftnode.Transport{Dialer: cfg.Dialer, Cluster: cfg.Cluster},
		StateMachine:  stateMachine{s},
		TickInterval:  cfg.TickInterval,
		SnapshotEvery: cfg.SnapshotEvery,
		Logger:        log,
	})
	if err != nil {
		kv.Close()
		return nil, fmt.Errorf("store %s: %w", cfg.Name, err)
	}
	s.node = node
	runCtx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.wg.Add(2)
	go s.leaseLoop(runCtx)
	go s.alarmLoop(runCtx)
	return s, nil
}

// RaftService is the transport service peers reach this member on; register
// it as raftnode.ALPN on the member's listener.
func (s *Server) RaftService() transport.Service { return s.node.Service() }

// Services are the member's etcd v3 API services: what Register serves
// over gRPC, and what store/v3client calls in the same process.
type Services struct {
	KV          etcdserverpb.KVServer
	Watch       etcdserverpb.WatchServer
	Lease       etcdserverpb.LeaseServer
	Cluster     etcdserverpb.ClusterServer
	Maintenance etcdserverpb.MaintenanceServer
}

// Services returns the member's etcd v3 API services.
func (s *Server) Services() Services {
	return Services{KV: &kvServer{s: s}, Watch: &watchServer{s: s}, Lease: &leaseServer{s: s},
		Cluster: &clusterServer{s: s}, Maintenance: &maintenanceServer{s: s}}
}

// Register adds the etcd v3 API services to a gRPC server.
func (s *Server) Register(g *grpc.Server) {
	sv := s.Services()
	etcdserverpb.RegisterKVServer(g, sv.KV)
	etcdserverpb.RegisterWatchServer(g, sv.Watch)
	etcdserverpb.RegisterLeaseServer(g, sv.Lease)
	etcdserverpb.RegisterClusterServer(g, sv.Cluster)
	etcdserverpb.RegisterMaintenanceServer(g, sv.Maintenance)
}

// Done is closed when the raft member stops, by Stop or on its own (Err
// says why).
func (s *Server) Done() <-chan struct{} { return s.node.Done() }

// Err returns why the member stopped on its own, or nil.
func (s *Server) Err() error { return s.node.Err() }

// Stop stops the member; the data stays for a restart.
func (s *Server) Stop() {
	s.stop()
	s.wg.Wait()
	s.node.Stop()
	if err := s.kv.Sync(); err == nil {
		// Everything is on disk: the next start can trust the database.
		if err := os.Remove(filepath.Join(s.cfg.DataDir, "db") + unsyncedSuffix); err != nil && !os.IsNotExist(err) {
			s.log.Warn("remove the unsynced-database marker", "err", err)
		}
	}
	s.kv.Close()
}

// unsyncedSuffix names the marker that says the database may hold commits
// that were never fsynced, and since which boot.
const unsyncedSuffix = ".unsynced"

// markUnsynced records, durably, that the database is about to take
// commits without fsync during this boot.
func markUnsynced(dbPath string) error {
	return fsutil.WriteFileSync(dbPath+unsyncedSuffix, []byte(proc.BootID()+"\n"), 0o600)
}

// discardUnsyncedDB handles a database left by a member that did not stop
// cleanly. If the machine has not rebooted since, the page cache still held
// every commit and the file is whole; if it has, the commits that were
// never fsynced may be torn, so the file is moved aside and raft rebuilds
// the state from its last snapshot and the WAL, which are both fsynced.
func discardUnsyncedDB(dbPath string, log *slog.Logger) error {
	marker, err := os.ReadFile(dbPath + unsyncedSuffix)
	if os.IsNotExist(err) {
		return nil // stopped cleanly (or never started)
	}
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(marker)) == proc.BootID() {
		return nil // the process died, the machine did not: nothing was lost
	}
	if _, err := os.Stat(dbPath); os.IsNotExist(err) {
		return nil
	}
	aside := fmt.Sprintf("%s.unsynced-%d", dbPath, time.Now().Unix())
	log.Warn("the machine restarted while the database had unsynced commits: rebuilding it from raft's snapshot and WAL", "db", dbPath, "moved to", aside)
	return os.Rename(dbPath, aside)
}

// Node and KV expose the parts, for tests and tools.
func (s *Server) Node() *raftnode.Node { return s.node }
func (s *Server) KV() *mvcc.Store      { return s.kv }

// stateMachine adapts the MVCC store to raft: entries carry marshalled
// InternalRaftRequests.
type stateMachine struct{ s *Server }

func (m stateMachine) Apply(index uint64, data []byte) any {
	return m.ApplyBatch([]raftnode.BatchEntry{{Index: index, Data: data}})[0]
}

// ApplyBatch applies the entries of one raft round in one commit.
func (m stateMachine) ApplyBatch(entries []raftnode.BatchEntry) []any {
	out := make([]any, len(entries))
	batch := make([]mvcc.Entry, 0, len(entries))
	pos := make([]int, 0, len(entries))
	for i, e := range entries {
		var r etcdserverpb.InternalRaftRequest
		if err := proto.Unmarshal(e.Data, &r); err != nil {
			// Every member sees the same bytes, so every member skips it alike.
			out[i] = &mvcc.Result{Err: status.Errorf(codes.InvalidArgument, "store: undecodable entry at index %d: %v", e.Index, err)}
			continue
		}
		batch = append(batch, mvcc.Entry{Index: e.Index, Req: &r})
		pos = append(pos, i)
	}
	size := int64(-1)
	if m.s.quota > 0 && slices.ContainsFunc(batch, func(e mvcc.Entry) bool { return mvcc.QuotaCost(e.Req) > 0 }) {
		var err error
		if size, err = m.s.kv.Size(); err != nil {
			size = -1 // closed: ApplyBatch fails the entries anyway
		}
	}
	results := m.s.kv.ApplyBatch(batch)
	if size >= 0 {
		m.s.quotaAfterApply(size, batch, results)
	}
	for j, res := range results {
		out[pos[j]] = res
	}
	return out
}

func (m stateMachine) AppliedIndex() uint64 { return m.s.kv.AppliedIndex() }

func (m stateMachine) Snapshot(w io.Writer) error {
	_, _, err := m.s.kv.Snapshot(w)
	return err
}

func (m stateMachine) Restore(r io.Reader) error { return m.s.kv.Restore(r) }

// propose replicates r and returns its result on this member.
func (s *Server) propose(ctx context.Context, r *etcdserverpb.InternalRaftRequest) (*mvcc.Result, error) {
	r.Header = &etcdserverpb.RequestHeader{ID: s.reqID.Add(1)}
	data, err := proto.Marshal(r)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "encode request: %v", err)
	}
	if max := s.maxRequestBytes(); len(data) > max {
		return nil, rpctypes.ErrGRPCRequestTooLarge
	}
	out, err := s.node.Propose(ctx, data)
	if err != nil {
		return nil, toGRPC(err)
	}
	res, ok := out.(*mvcc.Result)
	if !ok {
		return nil, status.Errorf(codes.Internal, "unexpected apply result %T", out)
	}
	if res.Err != nil {
		return nil, toGRPC(res.Err)
	}
	return res, nil
}

func (s *Server) maxRequestBytes() int {
	if s.cfg.Store.MaxRequestBytes > 0 {
		return s.cfg.Store.MaxRequestBytes + 1024
	}
	return 1536*1024 + 1024
}

// linearizable waits until this member has applied everything committed
// when the read arrived.
func (s *Server) linearizable(ctx context.Context) error {
	if err := s.node.ReadIndex(ctx); err != nil {
		return toGRPC(err)
	}
	return nil
}

func (s *Server) header() *etcdserverpb.ResponseHeader {
	return &etcdserverpb.ResponseHeader{ClusterId: s.clusterID, MemberId: s.cfg.ID, Revision: s.kv.Rev(), RaftTerm: s.node.Term()}
}

// toGRPC turns errors into the status errors etcd clients understand.
func toGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, raftnode.ErrNoLeader):
		return rpctypes.ErrGRPCNoLeader
	case errors.Is(err, raftnode.ErrTimeoutLeaderChanged):
		return rpctypes.ErrGRPCTimeoutDueToLeaderFail
	case errors.Is(err, raftnode.ErrTimeout):
		return rpctypes.ErrGRPCTimeout
	case errors.Is(err, raftnode.ErrStopped):
		return rpctypes.ErrGRPCStopped
	}
	return status.Error(codes.Unavailable, err.Error())
}
