package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"nexus.dev/nexus/security/pki"
)

// initCA runs `cert init` in a fresh data dir and returns the dir and the
// passphrase file.
func initCA(t *testing.T) (dataDir, passFile string) {
	t.Helper()
	dataDir = t.TempDir()
	passFile = filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(passFile, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "--data-dir", dataDir, "cert", "init", "--cluster", "prod", "--name", "s1", "--passphrase-file", passFile)
	if err != nil {
		t.Fatalf("cert init: %v\n%s", err, out)
	}
	for _, want := range []string{`cluster "prod"`, "spiffe://prod/server/s1", "root pin:      sha256:", "encrypted with the passphrase"} {
		if !strings.Contains(out, want) {
			t.Errorf("cert init output lacks %q:\n%s", want, out)
		}
	}
	return dataDir, passFile
}

func showJSON(t *testing.T, args ...string) []certInfo {
	t.Helper()
	out, err := run(t, append(args, "-o", "json")...)
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	var infos []certInfo
	if err := json.Unmarshal([]byte(out), &infos); err != nil {
		t.Fatalf("cert show -o json does not parse: %v\n%s", err, out)
	}
	return infos
}

func TestCertCommands(t *testing.T) {
	dataDir, passFile := initCA(t)
	dd := []string{"--data-dir", dataDir}

	node := showJSON(t, append(dd, "cert", "show")...)
	if len(node) != 2 || node[0].SPIFFEID != "spiffe://prod/server/s1" || node[0].IsCA || !node[1].IsCA || node[1].TrustDomain != "prod" {
		t.Fatalf("cert show: %+v", node)
	}
	if node[0].Expired || node[0].Remaining == "" || !strings.HasPrefix(node[0].Fingerprint, "sha256:") || node[0].Serial == "" {
		t.Fatalf("cert show fields: %+v", node[0])
	}
	text, err := run(t, append(dd, "cert", "show")...)
	if err != nil || !strings.Contains(text, "SPIFFE ID:    spiffe://prod/server/s1") || !strings.Contains(text, "Remaining:") {
		t.Fatalf("cert show text: %v\n%s", err, text)
	}

	// Issue a user certificate: key 0600, chain and bundle written.
	out := filepath.Join(t.TempDir(), "alice")
	if text, err := run(t, append(dd, "cert", "issue", "--user", "alice", "--out", out)...); err != nil || !strings.Contains(text, "spiffe://prod/user/alice") {
		t.Fatalf("cert issue: %v\n%s", err, text)
	}
	st, err := os.Stat(filepath.Join(out, "alice.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("alice.key: %v %v", err, st)
	}
	if _, err := pki.ReadKeyFile(filepath.Join(out, "alice.key"), nil); err != nil {
		t.Fatal(err)
	}
	alice := showJSON(t, append(dd, "cert", "show", filepath.Join(out, "alice.crt"))...)
	if alice[0].SPIFFEID != "spiffe://prod/user/alice" {
		t.Fatalf("alice: %+v", alice[0])
	}
	bundle := showJSON(t, append(dd, "cert", "show", filepath.Join(out, "ca.pem"))...)
	if len(bundle) != 2 || !bundle[0].IsCA || bundle[0].Pin == "" {
		t.Fatalf("ca.pem: %+v", bundle)
	}

	// Renew: a new serial for the same identity.
	if text, err := run(t, append(dd, "cert", "renew")...); err != nil || !strings.Contains(text, "Renewed spiffe://prod/server/s1") {
		t.Fatalf("cert renew: %v\n%s", err, text)
	}
	renewed := showJSON(t, append(dd, "cert", "show")...)
	if renewed[0].Serial == node[0].Serial || renewed[0].SPIFFEID != node[0].SPIFFEID {
		t.Fatalf("renewed: %+v", renewed[0])
	}

	// Revoke alice; the list verifies and holds her serial.
	if text, err := run(t, append(dd, "cert", "revoke", alice[0].Serial)...); err != nil || !strings.Contains(text, "revocation list #1") {
		t.Fatalf("cert revoke: %v\n%s", err, text)
	}
	d := pki.Dir{Path: filepath.Join(dataDir, "pki")}
	creds, err := d.Credentials()
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := pki.ParseSerial(alice[0].Serial)
	if !creds.Revocations().Contains(serial) {
		t.Fatal("revoked serial not in the list")
	}

	// Rotate the intermediate.
	if _, err := run(t, append(dd, "cert", "rotate-intermediate")...); err == nil || !strings.Contains(err.Error(), "--passphrase-file") {
		t.Fatalf("rotate without passphrase: %v", err)
	}
	if text, err := run(t, append(dd, "cert", "rotate-intermediate", "--passphrase-file", passFile)...); err != nil || !strings.Contains(text, "--finish") {
		t.Fatalf("rotate: %v\n%s", err, text)
	}
	if b, _ := d.Bundle(); len(b.Intermediates()) != 2 {
		t.Fatalf("overlap bundle has %d intermediates", len(b.Intermediates()))
	}
	if _, err := run(t, append(dd, "cert", "rotate-intermediate", "--finish")...); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("early finish: %v", err)
	}
	if _, err := run(t, append(dd, "cert", "rotate-intermediate", "--finish", "--force")...); err != nil {
		t.Fatal(err)
	}
	if b, _ := d.Bundle(); len(b.Intermediates()) != 1 {
		t.Fatalf("bundle after finish has %d intermediates", len(b.Intermediates()))
	}
	if _, err := d.Credentials(); err != nil {
		t.Fatalf("this machine's certificate after rotation: %v", err)
	}
}

