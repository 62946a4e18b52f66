package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"nexus.dev/nexus/api"
	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/servertest"
	"nexus.dev/nexus/security/audit"
	"nexus.dev/nexus/security/pki"
	"nexus.dev/nexus/security/secretbox"
)

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNodeActsOnlyForItself(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	admin := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
	n1 := client{t: t, hc: c.HTTPClient(t, c.Node(t, "n1"), false), url: c.URL()}
	node := func(name string) string { return `{"kind":"Node","metadata":{"name":"` + name + `"}}` }
	n1.must(201, "POST", "/v1/nodes", "application/json", node("n1"))
	if r := n1.do("POST", "/v1/nodes", "application/json", node("n2")); r.code != 403 || !strings.Contains(r.problem.Detail, "only its own Node") {
		t.Fatalf("n1 creating n2: %d %s", r.code, r.body)
	}
	admin.must(201, "POST", "/v1/nodes", "application/json", node("n2"))
	if r := n1.do("PATCH", "/v1/nodes/n2/status", "application/merge-patch+json", `{"status":{"tiers":["container"]}}`); r.code != 403 {
		t.Fatalf("n1 writing n2's status: %d %s", r.code, r.body)
	}
	n1.must(200, "PATCH", "/v1/nodes/n1/status", "application/merge-patch+json", `{"status":{"tiers":["container"]}}`)
	n1.must(200, "GET", "/v1/nodes/n2", "", nil) // every node reads every Node

	inst := func(name, node, secret string) string {
		return fmt.Sprintf(`{"kind":"Instance","metadata":{"name":%q},"spec":{"nodeName":%q,"template":{"image":"a","env":[{"name":"T","valueFrom":{"secretKeyRef":{"name":%q,"key":"k"}}}]}}}`, name, node, secret)
	}
	admin.must(201, "POST", "/v1/namespaces/default/instances", "application/json", inst("i1", "n1", "s1"))
	admin.must(201, "POST", "/v1/namespaces/default/instances", "application/json", inst("i2", "n2", "s2"))
	for _, s := range []string{"s1", "s2"} {
		admin.must(201, "POST", "/v1/namespaces/default/secrets", "application/json", `{"kind":"Secret","metadata":{"name":"`+s+`"},"stringData":{"k":"v"}}`)
	}
	n1.must(200, "GET", "/v1/namespaces/default/instances/i1", "", nil)
	n1.must(200, "PATCH", "/v1/namespaces/default/instances/i1/status", "application/merge-patch+json", `{"status":{"phase":"Running"}}`)
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/v1/namespaces/default/instances/i2", ""},
		{"PATCH", "/v1/namespaces/default/instances/i2/status", `{"status":{"phase":"Running"}}`},
		{"GET", "/v1/namespaces/default/instances", ""},                                  // every node's instances
		{"GET", "/v1/namespaces/default/instances?fieldSelector=spec.nodeName%3Dn2", ""}, // another node's
		{"GET", "/v1/namespaces/default/secrets/s2", ""},                                 // used only on n2
		{"DELETE", "/v1/namespaces/default/instances/i1", ""},
	} {
		ct := ""
		if tc.body != "" {
			ct = "application/merge-patch+json"
		}
		if r := n1.do(tc.method, tc.path, ct, tc.body); r.code != 403 {
			t.Errorf("n1 %s %s: %d, want 403: %s", tc.method, tc.path, r.code, r.body)
		}
	}
	l := n1.must(200, "GET", "/v1/namespaces/default/instances?fieldSelector=spec.nodeName%3Dn1", "", nil)
	if strings.Contains(string(l.body), `"i2"`) || !strings.Contains(string(l.body), `"i1"`) {
		t.Fatalf("n1's instances: %s", l.body)
	}
	n1.must(200, "GET", "/v1/namespaces/default/secrets/s1", "", nil)
}

