package authz

import (
	"fmt"
	"testing"
)

// benchPolicy is a large cluster: 1,000 namespaces with 10 RoleBindings
// each (one user and one group per binding, alternating edit, view and a
// Role of their namespace), so 10,000 RoleBindings, plus 100
// ClusterRoleBindings.
func benchPolicy() Policy {
	var p Policy
	for n := range 1000 {
		ns := fmt.Sprintf("ns-%d", n)
		p.Roles = append(p.Roles, Role{Namespace: ns, Name: "deployer", Rules: []Rule{{Verbs: []string{"create", "delete"}, Resources: []string{"workloads"}}}})
		for b := range 10 {
			ref := []RoleRef{clusterRole(RoleEdit), clusterRole(RoleView), role("deployer")}[b%3]
			p.RoleBindings = append(p.RoleBindings, rb(ns, fmt.Sprintf("b-%d", b), ref,
				user(fmt.Sprintf("user-%d", (n*10+b)%5000)), group(fmt.Sprintf("team-%d", b))))
		}
	}
	for c := range 100 {
		p.ClusterRoleBindings = append(p.ClusterRoleBindings, crb(fmt.Sprintf("c-%d", c), RoleView, user(fmt.Sprintf("auditor-%d", c))))
	}
	return p
}

func BenchmarkAuthorize(b *testing.B) {
	a := New(benchPolicy())
	cases := []struct {
		name string
		at   Attributes
		want bool
	}{
		{"user-rolebinding", Attributes{User: User{Kind: PrincipalUser, Name: "user-4320", Groups: []string{"team-1", "team-2"}}, Verb: "update", Resource: "secrets", Namespace: "ns-432", Name: "db"}, true},
		{"group-rolebinding", Attributes{User: User{Kind: PrincipalUser, Name: "x", Groups: []string{"team-7"}}, Verb: "list", Resource: "instances", Namespace: "ns-999"}, true},
		{"clusterrolebinding", Attributes{User: User{Kind: PrincipalUser, Name: "auditor-99"}, Verb: "watch", Resource: "workloads", Namespace: "ns-5"}, true},
		{"node", Attributes{User: User{Kind: PrincipalNode, Name: "n1"}, Verb: "patch", Resource: "instances", Subresource: "status", Namespace: "ns-5", Name: "i"}, true},
		{"denied", Attributes{User: User{Kind: PrincipalUser, Name: "user-4321", Groups: []string{"team-1", "team-2"}}, Verb: "delete", Resource: "nodes", Name: "n1"}, false},
	}
	for _, c := range cases {
		if d := a.Authorize(c.at); d.Allowed != c.want {
			b.Fatalf("%s: %+v", c.name, d)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				a.Authorize(c.at)
			}
		})
	}
}

func BenchmarkNew(b *testing.B) {
	p := benchPolicy()
	b.ReportAllocs()
	for b.Loop() {
		New(p)
	}
}
