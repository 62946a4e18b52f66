package authz

import (
	"strings"
	"testing"
)

func crb(name, role string, subjects ...Subject) Binding {
	return Binding{Name: name, Subjects: subjects, RoleRef: RoleRef{Kind: KindClusterRole, Name: role}}
}

func rb(ns, name string, ref RoleRef, subjects ...Subject) Binding {
	return Binding{Namespace: ns, Name: name, Subjects: subjects, RoleRef: ref}
}

func user(name string) Subject  { return Subject{Kind: SubjectUser, Name: name} }
func group(name string) Subject { return Subject{Kind: SubjectGroup, Name: name} }
func sa(ns, name string) Subject {
	return Subject{Kind: SubjectServiceAccount, Namespace: ns, Name: name}
}
func clusterRole(name string) RoleRef { return RoleRef{Kind: KindClusterRole, Name: name} }
func role(name string) RoleRef        { return RoleRef{Kind: KindRole, Name: name} }

type check struct {
	name      string
	user      User
	verb      string
	resource  string // "resource" or "resource/sub"
	namespace string
	object    string
	allowed   bool
	reason    string // a part of the reason, when given
}

func (c check) attrs() Attributes {
	res, sub := splitResource(c.resource)
	return Attributes{User: c.user, Verb: c.verb, Resource: res, Subresource: sub, Namespace: c.namespace, Name: c.object}
}

func runChecks(t *testing.T, a *Authorizer, checks []check) {
	t.Helper()
	for _, c := range checks {
		d := a.Authorize(c.attrs())
		if d.Allowed != c.allowed {
			t.Errorf("%s: allowed %v, want %v (%s)", c.name, d.Allowed, c.allowed, d.Reason)
		}
		if !strings.Contains(d.Reason, c.reason) {
			t.Errorf("%s: reason %q does not say %q", c.name, d.Reason, c.reason)
		}
	}
}

