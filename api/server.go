package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api/storage"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/security/audit"
	"nexus.dev/nexus/security/authz"
	"nexus.dev/nexus/security/pki"
)

// Config is what a Server needs.
type Config struct {
	// Client reaches the store (the embedded one or etcd).
	Client *clientv3.Client
	// Credentials verify client certificates: chain to the current bundle,
	// validity and revocation, checked again on every request.
	Credentials *pki.Credentials
	// Audit receives every mutation, denial and authentication failure.
	// If it cannot be written, mutating requests fail with 503.
	Audit *audit.Log
	// Transformers seal resources at rest, by plural ("secrets").
	Transformers map[string]storage.Transformer
	Limits       Limits
	// BookmarkInterval is how often an idle watch gets a bookmark
	// (default 30 s).
	BookmarkInterval time.Duration
	// BootstrapAdmin is the user bound to cluster-admin when no binding
	// for it exists yet ("" for none).
	BootstrapAdmin string
	// Issuer, when set, loads the CA that renews nodes' certificates
	// (POST /v1/nodes/{name}/certificate); without it renewals are 503.
	Issuer func() (*pki.Issuer, error)
	// NodeLeaseDuration is how long a node's heartbeat lease lives after
	// its last heartbeat (default types.DefaultNodeLeaseSeconds; whole
	// seconds, the store's granularity, at least 1).
	NodeLeaseDuration time.Duration
	// EvictionGrace is the controllers' eviction grace (default
	// types.DefaultEvictionSeconds), told to agents in the heartbeat's
	// answer: they fence by it when cut off.
	EvictionGrace time.Duration
	// ServiceRanges are where Services' virtual IPs are allocated from;
	// without an IPv6 range only headless Services can be created.
	ServiceRanges ServiceRanges
	Logger        *slog.Logger
	Now           func() time.Time
}

// Limits bound what one identity may ask of the server.
type Limits struct {
	// RequestsPerSecond and Burst bound one identity's request rate.
	RequestsPerSecond float64
	Burst             int
	// MaxInFlight bounds one identity's concurrent requests (watches
	// excluded: they are long-lived).
	MaxInFlight int
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes int64
	// MaxWatches bounds one identity's open watches, followed logs and
	// execs.
	MaxWatches int
}

// DefaultLimits are generous for people and agents, and stop one runaway
// client from starving the rest.
var DefaultLimits = Limits{RequestsPerSecond: 200, Burst: 400, MaxInFlight: 64, MaxBodyBytes: 3 << 20, MaxWatches: 1000}

// Server is the API: REST handlers over the store, behind authentication,
// the node identity check, RBAC, fairness limits and the audit log.
type Server struct {
	store            *storage.Store
	client           *clientv3.Client
	creds            *pki.Credentials
	issuer           func() (*pki.Issuer, error)
	remotes          remoteNodes
	audit            *audit.Log
	limits           Limits
	bookmarkInterval time.Duration
	log              *slog.Logger
	now              func() time.Time
	nsRes            *types.Resource
	rbac             *rbacCache
	fair             *fairness
	metrics          *metrics
	tokens           *tokenStore
	caches           map[string]*storage.Cache // by plural
	ready            chan struct{}
	readyOnce        sync.Once
	nodes            Nodes
	nodeLeaseSeconds int64
	evictionSeconds  int64
	services         ServiceRanges
}

// Nodes are the node agents this server reaches for logs and exec.
func (s *Server) Nodes() *Nodes { return &s.nodes }

