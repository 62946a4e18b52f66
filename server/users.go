package server

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
)

// DefaultUserTTL is how long a user's certificate lives: users are people
// with a config file, not processes that renew every day as nodes do. A
// lost config is revoked with nexus cert revoke.
const DefaultUserTTL = 90 * 24 * time.Hour

// AdminConfigFile is the first user's client configuration in the data dir.
const AdminConfigFile = "admin.conf"

// UserConfig describes a client configuration to issue.
type UserConfig struct {
	// DataDir holds the cluster's CA (pki/).
	DataDir string
	User    string
	Groups  []string
	// Server is the API's URL, e.g. https://10.0.0.5:7443.
	Server string
	// TTL of the certificate (default DefaultUserTTL; never past the
	// intermediate CA's expiry).
	TTL time.Duration
	// Context names the context (default USER@CLUSTER).
	Context string
}

// IssueUserConfig makes a key and a CSR here, has the local CA sign a user
// certificate with the groups, and returns a client configuration holding
// the cluster's CA, the certificate and the key, with the certificate.
func IssueUserConfig(cfg UserConfig) (*client.Config, *x509.Certificate, error) {
	d := pki.Dir{Path: filepath.Join(cfg.DataDir, "pki")}
	root, err := d.RootCert()
	if err != nil {
		return nil, nil, err
	}
	cluster, err := pki.TrustDomain(root)
	if err != nil {
		return nil, nil, err
	}
	id := identity.User(cluster, cfg.User)
	if err := id.Validate(); err != nil {
		return nil, nil, fmt.Errorf("user %q: %w", cfg.User, err)
	}
	issuer, err := d.Issuer(0)
	if err != nil {
		return nil, nil, err
	}
	key, err := pki.GenerateKey()
	if err != nil {
		return nil, nil, err
	}
	csr, err := pki.CreateCSR(key, id)
	if err != nil {
		return nil, nil, err
	}
	ttl := cfg.TTL
	if ttl == 0 {
		ttl = DefaultUserTTL
	}
	chain, err := issuer.SignLeaf(csr, id, pki.LeafOptions{TTL: ttl, Groups: cfg.Groups})
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := pki.MarshalKey(key, nil)
	if err != nil {
		return nil, nil, err
	}
	name := cfg.Context
	if name == "" {
		name = cfg.User + "@" + cluster
	}
	c, err := client.NewConfig(client.ContextEntry{Name: name, Cluster: cluster, User: cfg.User, Server: cfg.Server,
		CA: pki.EncodeCertificates(root), Certificate: pki.EncodeCertificates(chain...), Key: keyPEM, Namespace: "default"})
	if err != nil {
		return nil, nil, err
	}
	return c, chain[0], nil
}

// apiURL is the URL clients use: the first advertised name, else loopback,
// at the API's port.
func apiURL(advertise []string, addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		port = strconv.Itoa(DefaultAPIPort)
	}
	host := "127.0.0.1"
	if len(advertise) > 0 {
		host = advertise[0]
	}
	return "https://" + net.JoinHostPort(host, port)
}

// writeAdminConfig writes <data-dir>/admin.conf for the first user when it
// is missing or its certificate expires within a month, and, when asked,
// ~/.nexus/config if that does not exist yet. It returns the path and the
// certificate it issued (nil when the existing file was kept).
func (s *Server) writeAdminConfig() (string, *x509.Certificate, error) {
	path := filepath.Join(s.cfg.DataDir, AdminConfigFile)
	if c, err := client.LoadConfig(path); err == nil {
		if r, err := c.Resolve(""); err == nil && r.Settings.Certificate != nil && r.Settings.Certificate.Leaf != nil &&
			time.Until(r.Settings.Certificate.Leaf.NotAfter) > 30*24*time.Hour {
			return path, nil, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("admin.conf cannot be read: writing a new one", "file", path, "err", err)
	}
	cfg, cert, err := IssueUserConfig(UserConfig{DataDir: s.cfg.DataDir, User: s.cfg.AdminUser, Server: apiURL(s.cfg.Advertise, s.apiAddr)})
	if err != nil {
		return "", nil, fmt.Errorf("admin client configuration: %w", err)
	}
	if err := cfg.Write(path); err != nil {
		return "", nil, err
	}
	if s.cfg.WriteUserConfig {
		if home, err := client.DefaultConfigPath(); err == nil {
			if err := cfg.WriteNew(home); err == nil {
				s.log.Info("wrote the admin's client configuration to the default place too", "file", home)
			} else if !errors.Is(err, fs.ErrExist) {
				s.log.Warn("could not write the default client configuration", "file", home, "err", err)
			}
		}
	}
	return path, cert, nil
}
