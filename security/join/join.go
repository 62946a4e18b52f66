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
package join

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
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
}

// Response carries the signed chain and the current trust bundle.
type Response struct {
	Chain  []byte `json:"chain"`  // PEM, leaf first
	Bundle []byte `json:"bundle"` // PEM
	// Servers are the API URLs of the cluster's servers, so the joined
	// machine knows where to reach the API and where to fail over.
	Servers []string `json:"servers,omitempty"`
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
		resp, err := s.join(req)
		if err != nil {
			return nil, &transport.RemoteError{Code: 403, Message: err.Error()}
		}
		return json.Marshal(resp)
	}
	return nil, fmt.Errorf("join: unknown method %q", method)
}

func (s *Server) join(data []byte) (*Response, error) {
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
	rec, err := s.Tokens.Consume(req.Token)
	if err != nil {
		return nil, err
	}
	id := identity.Node(s.Cluster, req.Name)
	if rec.Role == token.RoleServer {
		id = identity.Server(s.Cluster, req.Name)
	}
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
	return &Response{Chain: pki.EncodeCertificates(chain...), Bundle: b.PEM()}, nil
}

// Config is what a joining machine knows.
type Config struct {
	Addr  string // a server's transport address, host:port
	Token string // from `nexus token create`
	Pin   string // the root CA pin printed with the token
	Name  string // this machine's name
	Clock pki.Clock
}

// Result is the joined machine's first credentials.
type Result struct {
	ID     identity.ID
	Chain  []*x509.Certificate
	Key    *ecdsa.PrivateKey
	Bundle *pki.Bundle
	// Servers are the API URLs the server gave (Response.Servers).
	Servers []string
}

// ErrServerNotTrusted means the server could not prove it belongs to the
// pinned CA; the token was not sent.
var ErrServerNotTrusted = errors.New("server is not trusted")

// Join performs the join and returns a certificate for a key made here.
func Join(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Clock == nil {
		cfg.Clock = pki.SystemClock{}
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
	req, _ := json.Marshal(Request{Token: cfg.Token, Name: cfg.Name, CSR: csr})
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
	return &Result{ID: id, Chain: chain, Key: key, Bundle: bundle, Servers: resp.Servers}, nil
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
