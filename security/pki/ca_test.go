package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/security/identity"
)

func TestSignDecidesEverythingButTheKey(t *testing.T) {
	clock := newFakeClock()
	ca := newTestCA(t, "prod", clock)
	key, _ := GenerateKey()
	// A CSR that asks for much more than it may have.
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}},
		URIs:           []*url.URL{mustURL("spiffe://prod/server/leader"), mustURL("spiffe://other/user/root")},
		DNSNames:       []string{"*.example.com"},
		IPAddresses:    []net.IP{net.ParseIP("10.0.0.1")},
		EmailAddresses: []string{"root@example.com"},
		ExtraExtensions: []pkix.Extension{{ // basicConstraints CA:TRUE
			Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: []byte{0x30, 0x03, 0x01, 0x01, 0xff},
		}},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	id := identity.Node("prod", "n1")

	tests := []struct {
		kind    identity.ID
		ttl     time.Duration
		wantTTL time.Duration
		usage   []x509.ExtKeyUsage
	}{
		{id, 0, DefaultLeafTTL, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
		{identity.Server("prod", "s1"), 2 * time.Hour, 2 * time.Hour, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
		{identity.Workload("prod", "web", "api"), time.Minute, time.Minute, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
		{identity.User("prod", "alice"), 0, DefaultLeafTTL, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		{id, 10 * DefaultIntermediateTTL, DefaultIntermediateTTL, nil}, // clamped to the intermediate
	}
	for _, tt := range tests {
		chain, err := ca.issuer.Sign(csr, tt.kind, tt.ttl)
		if err != nil {
			t.Fatalf("%s: %v", tt.kind, err)
		}
		leaf := chain[0]
		// A machine whose clock is 2 minutes behind the CA's accepts it.
		if _, err := ca.bundle.Verify(chain, clock.Now().Add(-2*time.Minute)); tt.wantTTL >= time.Hour && err != nil {
			t.Errorf("%s: a verifier 2 minutes behind the CA refuses it: %v", tt.kind, err)
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != tt.kind.String() {
			t.Errorf("%s: URIs = %v", tt.kind, leaf.URIs)
		}
		if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || leaf.IsCA {
			t.Errorf("%s: copied from the CSR: dns %v ip %v email %v ca %v", tt.kind, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses, leaf.IsCA)
		}
		if slices.Contains(leaf.Subject.Organization, "system:masters") {
			t.Errorf("%s: subject copied from the CSR: %v", tt.kind, leaf.Subject)
		}
		if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) {
			t.Errorf("%s: not the CSR's key", tt.kind)
		}
		if got := leaf.NotAfter.Sub(clock.Now()); got != tt.wantTTL {
			if tt.usage != nil || !leaf.NotAfter.Equal(ca.issuer.Cert.NotAfter) {
				t.Errorf("%s: lifetime %s, want %s", tt.kind, got, tt.wantTTL)
			}
		}
		if tt.usage != nil && !slices.Equal(leaf.ExtKeyUsage, tt.usage) {
			t.Errorf("%s: ExtKeyUsage %v, want %v", tt.kind, leaf.ExtKeyUsage, tt.usage)
		}
		if _, err := ca.bundle.Verify(chain, clock.Now()); err != nil {
			t.Errorf("%s: does not verify: %v", tt.kind, err)
		}
	}

	if _, err := ca.issuer.Sign(csr, identity.Node("other", "n1"), 0); err == nil || !strings.Contains(err.Error(), `cluster "prod"`) {
		t.Errorf("foreign cluster: err = %v", err)
	}
	if _, err := ca.issuer.Sign(csr, identity.ID{Cluster: "prod", Kind: "root", Name: "x"}, 0); err == nil {
		t.Error("invalid identity was signed")
	}
}

func TestIntermediateIsConstrained(t *testing.T) {
	clock := newFakeClock()
	ca := newTestCA(t, "prod", clock)
	ic := ca.issuer.Cert
	if !ic.IsCA || ic.MaxPathLen != 0 || !ic.MaxPathLenZero || ic.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Fatalf("intermediate: IsCA %v MaxPathLen %d zero %v KeyUsage %v", ic.IsCA, ic.MaxPathLen, ic.MaxPathLenZero, ic.KeyUsage)
	}
	// A sub-CA made with the intermediate's key cannot issue leaves that verify.
	sub, subKey := forge(t, ca.issuer, func(c *x509.Certificate) {
		c.IsCA, c.KeyUsage, c.ExtKeyUsage = true, x509.KeyUsageCertSign, nil
	})
	leafKey, _ := GenerateKey()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(7), NotBefore: t0.Add(-time.Minute), NotAfter: t0.Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, URIs: []*url.URL{mustURL("spiffe://prod/node/x")},
	}, sub[0], &leafKey.PublicKey, subKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	if _, err := ca.bundle.Verify([]*x509.Certificate{leaf, sub[0], ic}, clock.Now()); !errors.Is(err, ErrUnknownAuthority) {
		t.Errorf("leaf under a sub-CA of the intermediate: err = %v, want unknown authority", err)
	}
	if _, err := LeafIdentity(sub[0]); !errors.Is(err, ErrBadIdentity) {
		t.Errorf("a CA certificate passed as a leaf identity: %v", err)
	}
}

func TestParseCSRRejects(t *testing.T) {
	ecKey, _ := GenerateKey()
	good, _ := CreateCSR(ecKey, identity.Node("prod", "n1"))
	block, _ := pem.Decode(good)

	badSig := bytes.Clone(block.Bytes)
	badSig[len(badSig)-3] ^= 0xff
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	csrFor := func(k any) []byte {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}

	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "not PEM"},
		{"garbage", []byte("hello"), "not PEM"},
		{"wrong block", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}), "expected CERTIFICATE REQUEST"},
		{"trailing data", append(bytes.Clone(good), good...), "trailing data"},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), "malformed"},
		{"bad signature", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: badSig}), "signature"},
		{"P-384", csrFor(p384), "curve P-384"},
		{"RSA", csrFor(rsaKey), "*rsa.PublicKey is not allowed"},
		{"Ed25519", csrFor(edKey), "ed25519.PublicKey is not allowed"},
		{"too large", append(bytes.Repeat([]byte("\n"), MaxCSRSize), good...), "too large"},
	}
	for _, tt := range tests {
		_, err := ParseCSR(tt.data)
		if err == nil || !errors.Is(err, ErrBadCSR) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
	if _, err := ParseCSR(good); err != nil {
		t.Errorf("good CSR: %v", err)
	}
	// The CA refuses them too.
	ca := newTestCA(t, "prod", newFakeClock())
	if _, err := ca.issuer.Sign(csrFor(rsaKey), identity.Node("prod", "n1"), 0); !errors.Is(err, ErrBadCSR) {
		t.Errorf("Sign(RSA CSR): %v", err)
	}
}

