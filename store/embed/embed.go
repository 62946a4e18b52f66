// Package embed runs a member of the replicated store inside a process, as
// etcd's embed.StartEtcd does: the raft member, its QUIC peer listener and
// dialer, the etcd v3 gRPC API on the listeners it is given, and /health.
// `nexus store`, `nexus server` and tests assemble members with it; each
// binds its own listeners first, so a bad address fails before anything
// starts.
package embed

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"nexus.dev/nexus/internal/profiles"
	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
	"nexus.dev/nexus/store/raftnode"
	"nexus.dev/nexus/store/server"
	"nexus.dev/nexus/store/v3client"
	"nexus.dev/nexus/transport"
)

// Config describes one member.
type Config struct {
	// Name is the member's name; its certificate must be server/<Name>.
	Name string
	// DataDir holds the member's raft log and database.
	DataDir string
	// Credentials are the member's own (a server identity of the cluster),
	// kept current by the caller (pki.Keeper).
	Credentials *pki.Credentials
	// ListenPeer is the host:port peers reach over QUIC; AdvertisePeer the
	// address the other members dial, when it differs.
	ListenPeer, AdvertisePeer string
	// Peers is the initial cluster; empty means this member alone.
	Peers []raftnode.Peer
	// Join adds the member to an existing cluster (etcd's
	// --initial-cluster-state existing).
	Join bool
	// PeerServices are served on the peer listener beside raft (the join
	// service of a server). AuthorizePeerService decides who may speak
	// them; without it only their anonymous callers are let in.
	PeerServices         map[string]transport.Service
	AuthorizePeerService func(peer identity.ID, service string) error
	// ClientListeners serve the etcd v3 API (gRPC, with TLS applied by the
	// caller for https URLs); ClientURLs are advertised to clients.
	ClientListeners []net.Listener
	ClientURLs      []string
	// MetricsListeners serve /health (and /debug/pprof with EnablePprof).
	MetricsListeners []net.Listener
	EnablePprof      bool
	TickInterval     time.Duration
	SnapshotEvery    uint64
	QuotaBytes       int64
	Logger           *slog.Logger
}

// Member is a running store member.
type Member struct {
	srv      *server.Server
	dialer   *transport.Dialer
	peers    *transport.Listener
	grpc     *grpc.Server
	https    []*http.Server
	stopOnce sync.Once
}

// Start runs a member. On error everything it started is stopped, and the
// listeners it was given are closed.
func Start(ctx context.Context, cfg Config) (_ *Member, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	m := &Member{}
	defer func() {
		if err != nil {
			CloseAll(cfg.ClientListeners)
			CloseAll(cfg.MetricsListeners)
			m.Stop()
		}
	}()
	id := cfg.Credentials.Identity()
	if id.Kind != identity.KindServer || id.Name != cfg.Name {
		return nil, fmt.Errorf("store member %s: its certificate is for %s, not server %q", cfg.Name, id, cfg.Name)
	}
	peers := cfg.Peers
	if len(peers) == 0 {
		adv := cfg.AdvertisePeer
		if adv == "" {
			adv = cfg.ListenPeer
		}
		peers = []raftnode.Peer{{ID: server.MemberID(cfg.Name), Name: cfg.Name, Addr: adv}}
	}
	// A dead peer must be noticed in a few seconds; raft's heartbeats keep
	// live connections busy.
	tune := transport.Tuning{KeepAlivePeriod: time.Second, IdleTimeout: 5 * time.Second}
	if m.dialer, err = transport.NewDialer(transport.DialerConfig{Credentials: cfg.Credentials, Tuning: tune, Logger: log}); err != nil {
		return nil, err
	}
	if m.srv, err = server.Start(ctx, server.Config{Name: cfg.Name, DataDir: cfg.DataDir, Cluster: id.Cluster,
		Peers: peers, Join: cfg.Join, Dialer: m.dialer, ClientURLs: cfg.ClientURLs, TickInterval: cfg.TickInterval,
		SnapshotEvery: cfg.SnapshotEvery, QuotaBytes: cfg.QuotaBytes, Logger: log}); err != nil {
		return nil, err
	}
	services := map[string]transport.Service{raftnode.ALPN: m.srv.RaftService()}
	for name, svc := range cfg.PeerServices {
		if name == raftnode.ALPN {
			return nil, fmt.Errorf("store member %s: peer service %q is the store's own", cfg.Name, name)
		}
		services[name] = svc
	}
	authorize := func(peer identity.ID, service string) error {
		if service == raftnode.ALPN {
			return raftnode.AuthorizePeer(id.Cluster)(peer)
		}
		if cfg.AuthorizePeerService == nil {
			return fmt.Errorf("%s may not speak %s", peer, service)
		}
		return cfg.AuthorizePeerService(peer, service)
	}
	if m.peers, err = transport.Listen(transport.ListenerConfig{Addr: cfg.ListenPeer, Credentials: cfg.Credentials, Tuning: tune, Logger: log,
		Services: services, Authorize: authorize}); err != nil {
		return nil, fmt.Errorf("listen for peers on %s: %w", cfg.ListenPeer, err)
	}
	go m.peers.Serve(context.Background())
	m.grpc = grpc.NewServer(grpc.MaxRecvMsgSize(4 << 20))
	m.srv.Register(m.grpc)
	for _, l := range cfg.ClientListeners {
		go m.grpc.Serve(l)
	}
	for _, l := range cfg.MetricsListeners {
		hs := &http.Server{Handler: MetricsHandler(m.srv, cfg.EnablePprof), ReadHeaderTimeout: 10 * time.Second}
		m.https = append(m.https, hs)
		go hs.Serve(l)
	}
	return m, nil
}

