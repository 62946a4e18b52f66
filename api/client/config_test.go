package client_test

import (
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
)

// creds are a CA and a user certificate and key it issued, as PEM.
type creds struct{ ca, cert, key []byte }

func newCreds(t testing.TB) creds {
	t.Helper()
	root, err := pki.NewRoot(pki.RootConfig{Cluster: "test"})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := root.NewIssuer(pki.IssuerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	id := identity.User("test", "alice")
	csr, err := pki.CreateCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := iss.SignLeaf(csr, id, pki.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.MarshalKey(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return creds{ca: pki.EncodeCertificates(root.Cert), cert: pki.EncodeCertificates(chain...), key: keyPEM}
}

func (c creds) entry() client.ContextEntry {
	return client.ContextEntry{Name: "prod", Server: "https://10.0.0.1:7443", CA: c.ca, Certificate: c.cert, Key: c.key, Namespace: "web"}
}

func TestConfigWriteAndLoad(t *testing.T) {
	cr := newCreds(t)
	cfg, err := client.NewConfig(cr.entry())
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.AddContext(client.ContextEntry{Name: "dev", Server: "https://[::1]:7443", CA: cr.ca, Token: "nxsa1.abc", HTTP3: true}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "home", ".nexus", "config")
	if err := cfg.Write(path); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != want {
			t.Fatalf("%s: %v mode %v, want %v", p, err, st.Mode().Perm(), want)
		}
	}
	data, _ := os.ReadFile(path)
	// Certificates are base64 in the file, as kubeconfig has them.
	if !strings.Contains(string(data), "certificateAuthorityData: "+base64.StdEncoding.EncodeToString(cr.ca)) || !strings.Contains(string(data), "currentContext: prod") {
		t.Fatalf("file:\n%s", data)
	}
	back, err := client.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := back.Resolve("")
	if err != nil {
		t.Fatal(err)
	}
	if r.Context.Name != "prod" || r.Namespace() != "web" || r.Settings.Server != "https://10.0.0.1:7443" || r.Settings.Certificate == nil || r.Settings.RootCAs == nil || r.Settings.HTTP3 {
		t.Fatalf("resolved prod: %+v", r)
	}
	r, err = back.Resolve("dev")
	if err != nil || r.Settings.Token != "nxsa1.abc" || r.Settings.Certificate != nil || !r.Settings.HTTP3 || r.Namespace() != "default" {
		t.Fatalf("resolved dev: %v %+v", err, r)
	}
	if err := back.SetCurrentContext("dev"); err != nil {
		t.Fatal(err)
	}
	if err := back.SetCurrentContext("nope"); err == nil || !strings.Contains(err.Error(), `no context "nope" (contexts: prod, dev)`) {
		t.Fatalf("use an unknown context: %v", err)
	}
	if err := back.Write(path); err != nil {
		t.Fatal(err)
	}
	if again, err := client.LoadConfig(path); err != nil || again.CurrentContext != "dev" {
		t.Fatalf("after use-context: %v", err)
	}
}

// A config that holds a key or token must not be readable by others, as
// ssh insists for its keys; one that only points at key files may be.
func TestConfigWithKeyMustBePrivate(t *testing.T) {
	cr := newCreds(t)
	dir := t.TempDir()
	write := func(name string, cfg *client.Config, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := cfg.Write(p); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	withKey, _ := client.NewConfig(cr.entry())
	withToken, _ := client.NewConfig(client.ContextEntry{Name: "sa", Server: "https://a:1", CA: cr.ca, Token: "nxsa1.x"})
	for _, tc := range []struct {
		name string
		cfg  *client.Config
	}{{"key", withKey}, {"token", withToken}} {
		for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
			p := write(tc.name, tc.cfg, mode)
			_, err := client.LoadConfig(p)
			if !errors.Is(err, client.ErrInsecureConfigMode) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "chmod 600 "+p) {
				t.Fatalf("%s config at mode %04o: %v", tc.name, mode, err)
			}
		}
		if _, err := client.LoadConfig(write(tc.name, tc.cfg, 0o600)); err != nil {
			t.Fatalf("%s config at 0600: %v", tc.name, err)
		}
	}
	// Key files: the config may be readable, the key file may not.
	for name, data := range map[string][]byte{"ca.crt": cr.ca, "alice.crt": cr.cert, "alice.key": cr.key} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	files := &client.Config{APIVersion: "v1", Kind: "Config", CurrentContext: "f",
		Clusters: []client.Cluster{{Name: "c", Server: "https://a:1", CertificateAuthorityFile: "ca.crt"}},
		Users:    []client.User{{Name: "u", ClientCertificateFile: "alice.crt", ClientKeyFile: filepath.Join(dir, "alice.key")}},
		Contexts: []client.Context{{Name: "f", Cluster: "c", User: "u"}}}
	p := write("files", files, 0o644)
	cfg, err := client.LoadConfig(p)
	if err != nil {
		t.Fatalf("config of paths at 0644: %v", err)
	}
	if r, err := cfg.Resolve(""); err != nil || r.Settings.Certificate == nil {
		t.Fatalf("resolve with files relative to the config: %v", err)
	}
	os.Chmod(filepath.Join(dir, "alice.key"), 0o644)
	if _, err := cfg.Resolve(""); !errors.Is(err, pki.ErrInsecureKeyFileMode) || !strings.Contains(err.Error(), "alice.key") || !strings.Contains(err.Error(), `context "f"`) {
		t.Fatalf("readable key file: %v", err)
	}
	os.Remove(filepath.Join(dir, "ca.crt"))
	if _, err := cfg.Resolve(""); err == nil || !strings.Contains(err.Error(), "certificateAuthorityFile") || !strings.Contains(err.Error(), "ca.crt") {
		t.Fatalf("missing CA file: %v", err)
	}
}

func TestBadConfigsNameFileAndField(t *testing.T) {
	cr := newCreds(t)
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	cluster := "clusters: [{name: c, server: 'https://a:1', certificateAuthorityData: " + b64(cr.ca) + "}]\n"
	user := "users: [{name: u, clientCertificateData: " + b64(cr.cert) + ", clientKeyData: " + b64(cr.key) + "}]\n"
	ctx := "contexts: [{name: x, cluster: c, user: u}]\n"
	head := "apiVersion: v1\nkind: Config\n"
	other := newCreds(t)
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"unknown field", head + strings.Replace(cluster, "server:", "sever:", 1) + user + ctx, "clusters[0].sever: unknown field"},
		{"wrong kind", "apiVersion: v1\nkind: Workload\n" + cluster + user + ctx, `kind: must be "Config", not "Workload"`},
		{"wrong version", "apiVersion: v2\nkind: Config\n" + cluster + user + ctx, `apiVersion: must be "v1"`},
		{"http", head + strings.Replace(cluster, "https://", "http://", 1) + user + ctx, "clusters[0].server: \"http://a:1\" must be an https:// URL"},
		{"no host", head + strings.Replace(cluster, "https://a:1", "https://:1", 1) + user + ctx, "clusters[0].server: \"https://:1\" names no host"},
		{"path", head + strings.Replace(cluster, "https://a:1", "https://a:1/v1", 1) + user + ctx, "must be only scheme, host and port"},
		{"bad base64", head + strings.Replace(cluster, b64(cr.ca), "abc$def", 1) + user + ctx, ""},
		{"not a certificate", head + strings.Replace(cluster, b64(cr.ca), b64([]byte("hello")), 1) + user + ctx, "clusters[0].certificateAuthorityData: parse certificates"},
		{"no CA", head + "clusters: [{name: c, server: 'https://a:1'}]\n" + user + ctx, "clusters[0].certificateAuthorityData: missing"},
		{"no key", head + cluster + "users: [{name: u, clientCertificateData: " + b64(cr.cert) + "}]\n" + ctx, "users[0].clientKeyData: missing"},
		{"wrong key", head + cluster + strings.Replace(user, b64(cr.key), b64(other.key), 1) + ctx, "users[0].clientKeyData: does not go with clientCertificateData"},
		{"no credentials", head + cluster + "users: [{name: u}]\n" + ctx, "users[0]: has no credentials"},
		{"dangling cluster", head + cluster + user + "contexts: [{name: x, cluster: nope, user: u}]\n", `contexts[0].cluster: "nope" is not a cluster of this config (clusters: c)`},
		{"dangling user", head + cluster + user + "contexts: [{name: x, cluster: c, user: bob}]\n", `contexts[0].user: "bob" is not a user of this config (users: u)`},
		{"bad namespace", head + cluster + user + "contexts: [{name: x, cluster: c, user: u, namespace: Web_1}]\n", "contexts[0].namespace: must be lower-case"},
		{"unknown current", head + "currentContext: nope\n" + cluster + user + ctx, `currentContext: "nope" is not a context of this config (contexts: x)`},
		{"twice", head + cluster + user + "contexts: [{name: x, cluster: c, user: u}, {name: x, cluster: c, user: u}]\n", `contexts[1].name: "x" is used twice`},
		{"wrong type", head + strings.Replace(cluster, "}]", ", http3: 3}]", 1) + user + ctx, "must be true or false"},
		{"not yaml", head + "clusters: [\n", "not valid YAML"},
		{"empty", "", "empty document"},
		{"token with newline", head + cluster + "users: [{name: u, token: \"a\\nb\"}]\n" + ctx, "users[0].token: must not contain spaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "config")
			if err := os.WriteFile(p, []byte(tc.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := client.LoadConfig(p)
			var ce *client.ConfigError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), "client config "+p+": ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v\nwant the file and %q", err, tc.want)
			}
			if tc.name == "bad base64" && !strings.Contains(err.Error(), "clusters[0].certificateAuthorityData: must be PEM text, or PEM in base64") {
				t.Fatalf("bad base64: %v", err)
			}
		})
	}
	// The valid document, and PEM written as text, are fine.
	p := filepath.Join(t.TempDir(), "config")
	os.WriteFile(p, []byte(head+cluster+user+ctx), 0o600)
	if _, err := client.LoadConfig(p); err != nil {
		t.Fatal(err)
	}
	indented := "    " + strings.ReplaceAll(strings.TrimSpace(string(cr.ca)), "\n", "\n    ")
	os.WriteFile(p, []byte(head+"clusters:\n- name: c\n  server: https://a:1\n  certificateAuthorityData: |\n"+indented+"\n"+user+ctx), 0o600)
	if _, err := client.LoadConfig(p); err != nil {
		t.Fatalf("PEM as text: %v", err)
	}
}

