package embed

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"nexus.dev/nexus/api"
	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/buildinfo"
	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/internal/lifetime"
	"nexus.dev/nexus/networking"
	"nexus.dev/nexus/networking/lb"
	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/join"
	"nexus.dev/nexus/security/pki"
)

// A worker node (`nexus agent`) is the agent of this package on a machine
// of its own: it joins the cluster once with a token (package join) and
// keeps its node credentials in its data directory, talks to the API over
// HTTP/3 with them, failing over between the cluster's servers, renews its
// certificate through the API at half-life, takes its container prefixes
// from its Node (the agent waits for them), and serves the servers logs and exec of its instances
// (api.ServeNode). Its data directory holds, beside the agent's files:
//
//	pki/        node.key, node.crt and bundle.pem: the node's credentials
//	            and the cluster's trust bundle (0600, in a 0700 directory)
//	node.json   the API URLs of the cluster's servers, as last learnt

// Defaults of a worker node.
const (
	// DefaultJoinPort is the servers' join (and store peer) port.
	DefaultJoinPort = 7380
	// DefaultAPIPort is the API's port, used for a server known only by
	// its join address.
	DefaultAPIPort = 7443
	// serversRefresh is how often the list of servers is read again.
	serversRefresh = 30 * time.Second
	// A node notices a server that stopped answering within
	// failoverKeepAlive*1.5 and tries the next one for failoverDial.
	failoverKeepAlive = 2 * time.Second
	failoverDial      = 2 * time.Second
	stateFile         = "node.json"
)

// NodeConfig is what a worker node needs. DataDir is required; Join,
// Token and CAPin on its first start, which joins the cluster.
type NodeConfig struct {
	DataDir string
	// Name is the node's name (default: the host name). A node that has
	// joined keeps the name in its certificate.
	Name string
	// Join is a server's join address, host or host:port (default port
	// DefaultJoinPort); Token and CAPin come from `nexus token create`.
	Join, Token, CAPin string
	// Servers are more API URLs (https://host:port) besides those the
	// cluster gives.
	Servers []string
	// ListenAddr is where the agent serves logs and exec to the servers
	// (default ":7444").
	ListenAddr string
	// AdvertiseAddr is the address (host, or host:port) the servers reach
	// it at (default: the address this machine reaches the first server
	// from, with ListenAddr's port).
	AdvertiseAddr string
	// Bridge, NetworkMode, ServiceDataPath, ExitRecorderDir, Labels,
	// HeartbeatInterval and BuiltinExe: see Config.
	Bridge, ExitRecorderDir string
	NetworkMode             networking.Mode
	ServiceDataPath         lb.Choice
	Labels                  map[string]string
	HeartbeatInterval       time.Duration
	BuiltinExe              string
	Logger                  *slog.Logger
}

// Node is a running worker node.
type Node struct {
	cfg    NodeConfig
	log    *slog.Logger
	name   string
	creds  *pki.Credentials
	client *client.Client
	agent  *Agent

	cancel context.CancelFunc
	wg     sync.WaitGroup
	life   *lifetime.Lifetime
}

// nodeState is node.json.
type nodeState struct {
	Servers []string `json:"servers"`
}

