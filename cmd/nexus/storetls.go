package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/security/pki"
)

// clientTLS is the TLS of the store's client (and metrics) URLs, with
// etcd's flags: --cert-file and --key-file for the server certificate,
// --trusted-ca-file and --client-cert-auth to require client certificates.
// These certificates are the operator's (clients must reach the member by
// a name or address in them); the peer certificates are the cluster's own.
type clientTLS struct {
	certFile, keyFile, caFile string
	clientCertAuth            bool
}

func (c clientTLS) enabled() bool { return c.certFile != "" || c.keyFile != "" }

// config returns the server TLS configuration for protocols protos, or nil
// when no certificate was given. The certificate is read again at a
// handshake once its files changed, so a renewed one is served without a
// restart.
func (c clientTLS) config(protos ...string) (*tls.Config, error) {
	switch {
	case c.clientCertAuth && c.caFile == "":
		return nil, errors.New("--client-cert-auth needs --trusted-ca-file: the CA bundle that client certificates must chain to")
	case !c.enabled() && c.caFile != "":
		return nil, errors.New("--trusted-ca-file is for client URLs served over https: give --cert-file and --key-file too")
	case !c.enabled():
		return nil, nil
	case c.certFile == "" || c.keyFile == "":
		return nil, errors.New("serving https needs both --cert-file and --key-file")
	}
	kp := &pki.KeyPairFiles{CertFile: c.certFile, KeyFile: c.keyFile}
	if _, err := kp.Get(); err != nil {
		return nil, fmt.Errorf("--cert-file/--key-file: %w", err)
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: protos,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return kp.Get()
		},
	}
	if c.caFile != "" {
		pem, err := fsutil.ReadFileLimit(c.caFile, pki.MaxCertificateFileSize)
		if err != nil {
			return nil, fmt.Errorf("--trusted-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--trusted-ca-file %s holds no PEM certificate", c.caFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if c.clientCertAuth {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return cfg, nil
}