func TestConfigFileProblems(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope")
	if _, err := client.LoadConfig(missing); !client.IsNotExist(err) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("missing: %v", err)
	}
	if _, err := client.LoadConfig(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("directory: %v", err)
	}
	if _, err := client.LoadConfig("/dev/zero"); err == nil || !strings.Contains(err.Error(), "/dev/zero: not a regular file") {
		t.Fatalf("/dev/zero: %v", err)
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, nil, 0o600)
	os.Truncate(big, 10<<30)
	if _, err := client.LoadConfig(big); !errors.Is(err, fsutil.ErrTooLarge) || !strings.Contains(err.Error(), big) {
		t.Fatalf("10 GiB: %v", err)
	}
	// Write refuses what Load would refuse.
	if err := (&client.Config{APIVersion: "v1", Kind: "Config", CurrentContext: "x"}).Write(filepath.Join(dir, "c")); err == nil || !strings.Contains(err.Error(), "currentContext") {
		t.Fatalf("write of an invalid config: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "c")); !os.IsNotExist(err) {
		t.Fatal("an invalid config was written")
	}
	// No current context.
	cr := newCreds(t)
	cfg, _ := client.NewConfig(cr.entry())
	cfg.CurrentContext = ""
	if _, err := cfg.Resolve(""); !errors.Is(err, client.ErrNoContext) || !strings.Contains(err.Error(), "contexts: prod") {
		t.Fatalf("no current context: %v", err)
	}
}

