// Package server assembles a Nexus control-plane server: the cluster's CA
// (made on the first start), a member of the embedded store (or a client of
// an external etcd), the API with its audit log and secrets key, and the
// certificates kept current while it runs. `nexus server`, `nexus up` and
// tests all start one with Start, as etcd's embed.StartEtcd does for etcd.
//
// A server either creates a cluster (its first start in an empty data
// directory) or joins one (Config.Join): then it gets its certificates,
// its own issuing CA and the secrets keyring from a server of the cluster
// (security/join), starts its store member as a learner and asks to vote
// once it has caught up. Every server serves the join service on its store
// peer port, writes its Server object every few seconds, and keeps the
// trust bundle (every server's intermediate CA, published in the store)
// current.
//
// Layout of the data directory:
//
//	pki/            the CA (a joined server has the root's certificate but
//	                not its key, and an intermediate of its own), this
//	                server's certificate (node.crt) and the API's serving
//	                certificate (api.crt)
//	joined.json     on a server that joined: the store members it was given
//	store/          the embedded store member's data
//	store.sock      the store's client socket (0600) for other clients on
//	                this host (nexus secrets, etcdctl); the API itself calls
//	                the member in its own process
//	secrets.key     the key that seals Secrets at rest
//	audit/          the hash-chained audit log
//	admin.conf      the first user's client configuration (0600)
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api"
	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/controller"
	"nexus.dev/nexus/internal/buildinfo"
	"nexus.dev/nexus/internal/lifetime"
	"nexus.dev/nexus/networking"
	"nexus.dev/nexus/security/audit"
	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/join"
	"nexus.dev/nexus/security/pki"
	"nexus.dev/nexus/store/embed"
	"nexus.dev/nexus/transport"
)

// Config is what a server needs. Only DataDir is required.
type Config struct {
	DataDir string
	// Name is this server's name (default: the host name). Cluster names a
	// new cluster's CA (default "nexus").
	Name, Cluster string
	// APIAddr is where the API listens, TCP and UDP (default ":7443").
	APIAddr string
	// Advertise are extra host names and addresses clients use to reach
	// the API; the serving certificate covers them, and the admin config
	// uses the first.
	Advertise []string
	// StoreEndpoints are the client URLs of an external etcd; empty runs a
	// member of the embedded store.
	StoreEndpoints []string
	// StorePeerAddr is the embedded member's peer address (QUIC; default
	// "[::1]:7380", loopback: a single member).
	StorePeerAddr string
	// StoreClientURLs also serve the embedded store to etcd clients (e.g.
	// http://127.0.0.1:2379); by default only this server's socket does.
	StoreClientURLs []string
	// Join, when set, makes a new server join an existing cluster instead
	// of creating one (ignored once it has joined: JoinedFile).
	Join *JoinConfig
	// AdminUser is bound to cluster-admin on a new cluster and gets
	// admin.conf (default "admin").
	AdminUser string
	// AuditPolicy is the audit policy file ("" for the default policy).
	AuditPolicy string
	// WriteUserConfig also writes the admin's configuration to
	// ~/.nexus/config when that file does not exist.
	WriteUserConfig bool
	// NoControllers leaves the controllers and the scheduler out (tests
	// that drive instances themselves); otherwise they run on whichever
	// server leads the election.
	NoControllers bool
	// ClusterPrefixes are the cluster's container prefixes as configured
	// (networking.ParseClusterPrefixes): unset fields take the cluster's,
	// or the defaults on a new cluster; a set one that differs from the
	// cluster's fails the start. Each Node's prefixes are cut from them.
	ClusterPrefixes networking.ClusterPrefixes
	Logger          *slog.Logger
}

// DefaultAPIPort is where the API listens unless told otherwise.
const DefaultAPIPort = 7443

// Server is a running control-plane server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	api     *api.Server
	client  *clientv3.Client
	member  *embed.Member
	audit   *audit.Log
	creds   *pki.Credentials
	serving *pki.Credentials
	apiAddr string
	// joined is set when this server joined the cluster (JoinedFile).
	joined *joined
	// join is the join service, once the store and the API are up.
	join atomic.Pointer[join.Server]
	// adminConfig is the admin client configuration written at start.
	adminConfig string
	// controllers are the controllers of this server's current term as
	// their leader (nil while it does not lead, and with
	// Config.NoControllers).
	controllers atomic.Pointer[controller.Controllers]
	cancel      context.CancelFunc
	rctx        context.Context // ends at Stop
	wg          sync.WaitGroup
	life        *lifetime.Lifetime

	// ipam hands out the nodes' container prefixes (to the controllers).
	ipam *networking.IPAM
}

