// Package join is how a new machine gets its first certificate: the
// operator runs `nexus token create`, which prints a join token and the
// SHA-256 pin of the cluster's root CA, and gives both to the machine.
//
// The joiner connects to a server's anonymous "nexus-join" service (it has
// no certificate yet) and, without sending anything secret, fetches the
// trust bundle. It refuses to go on unless a root in that bundle matches the
// pin and the server's own certificate chains to that bundle as a server of
// the cluster: no trust on first use, and an impostor never sees the token.
// Then it sends the token and a CSR for a key it made itself. The server
// consumes one use of the token (hashed, expiring, use-limited) and signs
// the CSR for the identity the token's role allows: node/<name> for an
// agent token, server/<name> for a server token.
//
// A joining server asks for more: it also sends the address of its store
// member and a CSR for an issuing intermediate CA of its own (its key, like
// every key, is made on the joiner and never leaves it). The cluster side
// (an Admitter, the server package) checks it can take the server before
// the token is used, then has the root sign that intermediate and adds the
// joiner to the store as a learner; the response carries what the new
// server needs to run (ServerGrant). Every response lists the API URLs of
// the cluster's servers.
package join

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
	"nexus.dev/nexus/security/token"
	"nexus.dev/nexus/transport"
)

// ServiceName is the ALPN name of the join service.
const ServiceName = "nexus-join"

// Request is what a joiner sends after it has checked the server.
type Request struct {
	Token string `json:"token"`
	Name  string `json:"name"` // the machine's name in its identity
	CSR   []byte `json:"csr"`  // PEM
	// Role is what the joiner becomes ("" is an agent); the token must be
	// for it.
	Role token.Role `json:"role,omitempty"`
	// Server is what a joining server adds (Role server).
	Server *ServerRequest `json:"server,omitempty"`
}

// ServerRequest is the part of a request only a joining server sends.
type ServerRequest struct {
	// PeerAddr is where its store member listens (host:port, QUIC),
	// reachable from the other servers.
	PeerAddr string `json:"peerAddr"`
	// IntermediateCSR asks for its own issuing CA (PEM).
	IntermediateCSR []byte `json:"intermediateCsr"`
}

// Response carries the signed chain and the current trust bundle.
type Response struct {
	Chain  []byte `json:"chain"`  // PEM, leaf first
	Bundle []byte `json:"bundle"` // PEM
	// Servers are the API URLs of the cluster's servers.
	Servers []string `json:"servers,omitempty"`
	// Server is what a joining server gets besides its certificate.
	Server *ServerGrant `json:"server,omitempty"`
}

// ServerGrant is what a new server needs to run beside the others.
type ServerGrant struct {
	// Intermediate is its issuing CA (PEM), signed by the cluster's root
	// and already in the trust bundle.
	Intermediate []byte `json:"intermediate"`
	// Revocations is the signed revocation list.
	Revocations []byte `json:"revocations"`
	// SecretsKey is the keyring that seals Secrets at rest: every server
	// needs the same one.
	SecretsKey []byte `json:"secretsKey"`
	// Members are the store's members, the joiner among them as a learner.
	Members []Member `json:"members"`
	// Revision is the store's revision when the joiner was admitted: once
	// its member has applied it, it is caught up enough to vote.
	Revision int64 `json:"revision"`
}

// Member is one member of the store.
type Member struct {
	Name     string `json:"name"`
	ID       uint64 `json:"id"`
	PeerAddr string `json:"peerAddr"`
	Learner  bool   `json:"learner,omitempty"`
}

// Admitter is the cluster side of a server's join.
type Admitter interface {
	// CheckServer refuses, before the token is used, a server the cluster
	// cannot take: a name that is already a member, or this server unable
	// to sign an intermediate or not a voting member itself.
	CheckServer(ctx context.Context, name, peerAddr string) error
	// AdmitServer has the root sign the joiner's intermediate CA, makes
	// every server trust it, and adds the joiner to the store as a
	// learner. On error nothing is left joined.
	AdmitServer(ctx context.Context, name, peerAddr string, intermediateCSR []byte) (*ServerGrant, error)
}

// maxRequest bounds a join request (a CSR is at most pki.MaxCSRSize).
const maxRequest = 16 << 10

// Server answers joins. It is safe for concurrent use.
type Server struct {
	Cluster string
	Tokens  *token.Store
	// Issuer returns the CA that signs joiners' certificates and Bundle the
	// trust bundle to hand out; both are read per request so rotations
	// apply at once.
	Issuer  func() (*pki.Issuer, error)
	Bundle  func() (*pki.Bundle, error)
	LeafTTL time.Duration // 0: the issuer's default
	// Servers lists the API URLs of the cluster's servers (nil: none).
	Servers func(ctx context.Context) []string
	// Admit takes joining servers; nil refuses them.
	Admit Admitter
}