func TestCertCommandErrors(t *testing.T) {
	dataDir, _ := initCA(t)
	empty := t.TempDir()
	emptyPass := filepath.Join(empty, "empty")
	os.WriteFile(emptyPass, nil, 0o600)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--data-dir", empty, "cert", "init"}, "--cluster is required"},
		{[]string{"--data-dir", empty, "cert", "init", "--cluster", "Bad Name", "--name", "x"}, "pass a valid --cluster"},
		{[]string{"--data-dir", empty, "cert", "init", "--cluster", "c", "--name", "x", "--passphrase-file", emptyPass}, "is empty"},
		{[]string{"--data-dir", dataDir, "cert", "init", "--cluster", "prod", "--name", "s1"}, "already exists"},
		{[]string{"--data-dir", empty, "cert", "issue", "--user", "a", "--out", empty}, "nexus cert init"},
		{[]string{"--data-dir", dataDir, "cert", "issue", "--user", "a"}, "--out is required"},
		{[]string{"--data-dir", dataDir, "cert", "issue", "--user", "a", "--node", "b", "--out", empty}, "exactly one of"},
		{[]string{"--data-dir", dataDir, "cert", "issue", "--user", "A!", "--out", empty}, "not allowed"},
		{[]string{"--data-dir", empty, "cert", "show"}, "nexus cert init"},
		{[]string{"--data-dir", dataDir, "cert", "show", "-o", "yaml"}, "unknown output format"},
		{[]string{"--data-dir", dataDir, "cert", "show", filepath.Join(dataDir, "pki", "root.key")}, "not a CERTIFICATE"},
		{[]string{"--data-dir", empty, "cert", "renew"}, "nexus cert init"},
		{[]string{"--data-dir", dataDir, "cert", "revoke", "not-hex"}, "not a hex serial"},
		{[]string{"--data-dir", dataDir, "cert", "revoke"}, "requires at least 1 arg"},
		{[]string{"--data-dir", empty, "cert", "rotate-intermediate", "--finish"}, "no intermediate rotation"},
	}
	for _, tt := range tests {
		out, err := run(t, tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want %q\n%s", tt.args, err, tt.want, out)
		}
	}
	// A CA key readable by others is refused with what to do.
	key := filepath.Join(dataDir, "pki", "root.key")
	os.Chmod(key, 0o644)
	if _, err := run(t, "--data-dir", dataDir, "cert", "rotate-intermediate"); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable root key: %v", err)
	}
}

func TestCertAndTokenHelp(t *testing.T) {
	for _, args := range [][]string{
		{"cert"}, {"cert", "init"}, {"cert", "show"}, {"cert", "issue"}, {"cert", "renew"}, {"cert", "revoke"}, {"cert", "rotate-intermediate"},
		{"token"}, {"token", "create"}, {"token", "list"}, {"token", "revoke"},
	} {
		out, err := run(t, append(args, "--help")...)
		if err != nil || !strings.Contains(out, "Usage:") || !strings.Contains(out, "nexus "+strings.Join(args, " ")) {
			t.Errorf("%v --help: %v\n%s", args, err, out)
		}
	}
}