func TestAuthorize(t *testing.T) {
	bob := User{Kind: PrincipalUser, Name: "bob", Groups: []string{"ops", "dev"}}
	builder := User{Kind: PrincipalServiceAccount, Namespace: "prod", Name: "builder"}
	a := New(Policy{
		ClusterRoles: []Role{
			{Name: "node-reader", Rules: []Rule{{Verbs: []string{"get", "list"}, Resources: []string{"nodes"}}}},
			{Name: "status-writer", Rules: []Rule{{Verbs: []string{"update"}, Resources: []string{"instances/*"}}}},
			{Name: "secret-db", Rules: []Rule{{Verbs: []string{"get", "update"}, Resources: []string{"secrets"}, ResourceNames: []string{"db", "cache"}}}},
			{Name: "everything-on-services", Rules: []Rule{{Verbs: []string{"*"}, Resources: []string{"services"}}}},
			// a stored role with a built-in name is ignored: view stays view
			{Name: RoleView, Rules: []Rule{{Verbs: []string{"*"}, Resources: []string{"*"}}}},
		},
		ClusterRoleBindings: []Binding{
			crb("ops-nodes", "node-reader", group("ops")),
			crb("carol-view", RoleView, user("carol")),
			crb("status", "status-writer", user("carol")),
			// refers to a Role: a ClusterRoleBinding cannot grant one
			crb("bad-ref", "deployer", user("carol")),
			// a stored binding with a built-in name is ignored
			crb(GroupNodes, RoleClusterAdmin, group("dev")),
		},
		Roles: []Role{
			{Namespace: "prod", Name: "deployer", Rules: []Rule{{Verbs: []string{"create", "delete"}, Resources: []string{"workloads"}}}},
		},
		RoleBindings: []Binding{
			rb("prod", "devs-view", clusterRole(RoleView), group("dev")),
			rb("prod", "bob-deploys", role("deployer"), user("bob")),
			rb("staging", "bob-deploys", role("deployer"), user("bob")), // no Role deployer in staging
			rb("prod", "db-secret", clusterRole("secret-db"), user("bob")),
			rb("prod", "builder-edit", clusterRole(RoleEdit), sa("prod", "builder")),
			rb("dev", "builder-services", clusterRole("everything-on-services"), sa("prod", "builder")),
			rb("prod", "all-sa-view", clusterRole(RoleView), group("system:serviceaccounts:ci")),
			rb("prod", "missing-role", clusterRole("nonexistent"), user("bob")),
		},
	})
	runChecks(t, a, []check{
		// aggregation: bob's rights are the union of his user and group bindings
		{"group binding", bob, "get", "workloads", "prod", "web", true, "RoleBinding prod/devs-view grants ClusterRole view"},
		{"user binding to a Role", bob, "create", "workloads", "prod", "web", true, "RoleBinding prod/bob-deploys grants Role prod/deployer"},
		{"cluster binding by group", bob, "list", "nodes", "", "", true, "ClusterRoleBinding ops-nodes grants ClusterRole node-reader"},
		{"no role grants update", bob, "update", "workloads", "prod", "web", false, "user bob (groups ops, dev) may not update workloads \"web\" in namespace prod: no role grants it"},
		{"no Role deployer in staging", bob, "create", "workloads", "staging", "web", false, "no role grants it"},
		{"binding to a missing role", bob, "delete", "secrets", "prod", "db", false, "no role grants it"},
		{"built-in name not overridden", bob, "delete", "nodes", "", "n1", false, ""},
		{"stored role named view ignored", User{Kind: PrincipalUser, Name: "carol"}, "delete", "secrets", "prod", "x", false, ""},
		{"ClusterRoleBinding to a Role", User{Kind: PrincipalUser, Name: "carol"}, "create", "workloads", "prod", "w", false, ""},

		// a RoleBinding to a ClusterRole grants in its namespace only
		{"view in prod", bob, "list", "instances", "prod", "", true, ""},
		{"view not in dev", bob, "list", "instances", "dev", "", false, ""},
		{"view not across namespaces", bob, "list", "instances", "", "", false, "in all namespaces: no role grants it"},
		{"cluster view across namespaces", User{Kind: PrincipalUser, Name: "carol"}, "list", "instances", "", "", true, "ClusterRoleBinding carol-view"},

		// resourceNames
		{"named secret", bob, "get", "secrets", "prod", "db", true, "RoleBinding prod/db-secret"},
		{"other named secret", bob, "update", "secrets", "prod", "cache", true, ""},
		{"unnamed secret", bob, "get", "secrets", "prod", "tls", false, ""},
		{"list is not named", bob, "list", "secrets", "prod", "", false, ""},
		{"verb outside the rule", bob, "delete", "secrets", "prod", "db", false, ""},

		// subresources versus their resource
		{"resource/* covers a subresource", User{Kind: PrincipalUser, Name: "carol"}, "update", "instances/status", "prod", "i1", true, "ClusterRoleBinding status"},
		{"resource/* covers another subresource", User{Kind: PrincipalUser, Name: "carol"}, "update", "instances/exec", "prod", "i1", true, ""},
		{"resource/* does not cover the resource", User{Kind: PrincipalUser, Name: "carol"}, "update", "instances", "prod", "i1", false, ""},
		{"the resource does not cover a subresource", bob, "create", "workloads/scale", "prod", "web", false, ""},

		// service accounts act only as themselves, in the namespaces they are bound in
		{"service account in its namespace", builder, "update", "secrets", "prod", "db", true, "RoleBinding prod/builder-edit"},
		{"service account token used in another namespace", builder, "get", "secrets", "staging", "db", false, "service account prod/builder may not get secrets \"db\" in namespace staging: no role grants it"},
		{"service account bound in another namespace", builder, "delete", "services", "dev", "web", true, "RoleBinding dev/builder-services"},
		{"same name, other namespace", User{Kind: PrincipalServiceAccount, Namespace: "staging", Name: "builder"}, "get", "workloads", "prod", "", false, ""},
		{"a user named like the account", User{Kind: PrincipalUser, Name: "builder"}, "get", "workloads", "prod", "", false, ""},
		{"namespace group of service accounts", User{Kind: PrincipalServiceAccount, Namespace: "ci", Name: "x"}, "get", "workloads", "prod", "", true, "RoleBinding prod/all-sa-view"},

		// requests outside the vocabulary
		{"unknown verb", User{Kind: PrincipalServer, Name: "s1"}, "fetch", "workloads", "prod", "", false, "unknown verb"},
		{"unknown resource", User{Kind: PrincipalServer, Name: "s1"}, "get", "pods", "prod", "", false, "unknown resource"},
		{"unknown subresource", User{Kind: PrincipalServer, Name: "s1"}, "get", "services/logs", "prod", "", false, "unknown resource"},
		{"cluster-scoped in a namespace", User{Kind: PrincipalServer, Name: "s1"}, "get", "nodes", "prod", "n1", false, "cluster-scoped"},
		{"server", User{Kind: PrincipalServer, Name: "s1"}, "delete", "clusterrolebindings", "", "x", true, "server s1 may delete clusterrolebindings \"x\": ClusterRoleBinding system:servers grants ClusterRole cluster-admin"},
	})
}

