package main

import (
	"nexus.dev/nexus/security/pki"

	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/internal/testutil"
)

// testPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate into dir, as an operator's own CA would issue them.
func testPKI(t *testing.T, dir string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test client CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write := func(name string, der []byte, key *ecdsa.PrivateKey) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		if key != nil {
			kb, _ := x509.MarshalECPrivateKey(key)
			if err := os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("ca", caDER, nil)
	for i, leaf := range []struct {
		name string
		ext  x509.ExtKeyUsage
	}{{"server", x509.ExtKeyUsageServerAuth}, {"client", x509.ExtKeyUsageClientAuth}} {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: leaf.name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{leaf.ext},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		write(leaf.name, der, key)
	}
}

// TestStoreServesClientsOverTLS runs a member with an https client URL
// and --client-cert-auth, and etcdctl against it with etcd's TLS flags:
// with a client certificate it works, without one it is refused, and the
// metrics URL serves /health over https too.
func TestStoreServesClientsOverTLS(t *testing.T) {
	etcdctl := testutil.RequireProgram(t, "etcdctl", "etcd-client")
	bin := nexusBinary(t)
	dir := t.TempDir()
	pki := t.TempDir()
	testPKI(t, pki)
	if o, err := exec.Command(bin, "--data-dir", dir, "cert", "init", "--cluster", "tls", "--name", "m0").CombinedOutput(); err != nil {
		t.Fatalf("cert init: %v: %s", err, o)
	}
	client := fmt.Sprintf("https://127.0.0.1:%d", testutil.FreePort(t, "tcp"))
	metrics := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
	cmd := exec.Command(bin, "--data-dir", dir, "--log-level", "warn", "store", "--name", "m0",
		"--listen-client-urls", client, "--listen-metrics-urls", "https://"+metrics,
		"--listen-peer-urls", fmt.Sprintf("quic://[::1]:%d", testutil.FreePort(t, "udp")),
		"--cert-file", filepath.Join(pki, "server.crt"), "--key-file", filepath.Join(pki, "server.key"),
		"--trusted-ca-file", filepath.Join(pki, "ca.crt"), "--client-cert-auth")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ctl := func(withCert bool, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		flags := []string{"--endpoints", client, "--command-timeout", "3s", "--cacert", filepath.Join(pki, "ca.crt")}
		if withCert {
			flags = append(flags, "--cert", filepath.Join(pki, "client.crt"), "--key", filepath.Join(pki, "client.key"))
		}
		c := exec.CommandContext(ctx, etcdctl, append(flags, args...)...)
		c.Env = append(os.Environ(), "ETCDCTL_API=3")
		b, err := c.CombinedOutput()
		return string(b), err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		o, err := ctl(true, "put", "tls/a", "1")
		if err == nil && strings.TrimSpace(o) == "OK" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("put over TLS with a client certificate: %v: %s\nmember log:\n%s", err, o, out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if o, err := ctl(true, "get", "tls/a", "--print-value-only"); err != nil || strings.TrimSpace(o) != "1" {
		t.Fatalf("get over TLS: %v: %q", err, o)
	}
	if o, err := ctl(false, "get", "tls/a"); err == nil {
		t.Fatalf("a client without a certificate was served: %q", o)
	}

	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(filepath.Join(pki, "ca.crt"))
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(filepath.Join(pki, "client.crt"), filepath.Join(pki, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	resp, err := hc.Get("https://" + metrics + "/health")
	if err != nil {
		t.Fatalf("/health over https: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"health":"true"`) {
		t.Fatalf("/health over https: %d %q", resp.StatusCode, body)
	}
}

// TestStoreTLSFlagErrors: each inconsistent combination stops the command
// before anything starts, naming the flag to add.
func TestStoreTLSFlagErrors(t *testing.T) {
	bin := nexusBinary(t)
	pki := t.TempDir()
	testPKI(t, pki)
	crt, key, ca := filepath.Join(pki, "server.crt"), filepath.Join(pki, "server.key"), filepath.Join(pki, "ca.crt")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen-client-urls", "https://127.0.0.1:0"}, "https needs --cert-file and --key-file"},
		{[]string{"--cert-file", crt}, "needs both --cert-file and --key-file"},
		{[]string{"--cert-file", crt, "--key-file", key, "--client-cert-auth"}, "--client-cert-auth needs --trusted-ca-file"},
		{[]string{"--trusted-ca-file", ca}, "give --cert-file and --key-file too"},
		{[]string{"--cert-file", crt, "--key-file", ca}, "--cert-file"},
		{[]string{"--listen-client-urls", "ftp://127.0.0.1:2379"}, "use http:// or https://"},
	} {
		dir := t.TempDir()
		if o, err := exec.Command(bin, "--data-dir", dir, "cert", "init", "--cluster", "tls", "--name", "m0").CombinedOutput(); err != nil {
			t.Fatalf("cert init: %v: %s", err, o)
		}
		args := append([]string{"--data-dir", dir, "store", "--name", "m0",
			"--listen-peer-urls", fmt.Sprintf("quic://[::1]:%d", testutil.FreePort(t, "udp"))}, tc.args...)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		o, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(o), tc.want) {
			t.Errorf("nexus store %v: %v, output %q; want an error saying %q", tc.args, err, o, tc.want)
		}
		if _, err := os.Stat(filepath.Join(dir, "store")); err == nil {
			t.Errorf("nexus store %v created its store before failing", tc.args)
		}
	}
}

// TestClientCertReloadsWhenItsFilesChange: a renewed pair is served from
// the next handshake on; a half-written one leaves the old pair in use.
func TestClientCertReloadsWhenItsFilesChange(t *testing.T) {
	a, b, dir := t.TempDir(), t.TempDir(), t.TempDir()
	testPKI(t, a)
	testPKI(t, b)
	crt, key := filepath.Join(dir, "s.crt"), filepath.Join(dir, "s.key")
	install := func(from string) {
		t.Helper()
		for src, dst := range map[string]string{"server.crt": crt, "server.key": key} {
			data, err := os.ReadFile(filepath.Join(from, src))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	publicKey := func(c *tls.Certificate) string {
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return string(leaf.RawSubjectPublicKeyInfo)
	}
	install(a)
	kp := &pki.KeyPairFiles{CertFile: crt, KeyFile: key}
	first, err := kp.Get()
	if err != nil {
		t.Fatal(err)
	}
	install(b)
	// Stamps compare modification time and size; make the change visible
	// even on a file system with coarse timestamps.
	future := time.Now().Add(time.Minute)
	os.Chtimes(crt, future, future)
	second, err := kp.Get()
	if err != nil {
		t.Fatal(err)
	}
	if publicKey(second) == publicKey(first) {
		t.Fatal("the renewed pair was not picked up")
	}
	if err := os.WriteFile(key, []byte("half written"), 0o600); err != nil {
		t.Fatal(err)
	}
	third, err := kp.Get()
	if err != nil || publicKey(third) != publicKey(second) {
		t.Fatalf("a broken renewal replaced the pair in use: %v", err)
	}
}
