package pki

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"nexus.dev/nexus/security/identity"
)

// snapshotDir reads every file of dir, to prove nothing was written.
func snapshotDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

func TestBootstrap(t *testing.T) {
	cfg := InitConfig{Cluster: "store", ServerName: "m0"}
	d := Dir{Path: filepath.Join(t.TempDir(), "pki")}
	created, err := d.Bootstrap(cfg)
	if err != nil || !created {
		t.Fatalf("Bootstrap of a directory that does not exist: created %v, %v", created, err)
	}
	creds, err := d.Credentials()
	if err != nil {
		t.Fatal(err)
	}
	if creds.Identity() != identity.Server("store", "m0") {
		t.Fatalf("identity %v", creds.Identity())
	}
	whole := snapshotDir(t, d.Path)
	if created, err := d.Bootstrap(cfg); err != nil || created {
		t.Fatalf("Bootstrap of a complete directory: created %v, %v", created, err)
	}

	// The root key kept offline is a complete PKI for a server.
	if err := os.Remove(filepath.Join(d.Path, RootKeyFile)); err != nil {
		t.Fatal(err)
	}
	if created, err := d.Bootstrap(cfg); err != nil || created {
		t.Fatalf("Bootstrap without the root key: created %v, %v", created, err)
	}

	for _, gone := range []string{NodeCertFile, NodeKeyFile, BundleFile} {
		t.Run("without "+gone, func(t *testing.T) {
			part := Dir{Path: filepath.Join(t.TempDir(), "pki")}
			if err := os.MkdirAll(part.Path, 0o700); err != nil {
				t.Fatal(err)
			}
			for name, b := range whole {
				if name != gone {
					if err := os.WriteFile(filepath.Join(part.Path, name), b, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			before := snapshotDir(t, part.Path)
			created, err := part.Bootstrap(cfg)
			if !errors.Is(err, ErrIncomplete) || created || !strings.Contains(err.Error(), "not "+gone) || !strings.Contains(err.Error(), part.Path) {
				t.Fatalf("Bootstrap: created %v, %v; want ErrIncomplete naming the directory and %s", created, err, gone)
			}
			after := snapshotDir(t, part.Path)
			if len(after) != len(before) {
				t.Fatalf("files %d before, %d after", len(before), len(after))
			}
			for name, b := range before {
				if !bytes.Equal(after[name], b) {
					t.Errorf("%s was rewritten", name)
				}
			}
		})
	}

	// One stray file is not a PKI either.
	stray := Dir{Path: t.TempDir()}
	if err := os.WriteFile(filepath.Join(stray.Path, NodeKeyFile), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := stray.Bootstrap(cfg); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Bootstrap next to a stray %s: %v", NodeKeyFile, err)
	}
	if b, _ := os.ReadFile(filepath.Join(stray.Path, NodeKeyFile)); string(b) != "mine" {
		t.Fatalf("the stray %s was overwritten", NodeKeyFile)
	}
}