func FuzzParseCSR(f *testing.F) {
	key, _ := GenerateKey()
	good, _ := CreateCSR(key, identity.Node("prod", "n1"))
	f.Add(good)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := ParseCSR(data)
		if err == nil {
			if csr.CheckSignature() != nil {
				t.Fatal("accepted a CSR whose signature does not verify")
			}
			if checkKey(csr.PublicKey) != nil {
				t.Fatal("accepted a non-P-256 key")
			}
		}
	})
}

func TestParseCertificatesRejectsMalformed(t *testing.T) {
	for _, data := range [][]byte{
		nil,
		[]byte("not pem"),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}),
	} {
		if _, err := ParseCertificates(data); err == nil {
			t.Errorf("ParseCertificates(%q) succeeded", data)
		}
	}
}

func TestSerialRoundTrip(t *testing.T) {
	ca := newTestCA(t, "prod", newFakeClock())
	chain, _ := issue(t, ca.issuer, identity.Node("prod", "n1"), 0)
	s, err := ParseSerial(SerialString(chain[0]))
	if err != nil || s.Cmp(chain[0].SerialNumber) != 0 {
		t.Fatalf("ParseSerial = %v, %v", s, err)
	}
	for _, bad := range []string{"", "xyz", strings.Repeat("ab", 21)} {
		if _, err := ParseSerial(bad); err == nil {
			t.Errorf("ParseSerial(%q) succeeded", bad)
		}
	}
}

// TestUserGroups: a user's groups come back whatever their number, length
// and order (DER sorts them), without the cluster's name.
func TestUserGroups(t *testing.T) {
	ca := newTestCA(t, "apitest", nil)
	for _, groups := range [][]string{nil, {"bench"}, {"ops", "a-very-long-group-name", "dev"}} {
		key, _ := GenerateKey()
		id := identity.User("apitest", "u")
		csr, _ := CreateCSR(key, id)
		chain, err := ca.issuer.SignLeaf(csr, id, LeafOptions{Groups: groups})
		if err != nil {
			t.Fatal(err)
		}
		got := Groups(chain[0], "apitest")
		slices.Sort(got)
		want := slices.Clone(groups)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("groups %v came back as %v", groups, got)
		}
	}
	key, _ := GenerateKey()
	csr, _ := CreateCSR(key, identity.Node("apitest", "n1"))
	if _, err := ca.issuer.SignLeaf(csr, identity.Node("apitest", "n1"), LeafOptions{Groups: []string{"x"}}); err == nil {
		t.Error("a node certificate got groups")
	}
}
