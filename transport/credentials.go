package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
)

// Credentials supplies this endpoint's certificate and the trust decisions. The transport asks on every handshake, so rotations and renewals take effect without restarting anything.
type Credentials interface {
	// GetCertificate returns this endpoint's current certificate (leaf + intermediates) and private key.
	GetCertificate() (*tls.Certificate, error)
	// VerifyPeer checks a peer's presented chain (leaf first) against the current trust bundle, validity and revocation, and returns the identity in the leaf's URI SAN; the error says which check failed.
	VerifyPeer(chain []*x509.Certificate) (identity.ID, error)
	// Subscribe returns a channel that receives whenever the trust bundle or the revocation list changes, so live connections can be re-verified; cancel stops it.
	Subscribe() (ch <-chan struct{}, cancel func())
}

// ErrRevoked is what a Credentials implementation wraps when VerifyPeer
// fails because the certificate is revoked. The transport then sends the
// peer the TLS alert certificate_revoked and, for live connections, closes
// them with the reason "certificate revoked".
var ErrRevoked = pki.ErrRevoked

// ErrNotAuthorized is wrapped by the errors of Target.Verify and
// ListenerConfig.Authorize failures the transport reports.
var ErrNotAuthorized = errors.New("peer not authorized")

// ExpectID returns a Target.Verify that accepts exactly want.
func ExpectID(want identity.ID) func(identity.ID) error {
	return func(got identity.ID) error {
		if got != want {
			return fmt.Errorf("peer is %s, expected %s", got, want)
		}
		return nil
	}
}

// ExpectKind returns a Target.Verify that accepts any identity of the given
// kind in cluster (for example any server of the cluster).
func ExpectKind(cluster string, kind identity.Kind) func(identity.ID) error {
	return func(got identity.ID) error {
		if got.Cluster != cluster || got.Kind != kind {
			return fmt.Errorf("peer is %s, expected a %s of cluster %s", got, kind, cluster)
		}
		return nil
	}
}

// withAlert makes err carry the TLS alert that best tells the peer why its
// certificate was refused, so the peer's error names the failed check
// (quic-go sends the alert as the CRYPTO_ERROR code).
func withAlert(err error) error {
	a := tls.AlertError(42) // bad_certificate
	var unknownCA x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.Is(err, ErrRevoked):
		a = 44 // certificate_revoked
	case errors.Is(err, ErrNotAuthorized):
		a = 49 // access_denied
	case errors.As(err, &unknownCA), errors.Is(err, pki.ErrUnknownAuthority):
		a = 48 // unknown_ca
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired, errors.Is(err, pki.ErrExpired), errors.Is(err, pki.ErrNotYetValid):
		a = 45 // certificate_expired (TLS has no "not yet valid")
	}
	return fmt.Errorf("%w%.0w", err, a)
}
