package api_test

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/servertest"
	"nexus.dev/nexus/api/types"
)

// documentedMatrix reads the built-in roles table from docs/architecture.md:
// resource -> role -> the verbs it allows. A cell marked ¹ applies only
// through a ClusterRoleBinding.
func documentedMatrix(t *testing.T) (roles []string, m map[string]map[string]string) {
	t.Helper()
	f, err := os.Open("../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m = map[string]map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "| resource | cluster-admin") {
			for _, c := range strings.Split(strings.Trim(line, "| "), "|")[1:] {
				roles = append(roles, strings.TrimSpace(c))
			}
			continue
		}
		if roles == nil || !strings.HasPrefix(line, "| `") {
			if roles != nil && len(m) > 0 && !strings.HasPrefix(line, "|") {
				break
			}
			continue
		}
		cells := strings.Split(strings.Trim(line, "| "), "|")
		res := strings.Trim(strings.TrimSpace(cells[0]), "`")
		m[res] = map[string]string{}
		for i, c := range cells[1:] {
			m[res][roles[i]] = strings.TrimSpace(c)
		}
	}
	if len(m) < 10 {
		t.Fatalf("found %d rows of the built-in roles table in docs/architecture.md", len(m))
	}
	return roles, m
}

// allows reads a table cell: "all", "read", "—", a list of verbs, with an
// optional ¹ (only through a ClusterRoleBinding).
func allows(cell, verb string, viaClusterBinding bool) bool {
	if strings.HasSuffix(cell, "¹") {
		if !viaClusterBinding {
			return false
		}
		cell = strings.TrimSuffix(cell, "¹")
	}
	switch cell {
	case "all":
		return true
	case "read":
		return verb == "get" || verb == "list" || verb == "watch"
	case "—", "-", "":
		return false
	}
	for _, v := range strings.Fields(cell) {
		if v == verb {
			return true
		}
	}
	return false
}

// TestAuthorizationMatrixMatchesTheDocs: every built-in role (cluster-admin
// through a ClusterRoleBinding; admin, edit and view through a RoleBinding
// in their namespace, and view also cluster-wide) × every verb × every
// resource the API serves, through real requests: allowed exactly where
// the documented table says.
func TestAuthorizationMatrixMatchesTheDocs(t *testing.T) {
	_, table := documentedMatrix(t)
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	admin := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
	admin.must(201, "POST", "/v1/namespaces", "application/json", `{"kind":"Namespace","metadata":{"name":"team"}}`)
	type subject struct {
		user, role string
		cluster    bool
	}
	subjects := []subject{{"u-cluster-admin", "cluster-admin", true}, {"u-admin", "admin", false}, {"u-edit", "edit", false}, {"u-view", "view", false}, {"u-view-all", "view", true}}
	for _, s := range subjects {
		if s.cluster {
			admin.must(201, "POST", "/v1/clusterrolebindings", "application/json",
				`{"kind":"ClusterRoleBinding","metadata":{"name":"`+s.user+`"},"subjects":[{"kind":"User","name":"`+s.user+`"}],"roleRef":{"kind":"ClusterRole","name":"`+s.role+`"}}`)
		} else {
			admin.must(201, "POST", "/v1/namespaces/team/rolebindings", "application/json",
				`{"kind":"RoleBinding","metadata":{"name":"`+s.user+`"},"subjects":[{"kind":"User","name":"`+s.user+`"}],"roleRef":{"kind":"ClusterRole","name":"`+s.role+`"}}`)
		}
	}
	verbs := []string{"get", "list", "watch", "create", "update", "patch", "delete"}
	checked := 0
	for _, s := range subjects {
		cl := client{t: t, hc: c.HTTPClient(t, c.User(t, s.user), false), url: c.URL()}
		waitFor(t, s.user+"'s binding", func() bool {
			return cl.do("GET", "/v1/namespaces/team/workloads/x", "", nil).code != 403
		})
		for _, r := range types.AllResources() {
			for _, sub := range []string{"", "status", "log"} {
				if sub == "status" && !r.HasStatus || sub == "log" && r.Plural != "instances" {
					continue
				}
				row := r.Plural
				if sub != "" {
					row += "/" + sub
				}
				cells, ok := table[row]
				if !ok {
					t.Fatalf("the documented table has no row for %s, which the API serves", row)
				}
				base := "/v1/" + r.Plural
				if r.Namespaced {
					base = "/v1/namespaces/team/" + r.Plural
				}
				for _, verb := range verbs {
					if sub != "" && verb != "get" && verb != "update" && verb != "patch" || sub == "log" && verb != "get" {
						continue
					}
					want := allows(cells[s.role], verb, s.cluster)
					got := requestAllowed(t, cl, verb, base, sub, r.Kind)
					checked++
					if got != want {
						t.Errorf("%s (%s, cluster-wide %v) %s %s: allowed %v, the docs say %q", s.user, s.role, s.cluster, verb, row, got, cells[s.role])
					}
				}
			}
		}
		// instances/exec has one verb, create (POST .../exec).
		want := allows(table["instances/exec"][s.role], "create", s.cluster)
		code := cl.do("POST", "/v1/namespaces/team/instances/matrix-x/exec", types.ExecContentType, `{"command":["true"]}`+"\n").code
		checked++
		if got := code != 403; got != want {
			t.Errorf("%s (%s, cluster-wide %v) create instances/exec: allowed %v (%d), the docs say %q", s.user, s.role, s.cluster, got, code, table["instances/exec"][s.role])
		}
	}
	t.Logf("%d role × verb × resource cells checked through the API", checked)
}

// requestAllowed makes a request with verb on the resource and reports
// whether authorization let it through (anything but 403: an object that
// does not exist gives 404, a body the API refuses 4xx, after the checks).
func requestAllowed(t *testing.T, cl client, verb, base, sub, kind string) bool {
	t.Helper()
	obj := base + "/matrix-x"
	if sub != "" {
		obj += "/" + sub
	}
	body := `{"kind":"` + kind + `","metadata":{"name":"matrix-x"}}`
	var code int
	switch verb {
	case "get":
		code = cl.do("GET", obj, "", nil).code
	case "list":
		code = cl.do("GET", base, "", nil).code
	case "watch":
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", cl.url+base+"?watch=true&timeoutSeconds=1", nil)
		resp, err := cl.hc.Do(req)
		if err != nil {
			t.Fatalf("watch %s: %v", base, err)
		}
		code = resp.StatusCode
		resp.Body.Close()
	case "create":
		code = cl.do("POST", base, "application/json", body).code
	case "update":
		code = cl.do("PUT", obj, "application/json", body).code
	case "patch":
		code = cl.do("PATCH", obj, "application/merge-patch+json", `{}`).code
	case "delete":
		code = cl.do("DELETE", obj, "", nil).code
	}
	if code == 401 || code >= 500 {
		t.Fatalf("%s %s: unexpected %d", verb, obj, code)
	}
	return code != 403
}