func TestServiceAccountTokens(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	admin := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
	for _, ns := range []string{"a", "b"} {
		admin.must(201, "POST", "/v1/namespaces", "application/json", `{"kind":"Namespace","metadata":{"name":"`+ns+`"}}`)
		admin.must(201, "POST", "/v1/namespaces/"+ns+"/workloads", "application/yaml", webYAML)
	}
	admin.must(201, "POST", "/v1/namespaces/a/serviceaccounts", "application/json", `{"kind":"ServiceAccount","metadata":{"name":"ci"}}`)
	admin.must(201, "POST", "/v1/namespaces/a/rolebindings", "application/json",
		`{"kind":"RoleBinding","metadata":{"name":"ci-edit"},"subjects":[{"kind":"ServiceAccount","name":"ci","namespace":"a"}],"roleRef":{"kind":"ClusterRole","name":"edit"}}`)
	r := admin.must(201, "POST", "/v1/namespaces/a/serviceaccounts/ci/token", "application/json", `{"expirationSeconds":3600}`)
	var tok api.TokenResponse
	if err := json.Unmarshal(r.body, &tok); err != nil || !strings.HasPrefix(tok.Token, "nxsa1.") {
		t.Fatalf("token: %s", r.body)
	}
	bearer := func(token string) client {
		hc := c.HTTPClient(t, nil, false)
		hc.Transport = bearerTransport{token: token, next: hc.Transport}
		return client{t: t, hc: hc, url: c.URL()}
	}
	ci := bearer(tok.Token)
	waitFor(t, "the role binding to take effect", func() bool {
		return ci.do("GET", "/v1/namespaces/a/workloads/web", "", nil).code == 200
	})
	ci.must(200, "PATCH", "/v1/namespaces/a/workloads/web", "application/merge-patch+json", `{"spec":{"replicas":3}}`)
	// The token acts only as its account, which has no rights in b.
	if r := ci.do("GET", "/v1/namespaces/b/workloads/web", "", nil); r.code != 403 {
		t.Fatalf("token used in namespace b: %d %s", r.code, r.body)
	}
	if r := ci.do("POST", "/v1/namespaces/a/roles", "application/json", `{"kind":"Role","metadata":{"name":"r"},"rules":[{"verbs":["get"],"resources":["secrets"]}]}`); r.code != 403 {
		t.Fatalf("edit creating a role: %d", r.code)
	}
	// A forged secret and a made-up token are refused.
	if r := bearer(tok.Token[:len(tok.Token)-2]+"xx").do("GET", "/v1/namespaces/a/workloads/web", "", nil); r.code != 401 || !strings.Contains(r.problem.Detail, "wrong secret") {
		t.Fatalf("forged token: %d %s", r.code, r.body)
	}
	if r := bearer("nxsa1.garbage").do("GET", "/v1/namespaces/a/workloads", "", nil); r.code != 401 {
		t.Fatalf("garbage token: %d", r.code)
	}
	// Revoked: deleting the token.
	admin.must(200, "DELETE", "/v1/namespaces/a/serviceaccounts/ci/token/"+tok.ID, "", nil)
	if r := ci.do("GET", "/v1/namespaces/a/workloads/web", "", nil); r.code != 401 || !strings.Contains(r.problem.Detail, "does not exist") {
		t.Fatalf("revoked token: %d %s", r.code, r.body)
	}
	// Deleting the account revokes its other tokens.
	r = admin.must(201, "POST", "/v1/namespaces/a/serviceaccounts/ci/token", "", nil)
	_ = json.Unmarshal(r.body, &tok)
	bearer(tok.Token).must(200, "GET", "/v1/namespaces/a/workloads/web", "", nil)
	admin.must(200, "DELETE", "/v1/namespaces/a/serviceaccounts/ci", "", nil)
	admin.must(201, "POST", "/v1/namespaces/a/serviceaccounts", "application/json", `{"kind":"ServiceAccount","metadata":{"name":"ci"}}`)
	if r := bearer(tok.Token).do("GET", "/v1/namespaces/a/workloads/web", "", nil); r.code != 401 {
		t.Fatalf("token of a deleted (and re-created) account: %d %s", r.code, r.body)
	}
}

type bearerTransport struct {
	token string
	next  http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// TestRevokedCertificateOnAnOpenConnection: a revocation takes effect on
// the next request of a connection that is already open.
func TestRevokedCertificateOnAnOpenConnection(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	alice := c.User(t, "alice")
	admin := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
	admin.must(201, "POST", "/v1/clusterrolebindings", "application/json",
		`{"kind":"ClusterRoleBinding","metadata":{"name":"alice-view"},"subjects":[{"kind":"User","name":"alice"}],"roleRef":{"kind":"ClusterRole","name":"view"}}`)
	var conns int
	var mu sync.Mutex
	hc := c.HTTPClient(t, alice, false)
	tr := hc.Transport.(*http.Transport)
	dial := (&net.Dialer{}).DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		conns++
		mu.Unlock()
		return dial(ctx, network, addr)
	}
	al := client{t: t, hc: hc, url: c.URL()}
	waitFor(t, "alice's binding", func() bool { return al.do("GET", "/v1/namespaces/default/workloads", "", nil).code == 200 })
	rl := pki.NewRevocationList(c.Name).Add(time.Now(), alice.Leaf.SerialNumber)
	if err := c.Creds.SetRevocations(rl); err != nil {
		t.Fatal(err)
	}
	r := al.do("GET", "/v1/namespaces/default/workloads", "", nil)
	if r.code != 401 || !strings.Contains(r.problem.Detail, "revoked") {
		t.Fatalf("after revocation: %d %s", r.code, r.body)
	}
	if conns != 1 {
		t.Fatalf("%d connections: the check must hold on the one already open", conns)
	}
}