// StartNode joins the cluster (on the first start) or loads the node's
// credentials, connects to the API, starts the agent (Start) with the
// Node's prefixes, and serves the servers. It returns once the agent runs.
func StartNode(ctx context.Context, cfg NodeConfig) (_ *Node, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("node: no data directory")
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = ":" + strconv.Itoa(api.DefaultNodePort)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	n := &Node{cfg: cfg, log: cfg.Logger, cancel: cancel}
	n.life = lifetime.New(n.shutdown)
	defer func() {
		if err != nil {
			n.Stop()
		}
	}()
	servers, err := n.credentials(ctx)
	if err != nil {
		return nil, err
	}
	n.log = cfg.Logger.With("node", n.name)
	if n.client, err = n.newClient(servers); err != nil {
		return nil, err
	}
	if err := n.startKeeper(rctx); err != nil {
		return nil, err
	}
	n.goRun(func() { n.refreshServers(rctx) })

	// The endpoint's port is bound before the agent starts: a busy port
	// fails the start with nothing half up.
	l, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("the agent's endpoint for the servers: %w (set --listen-addr)", err)
	}
	advertise, err := advertiseAddr(cfg.AdvertiseAddr, l.Addr(), n.client.Server())
	if err != nil {
		l.Close()
		return nil, err
	}
	n.agent, err = Start(ctx, Config{NodeName: n.name, DataDir: cfg.DataDir, Client: n.client,
		Bridge: cfg.Bridge, NetworkMode: cfg.NetworkMode, ServiceDataPath: cfg.ServiceDataPath, ExitRecorderDir: cfg.ExitRecorderDir, Labels: cfg.Labels, HeartbeatInterval: cfg.HeartbeatInterval,
		AgentAddress: advertise, BuiltinExe: cfg.BuiltinExe, Logger: cfg.Logger,
		CertificateExpiry: func() time.Time { return n.creds.Leaf().NotAfter }})
	if err != nil {
		l.Close()
		return nil, err
	}
	n.goRun(func() {
		if err := api.ServeNode(rctx, l, api.NodeServeConfig{Node: n.name, Credentials: n.creds, Agent: n.agent.Agent(),
			Logger: n.log.With("component", "endpoint")}); err != nil {
			n.fail(err)
		}
	})
	n.goRun(func() {
		select {
		case <-n.agent.Done():
			if err := n.agent.Err(); err != nil {
				n.fail(err)
			}
		case <-rctx.Done():
		}
	})
	n.log.Info("node agent running", "servers", n.client.Servers(), "endpoint", advertise)
	return n, nil
}

// credentials loads the node's credentials from its data directory, or
// joins the cluster for them, and returns the API URLs it knows.
func (n *Node) credentials(ctx context.Context) ([]string, error) {
	cfg := n.cfg
	dir := filepath.Join(cfg.DataDir, "pki")
	certFile, keyFile, bundleFile := filepath.Join(dir, pki.NodeCertFile), filepath.Join(dir, pki.NodeKeyFile), filepath.Join(dir, pki.BundleFile)
	state, err := readState(filepath.Join(cfg.DataDir, stateFile))
	if err != nil {
		return nil, err
	}
	var joined []string
	creds, err := loadCredentials(certFile, keyFile, bundleFile)
	switch {
	case err == nil:
		if cfg.Name != "" && creds.Identity().Name != cfg.Name {
			return nil, fmt.Errorf("%s is node %s's certificate, not %s's: leave --name out, or give node %s a --data-dir of its own", certFile, creds.Identity().Name, cfg.Name, cfg.Name)
		}
		if cfg.Token != "" {
			n.log.Info("already joined: the token is not used", "node", creds.Identity().Name, "cert", certFile)
		}
	case errors.Is(err, fs.ErrNotExist) || (errors.Is(err, pki.ErrExpired) && cfg.Token != ""):
		var res *join.Result
		if res, err = n.join(ctx, joinedName(certFile)); err != nil {
			return nil, err
		}
		joined = res.Servers
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		if err := pki.WriteKeyFile(keyFile, res.Key, nil); err != nil {
			return nil, err
		}
		if err := pki.WriteFileAtomic(bundleFile, res.Bundle.PEM(), 0o600); err != nil {
			return nil, err
		}
		if err := pki.WriteFileAtomic(certFile, pki.EncodeCertificates(res.Chain...), 0o600); err != nil {
			return nil, err
		}
		if creds, err = loadCredentials(certFile, keyFile, bundleFile); err != nil {
			return nil, err
		}
		n.log.Info("joined the cluster", "identity", res.ID.String(), "expires", res.Chain[0].NotAfter.UTC().Format(time.RFC3339), "servers", res.Servers)
	case errors.Is(err, pki.ErrExpired):
		return nil, fmt.Errorf("%w: join again with a new token (nexus token create --role agent on a server): nexus agent --join ADDR --token T --ca-pin P", err)
	default:
		return nil, err
	}
	n.creds, n.name = creds, creds.Identity().Name
	servers := slices.Concat(cfg.Servers, joined, state.Servers)
	if len(servers) == 0 && cfg.Join != "" {
		// A server that did not say where its API is: the join address's
		// host, on the API's default port.
		host, _, err := splitJoinAddr(cfg.Join)
		if err != nil {
			return nil, err
		}
		servers = []string{"https://" + net.JoinHostPort(host, strconv.Itoa(DefaultAPIPort))}
	}
	if len(servers) == 0 {
		return nil, errors.New("no API server known: give --server https://HOST:7443, or --join ADDR")
	}
	servers = dedupe(servers)
	return servers, n.saveServers(servers)
}

