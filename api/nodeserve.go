package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/buildinfo"
	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
)

// A node's agent on another machine than the server is reached through
// the agent's endpoint: ServeNode on the agent serves the two routes only
// the agent can answer, with the API's own paths, parameters and framing,
//
//	GET  /v1/namespaces/{ns}/instances/{name}/log
//	POST /v1/namespaces/{ns}/instances/{name}/exec
//
// and a server forwards a client's request to it through a NodeConn that
// is an API client (package client) of that endpoint. The server has
// already made the three checks and written the audit record; the
// endpoint lets in servers of the cluster only (mutual TLS: a node is
// never another node's caller), and the server checks that the endpoint's
// certificate is the node's.

// DefaultNodePort is where an agent serves logs and exec to the servers.
const DefaultNodePort = 7444

// NodeAgent is what ServeNode needs of the agent: the NodeConn, and the
// Instance a path names, as the agent knows it.
type NodeAgent interface {
	NodeConn
	// Instance is the instance bound to the node, once the agent knows
	// its instances (it may wait for that, or for ctx).
	Instance(ctx context.Context, namespace, name string) (*types.Instance, bool)
}

// NodeServeConfig configures ServeNode.
type NodeServeConfig struct {
	// Node is the node's name.
	Node string
	// Credentials are the node's: its certificate serves, and callers'
	// are checked against its bundle and revocation list.
	Credentials *pki.Credentials
	Agent       NodeAgent
	Logger      *slog.Logger
}

// ServeNode serves the agent's endpoint on l until ctx ends.
func ServeNode(ctx context.Context, l net.Listener, cfg NodeServeConfig) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &nodeHandler{cfg: cfg}
	conf := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"},
		ClientAuth: tls.RequireAnyClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return cfg.Credentials.GetCertificate()
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := h.checkServer(cs.PeerCertificates)
			return err
		},
	}
	hs := &http.Server{Handler: h, TLSConfig: conf, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute,
		BaseContext: func(net.Listener) context.Context { return ctx },
		// Refused handshakes (a caller that is not a server) are logged
		// at debug level, not on stderr.
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)}
	errc := make(chan error, 1)
	go func() { errc <- hs.ServeTLS(l, "", "") }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve the agent's endpoint: %w", err)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	return nil
}

type nodeHandler struct{ cfg NodeServeConfig }

// checkServer lets in servers of the cluster only: a chain to the current
// bundle, valid and not revoked, for a server identity.
func (h *nodeHandler) checkServer(chain []*x509.Certificate) (identity.ID, error) {
	id, err := h.cfg.Credentials.VerifyPeer(chain)
	if err != nil {
		return id, err
	}
	if id.Kind != identity.KindServer {
		return id, fmt.Errorf("%s is not a server: only the cluster's servers call a node's agent", id)
	}
	return id, nil
}

func (h *nodeHandler) ServeHTTP(w http.ResponseWriter, hr *http.Request) {
	if hr.TLS == nil {
		writeProblem(w, nil, problem(http.StatusUnauthorized, "Unauthorized", "a node's agent answers servers over mutual TLS only"))
		return
	}
	// Checked again per request: a revocation reaches open connections.
	if _, err := h.checkServer(hr.TLS.PeerCertificates); err != nil {
		writeProblem(w, nil, problem(http.StatusForbidden, "Forbidden", "%v", err))
		return
	}
	if hr.URL.Path == "/healthz" {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
		return
	}
	r, p := parseRequest(hr)
	if p == nil && (r.res.Plural != "instances" || (r.sub != "log" && r.sub != "exec")) {
		p = problem(http.StatusNotFound, "NotFound", "%s: a node's agent serves only instances' log and exec", hr.URL.Path)
	}
	if p != nil {
		writeProblem(w, r, p)
		return
	}
	if err := h.serve(w, r); err != nil && !errors.Is(err, errResponseStarted) {
		writeProblem(w, r, toProblem(r, err))
	}
}

// nodeSyncWait bounds how long a log or exec waits for an agent that just
// started to take over its instances.
const nodeSyncWait = 10 * time.Second