// TestReasonWording pins the wording of the decision log.
func TestReasonWording(t *testing.T) {
	a := New(Policy{RoleBindings: []Binding{rb("prod", "devs", clusterRole(RoleEdit), group("dev"))}})
	d := a.Authorize(Attributes{User: alice(), Verb: "delete", Resource: "secrets", Namespace: "prod"})
	if want := "user alice (groups dev) may delete secrets in namespace prod: RoleBinding prod/devs grants ClusterRole edit"; !d.Allowed || d.Reason != want {
		t.Errorf("got %+v, want allowed with %q", d, want)
	}
	a = New(Policy{})
	d = a.Authorize(Attributes{User: alice(), Verb: "delete", Resource: "secrets", Namespace: "prod"})
	if want := "user alice (groups dev) may not delete secrets in namespace prod: no role grants it"; d.Allowed || d.Reason != want {
		t.Errorf("got %+v, want denied with %q", d, want)
	}
}

func TestWildcards(t *testing.T) {
	a := New(Policy{
		ClusterRoles: []Role{
			{Name: "all-verbs-workloads", Rules: []Rule{{Verbs: []string{"*"}, Resources: []string{"workloads"}}}},
			{Name: "get-everything", Rules: []Rule{{Verbs: []string{"get"}, Resources: []string{"*"}}}},
		},
		ClusterRoleBindings: []Binding{crb("a", "all-verbs-workloads", user("u1")), crb("b", "get-everything", user("u2"))},
	})
	u1 := User{Kind: PrincipalUser, Name: "u1"}
	u2 := User{Kind: PrincipalUser, Name: "u2"}
	checks := []check{
		{"* verbs, one resource: subresource", u1, "get", "workloads/status", "p", "", false, ""},
		{"* resources: cluster-scoped", u2, "get", "nodes", "", "n", true, ""},
		{"* resources: subresource", u2, "get", "nodes/status", "", "n", true, ""},
		{"* resources: namespaced", u2, "get", "secrets", "p", "s", true, ""},
		{"* resources, one verb", u2, "list", "secrets", "p", "", false, ""},
	}
	for _, v := range everyVerb {
		checks = append(checks, check{"* verbs: " + v, u1, v, "workloads", "p", "w", true, ""})
	}
	runChecks(t, a, checks)
}

func TestBootstrapBinding(t *testing.T) {
	b, err := BootstrapBinding("admin@example")
	if err != nil {
		t.Fatal(err)
	}
	if b.Name != BootstrapBindingName || ValidateClusterRoleBinding(b.Name, b.Subjects, b.RoleRef) != nil {
		t.Fatalf("bootstrap binding %+v is not a valid binding named %s", b, BootstrapBindingName)
	}
	a := New(Policy{ClusterRoleBindings: []Binding{b}})
	first := User{Kind: PrincipalUser, Name: "admin@example"}
	for _, row := range expectedMatrix {
		res, sub := splitResource(row.resource)
		ns := ""
		if row.namespaced {
			ns = "any"
		}
		for _, v := range everyVerb {
			if d := a.Authorize(Attributes{User: first, Verb: v, Resource: res, Subresource: sub, Namespace: ns}); !d.Allowed {
				t.Errorf("first user: %s", d.Reason)
			}
		}
	}
	for _, bad := range []string{"", "system:admin"} {
		if _, err := BootstrapBinding(bad); err == nil {
			t.Errorf("BootstrapBinding(%q) succeeded", bad)
		}
	}
}

