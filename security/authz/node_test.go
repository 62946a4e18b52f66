package authz

import (
	"strings"
	"testing"
)

// graph is a cluster as NodeRestriction sees it: instance -> node, and
// node -> secrets its instances use.
type graph struct {
	instances map[string]string
	secrets   map[string][]string
}

func (g graph) InstanceNode(ns, name string) string { return g.instances[ns+"/"+name] }

func (g graph) NodeUsesSecret(node, ns, name string) bool {
	for _, s := range g.secrets[node] {
		if s == ns+"/"+name {
			return true
		}
	}
	return false
}

func TestNodeRestriction(t *testing.T) {
	g := graph{
		instances: map[string]string{"prod/web-1": "a", "prod/web-2": "b", "prod/pending": ""},
		secrets:   map[string][]string{"a": {"prod/db"}, "b": {"prod/tls"}},
	}
	nodeA := User{Kind: PrincipalNode, Name: "a"}
	sel := func(kv ...string) map[string]string { return map[string]string{kv[0]: kv[1]} }
	cases := []struct {
		name    string
		at      Attributes
		allowed bool
		reason  string
	}{
		{"read own node", Attributes{Verb: "get", Resource: "nodes", Name: "a"}, true, ""},
		{"read another node", Attributes{Verb: "get", Resource: "nodes", Name: "b"}, true, "a node reads every Node"},
		{"list nodes", Attributes{Verb: "watch", Resource: "nodes"}, true, ""},
		{"register itself", Attributes{Verb: "create", Resource: "nodes", Name: "a"}, true, ""},
		{"register another node", Attributes{Verb: "create", Resource: "nodes", Name: "b"}, false, `node a may not create nodes "b": a node writes only its own Node (a)`},
		{"update own node status", Attributes{Verb: "update", Resource: "nodes", Subresource: "status", Name: "a"}, true, ""},
		{"update another node's status", Attributes{Verb: "patch", Resource: "nodes", Subresource: "status", Name: "b"}, false, "only its own Node"},
		{"delete another node", Attributes{Verb: "delete", Resource: "nodes", Name: "b"}, false, ""},
		{"write a node without a name", Attributes{Verb: "update", Resource: "nodes"}, false, ""},

		{"get own instance", Attributes{Verb: "get", Resource: "instances", Namespace: "prod", Name: "web-1"}, true, "bound to it"},
		{"get another node's instance", Attributes{Verb: "get", Resource: "instances", Namespace: "prod", Name: "web-2"}, false, "the instance is bound to node b"},
		{"update own instance status", Attributes{Verb: "update", Resource: "instances", Subresource: "status", Namespace: "prod", Name: "web-1"}, true, ""},
		{"update another node's instance status", Attributes{Verb: "update", Resource: "instances", Subresource: "status", Namespace: "prod", Name: "web-2"}, false, `node a may not update instances/status "web-2" in namespace prod: the instance is bound to node b`},
		{"patch an unbound instance's status", Attributes{Verb: "patch", Resource: "instances", Subresource: "status", Namespace: "prod", Name: "pending"}, false, "not bound to any node"},
		{"patch a missing instance's status", Attributes{Verb: "patch", Resource: "instances", Subresource: "status", Namespace: "prod", Name: "nope"}, false, ""},
		{"update an instance's spec", Attributes{Verb: "update", Resource: "instances", Namespace: "prod", Name: "web-1"}, false, "writes their status"},
		{"exec into own instance", Attributes{Verb: "create", Resource: "instances", Subresource: "exec", Namespace: "prod", Name: "web-1"}, false, ""},
		{"watch own instances", Attributes{Verb: "watch", Resource: "instances", FieldSelector: sel(FieldNodeName, "a")}, true, ""},
		{"list own instances in a namespace", Attributes{Verb: "list", Resource: "instances", Namespace: "prod", FieldSelector: sel(FieldNodeName, "a")}, true, ""},
		{"watch all instances", Attributes{Verb: "watch", Resource: "instances"}, false, "select spec.nodeName=a"},
		{"watch another node's instances", Attributes{Verb: "list", Resource: "instances", FieldSelector: sel(FieldNodeName, "b")}, false, ""},

		{"get a secret its instance uses", Attributes{Verb: "get", Resource: "secrets", Namespace: "prod", Name: "db"}, true, "uses the secret"},
		{"get a secret another node's instance uses", Attributes{Verb: "get", Resource: "secrets", Namespace: "prod", Name: "tls"}, false, "no instance bound to it uses the secret"},
		{"watch one secret it uses", Attributes{Verb: "watch", Resource: "secrets", Namespace: "prod", FieldSelector: sel(FieldName, "db")}, true, ""},
		{"watch one secret it does not use", Attributes{Verb: "watch", Resource: "secrets", Namespace: "prod", FieldSelector: sel(FieldName, "tls")}, false, ""},
		{"list secrets", Attributes{Verb: "list", Resource: "secrets", Namespace: "prod"}, false, "one at a time"},
		{"list one secret across namespaces", Attributes{Verb: "list", Resource: "secrets", FieldSelector: sel(FieldName, "db")}, false, ""},
		{"update a secret it uses", Attributes{Verb: "update", Resource: "secrets", Namespace: "prod", Name: "db"}, false, "only reads secrets"},

		{"services", Attributes{Verb: "list", Resource: "services"}, true, "no node restriction on services"},
		{"events", Attributes{Verb: "create", Resource: "events", Namespace: "prod", Name: "e"}, true, ""},
	}
	for _, c := range cases {
		c.at.User = nodeA
		d := NodeRestriction(c.at, g)
		if d.Allowed != c.allowed || !strings.Contains(d.Reason, c.reason) {
			t.Errorf("%s: %+v, want allowed %v with %q", c.name, d, c.allowed, c.reason)
		}
	}

	others := []User{
		{Kind: PrincipalUser, Name: "a"},
		{Kind: PrincipalServer, Name: "a"},
		{Kind: PrincipalServiceAccount, Namespace: "prod", Name: "a"},
	}
	for _, u := range others {
		d := NodeRestriction(Attributes{User: u, Verb: "update", Resource: "nodes", Subresource: "status", Name: "b"}, g)
		if !d.Allowed || !strings.Contains(d.Reason, "is not a node") {
			t.Errorf("%+v: %+v, want no node restriction", u, d)
		}
	}
	if d := NodeRestriction(Attributes{User: User{Kind: PrincipalNode}, Verb: "get", Resource: "services"}, g); d.Allowed {
		t.Errorf("a node without a name: %+v", d)
	}
}