func TestAuditRecordsChangesDenialsAndNeverSecrets(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	admin := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
	stranger := client{t: t, hc: c.HTTPClient(t, c.User(t, "mallory"), false), url: c.URL()}
	anon := client{t: t, hc: c.HTTPClient(t, nil, false), url: c.URL()}
	const value = "hunter2-very-secret-value"
	admin.must(201, "POST", "/v1/namespaces/default/secrets", "application/json", `{"kind":"Secret","metadata":{"name":"db"},"stringData":{"password":"`+value+`"}}`)
	admin.must(200, "PATCH", "/v1/namespaces/default/secrets/db", "application/merge-patch+json", `{"stringData":{"password":"`+value+`2"}}`)
	admin.must(200, "GET", "/v1/namespaces/default/secrets/db", "", nil)
	stranger.must(403, "DELETE", "/v1/namespaces/default/secrets/db", "", nil)
	anon.must(401, "GET", "/v1/namespaces/default/secrets", "", nil)
	anon.must(200, "GET", "/healthz", "", nil)
	data, err := os.ReadFile(filepath.Join(c.AuditDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), value) || strings.Contains(string(data), "aHVudGVyMi") {
		t.Fatalf("a secret value is in the audit log:\n%s", data)
	}
	var sawCreate, sawDenied, sawAuthn bool
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var rec audit.Record
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		switch {
		case rec.Verb == "create" && rec.Resource == "secrets" && rec.Code == 201:
			sawCreate = rec.Decision.Authn.Allowed && rec.Decision.Identity.Allowed && rec.Decision.Authz.Allowed
		case rec.Verb == "delete" && rec.Code == 403:
			sawDenied = rec.User.Name == "mallory" && !rec.Decision.Authz.Allowed && strings.Contains(rec.Decision.Authz.Reason, "mallory")
		case rec.Event == audit.EventAuthnFailed:
			sawAuthn = rec.Code == 401
		}
	}
	if !sawCreate || !sawDenied || !sawAuthn {
		t.Fatalf("audit log lacks create %v, denial %v, authentication failure %v:\n%s", sawCreate, sawDenied, sawAuthn, data)
	}
	rep, err := audit.Verify(filepath.Join(c.AuditDir, "audit.log"))
	if err != nil {
		t.Fatalf("the API's audit log does not verify: %v (%+v)", err, rep)
	}
}

func TestOneNoisyIdentityIsLimited(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{Limits: api.Limits{RequestsPerSecond: 5, Burst: 5, MaxInFlight: 4, MaxBodyBytes: 1 << 20, MaxWatches: 2}})
	noisy := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
	var limited reply
	for range 20 {
		if r := noisy.do("GET", "/v1/namespaces/default/workloads", "", nil); r.code == 429 {
			limited = r
			break
		}
	}
	if limited.code != 429 || limited.header.Get("Retry-After") == "" || limited.problem.Reason != "TooManyRequests" {
		t.Fatalf("20 requests at once were not limited: %d %s", limited.code, limited.body)
	}
	// Another identity is not affected.
	quiet := client{t: t, hc: c.HTTPClient(t, c.Node(t, "n1"), false), url: c.URL()}
	quiet.must(200, "GET", "/v1/nodes", "", nil)
}

// TestNoPrivilegeEscalation: a user allowed to create role bindings cannot
// bind a role that grants more than the user holds.
func TestNoPrivilegeEscalation(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	admin := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
	admin.must(201, "POST", "/v1/namespaces/default/roles", "application/json",
		`{"kind":"Role","metadata":{"name":"binder"},"rules":[{"verbs":["create","get"],"resources":["rolebindings"]}]}`)
	admin.must(201, "POST", "/v1/namespaces/default/rolebindings", "application/json",
		`{"kind":"RoleBinding","metadata":{"name":"bob-binder"},"subjects":[{"kind":"User","name":"bob"}],"roleRef":{"kind":"Role","name":"binder"}}`)
	bob := client{t: t, hc: c.HTTPClient(t, c.User(t, "bob"), false), url: c.URL()}
	waitFor(t, "bob's binding", func() bool {
		return bob.do("GET", "/v1/namespaces/default/rolebindings/bob-binder", "", nil).code == 200
	})
	r := bob.do("POST", "/v1/namespaces/default/rolebindings", "application/json",
		`{"kind":"RoleBinding","metadata":{"name":"bob-admin"},"subjects":[{"kind":"User","name":"bob"}],"roleRef":{"kind":"ClusterRole","name":"admin"}}`)
	if r.code != 403 || !strings.Contains(r.problem.Detail, "may not grant") {
		t.Fatalf("bob binding himself to admin: %d %s", r.code, r.body)
	}
	bob.must(201, "POST", "/v1/namespaces/default/rolebindings", "application/json",
		`{"kind":"RoleBinding","metadata":{"name":"carol-binder"},"subjects":[{"kind":"User","name":"carol"}],"roleRef":{"kind":"Role","name":"binder"}}`)
}