// joinedName is the node name in an (expired) certificate, "" if none.
func joinedName(certFile string) string {
	chain, err := pki.ReadCertificatesFile(certFile)
	if err != nil {
		return ""
	}
	id, err := pki.LeafIdentity(chain[0])
	if err != nil {
		return ""
	}
	return id.Name
}

// join joins the cluster with the token, as the node named old when it
// joins again after its certificate expired ("" on a first join).
func (n *Node) join(ctx context.Context, old string) (*join.Result, error) {
	cfg := n.cfg
	var missing []string
	for _, f := range []struct{ flag, v string }{{"--join", cfg.Join}, {"--token", cfg.Token}, {"--ca-pin", cfg.CAPin}} {
		if f.v == "" {
			missing = append(missing, f.flag)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("this machine has not joined a cluster (no credentials in %s): give %v, from `nexus token create --role agent` on a server", filepath.Join(cfg.DataDir, "pki"), missing)
	}
	name := cmp.Or(cfg.Name, old)
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("no --name and no host name: %w", err)
		}
		name = h
	}
	if err := identity.Node("nexus", name).Validate(); err != nil {
		return nil, fmt.Errorf("node name %q: %w (set --name)", name, err)
	}
	host, port, err := splitJoinAddr(cfg.Join)
	if err != nil {
		return nil, err
	}
	jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return join.Join(jctx, join.Config{Addr: net.JoinHostPort(host, port), Token: cfg.Token, Pin: cfg.CAPin, Name: name})
}

// splitJoinAddr reads --join: host or host:port, IPv6 in brackets with a
// port.
func splitJoinAddr(s string) (host, port string, err error) {
	if strings.Contains(s, "://") {
		return "", "", fmt.Errorf("--join %q: give a server's join address, host or host:port (e.g. 10.0.0.1), not a URL", s)
	}
	if host, port, err = net.SplitHostPort(s); err == nil {
		if p, perr := strconv.Atoi(port); perr != nil || p < 1 || p > 65535 {
			return "", "", fmt.Errorf("--join %q: port %q is not a port number", s, port)
		}
		if host == "" {
			return "", "", fmt.Errorf("--join %q: no host", s)
		}
		return host, port, nil
	}
	if a, perr := netip.ParseAddr(s); perr == nil {
		return a.String(), strconv.Itoa(DefaultJoinPort), nil
	}
	if s == "" || !validHostName(s) {
		return "", "", fmt.Errorf("--join %q: give a server's address, host or host:port (e.g. 10.0.0.1, [fd00::1]:7380, server1.example.com)", s)
	}
	return s, strconv.Itoa(DefaultJoinPort), nil
}