// New makes a server. Run must be called to start its background work
// (the RBAC cache) before it answers requests other than health checks.
func New(cfg Config) (*Server, error) {
	if cfg.Client == nil || cfg.Credentials == nil {
		return nil, errors.New("api: a store client and credentials are required")
	}
	if cfg.Audit == nil {
		return nil, errors.New("api: an audit log is required")
	}
	s := &Server{
		client: cfg.Client, creds: cfg.Credentials, issuer: cfg.Issuer, audit: cfg.Audit, limits: cfg.Limits,
		bookmarkInterval: cfg.BookmarkInterval, log: cfg.Logger, now: cfg.Now, ready: make(chan struct{}),
		services: cfg.ServiceRanges,
	}
	if s.limits == (Limits{}) {
		s.limits = DefaultLimits
	}
	s.nodeLeaseSeconds = types.DefaultNodeLeaseSeconds
	if d := cfg.NodeLeaseDuration; d > 0 {
		s.nodeLeaseSeconds = max(int64((d+time.Second-1)/time.Second), 1)
	}
	s.evictionSeconds = types.DefaultEvictionSeconds
	if d := cfg.EvictionGrace; d > 0 {
		s.evictionSeconds = max(int64((d+time.Second-1)/time.Second), 1)
	}
	if s.bookmarkInterval == 0 {
		s.bookmarkInterval = 30 * time.Second
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.store = storage.New(storage.Config{Client: cfg.Client, Transformers: cfg.Transformers, Now: s.now,
		Claims: map[string]storage.ClaimsFunc{"services": serviceClaims}})
	s.nsRes, _ = types.LookupResource("namespaces")
	s.metrics = newMetrics()
	s.fair = newFairness(s.limits)
	s.tokens = &tokenStore{cli: cfg.Client, prefix: storage.DefaultPrefix + "_tokens/", now: s.now}
	s.rbac = newRBACCache(s.store, s.log)
	pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	progress := storage.ProgressIsOrdered(pctx, cfg.Client)
	cancel()
	if !progress {
		s.log.Warn("the store's progress notifications may overtake events (etcd before 3.4.31/3.5.13): gets and lists read the store instead of the watch cache")
	}
	s.caches = map[string]*storage.Cache{}
	for _, r := range types.AllResources() {
		s.caches[r.Plural] = storage.NewCache(s.store, r, progress, s.log)
	}
	return s, s.bootstrap(context.Background(), cfg.BootstrapAdmin)
}

// Ready reports whether the server answers API requests (its RBAC view is
// loaded).
func (s *Server) Ready() bool {
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

// Store is the server's object store (for controllers in the same process).
func (s *Server) Store() *storage.Store { return s.store }

// Run keeps the RBAC view and the watch caches current until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer s.remotes.close()
	for _, c := range s.caches {
		wg.Go(func() { c.Run(ctx) })
	}
	return s.rbac.run(ctx, func() { s.readyOnce.Do(func() { close(s.ready) }) })
}

// current returns an object as current as a read from the store, from the
// watch cache.
func (s *Server) current(ctx context.Context, r *types.Resource, ns, name string) (types.Object, []byte, error) {
	o, js, err := s.caches[r.Plural].Get(ctx, ns, name)
	if !errors.Is(err, storage.ErrNotCurrent) {
		return o, js, err
	}
	if o, err = s.store.Get(ctx, r, ns, name); err != nil {
		return nil, nil, err
	}
	js, err = json.Marshal(o)
	return o, js, err
}

// bootstrap creates the default namespace and the first user's
// cluster-admin binding, once.
func (s *Server) bootstrap(ctx context.Context, admin string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ns := &types.Namespace{}
	ns.Name = types.DefaultNamespace
	types.Default(ns)
	if _, err := s.store.Create(ctx, ns); err != nil && !storage.IsAlreadyExists(err) {
		return fmt.Errorf("api: create the default namespace: %w", err)
	}
	if admin == "" {
		return nil
	}
	b, err := authz.BootstrapBinding(admin)
	if err != nil {
		return fmt.Errorf("api: bootstrap binding for %s: %w", admin, err)
	}
	crb := &types.ClusterRoleBinding{Subjects: b.Subjects, RoleRef: b.RoleRef}
	crb.Name = b.Name
	if _, err := s.store.Create(ctx, crb); err != nil && !storage.IsAlreadyExists(err) {
		return fmt.Errorf("api: create the bootstrap binding %s: %w", b.Name, err)
	}
	return nil
}

// Handler is the API's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", s.authenticated(s.metrics.handler()))
	mux.Handle("GET /openapi.json", s.authenticated(http.HandlerFunc(s.openAPI)))
	mux.HandleFunc("/v1/", s.serveAPI)
	mux.HandleFunc("/", func(w http.ResponseWriter, hr *http.Request) {
		writeProblem(w, &request{http: hr}, problem(http.StatusNotFound, "NotFound", "%s is not an API path: resources are under /v1/, health at /healthz and /readyz, the schema at /openapi.json", hr.URL.Path))
	})
	return mux
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("ok\n"))
}

// readyz says whether the server can serve: the store answers, the audit
// log can be written and the RBAC view is loaded.
func (s *Server) readyz(w http.ResponseWriter, hr *http.Request) {
	var problems []string
	select {
	case <-s.ready:
	default:
		problems = append(problems, "the RBAC view is not loaded yet")
	}
	ctx, cancel := context.WithTimeout(hr.Context(), 2*time.Second)
	defer cancel()
	if _, err := s.client.Get(ctx, "/nexus/readyz"); err != nil {
		problems = append(problems, "store: "+err.Error())
	}
	if err := s.audit.Healthy(); err != nil {
		problems = append(problems, "audit log: "+err.Error())
	}
	w.Header().Set("Content-Type", "text/plain")
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		for _, p := range problems {
			fmt.Fprintln(w, p)
		}
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// authenticated lets only authenticated callers through (for /metrics and
// /openapi.json: nothing but health checks is anonymous).
func (s *Server) authenticated(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, hr *http.Request) {
		r := &request{http: hr}
		if p := s.authenticate(r); p != nil {
			s.audited(r, p.Status, nil)
			writeProblem(w, r, p)
			return
		}
		h.ServeHTTP(w, hr)
	})
}