// Client is an etcd client of this member in the same process
// (store/v3client): the etcd client API without a socket, gRPC or
// protobuf encoding. It works until ctx ends or it is closed.
func (m *Member) Client(ctx context.Context) *clientv3.Client {
	return v3client.New(ctx, m.srv.Services())
}

// Server is the member's etcd API server.
func (m *Member) Server() *server.Server { return m.srv }

// Done is closed when the member stops on its own (removed from the
// cluster, or its raft loop failed); Err then says why.
func (m *Member) Done() <-chan struct{} { return m.srv.Done() }

// Err is why the member stopped (raftnode.ErrRemoved when it was removed).
func (m *Member) Err() error { return m.srv.Err() }

// Stop answers what is in flight (for 2 s at most) and stops the member.
func (m *Member) Stop() {
	m.stopOnce.Do(func() {
		if m.grpc != nil {
			stopped := make(chan struct{})
			go func() {
				m.grpc.GracefulStop()
				close(stopped)
			}()
			select {
			case <-stopped:
			case <-time.After(2 * time.Second):
				m.grpc.Stop()
			}
		}
		for _, hs := range m.https {
			hs.Close()
		}
		if m.peers != nil {
			m.peers.Close()
		}
		if m.srv != nil {
			m.srv.Stop()
		}
		if m.dialer != nil {
			m.dialer.Close()
		}
	})
}

// ListenClientURLs opens a TCP listener for each http://host:port URL, with
// TLS (tlsCfg) for each https:// one, or none and an error naming the bad
// one.
func ListenClientURLs(urls []string, tlsCfg *tls.Config) ([]net.Listener, error) {
	var ls []net.Listener
	for _, u := range urls {
		pu, err := url.Parse(u)
		switch {
		case err != nil || pu.Host == "":
			err = fmt.Errorf("%q is not a URL like http://host:port", u)
		case pu.Scheme == "https" && tlsCfg == nil:
			err = fmt.Errorf("%q: https needs a certificate for clients (--cert-file and --key-file)", u)
		case pu.Scheme != "http" && pu.Scheme != "https":
			err = fmt.Errorf("%q: use http:// or https://", u)
		}
		if err != nil {
			CloseAll(ls)
			return nil, err
		}
		l, err := net.Listen("tcp", pu.Host)
		if err != nil {
			CloseAll(ls)
			return nil, fmt.Errorf("listen on %s: %w", pu.Host, err)
		}
		if pu.Scheme == "https" {
			l = tls.NewListener(l, tlsCfg)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// CloseAll closes listeners (a second Close is harmless).
func CloseAll(ls []net.Listener) {
	for _, l := range ls {
		l.Close()
	}
}

// MetricsHandler serves /health as etcd does ({"health":"true"} while this
// member knows a leader) and, if asked, the Go profiles.
func MetricsHandler(srv *server.Server, pprofOn bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if srv.Node().Leader() == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, `{"health":"false","reason":"no raft leader"}`)
			return
		}
		fmt.Fprintln(w, `{"health":"true","reason":""}`)
	})
	if pprofOn {
		profiles.Register(mux)
	}
	return mux
}

// QuietClientLogger is a logger for etcd clients inside Nexus processes:
// the client's own retry chatter is not the process's log (errors reach
// the caller as errors).
func QuietClientLogger() *zap.Logger { return zap.NewNop() }

// ErrRemoved says the member was removed from the cluster.
var ErrRemoved = raftnode.ErrRemoved