func TestMayGrant(t *testing.T) {
	a := New(Policy{
		ClusterRoles: []Role{{Name: "db-reader", Rules: []Rule{{Verbs: []string{"get"}, Resources: []string{"secrets"}, ResourceNames: []string{"db"}}}}},
		ClusterRoleBindings: []Binding{
			crb("root", RoleClusterAdmin, user("root")),
			crb("viewer", RoleView, user("viewer")),
		},
		RoleBindings: []Binding{
			rb("prod", "admin", clusterRole(RoleAdmin), user("pa")),
			rb("prod", "edit", clusterRole(RoleEdit), user("pe")),
			rb("prod", "db", clusterRole("db-reader"), user("dbr")),
		},
	})
	builtin := map[string][]Rule{}
	for _, r := range BuiltinClusterRoles() {
		builtin[r.Name] = r.Rules
	}
	u := func(n string) User { return User{Kind: PrincipalUser, Name: n} }
	cases := []struct {
		name      string
		user      User
		namespace string
		rules     []Rule
		allowed   bool
		reason    string
	}{
		{"cluster admin grants anything", u("root"), "", builtin[RoleClusterAdmin], true, "user root holds every permission the rules grant cluster-wide"},
		{"namespace admin grants admin there", u("pa"), "prod", builtin[RoleAdmin], true, ""},
		{"namespace admin grants edit there", u("pa"), "prod", builtin[RoleEdit], true, ""},
		{"namespace admin cannot grant elsewhere", u("pa"), "dev", builtin[RoleView], false, "in namespace dev: they do not hold it"},
		{"namespace admin cannot grant cluster-wide", u("pa"), "", builtin[RoleView], false, ""},
		// Endpoints are the endpoints controller's to write, not a namespace admin's.
		{"namespace admin cannot grant cluster-admin even in its namespace", u("pa"), "prod", builtin[RoleClusterAdmin], false, "may not grant create endpoints in namespace prod"},
		{"editor cannot grant admin", u("pe"), "prod", builtin[RoleAdmin], false, "user pe may not grant create workloads/status in namespace prod"},
		{"viewer cannot grant secrets", u("viewer"), "prod", []Rule{{Verbs: []string{"get"}, Resources: []string{"secrets"}}}, false, "may not grant get secrets in namespace prod"},
		{"viewer grants view anywhere", u("viewer"), "", builtin[RoleView], true, ""},
		{"named grant within a named permission", u("dbr"), "prod", []Rule{{Verbs: []string{"get"}, Resources: []string{"secrets"}, ResourceNames: []string{"db"}}}, true, ""},
		{"named permission does not cover all names", u("dbr"), "prod", []Rule{{Verbs: []string{"get"}, Resources: []string{"secrets"}}}, false, ""},
		{"named permission does not cover another name", u("dbr"), "prod", []Rule{{Verbs: []string{"get"}, Resources: []string{"secrets"}, ResourceNames: []string{"db", "tls"}}}, false, `get secrets "tls"`},
		{"nobody", u("nobody"), "prod", []Rule{{Verbs: []string{"get"}, Resources: []string{"events"}}}, false, ""},
	}
	for _, c := range cases {
		d := a.MayGrant(c.user, c.namespace, c.rules)
		if d.Allowed != c.allowed || !strings.Contains(d.Reason, c.reason) {
			t.Errorf("%s: %+v, want allowed %v with %q", c.name, d, c.allowed, c.reason)
		}
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want []string // each must appear; none means no error
	}{
		{"built-in role", ValidateClusterRole("r", BuiltinClusterRoles()[0].Rules), nil},
		{"unknown verb", ValidateRole([]Rule{{Verbs: []string{"get", "list", "fetch"}, Resources: []string{"secrets"}}}),
			[]string{`rules[0].verbs[2]: unknown verb "fetch" (use get, list, watch, create, update, patch, delete or *)`}},
		{"unknown resource", ValidateClusterRole("r", []Rule{{Verbs: []string{"get"}, Resources: []string{"workloads"}}, {Verbs: []string{"get"}, Resources: []string{"nodes", "pods"}}}),
			[]string{`rules[1].resources[1]: unknown resource "pods" (use workloads, instances,`}},
		{"unknown subresource", ValidateRole([]Rule{{Verbs: []string{"get"}, Resources: []string{"services/logs", "*/status", "workloads/", "workloads/*"}}}),
			[]string{`rules[0].resources[0]: unknown resource "services/logs"`, `rules[0].resources[1]: unknown resource "*/status"`, `rules[0].resources[2]: unknown resource "workloads/"`}},
		{"cluster-scoped in a Role", ValidateRole([]Rule{{Verbs: []string{"*"}, Resources: []string{"*", "nodes/status"}}}),
			[]string{`rules[0].resources[1]: "nodes/status" is cluster-scoped and a Role grants only in its namespace: use a ClusterRole`}},
		{"empty rule", ValidateRole([]Rule{{}}), []string{"rules[0].verbs: empty", "rules[0].resources: empty"}},
		{"no rules", ValidateRole(nil), []string{"rules: empty"}},
		{"empty name", ValidateRole([]Rule{{Verbs: []string{"get"}, Resources: []string{"secrets"}, ResourceNames: []string{"a", ""}}}), []string{"rules[0].resourceNames[1]: empty name"}},
		{"reserved cluster role", ValidateClusterRole(RoleAdmin, []Rule{{Verbs: []string{"get"}, Resources: []string{"secrets"}}}), []string{`metadata.name: "admin" is a built-in cluster role`}},
		{"role binding", ValidateRoleBinding([]Subject{user("a"), group("g"), sa("ns", "b")}, role("r")), nil},
		{"bad subjects", ValidateRoleBinding([]Subject{{Kind: "Usr", Name: "a"}, {Kind: SubjectServiceAccount, Name: "b"}, {Kind: SubjectGroup, Name: "g", Namespace: "x"}, {Kind: SubjectUser}}, RoleRef{Kind: "Roel"}),
			[]string{`subjects[0].kind: unknown kind "Usr" (use User, Group or ServiceAccount)`, "subjects[1].namespace: empty", "subjects[2].namespace: a Group has no namespace", "subjects[3].name: empty", `roleRef.kind: unknown kind "Roel"`, "roleRef.name: empty"}},
		{"no subjects", ValidateRoleBinding(nil, role("r")), []string{"subjects: empty"}},
		{"cluster binding", ValidateClusterRoleBinding("b", []Subject{user("a")}, clusterRole(RoleView)), nil},
		{"cluster binding to a Role", ValidateClusterRoleBinding("b", []Subject{user("a")}, role("r")), []string{"roleRef.kind: a ClusterRoleBinding can bind only a ClusterRole"}},
		{"reserved cluster binding", ValidateClusterRoleBinding(GroupServers, []Subject{user("a")}, clusterRole(RoleView)), []string{`metadata.name: "system:servers" is a built-in cluster role binding`}},
	}
	for _, c := range cases {
		if len(c.want) == 0 {
			if c.err != nil {
				t.Errorf("%s: %v", c.name, c.err)
			}
			continue
		}
		if c.err == nil {
			t.Errorf("%s: no error, want %q", c.name, c.want)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(c.err.Error(), w) {
				t.Errorf("%s: error\n%v\ndoes not say %q", c.name, c.err, w)
			}
		}
	}
	for _, r := range BuiltinClusterRoles() {
		if err := validateRules(r.Rules, false); err != nil {
			t.Errorf("built-in role %s: %v", r.Name, err)
		}
	}
}
