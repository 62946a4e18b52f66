package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"nexus.dev/nexus/security/identity"
)

// tlsConfig wires Credentials into crypto/tls the way the transport does:
// certificates from GetCertificate on every handshake, peers checked only by
// VerifyPeer.
func tlsConfig(c *Credentials, peer *identity.ID, serial **x509.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetCertificate:       func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.GetCertificate() },
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c.GetCertificate() },
		ClientAuth:           tls.RequireAnyClientCert,
		InsecureSkipVerify:   true, // replaced by VerifyPeerCertificate
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			var chain []*x509.Certificate
			for _, der := range raw {
				cert, err := x509.ParseCertificate(der)
				if err != nil {
					return err
				}
				chain = append(chain, cert)
			}
			id, err := c.VerifyPeer(chain)
			*peer, *serial = id, chain[0]
			return err
		},
	}
}

func handshake(t *testing.T, server, client *Credentials) (serverSaw, clientSaw identity.ID, clientLeaf *x509.Certificate, err error) {
	t.Helper()
	var serverLeaf *x509.Certificate
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srv := tls.Server(a, tlsConfig(server, &serverSaw, &clientLeaf))
	cli := tls.Client(b, tlsConfig(client, &clientSaw, &serverLeaf))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var serr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		serr = srv.HandshakeContext(ctx)
		if serr != nil {
			a.Close()
		}
	}()
	cerr := cli.HandshakeContext(ctx)
	if cerr != nil {
		b.Close()
	} else {
		// In TLS 1.3 the client is done before the server has checked its
		// certificate: keep reading so the server's alert can be written.
		go func() { _, _ = io.Copy(io.Discard, cli) }()
	}
	wg.Wait()
	return serverSaw, clientSaw, clientLeaf, errors.Join(serr, cerr)
}

func TestCredentialsInTLSHandshake(t *testing.T) {
	clock := newFakeClock()
	ca := newTestCA(t, "prod", clock)
	server := endpoint(t, ca, clock, identity.Server("prod", "s1"), time.Hour)
	client := endpoint(t, ca, clock, identity.Node("prod", "n1"), time.Hour)

	serverSaw, clientSaw, leaf, err := handshake(t, server, client)
	if err != nil {
		t.Fatal(err)
	}
	if serverSaw != identity.Node("prod", "n1") || clientSaw != identity.Server("prod", "s1") {
		t.Fatalf("server saw %v, client saw %v", serverSaw, clientSaw)
	}

	// After a renewal the next handshake presents the new certificate.
	r, _ := NewRenewer(RenewerConfig{Credentials: client, Clock: clock, Logger: slog.New(slog.DiscardHandler), Renew: func(_ context.Context, csr []byte) ([]*x509.Certificate, error) {
		return ca.issuer.Sign(csr, identity.Node("prod", "n1"), time.Hour)
	}})
	if err := r.RenewNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, _, leaf2, err := handshake(t, server, client)
	if err != nil {
		t.Fatal(err)
	}
	if leaf2.SerialNumber.Cmp(leaf.SerialNumber) == 0 || !leaf2.Equal(client.Leaf()) {
		t.Fatal("handshake after renewal did not use the new certificate")
	}

	// Revoked: the server refuses the handshake and says why.
	if err := server.SetRevocations(server.Revocations().Add(clock.Now(), leaf2.SerialNumber)); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := handshake(t, server, client); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked client: %v", err)
	}
}