// TestSecretsAreSealedInTheStore: a secret's value never reaches the store
// in plain text (what etcdctl get shows is ciphertext), yet reads back.
func TestSecretsAreSealedInTheStore(t *testing.T) {
	b := apitest.NexusStore(t)
	c := servertest.StartServer(t, b, servertest.ServerOptions{})
	admin := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
	const value = "correct-horse-battery-staple"
	admin.must(201, "POST", "/v1/namespaces/default/secrets", "application/json", `{"kind":"Secret","metadata":{"name":"db"},"stringData":{"password":"`+value+`"}}`)
	raw, err := b.Client(t).Get(context.Background(), "/nexus/v1/secrets/default/db")
	if err != nil || len(raw.Kvs) != 1 {
		t.Fatalf("raw read: %v", err)
	}
	stored := string(raw.Kvs[0].Value)
	if strings.Contains(stored, value) || strings.Contains(stored, "Y29ycmVjdC1ob3JzZ") || !strings.HasPrefix(stored, "nxs1:") {
		t.Fatalf("the store holds the secret readably: %.200s", stored)
	}
	got := admin.must(200, "GET", "/v1/namespaces/default/secrets/db", "", nil)
	var s struct{ Data map[string][]byte }
	if err := json.Unmarshal(got.body, &s); err != nil || string(s.Data["password"]) != value {
		t.Fatalf("read back: %s", got.body)
	}
	// A sealed value copied under another key does not open there.
	if _, err := b.Client(t).Put(context.Background(), "/nexus/v1/secrets/default/copy", stored); err != nil {
		t.Fatal(err)
	}
	if r := admin.do("GET", "/v1/namespaces/default/secrets/copy", "", nil); r.code != 500 && r.code != 422 {
		t.Fatalf("a moved sealed value opened: %d %s", r.code, r.body)
	}
}

// TestSecretsKeyRotation: after a rotation every stored secret is sealed
// again with the new key, and the running server, which still holds the old
// keyring, reads them (it reloads the key file when it meets the new key).
func TestSecretsKeyRotation(t *testing.T) {
	b := apitest.NexusStore(t)
	c := servertest.StartServer(t, b, servertest.ServerOptions{})
	admin := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
	for i := range 3 {
		admin.must(201, "POST", "/v1/namespaces/default/secrets", "application/json", fmt.Sprintf(`{"kind":"Secret","metadata":{"name":"s%d"},"stringData":{"v":"value-%d"}}`, i, i))
	}
	cli := b.Client(t)
	before, _ := cli.Get(context.Background(), "/nexus/v1/secrets/default/s0")
	ring, err := secretbox.Rotate(c.SecretsKey)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := api.LoadSecretKeys(c.SecretsKey, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := api.ResealSecrets(context.Background(), cli, keys)
	if err != nil || res.Resealed != 3 {
		t.Fatalf("reseal: %+v %v", res, err)
	}
	after, _ := cli.Get(context.Background(), "/nexus/v1/secrets/default/s0")
	if !strings.HasPrefix(string(after.Kvs[0].Value), "nxs1:"+ring.Primary()+":") || string(after.Kvs[0].Value) == string(before.Kvs[0].Value) {
		t.Fatalf("not resealed with the new key %s: %.40s", ring.Primary(), after.Kvs[0].Value)
	}
	for i := range 3 {
		r := admin.must(200, "GET", fmt.Sprintf("/v1/namespaces/default/secrets/s%d", i), "", nil)
		if !strings.Contains(string(r.body), base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("value-%d", i)))) {
			t.Fatalf("s%d after rotation: %s", i, r.body)
		}
	}
	if res, err := api.ResealSecrets(context.Background(), cli, keys); err != nil || res.Resealed != 0 || res.Current != 3 {
		t.Fatalf("a second reseal: %+v %v", res, err)
	}
}