// Service returns the anonymous transport service to register as
// ServiceName on a server's listener.
func (s *Server) Service() transport.Service {
	return transport.Service{Anonymous: true, Handler: transport.HandlerFunc(s.serve)}
}

func (s *Server) serve(ctx context.Context, _ identity.ID, method string, req []byte) ([]byte, error) {
	switch method {
	case "bundle":
		b, err := s.Bundle()
		if err != nil {
			return nil, err
		}
		return b.PEM(), nil
	case "join":
		resp, err := s.join(ctx, req)
		if err != nil {
			return nil, &transport.RemoteError{Code: 403, Message: err.Error()}
		}
		return json.Marshal(resp)
	}
	return nil, fmt.Errorf("join: unknown method %q", method)
}

func (s *Server) join(ctx context.Context, data []byte) (*Response, error) {
	if len(data) > maxRequest {
		return nil, fmt.Errorf("join request of %d bytes is too large", len(data))
	}
	var req Request
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, fmt.Errorf("join request is not valid JSON: %v", err)
	}
	// Everything that can be checked without the token is checked first,
	// so a malformed request does not burn a use.
	if _, err := pki.ParseCSR(req.CSR); err != nil {
		return nil, err
	}
	if _, err := token.Parse(req.Token); err != nil {
		return nil, err
	}
	probe := identity.Node(s.Cluster, req.Name)
	if err := probe.Validate(); err != nil {
		return nil, fmt.Errorf("machine name: %w", err)
	}
	role := req.Role
	if role == "" {
		role = token.RoleAgent
	}
	if _, err := token.ParseRole(string(role)); err != nil {
		return nil, err
	}
	id := identity.Node(s.Cluster, req.Name)
	if role == token.RoleServer {
		id = identity.Server(s.Cluster, req.Name)
		if err := s.checkServer(ctx, &req); err != nil {
			return nil, err
		}
	} else if req.Server != nil {
		return nil, errors.New("join request: server fields in an agent's request")
	}
	rec, err := s.Tokens.Consume(ctx, req.Token, role)
	if err != nil {
		return nil, err
	}
	resp, err := s.issue(ctx, &req, id)
	if err != nil {
		// The machine did not join: give the use back so that the operator
		// can retry with the same token once the cause is fixed.
		if rerr := s.Tokens.Refund(context.WithoutCancel(ctx), rec.ID); rerr != nil {
			err = fmt.Errorf("%w (and the token's use was not given back: %v)", err, rerr)
		}
		return nil, err
	}
	return resp, nil
}

// checkServer validates what only a joining server sends and asks the
// Admitter whether the cluster can take it.
func (s *Server) checkServer(ctx context.Context, req *Request) error {
	if s.Admit == nil {
		return errors.New("this server does not admit servers: join through another server of the cluster")
	}
	if req.Server == nil {
		return errors.New("join request: a server must send its store peer address and an intermediate CSR")
	}
	if err := CheckPeerAddr(req.Server.PeerAddr); err != nil {
		return err
	}
	if _, err := pki.ParseCSR(req.Server.IntermediateCSR); err != nil {
		return fmt.Errorf("intermediate CA request: %w", err)
	}
	return s.Admit.CheckServer(ctx, req.Name, req.Server.PeerAddr)
}

// issue signs the joiner's certificate and, for a server, admits it.
func (s *Server) issue(ctx context.Context, req *Request, id identity.ID) (*Response, error) {
	iss, err := s.Issuer()
	if err != nil {
		return nil, err
	}
	chain, err := iss.Sign(req.CSR, id, s.LeafTTL)
	if err != nil {
		return nil, err
	}
	b, err := s.Bundle()
	if err != nil {
		return nil, err
	}
	resp := &Response{Chain: pki.EncodeCertificates(chain...)}
	if id.Kind == identity.KindServer {
		grant, err := s.Admit.AdmitServer(ctx, req.Name, req.Server.PeerAddr, req.Server.IntermediateCSR)
		if err != nil {
			return nil, fmt.Errorf("admit server %s: %w", req.Name, err)
		}
		inter, err := pki.ParseCertificates(grant.Intermediate)
		if err == nil {
			b, err = b.AddIntermediate(inter[0], time.Now())
		}
		if err != nil {
			return nil, fmt.Errorf("admit server %s: its intermediate CA: %w", req.Name, err)
		}
		resp.Server = grant
	}
	resp.Bundle = b.PEM()
	if s.Servers != nil {
		resp.Servers = s.Servers(ctx)
	}
	return resp, nil
}

