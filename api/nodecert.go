package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/security/audit"
	"nexus.dev/nexus/security/authz"
	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
)

// renewNodeCertificate renews a node's certificate
// (POST /v1/nodes/{name}/certificate, verb create on nodes/certificate).
// Of the three checks, the first (the current certificate chains to the
// bundle, is valid and not revoked) and the third (RBAC: the node role
// may) ran before; the second is here and in NodeRestriction: only a node
// renews, only its own certificate, and the new one is for the identity
// of the one it presented, whatever the CSR asks for. A node whose
// certificate expired cannot renew: it joins again with a token.
func (s *Server) renewNodeCertificate(w http.ResponseWriter, r *request) error {
	p := r.principal
	if p.Kind != authz.PrincipalNode || p.Name != r.name {
		return problem(http.StatusForbidden, "Forbidden", "%s may not renew node %s's certificate: a node renews only its own, presenting its current certificate", p.ID, r.name)
	}
	if s.issuer == nil {
		return problem(http.StatusServiceUnavailable, "Unavailable", "this server holds no issuing CA key, so it cannot renew certificates: the node tries another server").withRetry(30)
	}
	body, err := s.readBody(r)
	if err != nil {
		return err
	}
	var req types.NodeCertificateRequest
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return badRequest("node certificate request: %v (fields: csr)", err)
	}
	csr, err := pki.ParseCSR([]byte(req.CSR))
	if err != nil {
		return invalid(r, types.FieldErrors{{Field: "csr", Detail: err.Error()}})
	}
	id, err := identity.Parse(p.ID)
	if err != nil {
		return err
	}
	if len(csr.URIs) > 0 && (len(csr.URIs) != 1 || csr.URIs[0].String() != id.String()) {
		return problem(http.StatusForbidden, "Forbidden", "the CSR asks for %v, but %s renews only its own identity", csr.URIs, id)
	}
	iss, err := s.issuer()
	if err != nil {
		return problem(http.StatusServiceUnavailable, "Unavailable", "this server cannot load its issuing CA: %v", err).withRetry(30)
	}
	chain, err := iss.Sign([]byte(req.CSR), id, 0)
	if err != nil {
		return invalid(r, types.FieldErrors{{Field: "csr", Detail: err.Error()}})
	}
	rec := r.auditRecord(http.StatusCreated)
	rec.Event = audit.EventCertificateIssued
	rec.Message = "renewed node certificate"
	rec.Annotations = map[string]string{"serial": pki.SerialString(chain[0]), "identity": id.String(), "expires": chain[0].NotAfter.UTC().Format(time.RFC3339)}
	if err := s.audit.Write(context.WithoutCancel(r.http.Context()), rec); err != nil {
		return problem(http.StatusServiceUnavailable, "Unavailable", "the certificate could not be audited, so it was not issued: %v", err).withRetry(5)
	}
	r.code = http.StatusCreated
	s.log.Info("renewed a node's certificate", "node", r.name, "serial", pki.SerialString(chain[0]), "expires", chain[0].NotAfter.UTC().Format(time.RFC3339))
	return writeJSON(w, http.StatusCreated, types.NodeCertificateResponse{APIVersion: types.APIVersion, Kind: "NodeCertificate",
		Chain: string(pki.EncodeCertificates(chain...)), Bundle: string(s.creds.Bundle().PEM())})
}
