package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"nexus.dev/nexus/api"
	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/servertest"
)

// client is a thin HTTP helper for the tests.
type client struct {
	t   *testing.T
	hc  *http.Client
	url string
}

type reply struct {
	code    int
	body    []byte
	problem api.Problem
	header  http.Header
}

func (c client) do(method, path, ctype string, body any) reply {
	c.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		js, _ := json.Marshal(b)
		r = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, c.url+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out := reply{code: resp.StatusCode, header: resp.Header}
	out.body, _ = io.ReadAll(resp.Body)
	if resp.Header.Get("Content-Type") == api.ProblemContentType {
		if err := json.Unmarshal(out.body, &out.problem); err != nil {
			c.t.Fatalf("%s %s: problem body: %v: %s", method, path, err, out.body)
		}
	}
	return out
}

func (c client) must(code int, method, path, ctype string, body any) reply {
	c.t.Helper()
	r := c.do(method, path, ctype, body)
	if r.code != code {
		c.t.Fatalf("%s %s: %d, want %d: %s", method, path, r.code, code, r.body)
	}
	return r
}

const webYAML = `apiVersion: v1
kind: Workload
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  template:
    image: nexus.local/hello
    ports: [{name: http, port: 8080}]
`

func TestCRUDOverHTTP2AndHTTP3(t *testing.T) {
	for _, b := range apitest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			c := servertest.StartServer(t, b, servertest.ServerOptions{})
			for _, h3 := range []bool{false, true} {
				cl := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), h3), url: c.URL()}
				ns := fmt.Sprintf("h3-%v", h3)
				cl.must(201, "POST", "/v1/namespaces", "application/yaml", "kind: Namespace\nmetadata: {name: "+ns+"}\n")
				created := cl.must(201, "POST", "/v1/namespaces/"+ns+"/workloads", "application/yaml", webYAML)
				var w struct {
					Metadata struct {
						Namespace, ResourceVersion, UID string
						Generation                      int
					}
					Spec struct{ Replicas int }
				}
				_ = json.Unmarshal(created.body, &w)
				if w.Metadata.Namespace != ns || w.Metadata.UID == "" || w.Metadata.Generation != 1 || w.Spec.Replicas != 2 {
					t.Fatalf("created: %s", created.body)
				}
				got := cl.must(200, "GET", "/v1/namespaces/"+ns+"/workloads/web", "", nil)
				if !bytes.Contains(got.body, []byte(`"resourceVersion":"`+w.Metadata.ResourceVersion+`"`)) {
					t.Fatalf("get: %s", got.body)
				}
				patched := cl.must(200, "PATCH", "/v1/namespaces/"+ns+"/workloads/web", "application/merge-patch+json", `{"spec":{"replicas":5}}`)
				if !bytes.Contains(patched.body, []byte(`"replicas":5`)) || !bytes.Contains(patched.body, []byte(`"generation":2`)) {
					t.Fatalf("patched: %s", patched.body)
				}
				list := cl.must(200, "GET", "/v1/namespaces/"+ns+"/workloads?labelSelector=app%3Dweb", "", nil)
				if !bytes.Contains(list.body, []byte(`"kind":"WorkloadList"`)) || !bytes.Contains(list.body, []byte(`"name":"web"`)) {
					t.Fatalf("list: %s", list.body)
				}
				cl.must(200, "DELETE", "/v1/namespaces/"+ns+"/workloads/web", "", nil)
				cl.must(404, "GET", "/v1/namespaces/"+ns+"/workloads/web", "", nil)
				if h3 && got.header.Get("Alt-Svc") != "" {
					t.Errorf("an HTTP/3 answer advertises Alt-Svc")
				}
				if !h3 && !strings.Contains(got.header.Get("Alt-Svc"), "h3") {
					t.Errorf("HTTP/2 answers do not advertise HTTP/3: Alt-Svc %q", got.header.Get("Alt-Svc"))
				}
			}
		})
	}
}

