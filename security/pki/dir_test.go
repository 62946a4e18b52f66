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

	"nexus.dev/nexus/internal/fsutil"
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

func initDir(t *testing.T) Dir {
	t.Helper()
	d := Dir{Path: filepath.Join(t.TempDir(), "pki")}
	if err := d.Init(InitConfig{Cluster: "prod", ServerName: "s1"}); err != nil {
		t.Fatal(err)
	}
	return d
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A CA directory whose files do not chain (a root.crt or bundle.pem from
// another CA) is refused by everything that loads the CA, naming the file,
// instead of issuing certificates that verify nowhere.
func TestDirRefusesBrokenChain(t *testing.T) {
	tests := []struct {
		name     string
		replace  string // file copied over from another CA
		wantFile string // the file the error must name
	}{
		{"root replaced", RootCertFile, IntermediateCertFile},
		{"root and intermediate replaced", RootCertFile + "," + IntermediateCertFile + "," + IntermediateKeyFile, BundleFile},
		{"bundle replaced", BundleFile, BundleFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, other := initDir(t), initDir(t)
			for _, f := range strings.Split(tt.replace, ",") {
				copyFile(t, other.file(f), d.file(f))
				if f == IntermediateKeyFile {
					os.Chmod(d.file(f), 0o600)
				}
			}
			node, _ := d.readChain(NodeCertFile)
			ops := map[string]func() error{
				"Issuer":   func() error { _, err := d.Issuer(0); return err },
				"RootCert": func() error { _, err := d.RootCert(); return err },
				"IssueTo": func() error {
					_, err := d.IssueTo(t.TempDir(), "a.crt", "a.key", identity.User("prod", "a"), 0)
					return err
				},
				"RenewNode": func() error { _, err := d.RenewNode(context.Background(), 0); return err },
				"Revoke":    func() error { _, err := d.Revoke(node[0].SerialNumber); return err },
			}
			for op, f := range ops {
				err := f()
				if tt.replace == BundleFile && (op == "RenewNode" || op == "Revoke") && err != nil && strings.Contains(err.Error(), d.file(RevocationsFile)) {
					continue // refused one step earlier: the revocation list's signer is not in that bundle
				}
				if !errors.Is(err, ErrChain) || !strings.Contains(err.Error(), d.file(tt.wantFile)) {
					t.Errorf("%s: %v, want ErrChain naming %s", op, err, d.file(tt.wantFile))
				}
			}
			if after, _ := d.readChain(NodeCertFile); !after[0].Equal(node[0]) {
				t.Error("node.crt changed although the CA was refused")
			}
		})
	}
}

func TestDirRefusesEmptyPath(t *testing.T) {
	wd, _ := os.Getwd()
	before, _ := os.ReadDir(wd)
	d := Dir{}
	if err := d.Init(InitConfig{Cluster: "prod", ServerName: "s1"}); !errors.Is(err, ErrNoDir) {
		t.Fatalf("Init with an empty path: %v, want ErrNoDir", err)
	}
	if _, err := d.Credentials(); !errors.Is(err, ErrNoDir) {
		t.Fatalf("Credentials with an empty path: %v, want ErrNoDir", err)
	}
	if after, _ := os.ReadDir(wd); len(after) != len(before) {
		t.Fatalf("the current directory changed: %d entries, was %d", len(after), len(before))
	}
}

// Files of the directory are read with a bound: a huge or endless one is
// refused naming it, not read into memory.
func TestDirRefusesHugeFiles(t *testing.T) {
	d := initDir(t)
	if err := os.Truncate(d.file(BundleFile), 1<<30); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Credentials(); !errors.Is(err, fsutil.ErrTooLarge) || !strings.Contains(err.Error(), d.file(BundleFile)) || !strings.Contains(err.Error(), "1 MiB") {
		t.Fatalf("Credentials with a 1 GiB bundle: %v, want ErrTooLarge naming the file and the limit", err)
	}
	if _, err := ReadCertificatesFile("/dev/zero"); !errors.Is(err, fsutil.ErrTooLarge) || !strings.Contains(err.Error(), "/dev/zero") {
		t.Fatalf("ReadCertificatesFile(/dev/zero): %v", err)
	}
	key := filepath.Join(t.TempDir(), "big.key")
	if err := os.WriteFile(key, make([]byte, 65<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKeyFile(key, nil); !errors.Is(err, fsutil.ErrTooLarge) || !strings.Contains(err.Error(), key) {
		t.Fatalf("ReadKeyFile of a 65 KiB file: %v", err)
	}
}

func TestIssueFiles(t *testing.T) {
	d := initDir(t)
	tests := []struct {
		name string
		id   identity.ID
	}{
		{"short name", identity.User("prod", "alice")},
		// The longest name a file system with 255-byte names allows for
		// NAME.crt; its temporary file must fit too.
		{"longest name", identity.User("prod", strings.Repeat("a", identity.MaxNameLen))},
		{"240 bytes", identity.Node("prod", strings.Repeat("n", 240))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "new", "creds")
			files, err := d.IssueFiles(out, tt.id, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if files.KeyFile != filepath.Join(out, tt.id.Name+".key") || files.CertFile != filepath.Join(out, tt.id.Name+".crt") || files.BundleFile != filepath.Join(out, "ca.pem") {
				t.Fatalf("files: %+v", files)
			}
			chain, err := ReadCertificatesFile(files.CertFile)
			if err != nil || !chain[0].Equal(files.Chain[0]) {
				t.Fatalf("%s: %v", files.CertFile, err)
			}
			key, err := ReadKeyFile(files.KeyFile, nil)
			if err != nil || !key.PublicKey.Equal(chain[0].PublicKey) {
				t.Fatalf("%s: %v, or it does not match the certificate", files.KeyFile, err)
			}
			b, err := ReadBundleFile(files.BundleFile)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Verify(chain, time.Now()); err != nil {
				t.Fatalf("issued chain does not verify against the written bundle: %v", err)
			}
			if entries, _ := os.ReadDir(out); len(entries) != 3 {
				t.Fatalf("%d files in %s, want 3 (no temporary file left)", len(entries), out)
			}
		})
	}
}

// A failure part-way through IssueFiles leaves no directory or file it
// created behind, and a file name the file system cannot hold is refused
// before anything is written.
func TestIssueFilesLeavesNothingOnFailure(t *testing.T) {
	broken := initDir(t)
	copyFile(t, initDir(t).file(RootCertFile), broken.file(RootCertFile))
	base := t.TempDir()
	out := filepath.Join(base, "a", "b")
	if _, err := broken.IssueFiles(out, identity.User("prod", "alice"), time.Hour); !errors.Is(err, ErrChain) {
		t.Fatalf("IssueFiles from a broken CA: %v, want ErrChain", err)
	}
	if entries, _ := os.ReadDir(base); len(entries) != 0 {
		t.Fatalf("a failed IssueFiles left %v in %s", entries, base)
	}

	d := initDir(t)
	long := strings.Repeat("a", 252) + ".crt"
	if _, err := d.IssueTo(base, long, "a.key", identity.User("prod", "a"), time.Hour); !errors.Is(err, ErrNameTooLong) || !strings.Contains(err.Error(), "at most 255") {
		t.Fatalf("IssueTo with a 256-byte file name: %v, want ErrNameTooLong naming the limit", err)
	}
	if entries, _ := os.ReadDir(base); len(entries) != 0 {
		t.Fatalf("a refused IssueTo left %v in %s", entries, base)
	}
}

// When the certificate cannot be written, the key next to it is put back:
// a new key beside the old certificate would be a pair that does not match.
func TestIssueToKeepsKeyAndCertificatePaired(t *testing.T) {
	d := initDir(t)
	out := t.TempDir()
	if _, err := d.IssueTo(out, "n1.crt", "n1.key", identity.Node("prod", "n1"), time.Hour); err != nil {
		t.Fatal(err)
	}
	oldKey, _ := os.ReadFile(filepath.Join(out, "n1.key"))
	if _, err := d.IssueTo(out, "sub/n1.crt", "n1.key", identity.Node("prod", "n1"), time.Hour); err == nil {
		t.Fatal("IssueTo into a missing directory for the certificate succeeded")
	}
	if key, _ := os.ReadFile(filepath.Join(out, "n1.key")); string(key) != string(oldKey) {
		t.Fatal("n1.key was replaced although its certificate could not be written")
	}
	if _, err := d.IssueTo(out, "sub/n2.crt", "n2.key", identity.Node("prod", "n2"), time.Hour); err == nil {
		t.Fatal("IssueTo into a missing directory for the certificate succeeded")
	}
	if _, err := os.Stat(filepath.Join(out, "n2.key")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("n2.key was left without its certificate: %v", err)
	}
}

// A failed Init takes away what it wrote, so the next run does not find
// half a CA.
func TestInitFailureLeavesNoHalfCA(t *testing.T) {
	d := Dir{Path: filepath.Join(t.TempDir(), "pki")}
	if err := os.MkdirAll(d.file(IntermediateKeyFile), 0o700); err != nil { // the third step fails
		t.Fatal(err)
	}
	if err := d.Init(InitConfig{Cluster: "prod", ServerName: "s1"}); err == nil {
		t.Fatal("Init over a directory named intermediate.key succeeded")
	}
	for _, f := range []string{RootKeyFile, RootCertFile, IntermediateCertFile, BundleFile} {
		if _, err := os.Stat(d.file(f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a failed Init left %s: %v", f, err)
		}
	}
	if _, err := os.Stat(d.file(IntermediateKeyFile)); err != nil {
		t.Errorf("Init removed what it had not written: %v", err)
	}
}
