package authz

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The expected policy of the built-in roles, written out here by hand and
// not derived from builtin.go: each resource, and for each role the verbs it
// may use on it. "all" is every verb, "read" is get, list and watch, "-" none.
var builtinRoleNames = []string{RoleClusterAdmin, RoleAdmin, RoleEdit, RoleView, RoleNode}

var expectedMatrix = []struct {
	resource   string
	namespaced bool
	verbs      [5]string // cluster-admin, admin, edit, view, node
}{
	{"workloads", true, [5]string{"all", "all", "all", "read", "-"}},
	{"workloads/status", true, [5]string{"all", "all", "read", "read", "-"}},
	{"workloads/scale", true, [5]string{"all", "all", "all", "read", "-"}},
	{"instances", true, [5]string{"all", "all", "all", "read", "read"}},
	{"instances/status", true, [5]string{"all", "all", "read", "read", "update patch"}},
	{"instances/log", true, [5]string{"all", "all", "read", "read", "-"}},
	{"instances/exec", true, [5]string{"all", "all", "all", "-", "-"}},
	{"services", true, [5]string{"all", "all", "all", "read", "read"}},
	{"services/status", true, [5]string{"all", "all", "read", "read", "-"}},
	{"networkpolicies", true, [5]string{"all", "all", "all", "read", "read"}},
	{"secrets", true, [5]string{"all", "all", "all", "-", "read"}},
	{"serviceaccounts", true, [5]string{"all", "all", "all", "read", "-"}},
	{"serviceaccounts/token", true, [5]string{"all", "all", "all", "-", "-"}},
	{"roles", true, [5]string{"all", "all", "read", "read", "-"}},
	{"rolebindings", true, [5]string{"all", "all", "read", "read", "-"}},
	{"endpoints", true, [5]string{"all", "read", "read", "read", "read"}},
	{"events", true, [5]string{"all", "all", "all", "read", "create"}},
	{"namespaces", false, [5]string{"all", "read", "read", "read", "-"}},
	{"namespaces/status", false, [5]string{"all", "-", "-", "-", "-"}},
	{"nodes", false, [5]string{"all", "-", "-", "-", "read create"}},
	{"nodes/status", false, [5]string{"all", "-", "-", "-", "update patch"}},
	{"nodes/certificate", false, [5]string{"all", "-", "-", "-", "create"}},
	{"nodes/heartbeat", false, [5]string{"all", "-", "-", "-", "create"}},
	{"servers", false, [5]string{"all", "-", "read", "read", "read"}},
	{"servers/status", false, [5]string{"all", "-", "-", "-", "-"}},
	{"clusterroles", false, [5]string{"all", "-", "-", "-", "-"}},
	{"clusterrolebindings", false, [5]string{"all", "-", "-", "-", "-"}},
}

var everyVerb = []string{"get", "list", "watch", "create", "update", "patch", "delete"}

func expandVerbs(cell string) []string {
	var out []string
	for _, w := range strings.Fields(cell) {
		switch w {
		case "all":
			out = append(out, everyVerb...)
		case "read":
			out = append(out, "get", "list", "watch")
		case "-":
		default:
			out = append(out, w)
		}
	}
	return out
}

func splitResource(r string) (string, string) {
	res, sub, _ := strings.Cut(r, "/")
	return res, sub
}

func alice() User { return User{Kind: PrincipalUser, Name: "alice", Groups: []string{"dev"}} }

// TestBuiltinRoleMatrix checks every built-in role, bound cluster-wide and
// bound in one namespace, against every verb on every resource, inside the
// namespace, in another one and across all namespaces.
func TestBuiltinRoleMatrix(t *testing.T) {
	for ri, role := range builtinRoleNames {
		bindings := map[string]Policy{
			"ClusterRoleBinding":  {ClusterRoleBindings: []Binding{{Name: "b", Subjects: []Subject{{Kind: SubjectUser, Name: "alice"}}, RoleRef: RoleRef{Kind: KindClusterRole, Name: role}}}},
			"RoleBinding in prod": {RoleBindings: []Binding{{Namespace: "prod", Name: "b", Subjects: []Subject{{Kind: SubjectGroup, Name: "dev"}}, RoleRef: RoleRef{Kind: KindClusterRole, Name: role}}}},
		}
		for how, policy := range bindings {
			a := New(policy)
			clusterWide := how == "ClusterRoleBinding"
			for _, row := range expectedMatrix {
				allowed := expandVerbs(row.verbs[ri])
				res, sub := splitResource(row.resource)
				// a cluster-scoped resource asked for in a namespace is a
				// malformed request: denied whatever the binding
				namespaces := []string{"", "prod"}
				if row.namespaced {
					namespaces = []string{"prod", "other", ""}
				}
				for _, ns := range namespaces {
					for _, verb := range everyVerb {
						want := slices.Contains(allowed, verb)
						if !clusterWide && (!row.namespaced || ns != "prod") {
							want = false
						}
						if !row.namespaced && ns != "" {
							want = false
						}
						d := a.Authorize(Attributes{User: alice(), Verb: verb, Resource: res, Subresource: sub, Namespace: ns})
						if d.Allowed != want {
							t.Errorf("%s %s: %s %s in namespace %q: allowed %v, want %v (%s)", role, how, verb, row.resource, ns, d.Allowed, want, d.Reason)
						}
					}
				}
			}
		}
	}
}

