package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"

	"nexus.dev/nexus/api"
	"nexus.dev/nexus/api/apitest"
	apiclient "nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/servertest"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
)

// nodeCredentials are node's credentials, issued by the test cluster's CA.
func nodeCredentials(t *testing.T, c *servertest.Cluster, node string) *pki.Credentials {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	id := identity.Node(c.Name, node)
	csr, err := pki.CreateCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := c.Issuer.Sign(csr, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := pki.NewCredentials(pki.CredentialsConfig{Chain: chain, Key: key, Bundle: c.Bundle})
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

// apiClient is an API client presenting creds' current certificate.
func apiClient(t *testing.T, c *servertest.Cluster, creds *pki.Credentials) *apiclient.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(c.Root.Cert)
	cl, err := apiclient.New(apiclient.Settings{Server: c.URL(), RootCAs: pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return creds.GetCertificate() }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// TestNodeCertificateRenewal: a node renews its certificate through the
// API with the shared renewer, for its own identity only; nobody renews
// another node's, and a server without the CA key says so.
func TestNodeCertificateRenewal(t *testing.T) {
	store := apitest.NexusStore(t)
	var c *servertest.Cluster
	c = servertest.StartServer(t, store, servertest.ServerOptions{Configure: func(cfg *api.Config) {
		cfg.Issuer = func() (*pki.Issuer, error) { return c.Issuer, nil }
	}})
	ctx := context.Background()
	creds := nodeCredentials(t, c, "n1")
	cl := apiClient(t, c, creds)
	old := creds.Leaf()
	r, err := pki.NewRenewer(pki.RenewerConfig{Credentials: creds, Renew: func(ctx context.Context, csr []byte) ([]*x509.Certificate, error) {
		chain, _, err := cl.RenewNodeCertificate(ctx, "n1", csr)
		return chain, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.RenewNow(ctx); err != nil {
		t.Fatalf("renew n1's certificate: %v", err)
	}
	leaf := creds.Leaf()
	if leaf.SerialNumber.Cmp(old.SerialNumber) == 0 || leaf.PublicKey.(*ecdsa.PublicKey).Equal(old.PublicKey) {
		t.Fatal("the renewal kept the old certificate or key")
	}
	if id, _ := pki.LeafIdentity(leaf); id != identity.Node(c.Name, "n1") {
		t.Fatalf("renewed certificate is for %s", id)
	}
	// The renewed certificate is the one the API now authenticates.
	cl.CloseConnections()
	nodes, _ := types.LookupResource("nodes")
	if _, err := cl.Get(ctx, nodes, "", "n1"); err != nil && !apiclient.IsNotFound(err) {
		t.Fatalf("a request with the renewed certificate: %v", err)
	}

	key, _ := pki.GenerateKey()
	csrFor := func(id identity.ID) string {
		csr, err := pki.CreateCSR(key, id)
		if err != nil {
			t.Fatal(err)
		}
		js, _ := json.Marshal(map[string]string{"csr": string(csr)})
		return string(js)
	}
	n1 := client{t: t, hc: c.HTTPClient(t, c.Node(t, "n1"), false), url: c.URL()}
	admin := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
	for _, tc := range []struct {
		name   string
		as     client
		path   string
		body   string
		code   int
		detail string
	}{
		{"another node's", n1, "/v1/nodes/n2/certificate", csrFor(identity.Node(c.Name, "n2")), 403, "only its own Node"},
		{"a CSR for another node", n1, "/v1/nodes/n1/certificate", csrFor(identity.Node(c.Name, "n2")), 403, "renews only its own identity"},
		{"a CSR for a server", n1, "/v1/nodes/n1/certificate", csrFor(identity.Server(c.Name, "n1")), 403, "renews only its own identity"},
		{"a user, even an admin", admin, "/v1/nodes/n1/certificate", csrFor(identity.Node(c.Name, "n1")), 403, "a node renews only its own"},
		{"not a CSR", n1, "/v1/nodes/n1/certificate", `{"csr":"hello"}`, 422, "not PEM"},
		{"an unknown field", n1, "/v1/nodes/n1/certificate", `{"csr":"x","ttl":"100y"}`, 400, "unknown field"},
	} {
		got := tc.as.do("POST", tc.path, "application/json", tc.body)
		if got.code != tc.code || !strings.Contains(got.problem.Detail, tc.detail) {
			t.Errorf("%s: %d %s, want %d naming %q", tc.name, got.code, got.body, tc.code, tc.detail)
		}
	}

	// A server without the CA key.
	other := servertest.StartServer(t, store, servertest.ServerOptions{SameCA: c, ServerName: "s2"})
	n1other := client{t: t, hc: other.HTTPClient(t, other.Node(t, "n1"), false), url: other.URL()}
	if got := n1other.do("POST", "/v1/nodes/n1/certificate", "application/json", csrFor(identity.Node(c.Name, "n1"))); got.code != 503 || !strings.Contains(got.problem.Detail, "no issuing CA key") {
		t.Errorf("a server without the CA: %d %s", got.code, got.body)
	}
}