func (h *nodeHandler) serve(w http.ResponseWriter, r *request) error {
	ctx := r.http.Context()
	// An agent that just started takes over its instances first; a
	// caller waits for that for a few seconds at most.
	wctx, cancel := context.WithTimeout(ctx, nodeSyncWait)
	inst, ok := h.cfg.Agent.Instance(wctx, r.namespace, r.name)
	cancel()
	if !ok {
		return problem(http.StatusNotFound, "NotFound", "instance %s/%s is not on node %s (yet, or any more)", r.namespace, r.name, h.cfg.Node)
	}
	if r.sub == "log" {
		opts, err := logOptions(r.query, time.Now())
		if err != nil {
			return err
		}
		return streamLog(ctx, w, h.cfg.Agent, inst, opts, h.cfg.Logger, func() {})
	}
	body, opts, _, err := readExecRequest(r.http)
	if err != nil {
		return err
	}
	code, err := serveExec(ctx, w, body, opts, h.cfg.Agent, inst)
	h.cfg.Logger.Info("exec ended", "instance", r.namespace+"/"+r.name, "command", opts.Command, "exitCode", code, "err", err)
	return errResponseStarted
}

// remoteNode is the NodeConn of a node whose agent runs on another
// machine: an API client of the agent's endpoint.
type remoteNode struct {
	addr   string
	bundle *pki.Bundle // the bundle cl was made with
	cl     *client.Client
}

func (n *remoteNode) Logs(ctx context.Context, inst *types.Instance, opts types.LogOptions) (io.ReadCloser, error) {
	rc, err := n.cl.Logs(ctx, inst.Namespace, inst.Name, client.LogOptions{Follow: opts.Follow, TailLines: opts.TailLines,
		Since: opts.Since, Timestamps: opts.Timestamps})
	if client.IsNotFound(err) {
		return nil, notExist{err}
	}
	return rc, err
}

func (n *remoteNode) Exec(ctx context.Context, inst *types.Instance, opts types.ExecOptions, s types.ExecStreams) (int, error) {
	return n.cl.Exec(ctx, inst.Namespace, inst.Name, opts, s)
}

// notExist is the agent's 404, which the API answers as its own.
type notExist struct{ err error }

func (e notExist) Error() string   { return e.err.Error() }
func (e notExist) Is(t error) bool { return t == fs.ErrNotExist }

// remoteNodes keeps one client per node whose agent is on another
// machine, made again when its address or the trust bundle changes.
type remoteNodes struct {
	mu    sync.Mutex
	nodes map[string]*remoteNode
}

// remote returns the way to node's agent on another machine, from the
// address the Node publishes (status.agentAddress), once the agent has
// answered as that node; the error says why there is none.
func (s *Server) remote(ctx context.Context, node string) (NodeConn, error) {
	nodes, _ := types.LookupResource("nodes")
	o, _, err := s.current(ctx, nodes, "", node)
	if err != nil {
		return nil, err
	}
	addr := o.(*types.Node).Status.AgentAddress
	if addr == "" {
		return nil, errors.New("the Node publishes no agent address")
	}
	n, err := s.remotes.get(s.creds, s.log, node, addr)
	if err != nil {
		return nil, err
	}
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := n.cl.Healthy(hctx); err != nil {
		return nil, fmt.Errorf("its agent at %s: %w", addr, err)
	}
	return n, nil
}

func (r *remoteNodes) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for node, n := range r.nodes {
		n.cl.Close()
		delete(r.nodes, node)
	}
}

func (r *remoteNodes) get(creds *pki.Credentials, log *slog.Logger, node, addr string) (*remoteNode, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	bundle := creds.Bundle()
	if n := r.nodes[node]; n != nil {
		if n.addr == addr && n.bundle == bundle {
			return n, nil
		}
		n.cl.Close()
		delete(r.nodes, node)
	}
	want := identity.Node(creds.Identity().Cluster, node)
	cl, err := client.New(client.Settings{Server: "https://" + addr,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return creds.GetCertificate() },
		VerifyServer: func(chain []*x509.Certificate) error {
			id, err := creds.VerifyPeer(chain)
			if err != nil {
				return err
			}
			return pki.RequireIdentity(id, want)
		},
		DialTimeout: 3 * time.Second, UserAgent: "nexus-server/" + buildinfo.Version, Logger: log})
	if err != nil {
		return nil, err
	}
	if r.nodes == nil {
		r.nodes = map[string]*remoteNode{}
	}
	n := &remoteNode{addr: addr, bundle: bundle, cl: cl}
	r.nodes[node] = n
	return n, nil
}
