package audit

import (
	"strings"
	"testing"
)

func TestDefaultPolicy(t *testing.T) {
	p := DefaultPolicy()
	tests := []struct {
		r    Record
		want Level
	}{
		{Record{Verb: "get", URI: "/healthz"}, None},
		{Record{Verb: "get", URI: "/metrics?x=1"}, None},
		{req("get", "workloads", "web"), None},
		{req("list", "nodes", ""), None},
		{req("create", "workloads", "web"), Request},
		{req("deletecollection", "instances", ""), Request},
		{req("create", "secrets", "db"), Metadata},
		{req("get", "secrets", "db"), Metadata},
		{Record{Event: EventCertificateIssued}, Metadata},
	}
	for _, tt := range tests {
		if got := p.LevelOf(&tt.r); got != tt.want {
			t.Errorf("%s %s %s: %s, want %s", tt.r.Verb, tt.r.Resource, tt.r.URI, got, tt.want)
		}
	}
}

func TestPolicyRules(t *testing.T) {
	p, err := ParsePolicy([]byte(`{
		"rules": [
			{"level": "None", "users": ["system:probe"]},
			{"level": "RequestResponse", "groups": ["auditors"], "verbs": ["get"]},
			{"level": "Request", "resources": ["workloads/scale"]},
			{"level": "None", "paths": ["/debug/*"]}
		],
		"default": "Metadata"}`))
	if err != nil {
		t.Fatal(err)
	}
	probe := req("get", "workloads", "web")
	probe.User.Name = "system:probe"
	auditor := req("get", "roles", "admin")
	auditor.User.Groups = []string{"dev", "auditors"}
	scale := req("update", "workloads", "web")
	scale.Subresource = "scale"
	tests := []struct {
		name string
		r    Record
		want Level
	}{
		{"user", probe, None},
		{"group and verb", auditor, RequestResponse},
		{"subresource", scale, Request},
		{"resource without the subresource", req("update", "workloads", "web"), Metadata},
		{"path prefix", Record{Verb: "get", URI: "/debug/pprof/heap"}, None},
		{"path prefix does not match a resource", Record{Verb: "get", Resource: "x", URI: "/debug/x"}, Metadata},
		{"default", req("get", "roles", "admin"), Metadata},
	}
	for _, tt := range tests {
		if got := p.LevelOf(&tt.r); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestParsePolicyErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"rules":[]}`, `"default" level missing`},
		{`{"default":"Loud"}`, `default: unknown audit level "Loud"`},
		{`{"default":"None","rules":[{"verbs":["get"]}]}`, "rules[0].level missing"},
		{`{"default":"None","rules":[{"level":"None"},{"level":"All"}]}`, `rules[1].level: unknown audit level "All"`},
		{`{"default":"None","rules":[{"level":"None","users":["a",""]}]}`, "rules[0].users[1] is empty"},
		{`{"default":"None","rules":[{"level":"None","paths":["/x"],"resources":["y"]}]}`, "rules[0] has both paths and resources"},
		{`{"default":"None","rulez":[]}`, `unknown field "rulez"`},
		{`{"default":"None"} {}`, "data after the policy object"},
		{`[`, "audit policy: unexpected EOF"},
	}
	for _, tt := range tests {
		_, err := ParsePolicy([]byte(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.in, err, tt.want)
		}
	}
}
