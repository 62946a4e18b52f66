package pki

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Errors a verification can end in. Each names the check that failed so a
// caller (and a log reader) can tell an expired certificate from a foreign
// one; test with errors.Is.
var (
	ErrNoCertificate    = errors.New("no certificate presented")
	ErrExpired          = errors.New("expired")
	ErrNotYetValid      = errors.New("not yet valid")
	ErrUnknownAuthority = errors.New("unknown authority")
	ErrRevoked          = errors.New("revoked")
	ErrWrongUsage       = errors.New("not valid for TLS client or server authentication")
	ErrBadIdentity      = errors.New("no/invalid SPIFFE ID")
	ErrWrongIdentity    = errors.New("wrong identity")
	ErrPinMismatch      = errors.New("CA pin mismatch")
)

// Bundle is the set of CA certificates a verifier trusts: self-signed roots,
// and the intermediates that issue leaves. During a rotation it holds both
// the old and the new CA. A Bundle is immutable: the methods that change it
// return a new one, so a verifier can swap bundles atomically.
type Bundle struct {
	roots         []*x509.Certificate
	intermediates []*x509.Certificate
}

// NewBundle sorts CA certificates into roots (self-signed) and
// intermediates. Every certificate must be a CA.
func NewBundle(certs ...*x509.Certificate) (*Bundle, error) {
	b := &Bundle{}
	for _, c := range certs {
		if !c.IsCA || !c.BasicConstraintsValid {
			return nil, fmt.Errorf("trust bundle: %q is not a CA certificate", c.Subject.CommonName)
		}
		if isSelfSigned(c) {
			b.roots = appendUnique(b.roots, c)
		} else {
			b.intermediates = appendUnique(b.intermediates, c)
		}
	}
	if len(b.roots) == 0 {
		return nil, errors.New("trust bundle: no root CA certificate")
	}
	return b, nil
}

// ParseBundle reads a PEM trust bundle (the format of Bundle.PEM).
func ParseBundle(data []byte) (*Bundle, error) {
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("trust bundle: %w", err)
	}
	return NewBundle(certs...)
}

// ReadBundleFile reads a PEM trust bundle file, refusing one larger than
// MaxCertificateFileSize; errors name the file.
func ReadBundleFile(path string) (*Bundle, error) {
	certs, err := ReadCertificatesFile(path)
	if err != nil {
		return nil, fmt.Errorf("trust bundle: %w", err)
	}
	b, err := NewBundle(certs...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// PEM encodes the bundle, roots first.
func (b *Bundle) PEM() []byte {
	return EncodeCertificates(append(slices.Clone(b.roots), b.intermediates...)...)
}

// Roots and Intermediates return copies of the bundle's certificates.
func (b *Bundle) Roots() []*x509.Certificate         { return slices.Clone(b.roots) }
func (b *Bundle) Intermediates() []*x509.Certificate { return slices.Clone(b.intermediates) }

// TrustDomain is the cluster the bundle's first root is for.
func (b *Bundle) TrustDomain() (string, error) { return TrustDomain(b.roots[0]) }

// AddRoot returns the bundle with another (self-signed) root trusted: the
// first step of a root rotation.
func (b *Bundle) AddRoot(root *x509.Certificate) (*Bundle, error) {
	if !root.IsCA || !isSelfSigned(root) {
		return nil, fmt.Errorf("trust bundle: %q is not a self-signed root CA", root.Subject.CommonName)
	}
	want, _ := b.TrustDomain()
	if td, err := TrustDomain(root); err != nil || td != want {
		return nil, fmt.Errorf("trust bundle: root %q is not for cluster %q", root.Subject.CommonName, want)
	}
	n := b.clone()
	n.roots = appendUnique(n.roots, root)
	return n, nil
}

// RemoveRoot returns the bundle without root: the last step of a root
// rotation. The last root cannot be removed.
func (b *Bundle) RemoveRoot(root *x509.Certificate) (*Bundle, error) {
	n := b.clone()
	n.roots = slices.DeleteFunc(n.roots, root.Equal)
	if len(n.roots) == 0 {
		return nil, errors.New("trust bundle: cannot remove the last root")
	}
	return n, nil
}

// AddIntermediate returns the bundle with another intermediate, which must
// chain to one of the bundle's roots.
func (b *Bundle) AddIntermediate(c *x509.Certificate, now time.Time) (*Bundle, error) {
	if !c.IsCA {
		return nil, fmt.Errorf("trust bundle: %q is not a CA certificate", c.Subject.CommonName)
	}
	if _, err := b.verify([]*x509.Certificate{c}, now, x509.ExtKeyUsageAny); err != nil {
		return nil, fmt.Errorf("trust bundle: add intermediate: %w", err)
	}
	n := b.clone()
	n.intermediates = appendUnique(n.intermediates, c)
	return n, nil
}

// RemoveIntermediate returns the bundle without c.
func (b *Bundle) RemoveIntermediate(c *x509.Certificate) *Bundle {
	n := b.clone()
	n.intermediates = slices.DeleteFunc(n.intermediates, c.Equal)
	return n
}

// Verify checks a presented chain (leaf first) at time now: the leaf and
// every CA above it inside their validity, the leaf allowed for TLS client
// or server authentication, and chaining to one of the bundle's roots
// through the bundle's intermediates. Intermediates the
// peer presents after its leaf are ignored: only the bundle decides which
// CAs are trusted, so an intermediate dropped from it stops verifying even
// while its root is still trusted. It returns the verified chain, leaf to
// root. Errors wrap ErrNoCertificate, ErrExpired, ErrNotYetValid,
// ErrWrongUsage or ErrUnknownAuthority.
func (b *Bundle) Verify(chain []*x509.Certificate, now time.Time) ([]*x509.Certificate, error) {
	return b.verify(chain, now, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth)
}

func (b *Bundle) verify(chain []*x509.Certificate, now time.Time, usages ...x509.ExtKeyUsage) ([]*x509.Certificate, error) {
	if len(chain) == 0 || chain[0] == nil {
		return nil, ErrNoCertificate
	}
	leaf := chain[0]
	if err := checkValidity(leaf, now); err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	for _, r := range b.roots {
		roots.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range b.intermediates {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: usages})
	if err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			// A CA in the only possible path is out of its validity.
			if now.Before(inv.Cert.NotBefore) {
				return nil, fmt.Errorf("%w: CA certificate %q is valid from %s (now %s)", ErrNotYetValid, inv.Cert.Subject.CommonName, stamp(inv.Cert.NotBefore), stamp(now))
			}
			return nil, fmt.Errorf("%w: CA certificate %q expired at %s (now %s)", ErrExpired, inv.Cert.Subject.CommonName, stamp(inv.Cert.NotAfter), stamp(now))
		}
		if errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage {
			return nil, fmt.Errorf("%w: certificate %s (%q) lacks the client/server auth extended key usage", ErrWrongUsage, SerialString(leaf), leaf.Subject.CommonName)
		}
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			return nil, fmt.Errorf("%w: certificate %s (%q, issued by %q) does not chain to the cluster's trust bundle", ErrUnknownAuthority, SerialString(leaf), leaf.Subject.CommonName, leaf.Issuer.CommonName)
		}
		return nil, fmt.Errorf("%w: certificate %s: %v", ErrUnknownAuthority, SerialString(leaf), err)
	}
	return chains[0], nil
}