func (c *Config) defaults() error {
	if c.DataDir == "" {
		return errors.New("server: no data directory")
	}
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("server: no --name and no host name: %w", err)
		}
		c.Name = h
	}
	if err := identity.Server(cmpOr(c.Cluster, "nexus"), c.Name).Validate(); err != nil {
		return fmt.Errorf("server name %q: %w (set --name)", c.Name, err)
	}
	if c.Cluster == "" {
		c.Cluster = "nexus"
	}
	if c.APIAddr == "" {
		c.APIAddr = ":" + strconv.Itoa(DefaultAPIPort)
	}
	if c.StorePeerAddr == "" {
		c.StorePeerAddr = "[::1]:" + strconv.Itoa(DefaultPeerPort)
	}
	if c.Join != nil {
		if len(c.StoreEndpoints) > 0 {
			return errors.New("--join works with the embedded store only: servers of an external etcd share it already, leave out --store-endpoints or --join")
		}
		if c.Join.Addr == "" || c.Join.Token == "" || c.Join.CAPin == "" {
			return errors.New("--join needs the address of a server, --token and --ca-pin (both printed by nexus token create --role server on a server of the cluster)")
		}
	}
	if c.AdminUser == "" {
		c.AdminUser = "admin"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// serviceRanges are the cluster's ranges for Services' virtual IPs, which
// node IPAM never gives a node.
func serviceRanges(c networking.ClusterPrefixes) api.ServiceRanges {
	v6, v4 := c.ServiceRanges()
	return api.ServiceRanges{IPv6: v6, IPv4: v4}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Start brings a server up and returns once its API is serving. Everything
// that can fail fails here: a busy port, bad certificates, a store that
// does not answer. Stop (or ctx ending) shuts it down.
func Start(ctx context.Context, cfg Config) (_ *Server, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	log := cfg.Logger.With("server", cfg.Name)
	rctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, log: log, cancel: cancel, rctx: rctx}
	s.life = lifetime.New(s.shutdown)
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	if s.joined, err = readJoined(cfg.DataDir); err != nil {
		return nil, err
	}
	if s.joined == nil && cfg.Join != nil {
		if err := joinCluster(ctx, &s.cfg); err != nil {
			return nil, err
		}
		if s.joined, err = readJoined(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	d := s.pkiDir()
	var keeper, servingKeeper *pki.Keeper
	if s.creds, keeper, err = serverCredentials(d, cfg.Cluster, cfg.Name, log); err != nil {
		return nil, err
	}
	// A joined server's cluster is its certificate's, whatever --cluster says.
	s.cfg.Cluster = s.creds.Identity().Cluster
	serving, servingKeeper, err := servingCredentials(d, s.creds.Identity(), cfg.Advertise, log)
	if err != nil {
		return nil, err
	}
	s.serving = serving
	s.goRun(func() { keeper.Run(rctx) })
	s.goRun(func() { servingKeeper.Run(rctx) })

	// Bind the API's ports before anything else runs: a port in use fails
	// the start with nothing half up.
	serveCfg := api.ServeConfig{Addr: cfg.APIAddr, GetCertificate: getCertificate(serving)}
	ls, err := api.Listen(serveCfg)
	if err != nil {
		return nil, err
	}
	s.apiAddr = ls.TCP.Addr().String()
	closeListeners := func() {
		ls.TCP.Close()
		if ls.UDP != nil {
			ls.UDP.Close()
		}
	}

	if err := s.startStore(ctx, rctx); err != nil {
		closeListeners()
		return nil, err
	}
	var cluster networking.ClusterPrefixes
	if s.ipam, err = networking.NewIPAM(s.client, cfg.ClusterPrefixes); err == nil {
		// Stores the cluster's prefixes on a new cluster; refuses
		// configured ones that differ from the cluster's.
		cluster, err = s.ipam.Cluster(ctx)
	}
	if err != nil {
		closeListeners()
		return nil, fmt.Errorf("container prefixes: %w", err)
	}
	keys, err := api.LoadSecretKeys(filepath.Join(cfg.DataDir, SecretsKeyFile), true, log)
	if err != nil {
		closeListeners()
		return nil, err
	}
	s.goRun(func() { keys.Run(rctx) })
	policy := audit.DefaultPolicy()
	if cfg.AuditPolicy != "" {
		data, err := os.ReadFile(cfg.AuditPolicy)
		if err == nil {
			policy, err = audit.ParsePolicy(data)
		}
		if err != nil {
			closeListeners()
			return nil, fmt.Errorf("audit policy %s: %w", cfg.AuditPolicy, err)
		}
	}
	if s.audit, err = audit.Open(audit.Config{Dir: filepath.Join(cfg.DataDir, "audit"), Policy: policy}); err != nil {
		closeListeners()
		return nil, err
	}
	// The first user's binding is made by the server that created the
	// cluster; a joining server must not make it again (it may have been
	// deleted on purpose).
	bootstrapAdmin := cfg.AdminUser
	if s.joined != nil {
		bootstrapAdmin = ""
	}
	if s.api, err = api.New(api.Config{Client: s.client, Credentials: s.creds, Audit: s.audit,
		Transformers: keys.Transformers(), BootstrapAdmin: bootstrapAdmin, Issuer: localIssuer(d), Logger: log,
		ServiceRanges: serviceRanges(cluster)}); err != nil {
		closeListeners()
		return nil, err
	}
	s.goRun(func() {
		if err := s.api.Run(rctx); err != nil {
			s.fail(err)
		}
	})
	s.goRun(func() {
		if err := s.api.Serve(rctx, ls, serveCfg); err != nil {
			s.fail(err)
		}
	})
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	var cert *x509.Certificate
	if s.adminConfig, cert, err = s.writeAdminConfig(); err != nil {
		return nil, err
	}
	if cert != nil {
		rec := audit.Record{Event: audit.EventCertificateIssued, User: audit.User{Name: cfg.Name, Kind: "server", ID: s.creds.Identity().String()},
			Message:     "client certificate for the first user, in " + s.adminConfig,
			Annotations: map[string]string{"serial": pki.SerialString(cert), "identity": cert.URIs[0].String(), "expires": cert.NotAfter.UTC().Format(time.RFC3339)}}
		if err := s.audit.Write(ctx, rec); err != nil {
			return nil, fmt.Errorf("audit the admin certificate: %w", err)
		}
	}
	s.startJoinService()
	s.goRun(func() { s.runServerObject(rctx) })
	s.goRun(func() { s.runTrust(rctx, s.creds, s.serving) })
	if s.joined != nil && s.member != nil {
		s.goRun(func() { s.promoteWhenCaughtUp(rctx, s.joined.Revision) })
	}
	log.Info("API serving", "addr", s.apiAddr, "http3", true, "cluster", s.cfg.Cluster)
	if !cfg.NoControllers {
		if err := s.startControllers(rctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// startControllers runs the workload controller, the scheduler and the
// node lifecycle controller against this server's API, as the server's
// own identity (cluster-admin), so what they write is validated and
// audited as anyone's writes are; only while this server leads the
// election on controller.ElectionKey (one server of a cluster at a time).
func (s *Server) startControllers(ctx context.Context) error {
	cl, err := s.LocalClient(s.creds, "nexus-controllers")
	if err != nil {
		return fmt.Errorf("controllers' API client: %w", err)
	}
	log := s.log.With("component", "controllers")
	// The nodes' leases are followed for the server's life, not a term's:
	// a term after a brief loss of leadership keeps what the last one saw.
	leases := controller.NewNodeLeases(s.client, log)
	s.goRun(func() { leases.Run(ctx) })
	s.goRun(func() {
		defer cl.Close()
		err := controller.RunElected(ctx, controller.ElectionConfig{Store: s.client, Name: s.cfg.Name, Logger: log, Metrics: s.api.Registry(),
			Lead: func(ctx context.Context) error {
				ctrl, err := controller.New(controller.Config{Client: cl, Leases: leases, NodeIPAM: s.ipam, Logger: log})
				if err != nil {
					return err
				}
				s.controllers.Store(ctrl)
				defer s.controllers.Store(nil)
				return ctrl.Run(ctx)
			}})
		if err != nil {
			s.fail(fmt.Errorf("controllers: %w", err))
		}
	})
	return nil
}

// LocalClient is an API client of this server from inside its process
// that presents creds' certificate (renewed as creds are), for the
// controllers and the agent of `nexus up`. Close it when done.
func (s *Server) LocalClient(creds *pki.Credentials, component string) (*client.Client, error) {
	pool := x509.NewCertPool()
	for _, r := range s.creds.Bundle().Roots() {
		pool.AddCert(r)
	}
	return client.New(client.Settings{Server: loopbackURL(s.apiAddr), RootCAs: pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return creds.GetCertificate() },
		UserAgent:            component + "/" + buildinfo.Version, Logger: s.log})
}

// NodeCredentials are the credentials of the agent of node on this
// machine (`nexus up`): a node certificate issued by the local CA into
// pki/agent.crt (and agent.key), reused across restarts while it is for
// node and valid, and renewed at half-life while the server runs. The
// agent acts as the node, with a node's permissions only.
func (s *Server) NodeCredentials(node string) (*pki.Credentials, error) {
	id := identity.Node(s.cfg.Cluster, node)
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("node name %q: %w", node, err)
	}
	d := pki.Dir{Path: filepath.Join(s.cfg.DataDir, "pki")}
	creds, k, err := keptLeaf(d, AgentCertFile, AgentKeyFile, id, pki.LeafOptions{}, "the agent's node certificate", s.log.With("cert", "agent"))
	if err != nil {
		return nil, err
	}
	s.goRun(func() { k.Run(s.rctx) })
	return creds, nil
}

// loopbackURL is the API's URL from inside this process: its own address,
// or loopback when it listens on every address.
func loopbackURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "https://" + addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "https://" + net.JoinHostPort(host, port)
}

func (s *Server) goRun(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// fail records the first error that stops the server and stops it.
func (s *Server) fail(err error) { s.life.Fail(s.log, "server stopping", err) }

// startStore runs the embedded store member, or connects to an external
// etcd, and makes the client the API uses.
func (s *Server) startStore(ctx, rctx context.Context) error {
	endpoints := s.cfg.StoreEndpoints
	if len(endpoints) == 0 {
		sock := filepath.Join(s.cfg.DataDir, "store.sock")
		_ = os.Remove(sock) // a socket left by a process that died
		sl, err := net.Listen("unix", sock)
		if err != nil {
			return fmt.Errorf("store socket %s: %w", sock, err)
		}
		if err := os.Chmod(sock, 0o600); err != nil {
			sl.Close()
			return err
		}
		extra, err := embed.ListenClientURLs(s.cfg.StoreClientURLs, nil)
		if err != nil {
			sl.Close()
			return err
		}
		mcfg := embed.Config{
			Name: s.cfg.Name, DataDir: filepath.Join(s.cfg.DataDir, "store"), Credentials: s.creds,
			ListenPeer: s.cfg.StorePeerAddr, AdvertisePeer: s.cfg.peerAdvertise(),
			ClientListeners: append([]net.Listener{sl}, extra...),
			ClientURLs:      append([]string{"unix://" + sock}, s.cfg.StoreClientURLs...), Logger: s.log,
			// Joiners have no certificate yet; a caller that shows one
			// (a server of the cluster) is verified and let in too.
			PeerServices:         map[string]transport.Service{join.ServiceName: s.joinService()},
			AuthorizePeerService: func(identity.ID, string) error { return nil },
		}
		if s.joined != nil {
			mcfg.Join, mcfg.Peers = true, s.joined.peers()
		}
		s.member, err = embed.Start(ctx, mcfg)
		if err != nil {
			sl.Close()
			embed.CloseAll(extra)
			return err
		}
		s.goRun(func() {
			select {
			case <-s.member.Done():
				if err := s.member.Err(); errors.Is(err, embed.ErrRemoved) {
					s.fail(ErrRemoved)
				} else if err != nil {
					s.fail(fmt.Errorf("store member: %w", err))
				}
			case <-rctx.Done():
			}
		})
		// The API calls its member in this process (store/v3client): the
		// socket is for other clients (nexus secrets, etcdctl).
		endpoints = []string{"unix://" + sock}
		s.client = s.member.Client(rctx)
	} else {
		cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: embed.QuietClientLogger()})
		if err != nil {
			return fmt.Errorf("store client %v: %w", endpoints, err)
		}
		s.client = cli
	}
	cli := s.client
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		_, err := cli.Get(cctx, "/nexus/ping")
		if err == nil {
			return nil
		}
		if cctx.Err() != nil {
			return fmt.Errorf("the store at %v does not answer: %w", endpoints, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitReady waits until the API answers /readyz.
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for !s.api.Ready() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("the API did not become ready: %w", ctx.Err())
		case <-s.life.Done():
			return s.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// ErrRemoved is why a server stops once it was removed from the cluster
// (nexus server leave or remove): its data directory can be deleted.
var ErrRemoved = errors.New("this server was removed from the cluster's store")

// Name is the server's name.
func (s *Server) Name() string { return s.cfg.Name }

// AdminConfig is the path of the first user's client configuration, when
// this server wrote one.
func (s *Server) AdminConfig() string { return s.adminConfig }

// APIAddr is the address the API listens on (host:port).
func (s *Server) APIAddr() string { return s.apiAddr }

// API is the API server (for controllers in the same process).
func (s *Server) API() *api.Server { return s.api }

// Controllers are the controllers this server runs while it leads (nil
// while another server leads, and with Config.NoControllers).
func (s *Server) Controllers() *controller.Controllers { return s.controllers.Load() }

// Client is the store client the server uses.
func (s *Server) Client() *clientv3.Client { return s.client }

// Credentials are this server's own credentials.
func (s *Server) Credentials() *pki.Credentials { return s.creds }

// Done is closed once the server has stopped.
func (s *Server) Done() <-chan struct{} { return s.life.Done() }

// Err is why the server stopped on its own (nil after Stop).
func (s *Server) Err() error { return s.life.Err() }

// Stop shuts the server down and waits until it has.
func (s *Server) Stop() { s.life.Stop() }

func (s *Server) shutdown() {
	s.cancel()
	s.wg.Wait()
	if s.client != nil {
		s.client.Close()
	}
	if s.member != nil {
		s.member.Stop()
	}
	if s.audit != nil {
		s.audit.Close()
	}
}