// TestNodeBothChecks walks what an agent does through both checks, the
// way the API makes them: RBAC and the node restriction must both allow.
func TestNodeBothChecks(t *testing.T) {
	a := New(Policy{})
	g := graph{instances: map[string]string{"prod/web-1": "a", "prod/web-2": "b"}, secrets: map[string][]string{"a": {"prod/db"}}}
	nodeA := User{Kind: PrincipalNode, Name: "a"}
	both := func(at Attributes) bool {
		at.User = nodeA
		return a.Authorize(at).Allowed && NodeRestriction(at, g).Allowed
	}
	steps := []struct {
		name string
		at   Attributes
		want bool
	}{
		{"register", Attributes{Verb: "create", Resource: "nodes", Name: "a"}, true},
		{"heartbeat", Attributes{Verb: "patch", Resource: "nodes", Subresource: "status", Name: "a"}, true},
		{"heartbeat for b", Attributes{Verb: "patch", Resource: "nodes", Subresource: "status", Name: "b"}, false},
		{"update own Node spec", Attributes{Verb: "update", Resource: "nodes", Name: "a"}, false}, // RBAC: node role writes only nodes/status
		{"watch its instances", Attributes{Verb: "watch", Resource: "instances", FieldSelector: map[string]string{FieldNodeName: "a"}}, true},
		{"report status", Attributes{Verb: "update", Resource: "instances", Subresource: "status", Namespace: "prod", Name: "web-1"}, true},
		{"report status for b's instance", Attributes{Verb: "update", Resource: "instances", Subresource: "status", Namespace: "prod", Name: "web-2"}, false},
		{"fetch its secret", Attributes{Verb: "get", Resource: "secrets", Namespace: "prod", Name: "db"}, true},
		{"fetch another secret", Attributes{Verb: "get", Resource: "secrets", Namespace: "prod", Name: "tls"}, false},
		{"watch services", Attributes{Verb: "watch", Resource: "services"}, true},
		{"create a workload", Attributes{Verb: "create", Resource: "workloads", Namespace: "prod", Name: "w"}, false},
	}
	for _, s := range steps {
		if got := both(s.at); got != s.want {
			t.Errorf("%s: allowed %v, want %v", s.name, got, s.want)
		}
	}
}
