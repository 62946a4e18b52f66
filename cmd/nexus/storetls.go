package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
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
	kp := &keyPairFiles{certFile: c.certFile, keyFile: c.keyFile}
	if _, err := kp.get(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: protos,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return kp.get()
		},
	}
	if c.caFile != "" {
		pem, err := os.ReadFile(c.caFile)
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

// keyPairFiles loads a certificate and key, again whenever either file
// changes (fileStamp, as the peer certificate keeper watches its files).
type keyPairFiles struct {
	certFile, keyFile string

	mu     sync.Mutex
	cert   *tls.Certificate
	stamps [2]fileStamp
}

func (k *keyPairFiles) get() (*tls.Certificate, error) {
	st := [2]fileStamp{stampOf(k.certFile), stampOf(k.keyFile)}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cert != nil && st == k.stamps {
		return k.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		if k.cert != nil {
			// A renewal caught half written: keep serving the old pair.
			return k.cert, nil
		}
		return nil, fmt.Errorf("--cert-file %s / --key-file %s: %w", k.certFile, k.keyFile, err)
	}
	if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil && time.Now().After(leaf.NotAfter) {
		return nil, fmt.Errorf("--cert-file %s expired at %s: renew it", k.certFile, leaf.NotAfter.Format(time.RFC3339))
	}
	k.cert, k.stamps = &cert, st
	return k.cert, nil
}
