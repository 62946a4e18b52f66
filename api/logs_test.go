package api_test

import (
	"net/url"
	"strings"
	"testing"

	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/servertest"
)

// TestLogRoute: GET .../instances/{name}/log checks its parameters,
// authorizes "get" on instances/log (the view role has it; nodes and
// strangers do not), and says why there is no log to read: no such
// instance, not scheduled yet, its node's agent not connected. Reading a
// log from a connected node is tested in package client (TestLogs), and
// with a real agent in package agent (TestAgentLogs).
func TestLogRoute(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	admin := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
	inst := func(name, node string) string {
		return `{"kind":"Instance","metadata":{"name":"` + name + `"},"spec":{"nodeName":"` + node + `","template":{"image":"a"}}}`
	}
	admin.must(201, "POST", "/v1/namespaces/default/instances", "application/json", inst("pending", ""))
	admin.must(201, "POST", "/v1/namespaces/default/instances", "application/json", inst("bound", "n9"))
	admin.must(201, "POST", "/v1/namespaces/default/rolebindings", "application/json",
		`{"kind":"RoleBinding","metadata":{"name":"viewer"},"subjects":[{"kind":"User","name":"viewer"}],"roleRef":{"kind":"ClusterRole","name":"view"}}`)
	const base = "/v1/namespaces/default/instances/"

	for _, tc := range []struct {
		query, want string
	}{
		{"tailLines=-1", "tailLines=\"-1\": must be a whole number, 0 or more"},
		{"tailLines=ten", "tailLines=\"ten\""},
		{"follow=maybe", "follow=\"maybe\": use follow=true or follow=false"},
		{"timestamps=2", "timestamps=\"2\""},
		{"sinceSeconds=0", "sinceSeconds=\"0\": must be a whole number of seconds, 1 or more"},
		{"sinceSeconds=5m", "sinceSeconds=\"5m\""},
		{"sinceTime=yesterday", "sinceTime=\"yesterday\": must be an RFC 3339 time"},
		{"sinceSeconds=5&sinceTime=2026-12-03T05:00:00Z", "sinceSeconds and sinceTime both given"},
		{"tail=5", `unknown parameter "tail": a log takes follow, tailLines, sinceSeconds, sinceTime, timestamps`},
		{"follow=true&follow=false", "follow is given 2 times"},
	} {
		r := admin.do("GET", base+"bound/log?"+tc.query, "", nil)
		if r.code != 400 || r.problem.Reason != "BadRequest" || !strings.Contains(r.problem.Detail, tc.want) {
			t.Errorf("?%s: %d %s, want 400 saying %q", tc.query, r.code, r.body, tc.want)
		}
	}

	r := admin.must(404, "GET", base+"nope/log", "", nil)
	if r.problem.Reason != "NotFound" {
		t.Errorf("log of a missing instance: %s", r.body)
	}
	r = admin.must(409, "GET", base+"pending/log?follow=true", "", nil)
	if !strings.Contains(r.problem.Detail, "instance default/pending is not scheduled yet") {
		t.Errorf("log of a pending instance: %s", r.body)
	}
	q := url.Values{"tailLines": {"10"}, "sinceTime": {"2026-12-03T05:00:00Z"}, "timestamps": {"true"}}
	r = admin.must(503, "GET", base+"bound/log?"+q.Encode(), "", nil)
	if !strings.Contains(r.problem.Detail, "node n9's agent is not connected to this server") || r.header.Get("Retry-After") == "" ||
		r.problem.Kind != "Node" || r.problem.Name != "n9" || r.problem.Namespace != "" {
		t.Errorf("log of an instance whose node is away: %s", r.body)
	}
	admin.must(405, "POST", base+"bound/log", "", nil)
	admin.must(404, "GET", "/v1/namespaces/default/workloads/web/log", "", nil)
	admin.must(404, "GET", base+"bound/log/more", "", nil)

	viewer := client{t: t, hc: c.HTTPClient(t, c.User(t, "viewer"), false), url: c.URL()}
	waitFor(t, "the viewer's binding", func() bool { return viewer.do("GET", base+"bound/log", "", nil).code == 503 })
	stranger := client{t: t, hc: c.HTTPClient(t, c.User(t, "mallory"), false), url: c.URL()}
	if r := stranger.do("GET", base+"bound/log", "", nil); r.code != 403 || !strings.Contains(r.problem.Detail, "instances/log") {
		t.Errorf("a stranger reading a log: %d %s", r.code, r.body)
	}
	node := client{t: t, hc: c.HTTPClient(t, c.Node(t, "n9"), false), url: c.URL()}
	if r := node.do("GET", base+"bound/log", "", nil); r.code != 403 {
		t.Errorf("a node reading a log, even of its own instance: %d %s", r.code, r.body)
	}
}
