package authz

import (
	"slices"
	"strings"
	"testing"
)

// referenceAllows is the documented matching rule for one rule, written
// with plain string comparisons: a second implementation to hold the
// compiled bit sets against.
func referenceAllows(r Rule, verb, resource, sub, name string) bool {
	if !slices.Contains(everyVerb, verb) {
		return false
	}
	known := false
	for _, row := range expectedMatrix {
		if row.resource == joinResource(resource, sub) && !strings.Contains(resource, "/") {
			known = true
		}
	}
	if !known {
		return false
	}
	if !slices.Contains(r.Verbs, verb) && !slices.Contains(r.Verbs, "*") {
		return false
	}
	resOK := false
	for _, rr := range r.Resources {
		if rr == "*" || rr == joinResource(resource, sub) || (sub != "" && rr == resource+"/*") {
			resOK = true
		}
	}
	if !resOK {
		return false
	}
	return len(r.ResourceNames) == 0 || (name != "" && slices.Contains(r.ResourceNames, name))
}

func joinResource(res, sub string) string {
	if sub == "" {
		return res
	}
	return res + "/" + sub
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// FuzzRule feeds arbitrary rules and requests to the validator and the
// Authorizer: neither may panic, the Authorizer must agree with
// referenceAllows, and a rule the validator accepts must name only known
// verbs and resources.
func FuzzRule(f *testing.F) {
	f.Add("get,list", "secrets,instances/*", "", "get", "instances", "status", "")
	f.Add("*", "*", "db", "delete", "secrets", "", "db")
	f.Add("fetch", "pods,workloads/", "", "get", "workloads", "", "x")
	f.Add("update", "nodes/status", "a,b", "update", "nodes", "status", "b")
	f.Add("get", "*/status,instances/status/x", ",", "get", "instances/status", "", "")
	f.Fuzz(func(t *testing.T, verbsCSV, resourcesCSV, namesCSV, verb, res, sub, name string) {
		r := Rule{Verbs: splitList(verbsCSV), Resources: splitList(resourcesCSV), ResourceNames: splitList(namesCSV)}
		err := ValidateClusterRole("fuzz", []Rule{r})
		if err == nil {
			for _, v := range r.Verbs {
				if v != "*" && !slices.Contains(everyVerb, v) {
					t.Fatalf("validator accepted verb %q", v)
				}
			}
			for _, rr := range r.Resources {
				base, s, _ := strings.Cut(rr, "/")
				ok := rr == "*"
				for _, row := range expectedMatrix {
					if row.resource == rr || (s == "*" && strings.HasPrefix(row.resource, base+"/")) {
						ok = true
					}
				}
				if !ok {
					t.Fatalf("validator accepted resource %q", rr)
				}
			}
		}
		a := New(Policy{
			ClusterRoles:        []Role{{Name: "fuzz", Rules: []Rule{r}}},
			ClusterRoleBindings: []Binding{crb("fuzz", "fuzz", user("u"))},
		})
		ns := ""
		if namespaced, _ := Namespaced(joinResource(res, sub)); namespaced {
			ns = "n"
		}
		d := a.Authorize(Attributes{User: User{Kind: PrincipalUser, Name: "u"}, Verb: verb, Resource: res, Subresource: sub, Namespace: ns, Name: name})
		if want := referenceAllows(r, verb, res, sub, name); d.Allowed != want {
			t.Fatalf("rule %+v, request %s %s/%s %q: allowed %v, reference says %v (%s)", r, verb, res, sub, name, d.Allowed, want, d.Reason)
		}
		a.MayGrant(User{Kind: PrincipalUser, Name: "u"}, ns, []Rule{r})
	})
}