// CheckPeerAddr checks a store peer address other machines are to dial:
// host:port with a host that is neither empty nor "every address".
func CheckPeerAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("store peer address %q: %v (want host:port)", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("store peer address %q: port must be 1-65535", addr)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return fmt.Errorf("store peer address %q: other servers cannot dial it: give the address they reach this server at", addr)
	}
	return nil
}

// Config is what a joining machine knows.
type Config struct {
	Addr  string // a server's transport address, host:port
	Token string // from `nexus token create`
	Pin   string // the root CA pin printed with the token
	Name  string // this machine's name
	// Role is what this machine becomes (default agent); the token must be
	// for it.
	Role token.Role
	// PeerAddr is a joining server's store peer address (Role server).
	PeerAddr string
	Clock    pki.Clock
}

// Result is the joined machine's first credentials.
type Result struct {
	ID     identity.ID
	Chain  []*x509.Certificate
	Key    *ecdsa.PrivateKey
	Bundle *pki.Bundle
	// Servers are the API URLs of the cluster's servers.
	Servers []string
	// Server is what a joined server gets besides its certificate.
	Server *ServerResult
}

// ServerResult is a joined server's issuing CA and what it needs to run.
type ServerResult struct {
	Root            *x509.Certificate // the pinned root
	Intermediate    *x509.Certificate
	IntermediateKey *ecdsa.PrivateKey
	Revocations     []byte
	SecretsKey      []byte
	Members         []Member
	Revision        int64
}

// ErrServerNotTrusted means the server could not prove it belongs to the
// pinned CA; the token was not sent.
var ErrServerNotTrusted = errors.New("server is not trusted")

// Join performs the join and returns a certificate for a key made here.
func Join(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Clock == nil {
		cfg.Clock = pki.SystemClock{}
	}
	if cfg.Role == "" {
		cfg.Role = token.RoleAgent
	}
	if _, err := token.ParseRole(string(cfg.Role)); err != nil {
		return nil, err
	}
	if cfg.Role == token.RoleServer {
		if err := CheckPeerAddr(cfg.PeerAddr); err != nil {
			return nil, err
		}
	}
	if _, err := token.Parse(cfg.Token); err != nil {
		return nil, err
	}
	var serverChain []*x509.Certificate
	conn, err := transport.DialAnonymous(ctx, cfg.Addr, ServiceName, func(chain []*x509.Certificate) (identity.ID, error) {
		if len(chain) == 0 {
			return identity.ID{}, errors.New("the server presented no certificate")
		}
		serverChain = chain
		return pki.LeafIdentity(chain[0])
	}, transport.Tuning{})
	if err != nil {
		return nil, fmt.Errorf("join %s: %w", cfg.Addr, err)
	}
	defer conn.Close()

	data, err := conn.Call(ctx, "bundle", nil)
	if err != nil {
		return nil, fmt.Errorf("join %s: fetch the trust bundle: %w", cfg.Addr, err)
	}
	offered, err := pki.ParseBundle(data)
	if err != nil {
		return nil, fmt.Errorf("join %s: the server sent a bad bundle: %w", cfg.Addr, err)
	}
	bundle, err := pinnedBundle(offered, cfg.Pin)
	if err == nil {
		err = checkServer(bundle, serverChain, cfg.Clock.Now())
	}
	if err != nil {
		return nil, fmt.Errorf("join %s: %w: %w (check the pin printed by `nexus token create`)", cfg.Addr, ErrServerNotTrusted, err)
	}
	cluster, _ := bundle.TrustDomain()

	key, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.CreateCSR(key, identity.Node(cluster, cfg.Name))
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	r := Request{Token: cfg.Token, Name: cfg.Name, CSR: csr, Role: cfg.Role}
	var interKey *ecdsa.PrivateKey
	if cfg.Role == token.RoleServer {
		if interKey, err = pki.GenerateKey(); err != nil {
			return nil, err
		}
		interCSR, err := pki.CreateCSR(interKey, identity.Server(cluster, cfg.Name))
		if err != nil {
			return nil, fmt.Errorf("join: %w", err)
		}
		r.Server = &ServerRequest{PeerAddr: cfg.PeerAddr, IntermediateCSR: interCSR}
	}
	req, _ := json.Marshal(r)
	data, err = conn.Call(ctx, "join", req)
	if err != nil {
		return nil, fmt.Errorf("join %s: %w", cfg.Addr, err)
	}
	var resp Response
	if err := json.Unmarshal(data, &resp); err != nil {
		return nil, fmt.Errorf("join %s: bad response: %w", cfg.Addr, err)
	}
	chain, err := pki.ParseCertificates(resp.Chain)
	if err != nil {
		return nil, fmt.Errorf("join %s: bad certificate in response: %w", cfg.Addr, err)
	}
	// The bundle in the response may hold CAs newer than the one fetched
	// first (a joining server's own intermediate): it is trusted only as
	// far as the pin allows.
	if offered, err := pki.ParseBundle(resp.Bundle); err == nil {
		if b, err := pinnedBundle(offered, cfg.Pin); err == nil {
			bundle = b
		}
	}
	if _, err := bundle.Verify(chain, cfg.Clock.Now()); err != nil {
		return nil, fmt.Errorf("join %s: the issued certificate does not verify: %w", cfg.Addr, err)
	}
	if !chain[0].PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) {
		return nil, fmt.Errorf("join %s: the issued certificate is not for this machine's key", cfg.Addr)
	}
	id, err := pki.LeafIdentity(chain[0])
	if err != nil {
		return nil, err
	}
	if id.Name != cfg.Name || id.Cluster != cluster {
		return nil, fmt.Errorf("join %s: issued identity %s is not this machine", cfg.Addr, id)
	}
	wantKind := identity.KindNode
	if cfg.Role == token.RoleServer {
		wantKind = identity.KindServer
	}
	if id.Kind != wantKind {
		return nil, fmt.Errorf("join %s: issued identity %s is not a %s", cfg.Addr, id, cfg.Role)
	}
	res := &Result{ID: id, Chain: chain, Key: key, Bundle: bundle, Servers: resp.Servers}
	if cfg.Role == token.RoleServer {
		if res.Server, err = serverResult(resp.Server, bundle, interKey); err != nil {
			return nil, fmt.Errorf("join %s: %w", cfg.Addr, err)
		}
	}
	return res, nil
}