func validHostName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// loadCredentials reads the node's key, certificate and the trust bundle.
// An error wraps fs.ErrNotExist when the node has none, pki.ErrExpired
// when its certificate has expired.
func loadCredentials(certFile, keyFile, bundleFile string) (*pki.Credentials, error) {
	chain, err := pki.ReadCertificatesFile(certFile)
	if err != nil {
		return nil, err
	}
	key, err := pki.ReadKeyFile(keyFile, nil)
	if err != nil {
		return nil, err
	}
	bundle, err := pki.ReadBundleFile(bundleFile)
	if err != nil {
		return nil, err
	}
	creds, err := pki.NewCredentials(pki.CredentialsConfig{Chain: chain, Key: key, Bundle: bundle})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	if id := creds.Identity(); id.Kind != identity.KindNode {
		return nil, fmt.Errorf("%s is for %s, not a node", certFile, id)
	}
	return creds, nil
}

func readState(path string) (nodeState, error) {
	var st nodeState
	data, err := fsutil.ReadFileLimit(path, 1<<20)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("%s: %w (remove it: the next start learns the servers again from --join or --server)", path, err)
	}
	for _, s := range st.Servers {
		if u, err := url.Parse(s); err != nil || u.Scheme != "https" || u.Host == "" {
			return st, fmt.Errorf("%s: server %q is not an https:// URL (remove the file: the next start learns the servers again)", path, s)
		}
	}
	return st, nil
}

func (n *Node) saveServers(servers []string) error {
	data, _ := json.MarshalIndent(nodeState{Servers: servers}, "", "  ")
	return pki.WriteFileAtomic(filepath.Join(n.cfg.DataDir, stateFile), append(data, '\n'), 0o600)
}

func dedupe(s []string) []string {
	out := make([]string, 0, len(s))
	for _, v := range s {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// newClient is the node's API client: HTTP/3 with its certificate,
// failing over between servers within seconds.
func (n *Node) newClient(servers []string) (*client.Client, error) {
	pool := x509.NewCertPool()
	for _, r := range n.creds.Bundle().Roots() {
		pool.AddCert(r)
	}
	creds := n.creds
	return client.New(client.Settings{Server: servers[0], Failover: servers[1:], RootCAs: pool, HTTP3: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return creds.GetCertificate() },
		DialTimeout:          failoverDial, KeepAlive: failoverKeepAlive,
		UserAgent: "nexus-agent/" + buildinfo.Version, Logger: n.log.With("component", "client")})
}

// startKeeper renews the node's certificate at half-life through the API
// (the shared pki.Keeper and Renewer), and reloads the files when they
// change. The client's connections are closed after a renewal so the
// servers see the new certificate.
func (n *Node) startKeeper(ctx context.Context) error {
	dir := filepath.Join(n.cfg.DataDir, "pki")
	bundleFile := filepath.Join(dir, pki.BundleFile)
	k, err := pki.NewKeeper(pki.KeeperConfig{Credentials: n.creds, CertFile: filepath.Join(dir, pki.NodeCertFile),
		KeyFile: filepath.Join(dir, pki.NodeKeyFile), BundleFile: bundleFile, Logger: n.log.With("cert", "node"),
		Issue: func(ctx context.Context, csr []byte) ([]*x509.Certificate, error) {
			chain, bundle, err := n.client.RenewNodeCertificate(ctx, n.name, csr)
			if err != nil {
				return nil, err
			}
			// A rotated CA comes with the renewal; the keeper loads the
			// file on its next check.
			if string(bundle.PEM()) != string(n.creds.Bundle().PEM()) {
				if err := pki.WriteFileAtomic(bundleFile, bundle.PEM(), 0o600); err != nil {
					return nil, err
				}
			}
			return chain, nil
		}})
	if err != nil {
		return err
	}
	changed, unsubscribe := n.creds.Subscribe()
	serial := n.creds.Leaf().SerialNumber
	n.goRun(func() {
		defer unsubscribe()
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
				if s := n.creds.Leaf().SerialNumber; s.Cmp(serial) != 0 {
					serial = s
					n.client.CloseConnections()
				}
			}
		}
	})
	n.goRun(func() { k.Run(ctx) })
	return nil
}

