package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/store/raftnode"
	"nexus.dev/nexus/transport"
	"nexus.dev/nexus/transport/transporttest"
)

const testCluster = "store.test"

// peerTuning notices a dead peer within a second: raft heartbeats keep a
// healthy connection busy, so only a dead one goes idle.
var peerTuning = transport.Tuning{KeepAlivePeriod: 200 * time.Millisecond, IdleTimeout: time.Second}

// testMember is one store member with its raft listener and gRPC server.
type testMember struct {
	name, dir     string
	peer          raftnode.Peer
	creds         transport.Credentials
	srv           *Server
	dialer        *transport.Dialer
	raft          *transport.Listener
	grpc          *grpc.Server
	clientAddr    string
	snapshotEvery uint64
	join          bool // start by joining a cluster that already added it
}

type testStore struct {
	t         *testing.T
	members   []*testMember
	peers     []raftnode.Peer
	ca        *transporttest.CA
	base      string
	configure func(*Config) // adjusts each member's configuration, if set
}

func freeUDP(t *testing.T) string {
	return net.JoinHostPort("::1", strconv.Itoa(testutil.FreePort(t, "udp")))
}

func freeTCP(t *testing.T) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(testutil.FreePort(t, "tcp")))
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// startStore starts an n-member store on loopback: raft over QUIC with
// mutual TLS, the etcd API over gRPC.
func startStore(t *testing.T, n int) *testStore {
	t.Helper()
	return startStoreIn(t, n, t.TempDir())
}

// startStoreIn is startStore with the members' data under base and, if
// given, configure applied to each member's configuration.
func startStoreIn(t *testing.T, n int, base string, configure ...func(*Config)) *testStore {
	t.Helper()
	ca, err := transporttest.NewCA("store test root")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testStore{t: t, ca: ca, base: base}
	if len(configure) > 0 {
		ts.configure = configure[0]
	}
	for i := 0; i < n; i++ {
		m := ts.newMember(fmt.Sprintf("m%d", i))
		ts.members = append(ts.members, m)
		ts.peers = append(ts.peers, m.peer)
	}
	t.Cleanup(ts.stopAll)
	for _, m := range ts.members {
		ts.start(m)
	}
	ts.waitLeader()
	return ts
}

// newMember prepares a member (certificate, addresses) without starting it.
func (ts *testStore) newMember(name string) *testMember {
	ts.t.Helper()
	cert, err := ts.ca.IssueValid(identity.Server(testCluster, name))
	if err != nil {
		ts.t.Fatal(err)
	}
	m := &testMember{name: name, dir: filepath.Join(ts.base, name), creds: transporttest.NewCredentials(ts.ca, cert), clientAddr: freeTCP(ts.t)}
	m.peer = raftnode.Peer{ID: MemberID(name), Name: name, Addr: freeUDP(ts.t)}
	return m
}

func (ts *testStore) start(m *testMember) {
	t := ts.t
	t.Helper()
	var err error
	if m.dialer, err = transport.NewDialer(transport.DialerConfig{Credentials: m.creds, Logger: quietLogger(), Tuning: peerTuning,
		Backoff: transport.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}}); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Name: m.name, DataDir: m.dir, Cluster: testCluster, Peers: ts.peers, Join: m.join,
		Dialer: m.dialer, ClientURLs: []string{"http://" + m.clientAddr}, TickInterval: 20 * time.Millisecond,
		SnapshotEvery: m.snapshotEvery, Logger: quietLogger()}
	if ts.configure != nil {
		ts.configure(&cfg)
	}
	m.srv, err = Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m.raft, err = transport.Listen(transport.ListenerConfig{Addr: m.peer.Addr, Credentials: m.creds, Logger: quietLogger(), Tuning: peerTuning,
		Services:  map[string]transport.Service{raftnode.ALPN: m.srv.RaftService()},
		Authorize: func(peer identity.ID, _ string) error { return raftnode.AuthorizePeer(testCluster)(peer) }}); err != nil {
		t.Fatal(err)
	}
	go m.raft.Serve(context.Background())
	lis, err := net.Listen("tcp", m.clientAddr)
	if err != nil {
		t.Fatal(err)
	}
	m.grpc = grpc.NewServer()
	m.srv.Register(m.grpc)
	go m.grpc.Serve(lis)
}

// kill stops a member abruptly (as kill -9 would, from its peers' view).
func (ts *testStore) kill(m *testMember) {
	if m.srv == nil {
		return
	}
	// A start that failed half-way leaves the later parts nil.
	if m.grpc != nil {
		m.grpc.Stop()
	}
	if m.raft != nil {
		m.raft.Close()
	}
	m.srv.Stop()
	m.dialer.Close()
	m.srv, m.grpc, m.raft = nil, nil, nil
}

func (ts *testStore) stopAll() {
	for _, m := range ts.members {
		ts.kill(m)
	}
}

func (ts *testStore) endpoints() []string {
	var eps []string
	for _, m := range ts.members {
		eps = append(eps, "http://"+m.clientAddr)
	}
	return eps
}

// leader returns the member that leads, waiting for one.
func (ts *testStore) waitLeader() *testMember {
	ts.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range ts.members {
			if m.srv != nil && m.srv.Node().Status().Leader == m.srv.cfg.ID {
				return m
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	ts.t.Fatal("no leader within 10s")
	return nil
}

func (ts *testStore) client() *clientv3.Client {
	ts.t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: ts.endpoints(), DialTimeout: 2 * time.Second})
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(func() { cli.Close() })
	return cli
}