func checkValidity(c *x509.Certificate, now time.Time) error {
	switch {
	case now.Before(c.NotBefore):
		return fmt.Errorf("%w: certificate %s (%q) is valid from %s (now %s): check the clocks", ErrNotYetValid, SerialString(c), c.Subject.CommonName, stamp(c.NotBefore), stamp(now))
	case now.After(c.NotAfter):
		return fmt.Errorf("%w: certificate %s (%q) expired at %s (now %s)", ErrExpired, SerialString(c), c.Subject.CommonName, stamp(c.NotAfter), stamp(now))
	}
	return nil
}

func (b *Bundle) clone() *Bundle {
	return &Bundle{roots: slices.Clone(b.roots), intermediates: slices.Clone(b.intermediates)}
}

// IntermediateRotation is the overlap of replacing the issuing intermediate
// Old with New. Start trusts both; after one leaf lifetime DropOld trusts
// only New. Both are pure: they return the new bundle to distribute.
type IntermediateRotation struct {
	Old, New *x509.Certificate
}

// Start returns b with New added next to Old.
func (r IntermediateRotation) Start(b *Bundle, now time.Time) (*Bundle, error) {
	return b.AddIntermediate(r.New, now)
}

// DropOld returns b without Old. Leaves still issued by Old stop verifying,
// so call it only after they have all renewed (one leaf lifetime).
func (r IntermediateRotation) DropOld(b *Bundle) *Bundle {
	return b.RemoveIntermediate(r.Old)
}

// Pin is the SHA-256 of a CA certificate's SubjectPublicKeyInfo, written
// "sha256:<hex>" (the kubeadm discovery-hash form). A joiner given the pin
// with its token trusts the CA only if it matches, so there is no
// trust-on-first-use.
func Pin(ca *x509.Certificate) string {
	sum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// VerifyPin checks that root's public key is the pinned one.
func VerifyPin(root *x509.Certificate, pin string) error {
	hexPart, ok := strings.CutPrefix(strings.TrimSpace(pin), "sha256:")
	want, err := hex.DecodeString(hexPart)
	if !ok || err != nil || len(want) != sha256.Size {
		return fmt.Errorf("%w: %q is not a CA pin (expected sha256:<64 hex digits>, as printed by nexus token create)", ErrPinMismatch, pin)
	}
	got := sha256.Sum256(root.RawSubjectPublicKeyInfo)
	if subtle.ConstantTimeCompare(got[:], want) != 1 {
		return fmt.Errorf("%w: the server's root CA has pin %s, not the expected %s: do not join this cluster (wrong address, or someone in the middle)", ErrPinMismatch, Pin(root), pin)
	}
	return nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return string(c.RawIssuer) == string(c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

func appendUnique(list []*x509.Certificate, c *x509.Certificate) []*x509.Certificate {
	if slices.ContainsFunc(list, c.Equal) {
		return list
	}
	return append(list, c)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
