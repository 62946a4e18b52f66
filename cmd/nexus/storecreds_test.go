package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestPeerCredsKeeperRenewsFromTheLocalCA: a member whose data dir holds the
// CA renews its peer certificate itself once half its life is gone.
func TestPeerCredsKeeperRenewsFromTheLocalCA(t *testing.T) {
	g := &globalOptions{dataDir: t.TempDir()}
	if err := pkiDir(g).Init(pki.InitConfig{Cluster: "keep", ServerName: "m0", LeafTTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	o := &storeOptions{name: "m0"}
	creds, err := loadPeerCredentials(g, o)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, ca := peerFiles(g, o)
	k := newPeerCredsKeeper(creds, cert, key, ca, g.dataDir, quietLogger())
	if k.localCA == nil {
		t.Fatal("the data dir holds the CA, but the keeper does not renew from it")
	}
	old := creds.Leaf()
	k.check(context.Background()) // not due yet
	if creds.Leaf().SerialNumber.Cmp(old.SerialNumber) != 0 {
		t.Fatal("renewed before half-life")
	}
	k.now = func() time.Time { return time.Now().Add(40 * time.Minute) }
	k.check(context.Background())
	now := creds.Leaf()
	if now.SerialNumber.Cmp(old.SerialNumber) == 0 {
		t.Fatal("the certificate was not renewed past half-life")
	}
	if !now.NotAfter.After(old.NotAfter) || creds.Identity() != identity.Server("keep", "m0") {
		t.Fatalf("renewed certificate: until %v (was %v), identity %s", now.NotAfter, old.NotAfter, creds.Identity())
	}
}

// TestPeerCredsKeeperReloadsChangedFiles: a member without the CA picks up
// a certificate renewed elsewhere and copied over its files, and refuses
// one made out to another member.
func TestPeerCredsKeeperReloadsChangedFiles(t *testing.T) {
	caDir := &globalOptions{dataDir: t.TempDir()}
	if err := pkiDir(caDir).Init(pki.InitConfig{Cluster: "keep", ServerName: "m0"}); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	issue := func(name string) {
		t.Helper()
		if _, err := pkiDir(caDir).IssueTo(out, "m1.crt", "m1.key", identity.Server("keep", name), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	issue("m1")
	bundle, err := os.ReadFile(filepath.Join(pkiDir(caDir).Path, pki.BundleFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "ca.pem"), bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	g := &globalOptions{dataDir: t.TempDir()}
	o := &storeOptions{name: "m1", peerCertFile: filepath.Join(out, "m1.crt"), peerKeyFile: filepath.Join(out, "m1.key"), peerTrustedCAFile: filepath.Join(out, "ca.pem")}
	creds, err := loadPeerCredentials(g, o)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, ca := peerFiles(g, o)
	k := newPeerCredsKeeper(creds, cert, key, ca, g.dataDir, quietLogger())
	if k.localCA != nil {
		t.Fatal("no CA in this member's data dir, yet the keeper would renew from it")
	}
	first := creds.Leaf()

	issue("m1")
	k.check(context.Background())
	second := creds.Leaf()
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("a renewed certificate copied over the files was not picked up")
	}

	issue("m2")
	k.check(context.Background())
	if creds.Leaf().SerialNumber.Cmp(second.SerialNumber) != 0 || creds.Identity() != identity.Server("keep", "m1") {
		t.Fatalf("a certificate for another member replaced this one: now %s", creds.Identity())
	}
}
