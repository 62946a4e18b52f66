package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"

	"nexus.dev/nexus/security/identity"
)

// MaxCSRSize bounds a PEM-encoded CSR. A P-256 CSR with one URI SAN is under
// 600 bytes; anything much larger is not one of ours.
const MaxCSRSize = 4096

// ErrBadCSR is wrapped by every ParseCSR error.
var ErrBadCSR = errors.New("bad certificate signing request")

// GenerateKey makes a new ECDSA P-256 private key, the only key type Nexus
// certificates carry.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// CreateCSR makes a PEM-encoded certificate signing request for key. The ID
// is a hint for humans reading the CSR: the CA decides the SAN itself.
func CreateCSR(key crypto.Signer, id identity.ID) ([]byte, error) {
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	return createCSR(key, id.Name, id.URL())
}

func createCSR(key crypto.Signer, cn string, uri *url.URL) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: cn},
		URIs:    []*url.URL{uri},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// ParseCSR reads one PEM-encoded CSR and checks everything about it the CA
// relies on: size, encoding, the self-signature (proof that the requester
// holds the key) and the key type (ECDSA P-256 only).
func ParseCSR(data []byte) (*x509.CertificateRequest, error) {
	if len(data) > MaxCSRSize {
		return nil, fmt.Errorf("%w: %d bytes is too large (limit %d)", ErrBadCSR, len(data), MaxCSRSize)
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: not PEM (expected a CERTIFICATE REQUEST block)", ErrBadCSR)
	}
	if block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: PEM block is %q, expected CERTIFICATE REQUEST", ErrBadCSR, block.Type)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: trailing data after the PEM block", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed: %v", ErrBadCSR, err)
	}
	if err := checkKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature does not verify: %v", ErrBadCSR, err)
	}
	return csr, nil
}

func checkKey(pub any) error {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("key type %T is not allowed: use ECDSA P-256", pub)
	}
	if k.Curve != elliptic.P256() {
		return fmt.Errorf("curve %s is not allowed: use ECDSA P-256", k.Curve.Params().Name)
	}
	return nil
}