// serverResult checks what a joining server was granted: an intermediate
// CA for its own key, signed by the pinned root and in the bundle.
func serverResult(g *ServerGrant, bundle *pki.Bundle, key *ecdsa.PrivateKey) (*ServerResult, error) {
	if g == nil {
		return nil, errors.New("the server sent no server grant")
	}
	certs, err := pki.ParseCertificates(g.Intermediate)
	if err != nil {
		return nil, fmt.Errorf("bad intermediate CA in response: %w", err)
	}
	inter := certs[0]
	if pub, ok := inter.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) || !inter.IsCA {
		return nil, errors.New("the intermediate CA in the response is not a CA for this machine's key")
	}
	root := bundle.Roots()[0]
	if err := inter.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("the intermediate CA in the response is not signed by the pinned root: %w", err)
	}
	if !slices.ContainsFunc(bundle.Intermediates(), inter.Equal) {
		return nil, errors.New("the trust bundle in the response lacks this server's intermediate CA")
	}
	return &ServerResult{Root: root, Intermediate: inter, IntermediateKey: key, Revocations: g.Revocations,
		SecretsKey: g.SecretsKey, Members: g.Members, Revision: g.Revision}, nil
}

// pinnedBundle keeps, of what the server offered, only the root matching
// the pin and the intermediates that root signed. Trusting anything else
// on the server's word would let an impostor add its own CA beside the real
// (public) root.
func pinnedBundle(offered *pki.Bundle, pin string) (*pki.Bundle, error) {
	for _, r := range offered.Roots() {
		if pki.VerifyPin(r, pin) != nil {
			continue
		}
		certs := []*x509.Certificate{r}
		for _, in := range offered.Intermediates() {
			if in.CheckSignatureFrom(r) == nil {
				certs = append(certs, in)
			}
		}
		return pki.NewBundle(certs...)
	}
	return nil, pki.ErrPinMismatch
}

// checkServer accepts the server only if its chain verifies against the
// pinned bundle as a server of the cluster.
func checkServer(b *pki.Bundle, chain []*x509.Certificate, now time.Time) error {
	if _, err := b.Verify(chain, now); err != nil {
		return err
	}
	id, err := pki.LeafIdentity(chain[0])
	if err != nil {
		return err
	}
	if id.Kind != identity.KindServer {
		return fmt.Errorf("the server's certificate is for %s, not a server", id)
	}
	return nil
}
