package pki

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/security/identity"
)

func TestDirLifecycle(t *testing.T) {
	clock := newFakeClock()
	d := Dir{Path: filepath.Join(t.TempDir(), "pki"), Clock: clock}
	pass := []byte("s3cret")
	if err := d.Init(InitConfig{Cluster: "prod", ServerName: "s1", Passphrase: pass}); err != nil {
		t.Fatal(err)
	}
	if err := d.Init(InitConfig{Cluster: "prod", ServerName: "s1"}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second init: %v", err)
	}
	for name, want := range map[string]os.FileMode{RootKeyFile: 0o600, IntermediateKeyFile: 0o600, NodeKeyFile: 0o600, RootCertFile: 0o644} {
		st, err := os.Stat(filepath.Join(d.Path, name))
		if err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: %v mode %v, want %04o", name, err, st.Mode().Perm(), want)
		}
	}
	if _, err := d.Root(nil); !errors.Is(err, ErrPassphraseRequired) {
		t.Errorf("root without passphrase: %v", err)
	}
	if _, err := d.Root([]byte("nope")); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("root with wrong passphrase: %v", err)
	}
	creds, err := d.Credentials()
	if err != nil {
		t.Fatal(err)
	}
	if creds.Identity() != identity.Server("prod", "s1") {
		t.Fatalf("identity %v", creds.Identity())
	}
	firstLeaf := creds.Leaf()

	// Renew: new key and serial, same identity.
	clock.Advance(time.Hour)
	chain, err := d.RenewNode(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if chain[0].SerialNumber.Cmp(firstLeaf.SerialNumber) == 0 || chain[0].PublicKey.(*ecdsa.PublicKey).Equal(firstLeaf.PublicKey) {
		t.Fatal("renewal did not make a new key and certificate")
	}

	// Revoke a user certificate.
	out := t.TempDir()
	user, err := d.IssueTo(out, "alice.crt", "alice.key", identity.User("prod", "alice"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Revoke(user[0].SerialNumber); err != nil {
		t.Fatal(err)
	}
	creds, _ = d.Credentials()
	if _, err := creds.VerifyPeer(user); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked user: %v", err)
	}

	// Rotate the intermediate.
	if _, err := d.StartIntermediateRotation(nil, 0, time.Hour); !errors.Is(err, ErrPassphraseRequired) {
		t.Fatalf("rotation without passphrase: %v", err)
	}
	peerOld, _ := d.IssueTo(out, "n1.crt", "n1.key", identity.Node("prod", "n1"), time.Hour)
	safe, err := d.StartIntermediateRotation(pass, 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.StartIntermediateRotation(pass, 0, time.Hour); !errors.Is(err, ErrRotationInProgress) {
		t.Fatalf("second start: %v", err)
	}
	creds, err = d.Credentials() // node cert renewed from the new intermediate, list re-signed
	if err != nil {
		t.Fatal(err)
	}
	if _, err := creds.VerifyPeer(peerOld); err != nil {
		t.Fatalf("old leaf during overlap: %v", err)
	}
	if _, err := creds.VerifyPeer(user); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revocation lost in rotation: %v", err)
	}
	if err := d.FinishIntermediateRotation(false, time.Hour); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("early finish: %v", err)
	}
	clock.Set(safe.Add(2 * time.Minute))
	if err := d.FinishIntermediateRotation(false, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := d.FinishIntermediateRotation(false, time.Hour); err == nil || !strings.Contains(err.Error(), "no intermediate rotation") {
		t.Fatalf("finish twice: %v", err)
	}
	// The node certificate expired while the clock moved: renew re-issues it.
	if _, err := d.Credentials(); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired node certificate: %v", err)
	}
	if _, err := d.RenewNode(context.Background(), time.Hour); err != nil {
		t.Fatal(err)
	}
	if creds, err = d.Credentials(); err != nil {
		t.Fatal(err)
	}
	peerNew, _ := d.IssueTo(out, "n2.crt", "n2.key", identity.Node("prod", "n2"), time.Hour)
	if _, err := creds.VerifyPeer(peerNew); err != nil {
		t.Fatalf("new leaf after finish: %v", err)
	}
	if len(creds.Bundle().Intermediates()) != 1 {
		t.Fatalf("%d intermediates after finish", len(creds.Bundle().Intermediates()))
	}
}
