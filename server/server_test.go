package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
)

func testConfig(t *testing.T, dir string) Config {
	return Config{DataDir: dir, Name: "s1", Cluster: "test", APIAddr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp")),
		StorePeerAddr: fmt.Sprintf("[::1]:%d", testutil.FreePort(t, "udp"))}
}

// userClient issues a user certificate from the server's CA (as `nexus
// user add` does) and returns an HTTP client that trusts the cluster's root
// only, checking the server's host name as any HTTPS client does.
func userClient(t *testing.T, dataDir, user string, h3 bool) *http.Client {
	t.Helper()
	d := pki.Dir{Path: filepath.Join(dataDir, "pki")}
	issuer, err := d.Issuer(0)
	if err != nil {
		t.Fatal(err)
	}
	root, err := d.RootCert()
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.GenerateKey()
	id := identity.User("test", user)
	csr, _ := pki.CreateCSR(key, id)
	chain, err := issuer.SignLeaf(csr, id, pki.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{PrivateKey: key}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	conf := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	if h3 {
		tr := &http3.Transport{TLSClientConfig: conf}
		t.Cleanup(func() { tr.Close() })
		return &http.Client{Transport: tr, Timeout: 30 * time.Second}
	}
	tr := &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServerFromAnEmptyDataDir: a server started on an empty data dir makes
// its CA, store, secrets key and audit log, serves the API over HTTP/2 and
// HTTP/3 with a certificate for the address dialled, binds the admin user to
// cluster-admin, and a restart reuses all of it.
func TestServerFromAnEmptyDataDir(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	s, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + s.APIAddr()
	for _, h3 := range []bool{false, true} {
		code, body := get(t, userClient(t, dir, "admin", h3), url+"/v1/namespaces")
		if code != 200 || !strings.Contains(body, `"name":"default"`) {
			t.Fatalf("h3=%v admin lists namespaces: %d %s", h3, code, body)
		}
	}
	if code, _ := get(t, userClient(t, dir, "mallory", false), url+"/v1/namespaces"); code != 403 {
		t.Fatalf("a user with no binding: %d", code)
	}
	// admin.conf: 0600, and it works as it is.
	adminConf := filepath.Join(dir, AdminConfigFile)
	if st, err := os.Stat(adminConf); err != nil || st.Mode().Perm() != 0o600 || s.AdminConfig() != adminConf {
		t.Fatalf("admin.conf: %v %v", st, err)
	}
	cc, err := client.LoadConfig(adminConf)
	if err != nil {
		t.Fatal(err)
	}
	resolved, err := cc.Resolve("")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(resolved.Settings)
	if err != nil {
		t.Fatal(err)
	}
	nsRes, _ := types.LookupResource("namespaces")
	if items, _, err := cl.List(context.Background(), nsRes, "", client.ListOptions{}); err != nil || len(items) == 0 {
		t.Fatalf("list namespaces with admin.conf: %d, %v", len(items), err)
	}
	root1, _ := pki.Dir{Path: filepath.Join(dir, "pki")}.RootCert()
	// Create something, stop, start again: same CA, same objects.
	req, _ := http.NewRequest("POST", url+"/v1/namespaces", strings.NewReader(`{"kind":"Namespace","metadata":{"name":"team"}}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := userClient(t, dir, "admin", false).Do(req)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("create namespace: %v %v", resp, err)
	}
	resp.Body.Close()
	confBefore := mustRead(t, adminConf)
	s.Stop()
	s, err = Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	root2, _ := pki.Dir{Path: filepath.Join(dir, "pki")}.RootCert()
	if !root1.Equal(root2) {
		t.Fatal("a restart made a new CA")
	}
	if string(mustRead(t, adminConf)) != string(confBefore) {
		t.Fatal("a restart issued a new admin.conf while the old one was good for months")
	}
	code, body := get(t, userClient(t, dir, "admin", false), url+"/v1/namespaces/team")
	if code != 200 {
		t.Fatalf("after a restart: %d %s", code, body)
	}
}

func TestServerWithAnExternalEtcd(t *testing.T) {
	testutil.RequireRoot(t)
	e := apitest.Etcd(t)
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.StoreEndpoints = e.Endpoints
	s, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	code, body := get(t, userClient(t, dir, "admin", false), "https://"+s.APIAddr()+"/v1/namespaces/default")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	// The objects are in etcd, under the documented keys.
	r, err := e.Client(t).Get(context.Background(), "/nexus/v1/namespaces/default")
	if err != nil || len(r.Kvs) != 1 {
		t.Fatalf("etcd holds no default namespace: %v", err)
	}
	var ns map[string]any
	if err := json.Unmarshal(r.Kvs[0].Value, &ns); err != nil {
		t.Fatal(err)
	}
}

// TestServerStartFailsCleanly: a busy API port fails the start, naming it,
// with nothing left running (the store member is not started).
func TestServerStartFailsCleanly(t *testing.T) {
	testutil.RequireRoot(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig(t, t.TempDir())
	cfg.APIAddr = busy.Addr().String()
	if _, err := Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Fatalf("start on a busy port: %v", err)
	}
	// The store's peer port is free again: nothing of the first try runs.
	c, err := net.ListenPacket("udp", cfg.StorePeerAddr)
	if err != nil {
		t.Fatalf("the store member of a failed start still holds %s: %v", cfg.StorePeerAddr, err)
	}
	c.Close()
}

// TestServerRunsControllers: a server runs the workload controller and
// the scheduler as its own identity, so their writes pass through the API
// and are audited as the server's; Config.NoControllers leaves them out.
func TestServerRunsControllers(t *testing.T) {
	testutil.RequireRoot(t)
	for _, off := range []bool{false, true} {
		dir := t.TempDir()
		cfg := testConfig(t, dir)
		cfg.NoControllers = off
		s, err := Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		// The one server wins the election at once.
		for deadline := time.Now().Add(5 * time.Second); !off && s.Controllers() == nil && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if (s.Controllers() == nil) != off {
			t.Fatalf("NoControllers=%v: controllers %v", off, s.Controllers())
		}
		admin := userClient(t, dir, "admin", false)
		url := "https://" + s.APIAddr()
		post := func(path, body string) {
			req, _ := http.NewRequest("POST", url+path, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := admin.Do(req)
			if err != nil || resp.StatusCode != 201 {
				t.Fatalf("POST %s: %v %v", path, resp, err)
			}
			resp.Body.Close()
		}
		post("/v1/namespaces/default/workloads", `{"kind":"Workload","metadata":{"name":"web","namespace":"default"},"spec":{"replicas":2,"template":{"image":"nexus.local/hello"}}}`)
		if off {
			// Nothing to wait for: with no controllers nothing would ever come.
			code, body := get(t, admin, url+"/v1/namespaces/default/instances")
			if code != 200 || strings.Contains(body, `"workload":"web"`) {
				t.Fatalf("without controllers: %d %s", code, body)
			}
			s.Stop()
			continue
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, body := get(t, admin, url+"/v1/namespaces/default/instances")
			if strings.Count(body, `"workload":"web"`) == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no instances made by the server's controllers: %s", body)
			}
			time.Sleep(20 * time.Millisecond)
		}
		s.Stop()
		// The audit log records the creations as the server's.
		logs, _ := filepath.Glob(filepath.Join(dir, "audit", "*"))
		var all string
		for _, l := range logs {
			all += string(mustRead(t, l))
		}
		n := 0
		for _, line := range strings.Split(all, "\n") {
			if strings.Contains(line, `"verb":"create"`) && strings.Contains(line, `"resource":"instances"`) {
				if !strings.Contains(line, `"kind":"server"`) || !strings.Contains(line, `"name":"s1"`) {
					t.Fatalf("an instance created by someone else than the server: %s", line)
				}
				n++
			}
		}
		if n != 2 {
			t.Fatalf("%d audited instance creations, want 2", n)
		}
	}
}

// TestServerNodeCredentials: the credentials of the agent beside the server
// (nexus up) are a node identity from the local CA, kept across restarts
// while valid; through LocalClient the agent may register its own Node but
// has no more than a node's permissions (no workloads, no other node). A
// name that is not a valid node name is refused.
func TestServerNodeCredentials(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.NoControllers = true
	s, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	creds, err := s.NodeCredentials("n1")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := creds.Identity(), identity.Node("test", "n1"); got != want {
		t.Fatalf("identity %s, want %s", got, want)
	}
	again, err := s.NodeCredentials("n1")
	if err != nil || pki.SerialString(again.Leaf()) != pki.SerialString(creds.Leaf()) {
		t.Fatalf("a second call issued another certificate (%v): the valid one is kept", err)
	}
	if _, err := s.NodeCredentials("Not_A_Node"); err == nil || !strings.Contains(err.Error(), `node name "Not_A_Node"`) {
		t.Fatalf("a bad node name: %v", err)
	}

	cli, err := s.LocalClient(creds, "test-agent")
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	newNode := func(name string) error {
		n := &types.Node{TypeMeta: types.TypeMeta{APIVersion: types.APIVersion, Kind: "Node"}, ObjectMeta: types.ObjectMeta{Name: name}}
		_, err := cli.Create(ctx, n)
		return err
	}
	if err := newNode("n1"); err != nil {
		t.Fatalf("the agent registers its own node: %v", err)
	}
	if err := newNode("n2"); !client.IsForbidden(err) {
		t.Fatalf("the agent registers another node: %v, want forbidden", err)
	}
	w := &types.Workload{TypeMeta: types.TypeMeta{APIVersion: types.APIVersion, Kind: "Workload"},
		ObjectMeta: types.ObjectMeta{Name: "web", Namespace: "default"}}
	w.Spec.Template.Image = "nexus.local/hello"
	if _, err := cli.Create(ctx, w); !client.IsForbidden(err) {
		t.Fatalf("the agent creates a workload: %v, want forbidden", err)
	}
}