// serveAPI runs one request through the three checks, the limits, the
// handler and the audit log.
func (s *Server) serveAPI(w http.ResponseWriter, hr *http.Request) {
	start := s.now()
	r := &request{http: hr}
	code := s.serve(w, r)
	verb, res := r.verb, ""
	if r.res != nil {
		res = r.res.Plural
	}
	s.metrics.observe(verb, res, code, time.Since(start))
}

func (s *Server) serve(w http.ResponseWriter, r *request) int {
	fail := func(p *Problem) int {
		s.audited(r, p.Status, nil)
		writeProblem(w, r, p)
		return p.Status
	}
	// 1. Cryptographic check: who is calling.
	if p := s.authenticate(r); p != nil {
		return fail(p)
	}
	parsed, p := parseRequest(r.http)
	parsed.principal, parsed.decision = r.principal, r.decision
	*r = *parsed
	if p != nil {
		return fail(p)
	}
	// Fairness before any work is done for the caller.
	release, p := s.fair.admit(r)
	if p != nil {
		return fail(p)
	}
	defer release()
	select {
	case <-s.ready:
	default:
		return fail(problem(http.StatusServiceUnavailable, "Unavailable", "the server is starting (loading RBAC): retry in a moment").withRetry(1))
	}
	// 2. Identity: the caller acts only for itself. 3. RBAC.
	if p := s.authorize(r); p != nil {
		return fail(p)
	}
	if r.mutating() {
		if err := s.audit.Healthy(); err != nil {
			s.log.Error("refusing a mutating request: the audit log cannot be written", "err", err, "request", r.describe())
			return fail(problem(http.StatusServiceUnavailable, "Unavailable", "the audit log cannot be written, so changes are refused: %v", err).withRetry(5))
		}
	}
	err := s.serveResource(w, r)
	switch {
	case err == nil:
		return r.code
	case errors.Is(err, errResponseStarted):
		return http.StatusOK
	}
	if errors.Is(err, context.Canceled) && r.http.Context().Err() != nil {
		err = errRequestCanceled
	}
	return fail(toProblem(r, err))
}

func (p *Problem) withRetry(seconds int) *Problem {
	p.RetryAfterSeconds = seconds
	return p
}

// finish audits a successful request and writes its response. The audit
// record of a change is on disk before the response leaves.
func (s *Server) finish(w http.ResponseWriter, r *request, status int, body []byte) error {
	if err := s.audited(r, status, body); err != nil && r.mutating() {
		s.log.Error("a change was applied but its audit record could not be written", "err", err, "request", r.describe())
		return problem(http.StatusServiceUnavailable, "Unavailable", "%s was applied, but its audit record could not be written: %v", r.describe(), err).withRetry(5)
	}
	r.code = status
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	// Two writes into the response's buffer, not one of a copy: body may be
	// the watch cache's bytes, shared by every reader of the object.
	_, _ = w.Write(body)
	_, _ = w.Write(newline)
	return nil
}

var newline = []byte{'\n'}

// auditRecord is the audit record of the request as it stands.
func (r *request) auditRecord(status int) audit.Record {
	rec := audit.Record{
		User:     audit.User{Name: r.principal.Name, Groups: r.principal.Groups, Kind: string(r.principal.Kind), ID: r.principal.ID},
		SourceIP: remoteIP(r.http),
		Verb:     r.verb,
		URI:      r.http.URL.RequestURI(),
		Code:     status,
		Decision: r.decision,
		Request:  r.body,
		// An exec's command, whatever the level (annotations are kept).
		Annotations: r.annotations,
	}
	if r.res != nil {
		rec.Resource, rec.Subresource, rec.Namespace, rec.Name = r.res.Plural, r.sub, r.namespace, r.name
	}
	if rec.Decision.Authn != nil && !rec.Decision.Authn.Allowed {
		rec.Event = audit.EventAuthnFailed
		rec.Message = rec.Decision.Authn.Reason
	}
	return rec
}

// audited writes the request's audit record (the policy decides how much
// of it; mutations, denials and failures are always kept).
func (s *Server) audited(r *request, status int, response []byte) error {
	rec := r.auditRecord(status)
	rec.Response = response
	// A client that went away does not cancel the record of what it did.
	// Changes, denials and failures are on disk before this returns; an
	// allowed read's record goes out with the next flush (Enqueue).
	return s.audit.Enqueue(context.WithoutCancel(r.http.Context()), rec)
}
