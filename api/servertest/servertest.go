// Package servertest runs an API server in the test's process, on
// loopback, with a CA of its own, over a store from api/apitest: what the
// API's tests and the client's tests talk to with real mutual TLS.
package servertest

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"nexus.dev/nexus/api"
	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/security/audit"
	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
)

// Cluster is an API server in this process, on loopback, with a CA of its
// own: what the API's tests talk to with real mutual TLS.
type Cluster struct {
	Name     string
	Root     *pki.Root
	Issuer   *pki.Issuer
	Bundle   *pki.Bundle
	Creds    *pki.Credentials // the server's
	Server   *api.Server
	Addr     string // host:port, TCP and UDP
	AuditDir string
	// SecretsKey is the key file that seals Secrets.
	SecretsKey string
	Backend    apitest.Backend

	stop func()
}

// ServerOptions adjust StartServer.
type ServerOptions struct {
	Limits           api.Limits
	BookmarkInterval time.Duration
	// Admin is bound to cluster-admin at start (default "admin").
	Admin string
	// SameCA, when set, is another server of the same cluster: this one
	// shares its CA (and so its users), as the servers of one cluster do.
	SameCA *Cluster
	// ServerName names this server's identity (default "s1").
	ServerName string
	// Configure, when set, adjusts the API's configuration before it is
	// made (an issuer for node certificates, ...).
	Configure func(*api.Config)
	// NodeLeaseDuration is the nodes' heartbeat lease (default 3 s).
	NodeLeaseDuration time.Duration
}

// ServiceRanges are the test servers' ranges for Services' virtual IPs
// (what a cluster of fd00:6e78:7400::/48 and 10.71.0.0/16 has).
var ServiceRanges = api.ServiceRanges{IPv6: netip.MustParsePrefix("fd00:6e78:7400:ff::/112"), IPv4: netip.MustParsePrefix("10.71.255.0/24")}

// StartServer runs an API server over the backend until the test ends.
func StartServer(t testing.TB, b apitest.Backend, opts ServerOptions) *Cluster {
	t.Helper()
	c := &Cluster{Name: "apitest", Backend: b, AuditDir: t.TempDir()}
	var err error
	if o := opts.SameCA; o != nil {
		c.Name, c.Root, c.Issuer, c.Bundle = o.Name, o.Root, o.Issuer, o.Bundle
	} else {
		if c.Root, err = pki.NewRoot(pki.RootConfig{Cluster: c.Name}); err != nil {
			t.Fatal(err)
		}
		if c.Issuer, err = c.Root.NewIssuer(pki.IssuerConfig{}); err != nil {
			t.Fatal(err)
		}
		if c.Bundle, err = pki.NewBundle(c.Root.Cert, c.Issuer.Cert); err != nil {
			t.Fatal(err)
		}
	}
	if opts.ServerName == "" {
		opts.ServerName = "s1"
	}
	chain, key := c.issue(t, identity.Server(c.Name, opts.ServerName), pki.LeafOptions{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, DNSNames: []string{"localhost"}})
	if c.Creds, err = pki.NewCredentials(pki.CredentialsConfig{Chain: chain, Key: key, Bundle: c.Bundle}); err != nil {
		t.Fatal(err)
	}
	log, err := audit.Open(audit.Config{Dir: c.AuditDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	if opts.Admin == "" {
		opts.Admin = "admin"
	}
	c.SecretsKey = filepath.Join(t.TempDir(), "secrets.key")
	keys, err := api.LoadSecretKeys(c.SecretsKey, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	acfg := api.Config{Client: b.Client(t), Credentials: c.Creds, Audit: log, Limits: opts.Limits,
		BookmarkInterval: opts.BookmarkInterval, BootstrapAdmin: opts.Admin, Transformers: keys.Transformers(),
		NodeLeaseDuration: opts.NodeLeaseDuration, ServiceRanges: ServiceRanges}
	if opts.Configure != nil {
		opts.Configure(&acfg)
	}
	c.Server, err = api.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	scfg := api.ServeConfig{Addr: "127.0.0.1:0", GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.Creds.GetCertificate() }}
	ls, err := api.Listen(scfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Addr = ls.TCP.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = c.Server.Run(ctx); done <- struct{}{} }()
	go func() { _ = c.Server.Serve(ctx, ls, scfg); done <- struct{}{} }()
	var once sync.Once
	c.stop = func() { once.Do(func() { cancel(); <-done; <-done }) }
	t.Cleanup(c.stop)
	// Ready once RBAC is loaded.
	cli := c.HTTPClient(t, c.User(t, opts.Admin), false)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := cli.Get(c.URL() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return c
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("API server not ready within 20 s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops the server (a server of the cluster going away); the test's
// end does too.
func (c *Cluster) Stop() { c.stop() }

// URL is the server's base URL.
func (c *Cluster) URL() string { return "https://" + c.Addr }

func (c *Cluster) issue(t testing.TB, id identity.ID, opts pki.LeafOptions) ([]*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CreateCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := c.Issuer.SignLeaf(csr, id, opts)
	if err != nil {
		t.Fatal(err)
	}
	return chain, key
}

func (c *Cluster) cert(t testing.TB, id identity.ID, opts pki.LeafOptions) *tls.Certificate {
	chain, key := c.issue(t, id, opts)
	tc := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, cert := range chain {
		tc.Certificate = append(tc.Certificate, cert.Raw)
	}
	return tc
}

// User issues a client certificate for a user with groups.
func (c *Cluster) User(t testing.TB, name string, groups ...string) *tls.Certificate {
	return c.cert(t, identity.User(c.Name, name), pki.LeafOptions{Groups: groups})
}

// Node issues a node's certificate.
func (c *Cluster) Node(t testing.TB, name string) *tls.Certificate {
	return c.cert(t, identity.Node(c.Name, name), pki.LeafOptions{})
}

// HTTPClient is a client that trusts the cluster's root and presents cert
// (nil for none), over HTTP/2 or, with h3, HTTP/3.
func (c *Cluster) HTTPClient(t testing.TB, cert *tls.Certificate, h3 bool) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(c.Root.Cert)
	conf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	}
	if h3 {
		tr := &http3.Transport{TLSClientConfig: conf}
		t.Cleanup(func() { tr.Close() })
		return &http.Client{Transport: tr, Timeout: 60 * time.Second}
	}
	tr := &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}