func TestBadInputGetsProblemsNamingTheField(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	cl := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
	wl := "/v1/namespaces/default/workloads"
	cl.must(201, "POST", wl, "application/yaml", webYAML)
	for _, tc := range []struct {
		name, method, path, ctype string
		body                      any
		code                      int
		reason                    string
		detail                    []string
	}{
		{"unknown field", "POST", wl, "application/yaml", strings.Replace(webYAML, "replicas: 2", "replicas: 2\n  replica: 3", 1), 400, "BadRequest", []string{"spec.replica: unknown field"}},
		{"wrong type", "POST", wl, "application/yaml", strings.Replace(webYAML, "replicas: 2", "replicas: two", 1), 400, "BadRequest", []string{"spec.replicas: must be a whole number"}},
		{"invalid", "POST", wl, "application/yaml", strings.Replace(strings.Replace(webYAML, "port: 8080", "port: 70000", 1), "name: web", "name: web2", 1), 422, "Invalid", []string{"spec.template.ports[0].port: must be 1-65535"}},
		{"bad name", "POST", wl, "application/yaml", strings.Replace(webYAML, "name: web,", "name: Web_1,", 1), 422, "Invalid", []string{"metadata.name"}},
		{"exists", "POST", wl, "application/yaml", webYAML, 409, "AlreadyExists", []string{"workloads/web in namespace default: already exists"}},
		{"namespace mismatch", "POST", wl, "application/json", `{"kind":"Workload","metadata":{"name":"x","namespace":"other"},"spec":{"template":{"image":"a"}}}`, 400, "BadRequest", []string{`metadata.namespace "other" does not match`}},
		{"kind mismatch", "POST", wl, "application/json", `{"kind":"Service","metadata":{"name":"x"}}`, 400, "BadRequest", []string{`kind "Service" does not match the resource workloads`}},
		{"malformed", "POST", wl, "application/json", `{"kind":`, 400, "BadRequest", []string{"not valid JSON"}},
		{"stale version", "PUT", wl + "/web", "application/json", `{"kind":"Workload","metadata":{"name":"web","resourceVersion":"1"},"spec":{"template":{"image":"a"}}}`, 409, "Conflict", []string{"resourceVersion 1"}},
		{"patch type", "PATCH", wl + "/web", "application/json-patch+json", `[]`, 415, "UnsupportedMediaType", []string{"merge patch"}},
		{"bad patch", "PATCH", wl + "/web", "application/merge-patch+json", `{"spec":{"replicas":"x"}}`, 400, "BadRequest", []string{"spec.replicas"}},
		{"patch breaks a rule", "PATCH", wl + "/web", "application/merge-patch+json", `{"spec":{"kind":"daemon"}}`, 422, "Invalid", []string{"spec.replicas: applies only to a service"}},
		{"bad selector", "GET", wl + "?labelSelector=app%20in%20web", "", nil, 400, "BadRequest", []string{"labelSelector"}},
		{"bad field selector", "GET", wl + "?fieldSelector=spec.image%3Dx", "", nil, 400, "BadRequest", []string{"cannot be selected by"}},
		{"unknown resource", "GET", "/v1/namespaces/default/deployments", "", nil, 404, "NotFound", []string{"no resource \"deployments\""}},
		{"missing namespace", "POST", "/v1/namespaces/nope/workloads", "application/yaml", webYAML, 404, "NotFound", []string{"namespace nope does not exist"}},
		{"too large", "POST", wl, "application/json", strings.Repeat(" ", 4<<20), 413, "RequestEntityTooLarge", nil},
		{"bad limit", "GET", wl + "?limit=-1", "", nil, 400, "BadRequest", []string{"limit"}},
		{"url name mismatch", "PUT", wl + "/web", "application/yaml", strings.Replace(webYAML, "name: web,", "name: other,", 1), 400, "BadRequest", []string{`metadata.name "other" does not match`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cl.do(tc.method, tc.path, tc.ctype, tc.body)
			if r.code != tc.code || r.problem.Reason != tc.reason {
				t.Fatalf("%d %s, want %d %s: %s", r.code, r.problem.Reason, tc.code, tc.reason, r.body)
			}
			for _, d := range tc.detail {
				if !strings.Contains(r.problem.Detail, d) {
					t.Errorf("detail %q does not contain %q", r.problem.Detail, d)
				}
			}
		})
	}
	// Nothing of the refused requests was stored.
	l := cl.must(200, "GET", wl, "", nil)
	if n := bytes.Count(l.body, []byte(`"kind":"Workload"`)); n != 1 {
		t.Fatalf("%d workloads stored, want 1: %s", n, l.body)
	}
}

// TestConcurrentGetsOfOneObject: many readers of one object get the same
// bytes at once (served from the watch cache, which every reader shares);
// with -race this also checks that no response writes into them.
func TestConcurrentGetsOfOneObject(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	cl := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
	want := cl.must(201, "POST", "/v1/namespaces/default/workloads", "application/yaml", webYAML).body
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			for range 20 {
				resp, err := cl.hc.Get(c.URL() + "/v1/namespaces/default/workloads/web")
				if err != nil {
					errs <- err
					return
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !bytes.Equal(got, want) {
					errs <- fmt.Errorf("GET: %d %s, want the created object %s", resp.StatusCode, got, want)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
