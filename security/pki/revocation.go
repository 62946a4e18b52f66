package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"
)

// revocationDomain separates revocation-list signatures from any other use
// of the intermediate's key.
const revocationDomain = "nexus revocation list v1\x00"

// maxRevocationListSize bounds a signed list (about 200k serials).
const maxRevocationListSize = 16 << 20

// ErrBadRevocationList is wrapped by every ParseRevocationList error.
var ErrBadRevocationList = errors.New("bad revocation list")

// RevocationList is the cluster's set of revoked certificate serials. It is
// immutable: Add returns a new list with a higher Number, and verifiers
// refuse to go back to a lower Number, so a replayed old list cannot
// un-revoke a certificate.
type RevocationList struct {
	cluster string
	number  uint64
	updated time.Time
	serials map[string]bool // hex of the serial's bytes
}

// NewRevocationList returns the empty list (Number 0) for a cluster.
func NewRevocationList(cluster string) *RevocationList {
	return &RevocationList{cluster: cluster, serials: map[string]bool{}}
}

// Add returns the list with more serials revoked, updated at now.
func (l *RevocationList) Add(now time.Time, serials ...*big.Int) *RevocationList {
	n := &RevocationList{cluster: l.cluster, number: l.number + 1, updated: now, serials: make(map[string]bool, len(l.serials)+len(serials))}
	for s := range l.serials {
		n.serials[s] = true
	}
	for _, s := range serials {
		n.serials[serialKey(s)] = true
	}
	return n
}

// Contains reports whether serial is revoked.
func (l *RevocationList) Contains(serial *big.Int) bool {
	return l != nil && l.serials[serialKey(serial)]
}

// Number increases with every change.
func (l *RevocationList) Number() uint64 { return l.number }

// Cluster is the trust domain the list is for.
func (l *RevocationList) Cluster() string { return l.cluster }

// Updated is when the last serial was added.
func (l *RevocationList) Updated() time.Time { return l.updated }

// Serials returns the revoked serials, hex, sorted.
func (l *RevocationList) Serials() []string {
	out := make([]string, 0, len(l.serials))
	for s := range l.serials {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

func serialKey(s *big.Int) string { return fmt.Sprintf("%x", s.Bytes()) }

// The signed form: a JSON envelope around the JSON payload's exact bytes, so
// the signature covers bytes, not a re-encoding.
type signedList struct {
	Payload   []byte   `json:"payload"`   // listPayload as JSON
	Signer    [][]byte `json:"signer"`    // DER: the signing intermediate
	Signature []byte   `json:"signature"` // ASN.1 ECDSA over SHA-256(revocationDomain || payload)
}

type listPayload struct {
	Version int       `json:"version"`
	Cluster string    `json:"cluster"`
	Number  uint64    `json:"number"`
	Updated time.Time `json:"updated"`
	Serials []string  `json:"serials"`
}

// Sign encodes the list signed by the issuing intermediate, ready to
// distribute.
func (l *RevocationList) Sign(issuer *Issuer) ([]byte, error) {
	payload, err := json.Marshal(listPayload{Version: 1, Cluster: l.cluster, Number: l.number, Updated: l.updated.UTC(), Serials: l.Serials()})
	if err != nil {
		return nil, err
	}
	digest := revocationDigest(payload)
	sig, err := issuer.Key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("sign revocation list: %w", err)
	}
	return json.MarshalIndent(signedList{Payload: payload, Signer: [][]byte{issuer.Cert.Raw}, Signature: sig}, "", "  ")
}

// ParseRevocationList decodes a signed list and verifies it: the signer is a
// CA of bundle b allowed to sign revocation lists and valid at now, and the
// list is for b's cluster.
func ParseRevocationList(data []byte, b *Bundle, now time.Time) (*RevocationList, error) {
	if len(data) > maxRevocationListSize {
		return nil, fmt.Errorf("%w: %d bytes is too large", ErrBadRevocationList, len(data))
	}
	var env signedList
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRevocationList, err)
	}
	if len(env.Signer) == 0 {
		return nil, fmt.Errorf("%w: no signer certificate", ErrBadRevocationList)
	}
	var chain []*x509.Certificate
	for _, der := range env.Signer {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: signer certificate: %v", ErrBadRevocationList, err)
		}
		chain = append(chain, c)
	}
	signer := chain[0]
	if !signer.IsCA || signer.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, fmt.Errorf("%w: signer %q may not sign revocation lists", ErrBadRevocationList, signer.Subject.CommonName)
	}
	if !slices.ContainsFunc(b.intermediates, signer.Equal) && !slices.ContainsFunc(b.roots, signer.Equal) {
		return nil, fmt.Errorf("%w: signer %q is not a CA in the trust bundle", ErrBadRevocationList, signer.Subject.CommonName)
	}
	if _, err := b.verify(chain, now, x509.ExtKeyUsageAny); err != nil {
		return nil, fmt.Errorf("%w: signer: %w", ErrBadRevocationList, err)
	}
	pub, ok := signer.PublicKey.(*ecdsa.PublicKey)
	digest := revocationDigest(env.Payload)
	if !ok || !ecdsa.VerifyASN1(pub, digest[:], env.Signature) {
		return nil, fmt.Errorf("%w: signature does not verify", ErrBadRevocationList)
	}
	var p listPayload
	if err := json.Unmarshal(env.Payload, &p); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrBadRevocationList, err)
	}
	td, _ := b.TrustDomain()
	if p.Version != 1 || p.Cluster != td {
		return nil, fmt.Errorf("%w: version %d for cluster %q, expected version 1 for %q", ErrBadRevocationList, p.Version, p.Cluster, td)
	}
	l := &RevocationList{cluster: p.Cluster, number: p.Number, updated: p.Updated, serials: make(map[string]bool, len(p.Serials))}
	for _, s := range p.Serials {
		n, err := ParseSerial(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadRevocationList, err)
		}
		l.serials[serialKey(n)] = true
	}
	return l, nil
}

func revocationDigest(payload []byte) [32]byte {
	return sha256.Sum256(append([]byte(revocationDomain), payload...))
}