// serverURLs are the API URLs the cluster's Server objects publish.
func (n *Node) serverURLs(ctx context.Context) ([]string, error) {
	servers, _ := types.LookupResource("servers")
	objs, _, err := n.client.List(ctx, servers, "", client.ListOptions{})
	if err != nil {
		return nil, err
	}
	var urls []string
	for _, o := range objs {
		if u := o.(*types.Server).Status.APIURL; u != "" {
			urls = append(urls, u)
		}
	}
	return urls, nil
}

// refreshServers reads the cluster's servers every serversRefresh and
// fails over between them (and the --server ones).
func (n *Node) refreshServers(ctx context.Context) {
	t := time.NewTicker(serversRefresh)
	defer t.Stop()
	for {
		urls, err := n.serverURLs(ctx)
		switch {
		case err == nil && len(urls) > 0:
			all := dedupe(slices.Concat(urls, n.cfg.Servers))
			if !slices.Equal(all, n.client.Servers()) {
				if err := n.client.SetServers(all); err != nil {
					n.log.Warn("the cluster publishes a server URL the node cannot use", "servers", urls, "err", err)
				} else if err := n.saveServers(all); err != nil {
					n.log.Warn("save the servers", "err", err)
				}
			}
		case err != nil && ctx.Err() == nil:
			n.log.Debug("list the cluster's servers", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// advertiseAddr is the address the servers reach the endpoint at: the one
// given (its port defaulting to the listener's), the listener's own when
// it is bound to one, or the address this machine reaches the API server
// from.
func advertiseAddr(given string, listen net.Addr, server string) (string, error) {
	port := strconv.Itoa(listen.(*net.TCPAddr).Port)
	if given != "" {
		host, p, err := net.SplitHostPort(given)
		if err != nil {
			host, p = given, port
		}
		a, err := netip.ParseAddr(host)
		if err != nil || a.IsUnspecified() {
			return "", fmt.Errorf("--advertise-addr %q: give this machine's IP address, optionally with a port", given)
		}
		return net.JoinHostPort(a.String(), p), nil
	}
	if ip := listen.(*net.TCPAddr).IP; !ip.IsUnspecified() {
		return net.JoinHostPort(ip.String(), port), nil
	}
	u, err := url.Parse(server)
	if err != nil {
		return "", err
	}
	hostport := u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), "443")
	}
	// A UDP "connection" sends nothing: it only asks the kernel which
	// source address its routes give for the server.
	c, err := net.Dial("udp", hostport)
	if err != nil {
		return "", fmt.Errorf("find this machine's address towards %s: %w (set --advertise-addr)", server, err)
	}
	defer c.Close()
	return net.JoinHostPort(c.LocalAddr().(*net.UDPAddr).IP.String(), port), nil
}

func (n *Node) goRun(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

func (n *Node) fail(err error) { n.life.Fail(n.log, "node agent stopping", err) }

// Name is the node's name.
func (n *Node) Name() string { return n.name }

// Servers are the API servers the node knows, the one in use first.
func (n *Node) Servers() []string { return n.client.Servers() }

// ExitsRecorded: see Agent.ExitsRecorded.
func (n *Node) ExitsRecorded() bool { return n.agent.ExitsRecorded() }

// Done is closed once the node has stopped.
func (n *Node) Done() <-chan struct{} { return n.life.Done() }

// Err is why the node stopped on its own (nil after Stop).
func (n *Node) Err() error { return n.life.Err() }

// Stop stops the agent (its containers keep running, for the next start
// to adopt), the endpoint and the renewals, and waits until they have.
func (n *Node) Stop() { n.life.Stop() }

func (n *Node) shutdown() {
	n.cancel()
	if n.agent != nil {
		n.agent.Stop()
	}
	n.wg.Wait()
	if n.client != nil {
		n.client.Close()
	}
}
