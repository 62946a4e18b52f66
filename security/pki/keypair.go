package pki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"nexus.dev/nexus/internal/fsutil"
)

// KeyPairFiles serves a certificate and key kept in files by someone else
// (an operator's certificate for the host names clients dial), loading them
// again at a handshake once either file changed, so a renewal is served
// without a restart. A pair caught half written keeps the old one in use.
type KeyPairFiles struct {
	CertFile, KeyFile string

	mu     sync.Mutex
	cert   *tls.Certificate
	stamps [2]fileStamp
}

// Get returns the current pair: for tls.Config.GetCertificate, and once at
// start to fail early on a bad or expired pair.
func (k *KeyPairFiles) Get() (*tls.Certificate, error) {
	st := [2]fileStamp{stampOf(k.CertFile), stampOf(k.KeyFile)}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cert != nil && st == k.stamps {
		return k.cert, nil
	}
	cert, err := k.load()
	if err != nil {
		if k.cert != nil {
			return k.cert, nil
		}
		return nil, err
	}
	k.cert, k.stamps = cert, st
	return k.cert, nil
}

func (k *KeyPairFiles) load() (*tls.Certificate, error) {
	certPEM, err := fsutil.ReadFileLimit(k.CertFile, MaxCertificateFileSize)
	if err != nil {
		return nil, err
	}
	keyPEM, err := fsutil.ReadFileLimit(k.KeyFile, maxKeyFileSize)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate %s and key %s: %w", k.CertFile, k.KeyFile, err)
	}
	if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil && time.Now().After(leaf.NotAfter) {
		return nil, fmt.Errorf("certificate %s expired at %s: renew it: %w", k.CertFile, leaf.NotAfter.Format(time.RFC3339), ErrExpired)
	}
	return &cert, nil
}
