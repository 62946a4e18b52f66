package api

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"

	"nexus.dev/nexus/security/audit"
	"nexus.dev/nexus/security/authz"
	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
)

// Principal is the authenticated caller of a request.
type Principal struct {
	authz.User
	// ID is the caller's identity: its certificate's SPIFFE ID, or
	// serviceaccount:<namespace>/<name> for a token.
	ID string
}

// authenticate is the first of the three checks: a client certificate that
// chains to the current trust bundle, is valid now and is not revoked
// (checked on every request, so a revocation takes effect on connections
// that are already open), or a service account token. It sets
// r.principal and r.decision.Authn, or returns a 401.
func (s *Server) authenticate(r *request) *Problem {
	deny := func(format string, args ...any) *Problem {
		reason := fmt.Sprintf(format, args...)
		r.decision.Authn = &audit.Check{Allowed: false, Reason: reason}
		s.log.Info("authentication failed", "remote", remoteIP(r.http), "reason", reason)
		p := problem(http.StatusUnauthorized, "Unauthorized", "%s", reason)
		return p
	}
	if h := r.http.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || tok == "" {
			return deny("the Authorization header must be \"Bearer <service account token>\"")
		}
		p, err := s.tokens.authenticate(r.http.Context(), tok)
		if err != nil {
			return deny("service account token: %v", err)
		}
		r.principal = p
		r.decision.Authn = &audit.Check{Allowed: true, Reason: "service account token " + tokenID(tok) + " of " + p.ID}
		return nil
	}
	if r.http.TLS == nil || len(r.http.TLS.PeerCertificates) == 0 {
		return deny("no client certificate and no bearer token: the API has no anonymous access (use a config from `nexus user add`, or a service account token)")
	}
	chain := r.http.TLS.PeerCertificates
	if p, reason, ok := s.cachedPeer(r, chain); ok {
		r.principal = p
		r.decision.Authn = &audit.Check{Allowed: true, Reason: reason}
		return nil
	}
	id, err := s.creds.VerifyPeer(chain)
	if err != nil {
		return deny("client certificate %s: %v", pki.SerialString(chain[0]), err)
	}
	p, err := principalOf(id, chain[0])
	if err != nil {
		return deny("client certificate %s: %v", pki.SerialString(chain[0]), err)
	}
	r.principal = p
	reason := fmt.Sprintf("certificate %s for %s chains to the trust bundle, is valid and not revoked", pki.SerialString(chain[0]), id)
	r.decision.Authn = &audit.Check{Allowed: true, Reason: reason}
	s.remember(r, chain, p, reason)
	return nil
}

// connAuth remembers a connection's verified client certificate. The chain
// check (a few hundred microseconds of signature verification) is made again
// only when the trust bundle or the revocation list changes (new pointers),
// so a revocation still takes effect on the next request of a connection
// that is open; validity is compared with the clock on every request.
type connAuth struct {
	mu        sync.Mutex
	leaf      *x509.Certificate
	bundle    *pki.Bundle
	revoked   *pki.RevocationList
	principal Principal
	reason    string
}

type connAuthKey struct{}

func withConnAuth(ctx context.Context) context.Context {
	return context.WithValue(ctx, connAuthKey{}, &connAuth{})
}

func (s *Server) cachedPeer(r *request, chain []*x509.Certificate) (Principal, string, bool) {
	c, _ := r.http.Context().Value(connAuthKey{}).(*connAuth)
	if c == nil {
		return Principal{}, "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leaf != chain[0] || c.bundle != s.creds.Bundle() || c.revoked != s.creds.Revocations() || !s.now().Before(c.leaf.NotAfter) {
		return Principal{}, "", false
	}
	return c.principal, c.reason, true
}

func (s *Server) remember(r *request, chain []*x509.Certificate, p Principal, reason string) {
	c, _ := r.http.Context().Value(connAuthKey{}).(*connAuth)
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.leaf, c.bundle, c.revoked, c.principal, c.reason = chain[0], s.creds.Bundle(), s.creds.Revocations(), p, reason
}

// principalOf maps a certificate identity to a principal. Users' groups are
// the certificate's subject organizations, as in Kubernetes.
func principalOf(id identity.ID, leaf *x509.Certificate) (Principal, error) {
	p := Principal{ID: id.String()}
	switch id.Kind {
	case identity.KindUser:
		p.Kind, p.Name, p.Groups = authz.PrincipalUser, id.Name, pki.Groups(leaf, id.Cluster)
	case identity.KindNode:
		p.Kind, p.Name = authz.PrincipalNode, id.Name
	case identity.KindServer:
		p.Kind, p.Name = authz.PrincipalServer, id.Name
	default:
		return Principal{}, fmt.Errorf("%s is a %s identity, which cannot call the API (users, nodes and servers can; programs use service account tokens)", id, id.Kind)
	}
	return p, nil
}

func remoteIP(hr *http.Request) string {
	host, _, err := net.SplitHostPort(hr.RemoteAddr)
	if err != nil {
		return hr.RemoteAddr
	}
	return host
}
