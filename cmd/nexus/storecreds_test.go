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

// TestPeerKeeperRenewsOnlyWithTheLocalCA: a member whose data dir holds the
// CA renews its own peer certificate (pki.Keeper's tests cover how); one
// given certificate files from elsewhere waits for new files, and picks them
// up when they are copied over, refusing one made out to another member.
func TestPeerKeeperRenewsOnlyWithTheLocalCA(t *testing.T) {
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
	k, err := peerKeeper(g, creds, cert, key, ca, quietLogger())
	if err != nil || !k.Renews() {
		t.Fatalf("the data dir holds the CA, but the keeper does not renew from it (%v)", err)
	}

	out := t.TempDir()
	copies := 0
	issue := func(name string) {
		t.Helper()
		if _, err := pkiDir(g).IssueTo(out, "m1.crt", "m1.key", identity.Server("keep", name), time.Hour); err != nil {
			t.Fatal(err)
		}
		// Coarse file timestamps: make each copy visible as a change.
		copies++
		future := time.Now().Add(time.Duration(copies) * time.Minute)
		_ = os.Chtimes(filepath.Join(out, "m1.crt"), future, future)
	}
	issue("m1")
	bundle, err := os.ReadFile(filepath.Join(pkiDir(g).Path, pki.BundleFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "ca.pem"), bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	g1 := &globalOptions{dataDir: t.TempDir()}
	o1 := &storeOptions{name: "m1", peerCertFile: filepath.Join(out, "m1.crt"), peerKeyFile: filepath.Join(out, "m1.key"), peerTrustedCAFile: filepath.Join(out, "ca.pem")}
	creds1, err := loadPeerCredentials(g1, o1)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, ca = peerFiles(g1, o1)
	k1, err := peerKeeper(g1, creds1, cert, key, ca, quietLogger())
	if err != nil || k1.Renews() {
		t.Fatalf("no CA in this member's data dir, yet the keeper would renew from it (%v)", err)
	}
	first := creds1.Leaf()
	issue("m1") // renewed on the CA machine and copied over
	k1.Check(context.Background())
	second := creds1.Leaf()
	if second.Equal(first) {
		t.Fatal("a certificate copied over the files was not picked up")
	}
	issue("m2")
	k1.Check(context.Background())
	if !creds1.Leaf().Equal(second) || creds1.Identity() != identity.Server("keep", "m1") {
		t.Fatalf("a certificate for another member replaced this one: now %s", creds1.Identity())
	}
}