func TestConfigPath(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("NEXUS_CONFIG", "")
	for _, tc := range []struct{ flag, env, want string }{
		{"/a/flag", "/b/env", "/a/flag"},
		{"", "/b/env", "/b/env"},
		{"", "", filepath.Join(home, ".nexus", "config")},
	} {
		t.Setenv("NEXUS_CONFIG", tc.env)
		if got, err := client.ConfigPath(tc.flag); err != nil || got != tc.want {
			t.Errorf("flag %q env %q: %q %v, want %q", tc.flag, tc.env, got, err, tc.want)
		}
	}
}

func TestRedactedConfigHoldsNoSecrets(t *testing.T) {
	cr := newCreds(t)
	cfg, _ := client.NewConfig(cr.entry())
	cfg.AddContext(client.ContextEntry{Name: "sa", Server: "https://a:1", CA: cr.ca, Token: "nxsa1.secret"})
	for _, asJSON := range []bool{false, true} {
		out, err := cfg.Redacted().Marshal(asJSON)
		if err != nil {
			t.Fatal(err)
		}
		s := string(out)
		for _, secret := range []string{base64.StdEncoding.EncodeToString(cr.key), "nxsa1.secret", base64.StdEncoding.EncodeToString(cr.cert)} {
			if strings.Contains(s, secret) {
				t.Fatalf("redacted view shows a secret:\n%s", s)
			}
		}
		if !strings.Contains(s, "REDACTED") || !strings.Contains(s, "DATA+OMITTED") || !strings.Contains(s, "https://10.0.0.1:7443") {
			t.Fatalf("redacted view:\n%s", s)
		}
	}
	// The original is untouched.
	if raw, _ := cfg.Marshal(false); !strings.Contains(string(raw), base64.StdEncoding.EncodeToString(cr.key)) {
		t.Fatal("Redacted changed the config")
	}
}

// WriteNew writes a config only where there is none (nexus server's
// ~/.nexus/config): an existing one is left as it is.
func TestConfigWriteNew(t *testing.T) {
	cr := newCreds(t)
	cfg, _ := client.NewConfig(cr.entry())
	path := filepath.Join(t.TempDir(), ".nexus", "config")
	if err := cfg.WriteNew(path); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("written: %v %v", err, st.Mode())
	}
	if _, err := client.LoadConfig(path); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte("mine"), 0o600)
	if err := cfg.WriteNew(path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("over an existing file: %v", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "mine" {
		t.Fatal("an existing config was replaced")
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	if p, err := client.DefaultConfigPath(); err != nil || p != filepath.Join(home, ".nexus", "config") {
		t.Fatalf("default path: %q %v", p, err)
	}
}
