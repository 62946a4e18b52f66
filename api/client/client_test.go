package client_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/servertest"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/security/authz"
	"nexus.dev/nexus/security/pki"
)

var protos = []struct {
	name string
	h3   bool
}{{"HTTP2", false}, {"HTTP3", true}}

// logRecorder keeps the client's debug records, to see which protocol
// answered.
type logRecorder struct {
	mu     sync.Mutex
	protos map[string]int
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "proto" && r.Message == "API request" {
			l.protos[a.Value.String()]++
		}
		return true
	})
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) answeredWith() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for p := range l.protos {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// settings are a client's settings for user name of cluster c.
func settings(t testing.TB, c *servertest.Cluster, h3 bool, name string, groups ...string) client.Settings {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(c.Root.Cert)
	return client.Settings{Server: c.URL(), RootCAs: pool, Certificate: c.User(t, name, groups...), HTTP3: h3}
}

func newClient(t testing.TB, s client.Settings) *client.Client {
	t.Helper()
	cl, err := client.New(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func res(t testing.TB, name string) *types.Resource {
	t.Helper()
	r, ok := types.LookupResource(name)
	if !ok {
		t.Fatalf("no resource %s", name)
	}
	return r
}

func workload(ns, name, image string, labels map[string]string) *types.Workload {
	w := &types.Workload{TypeMeta: types.TypeMeta{APIVersion: "v1", Kind: "Workload"}}
	w.Name, w.Namespace, w.Labels = name, ns, labels
	w.Spec.Template.Image = image
	w.Spec.Template.Ports = []types.Port{{Name: "http", Port: 8080}}
	return w
}

func mustCreate(t testing.TB, cl *client.Client, o types.Object) types.Object {
	t.Helper()
	got, err := cl.Create(context.Background(), o)
	if err != nil {
		t.Fatalf("create %s: %v", o.GetObjectMeta().Name, err)
	}
	return got
}

func namespace(name string) *types.Namespace {
	n := &types.Namespace{TypeMeta: types.TypeMeta{APIVersion: "v1", Kind: "Namespace"}}
	n.Name = name
	return n
}

// TestCRUD drives every verb over HTTP/2 and HTTP/3 with real mutual TLS.
func TestCRUD(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	for _, p := range protos {
		t.Run(p.name, func(t *testing.T) {
			ctx := context.Background()
			rec := &logRecorder{protos: map[string]int{}}
			s := settings(t, c, p.h3, "admin")
			s.Logger = slog.New(rec)
			var agents sync.Map
			s.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
				return roundTripFunc(func(r *http.Request) (*http.Response, error) {
					agents.Store(r.Header.Get("User-Agent"), true)
					return rt.RoundTrip(r)
				})
			}
			cl := newClient(t, s)
			wl := res(t, "wl")
			ns := strings.ToLower(p.name)
			mustCreate(t, cl, namespace(ns))

			created := mustCreate(t, cl, workload(ns, "web", "nexus.local/hello", map[string]string{"app": "web"})).(*types.Workload)
			if created.UID == "" || created.ResourceVersion == "" || *created.Spec.Replicas != 1 {
				t.Fatalf("created: %+v", created.ObjectMeta)
			}
			got, err := cl.Get(ctx, wl, ns, "web")
			if err != nil || got.GetObjectMeta().UID != created.UID {
				t.Fatalf("get: %v %+v", err, got)
			}
			mustCreate(t, cl, workload(ns, "db-"+ns, "postgres", map[string]string{"app": "db"}))
			items, rv, err := cl.List(ctx, wl, ns, client.ListOptions{LabelSelector: "app=web"})
			if err != nil || len(items) != 1 || items[0].GetObjectMeta().Name != "web" || rv == "" {
				t.Fatalf("list app=web: %v %d rv %q", err, len(items), rv)
			}
			items, _, err = cl.List(ctx, wl, "", client.ListOptions{FieldSelector: "metadata.name=db-" + ns})
			if err != nil || len(items) != 1 || items[0].GetObjectMeta().Namespace != ns {
				t.Fatalf("list across namespaces by field: %v %v", err, items)
			}

			upd := created
			upd.Spec.Template.Image = "nexus.local/hello:2"
			updated, err := cl.Update(ctx, upd)
			if err != nil || updated.GetObjectMeta().Generation != 2 {
				t.Fatalf("update: %v %+v", err, updated)
			}
			// The version that update replaced is stale now.
			upd.Spec.Template.Image = "nexus.local/hello:3"
			if _, err := cl.Update(ctx, upd); !client.IsConflict(err) {
				t.Fatalf("update with a stale resourceVersion: %v, want a conflict", err)
			}
			patched, err := cl.Patch(ctx, wl, ns, "web", []byte(`{"spec":{"replicas":3}}`))
			if err != nil || *patched.(*types.Workload).Spec.Replicas != 3 || patched.(*types.Workload).Spec.Template.Image != "nexus.local/hello:2" {
				t.Fatalf("patch: %v %+v", err, patched)
			}
			st := patched.(*types.Workload)
			st.Status.ReadyReplicas = 2
			st.Status.ObservedGeneration = st.Generation
			withStatus, err := cl.UpdateStatus(ctx, st)
			if err != nil || withStatus.(*types.Workload).Status.ReadyReplicas != 2 {
				t.Fatalf("update status: %v %+v", err, withStatus)
			}
			if _, err := cl.Delete(ctx, wl, ns, "web", client.DeleteOptions{ResourceVersion: patched.GetObjectMeta().ResourceVersion}); !client.IsConflict(err) {
				t.Fatalf("delete with a stale resourceVersion: %v, want a conflict", err)
			}
			deleted, err := cl.Delete(ctx, wl, ns, "web", client.DeleteOptions{ResourceVersion: withStatus.GetObjectMeta().ResourceVersion})
			if err != nil || deleted.GetObjectMeta().Name != "web" {
				t.Fatalf("delete: %v", err)
			}
			if _, err := cl.Get(ctx, wl, ns, "web"); !client.IsNotFound(err) {
				t.Fatalf("get after delete: %v, want not found", err)
			}
			want := "HTTP/2.0"
			if p.h3 {
				want = "HTTP/3.0"
			}
			if got := rec.answeredWith(); !slices.Equal(got, []string{want}) {
				t.Fatalf("answers came over %v, want only %s", got, want)
			}
			agents.Range(func(k, _ any) bool {
				if !strings.HasPrefix(k.(string), "nexus/") {
					t.Errorf("User-Agent %q", k)
				}
				return true
			})
		})
	}
}

func TestListFollowsPages(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	cl := newClient(t, settings(t, c, false, "admin"))
	wl := res(t, "wl")
	var want []string
	for i := range 23 {
		name := fmt.Sprintf("w%02d", i)
		mustCreate(t, cl, workload("default", name, "a", nil))
		want = append(want, name)
	}
	for _, limit := range []int64{0, 1, 5, 23, 100} {
		items, rv, err := cl.List(context.Background(), wl, "default", client.ListOptions{Limit: limit})
		if err != nil || rv == "" {
			t.Fatalf("limit %d: %v rv %q", limit, err, rv)
		}
		var got []string
		for _, o := range items {
			got = append(got, o.GetObjectMeta().Name)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("limit %d: got %v, want every object once: %v", limit, got, want)
		}
	}
}

// TestProblemsAreDecoded: every refusal is an *APIError carrying the
// server's problem, naming the object and the field.
func TestProblemsAreDecoded(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	cl := newClient(t, settings(t, c, false, "admin"))
	ctx := context.Background()
	wl := res(t, "wl")
	mustCreate(t, cl, workload("default", "web", "a", nil))

	bad := workload("default", "bad", "a", nil)
	bad.Spec.Template.Ports = append(bad.Spec.Template.Ports, types.Port{Port: 70000})
	_, err := cl.Create(ctx, bad)
	var ae *client.APIError
	if !errors.As(err, &ae) || !client.IsInvalid(err) || ae.Status != 422 || ae.Kind != "Workload" || ae.Name != "bad" || ae.Namespace != "default" ||
		len(ae.Fields) != 1 || ae.Fields[0].Field != "spec.template.ports[1].port" || ae.Fields[0].Detail != "must be 1-65535" {
		t.Fatalf("invalid port: %#v", err)
	}
	if err.Error() != `Workload "bad" is invalid: spec.template.ports[1].port: must be 1-65535` {
		t.Fatalf("message: %q", err.Error())
	}
	for _, tc := range []struct {
		name string
		call func() error
		is   func(error) bool
		want string
	}{
		{"exists", func() error { _, err := cl.Create(ctx, workload("default", "web", "a", nil)); return err }, client.IsAlreadyExists, "already exists"},
		{"not found", func() error { _, err := cl.Get(ctx, wl, "default", "nope"); return err }, client.IsNotFound, "nope"},
		{"no namespace", func() error { _, err := cl.Create(ctx, workload("nope", "web", "a", nil)); return err }, client.IsNotFound, "nexus create namespace nope"},
		{"bad selector", func() error {
			_, _, err := cl.List(ctx, wl, "default", client.ListOptions{LabelSelector: "app in web"})
			return err
		}, client.IsBadRequest, "labelSelector"},
		{"bad field selector", func() error {
			_, _, err := cl.List(ctx, wl, "default", client.ListOptions{FieldSelector: "spec.image=x"})
			return err
		}, client.IsBadRequest, "cannot be selected"},
		{"bad patch", func() error {
			_, err := cl.Patch(ctx, wl, "default", "web", []byte(`{"spec":{"replicas":"x"}}`))
			return err
		}, client.IsBadRequest, "spec.replicas"},
		{"stale delete", func() error {
			_, err := cl.Delete(ctx, wl, "default", "web", client.DeleteOptions{ResourceVersion: "1"})
			return err
		}, client.IsConflict, "resourceVersion 1"},
		{"watch of a bad selector", func() error {
			_, err := cl.Watch(ctx, wl, "default", client.WatchOptions{LabelSelector: "=", ResourceVersion: "1"})
			return err
		}, client.IsBadRequest, "labelSelector"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !tc.is(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want %q", err, tc.want)
			}
		})
	}
	// Names are checked before they become part of a URL path.
	if _, err := cl.Get(ctx, wl, "default", "a/b"); err == nil || !strings.Contains(err.Error(), "DNS-1123") {
		t.Fatalf("name with a slash: %v", err)
	}
	// A user the server does not know is told so.
	other, err := pki.NewRoot(pki.RootConfig{Cluster: "other"})
	if err != nil {
		t.Fatal(err)
	}
	s := settings(t, c, false, "admin")
	s.Certificate = selfSigned(t, other)
	if _, err := newClient(t, s).Get(ctx, wl, "default", "web"); !client.IsUnauthorized(err) {
		t.Fatalf("certificate of another CA: %v, want unauthorized", err)
	}
	// RBAC refusals are Forbidden.
	if _, err := newClient(t, settings(t, c, false, "nobody")).Get(ctx, wl, "default", "web"); !client.IsForbidden(err) {
		t.Fatalf("user without a binding: %v, want forbidden", err)
	}
}

func selfSigned(t *testing.T, root *pki.Root) *tls.Certificate {
	t.Helper()
	return &tls.Certificate{Certificate: [][]byte{root.Cert.Raw}, PrivateKey: root.Key, Leaf: root.Cert}
}

func TestNonProblemAnswersAreQuoted(t *testing.T) {
	e := client.NewAPIErrorForTest("GET", "/v1/workloads", 502, http.Header{"Content-Type": {"text/html"}}, []byte("<html>bad gateway</html>"))
	if e.Reason != "Unknown" || !strings.Contains(e.Error(), "502 Bad Gateway: <html>bad gateway</html>") || !strings.Contains(e.Error(), "GET /v1/workloads") {
		t.Fatalf("%q %s", e.Error(), e.Reason)
	}
	e = client.NewAPIErrorForTest("GET", "/v1/workloads", 429, http.Header{"Retry-After": {"3"}}, nil)
	if !client.IsTooManyRequests(e) || e.RetryAfter != 3*time.Second {
		t.Fatalf("429: %+v", e)
	}
}

// TestConnectionErrorsNameTheServer: no answer says which server and why.
func TestConnectionErrorsNameTheServer(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	wl := res(t, "wl")
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "https://" + l.Addr().String()
	l.Close()
	for _, p := range protos {
		s := settings(t, c, p.h3, "admin")
		s.Server, s.Timeout = down, 3*time.Second
		var attempts atomic.Int32
		s.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) { attempts.Add(1); return rt.RoundTrip(r) })
		}
		_, err := newClient(t, s).Get(ctx, wl, "default", "web")
		var ce *client.ConnectionError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "cannot reach the API server at "+down) || ce.UntrustedServer() {
			t.Fatalf("%s, server down: %v", p.name, err)
		}
		// A refused connection is tried once more (a server restarting);
		// a request that got no answer (QUIC sees no refusal) is not, which
		// would only double the wait.
		want := int32(2)
		if p.h3 {
			want = 1
		}
		if attempts.Load() != want {
			t.Errorf("%s, server down: %d attempts, want %d", p.name, attempts.Load(), want)
		}
	}
	// A server whose certificate the config's CA did not sign.
	other, err := pki.NewRoot(pki.RootConfig{Cluster: "other"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range protos {
		s := settings(t, c, p.h3, "admin")
		s.RootCAs = x509.NewCertPool()
		s.RootCAs.AddCert(other.Cert)
		_, err := newClient(t, s).Get(ctx, wl, "default", "web")
		var ce *client.ConnectionError
		if !errors.As(err, &ce) || !ce.UntrustedServer() || !strings.Contains(err.Error(), "not trusted") {
			t.Fatalf("%s, wrong CA: %v", p.name, err)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// conflictOnce makes the first PUT of an object race with a change made
// by someone else just before it reaches the server.
type conflictOnce struct {
	next   http.RoundTripper
	before func()
	once   sync.Once
}

func (c *conflictOnce) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPut {
		c.once.Do(c.before)
	}
	return c.next.RoundTrip(r)
}

func TestApply(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	ctx := context.Background()
	other := newClient(t, settings(t, c, false, "admin"))
	wl := res(t, "wl")
	s := settings(t, c, true, "admin")
	var conflicts int
	s.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return &conflictOnce{next: rt, before: func() {
			// Someone else changes the object between Apply's read and its update.
			if _, err := other.Patch(ctx, wl, "default", "web", []byte(`{"metadata":{"annotations":{"touched":"yes"}}}`)); err != nil {
				t.Errorf("concurrent patch: %v", err)
			}
			conflicts++
		}}
	}
	cl := newClient(t, s)
	apply := func(o types.Object, want client.Action) types.Object {
		t.Helper()
		r, err := cl.Apply(ctx, o)
		if err != nil || r.Action != want {
			t.Fatalf("apply %s: %v %q, want %q", o.GetObjectMeta().Name, err, r.Action, want)
		}
		return r.Object
	}
	w := workload("default", "web", "nexus.local/hello", map[string]string{"app": "web"})
	first := apply(w, client.Created)
	// The same again, and the stored copy as `get -o yaml` shows it (with
	// uid, resourceVersion, status): nothing to do, nothing written.
	again := apply(workload("default", "web", "nexus.local/hello", map[string]string{"app": "web"}), client.Unchanged)
	apply(first, client.Unchanged)
	if again.GetObjectMeta().ResourceVersion != first.GetObjectMeta().ResourceVersion {
		t.Fatal("an unchanged apply wrote the object")
	}
	// A change: the update meets a concurrent one (409) and is retried.
	w.Spec.Template.Image = "nexus.local/hello:2"
	got := apply(w, client.Configured).(*types.Workload)
	if conflicts != 1 || got.Spec.Template.Image != "nexus.local/hello:2" {
		t.Fatalf("after a conflict: %d conflicts, image %s", conflicts, got.Spec.Template.Image)
	}
	// Apply replaces the object with what the file says: the concurrent
	// annotation, which the file does not have, is gone.
	if got.Annotations["touched"] != "" {
		t.Fatalf("annotations: %v", got.Annotations)
	}
	// Defaults the server fills in do not count as changes.
	sec := &types.Secret{TypeMeta: types.TypeMeta{Kind: "Secret"}, StringData: map[string]string{"password": "s3cret"}}
	sec.Name, sec.Namespace = "db", "default"
	apply(sec, client.Created)
	apply(sec, client.Unchanged)
	svc := &types.Service{TypeMeta: types.TypeMeta{Kind: "Service"}, Spec: types.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []types.ServicePort{{Port: 80}}}}
	svc.Name, svc.Namespace = "web", "default"
	apply(svc, client.Created)
	apply(svc, client.Unchanged)
	// A refusal is returned as it is.
	bad := workload("default", "web", "", nil)
	if _, err := cl.Apply(ctx, bad); !client.IsInvalid(err) {
		t.Fatalf("invalid apply: %v", err)
	}
	if st, err := cl.Get(ctx, wl, "default", "web"); err != nil || !bytes.Contains([]byte(st.(*types.Workload).Spec.Template.Image), []byte("hello:2")) {
		t.Fatalf("a refused apply changed the object: %v", err)
	}
}

// TestBearerToken: a client with a service account token and no
// certificate acts as that account.
func TestBearerToken(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	ctx := context.Background()
	admin := newClient(t, settings(t, c, false, "admin"))
	sa := &types.ServiceAccount{TypeMeta: types.TypeMeta{Kind: "ServiceAccount"}}
	sa.Name, sa.Namespace = "ci", "default"
	mustCreate(t, admin, sa)
	rb := &types.RoleBinding{TypeMeta: types.TypeMeta{Kind: "RoleBinding"},
		Subjects: []authz.Subject{{Kind: authz.SubjectServiceAccount, Namespace: "default", Name: "ci"}},
		RoleRef:  authz.RoleRef{Kind: authz.KindClusterRole, Name: "view"}}
	rb.Name, rb.Namespace = "ci-view", "default"
	mustCreate(t, admin, rb)
	mustCreate(t, admin, workload("default", "web", "a", nil))
	resp, err := c.HTTPClient(t, c.User(t, "admin"), false).Post(c.URL()+"/v1/namespaces/default/serviceaccounts/ci/token", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if tok.Token == "" {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
	for _, p := range protos {
		s := settings(t, c, p.h3, "admin")
		s.Certificate, s.Token = nil, tok.Token
		cl := newClient(t, s)
		deadline := time.Now().Add(10 * time.Second)
		for {
			// The binding reaches the server's RBAC view through a watch.
			_, err := cl.Get(ctx, res(t, "wl"), "default", "web")
			if err == nil {
				break
			}
			if !client.IsForbidden(err) || time.Now().After(deadline) {
				t.Fatalf("%s: get with the token: %v", p.name, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if _, err := cl.Create(ctx, workload("default", "other", "a", nil)); !client.IsForbidden(err) {
			t.Fatalf("%s: the view role created a workload: %v", p.name, err)
		}
		s.Token = tok.Token + "x"
		if _, err := newClient(t, s).Get(ctx, res(t, "wl"), "default", "web"); !client.IsUnauthorized(err) {
			t.Fatalf("%s: a wrong token: %v", p.name, err)
		}
	}
}