// TestBuiltinBindings checks the principals that get roles without any
// stored binding: nodes get the node role, servers everything, users and
// service accounts nothing.
func TestBuiltinBindings(t *testing.T) {
	a := New(Policy{})
	principals := []struct {
		user User
		role int // index into builtinRoleNames, -1 for none
	}{
		{User{Kind: PrincipalNode, Name: "n1"}, 4},
		{User{Kind: PrincipalServer, Name: "s1"}, 0},
		{User{Kind: PrincipalUser, Name: "alice", Groups: []string{"dev"}}, -1},
		{User{Kind: PrincipalServiceAccount, Namespace: "prod", Name: "builder"}, -1},
		// authentication never makes these, but they must not pass as nodes or servers
		{User{Kind: PrincipalUser, Name: "system:node:n1"}, -1},
		{User{Kind: PrincipalUser, Name: "mallory", Groups: []string{GroupNodes, GroupServers}}, -1},
		{User{Kind: "robot", Name: "r2"}, -1},
		{User{Kind: PrincipalNode}, -1},
	}
	for _, p := range principals {
		for _, row := range expectedMatrix {
			var allowed []string
			if p.role >= 0 {
				allowed = expandVerbs(row.verbs[p.role])
			}
			res, sub := splitResource(row.resource)
			ns := ""
			if row.namespaced {
				ns = "prod"
			}
			for _, verb := range everyVerb {
				d := a.Authorize(Attributes{User: p.user, Verb: verb, Resource: res, Subresource: sub, Namespace: ns})
				if want := slices.Contains(allowed, verb); d.Allowed != want {
					t.Errorf("%+v: %s %s: allowed %v, want %v (%s)", p.user, verb, row.resource, d.Allowed, want, d.Reason)
				}
			}
		}
	}
}

// TestDocumentedMatrix checks that the tables in the package doc and in
// docs/architecture.md say what the expected matrix says.
func TestDocumentedMatrix(t *testing.T) {
	for _, file := range []string{"doc.go", "../../docs/architecture.md"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		row := regexp.MustCompile(`(?m)^(?://\s*)?\|\s*` + "`?" + `([a-z/]+)` + "`?" + `\s*\|(.*)\|\s*$`)
		got := map[string][]string{}
		for _, m := range row.FindAllStringSubmatch(string(data), -1) {
			var cells []string
			for _, c := range strings.Split(m[2], "|") {
				cells = append(cells, strings.TrimSpace(strings.Trim(strings.TrimSpace(c), "¹")))
			}
			if len(cells) == 5 && m[1] != "resource" {
				got[m[1]] = cells
			}
		}
		for _, want := range expectedMatrix {
			cells, ok := got[want.resource]
			if !ok {
				t.Errorf("%s: no row for %s in the role matrix", file, want.resource)
				continue
			}
			for i, role := range builtinRoleNames {
				if g, w := expandVerbs(strings.ReplaceAll(cells[i], "—", "-")), expandVerbs(want.verbs[i]); !slices.Equal(g, w) {
					t.Errorf("%s: %s for %s: documented %q, expected %v", file, role, want.resource, cells[i], w)
				}
			}
		}
		if len(got) != len(expectedMatrix) {
			t.Errorf("%s: %d rows in the role matrix, want %d", file, len(got), len(expectedMatrix))
		}
	}
}

func TestVocabularyMatchesMatrix(t *testing.T) {
	var names []string
	for _, k := range resources {
		names = append(names, k.String())
	}
	var want []string
	for _, row := range expectedMatrix {
		want = append(want, row.resource)
		if ns, known := Namespaced(row.resource); !known || ns != row.namespaced {
			t.Errorf("Namespaced(%q) = %v, %v; want %v, true", row.resource, ns, known, row.namespaced)
		}
	}
	if !slices.Equal(names, want) {
		t.Errorf("resources %v\nwant      %v", names, want)
	}
}
