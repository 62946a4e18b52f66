package api_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/api"
	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/servertest"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/security/pki"
)

// hostAgent is a HostNode (host processes for exec) that knows the
// instances bound to its node, as an agent does.
type hostAgent struct {
	*servertest.HostNode
	node string
}

func (h hostAgent) Instance(_ context.Context, namespace, name string) (*types.Instance, bool) {
	if namespace != "default" || !strings.HasPrefix(name, "far-") {
		return nil, false
	}
	inst := &types.Instance{}
	inst.Namespace, inst.Name, inst.Spec.NodeName = namespace, name, h.node
	return inst, true
}

// serveNode runs an agent's endpoint with creds on loopback and returns
// its address.
func serveNode(t *testing.T, node string, creds *pki.Credentials) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = api.ServeNode(ctx, l, api.NodeServeConfig{Node: node, Credentials: creds, Agent: hostAgent{servertest.NewHostNode(), node}})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return l.Addr().String()
}

// TestExecOnAnotherMachine: a server reaches the agent of a node on
// another machine at the address its Node publishes, runs an exec there
// with the API's own framing, and refuses an endpoint that is not that
// node's (503 naming the node, as for an agent that is away).
func TestExecOnAnotherMachine(t *testing.T) {
	e := startExecCluster(t)
	c := e.c
	admin := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
	admin.must(201, "POST", "/v1/nodes", "application/json", `{"kind":"Node","metadata":{"name":"n2"}}`)
	cli := e.client(t, "admin", false)
	opts := types.ExecOptions{Command: []string{"sh", "-c", "cat; echo err >&2; exit 3"}}

	_, _, _, err := execIn(t, cli, "far-1", opts, strings.NewReader("hello"))
	if err == nil || !strings.Contains(err.Error(), "node n2's agent is not connected to this server") || !strings.Contains(err.Error(), "publishes no agent address") {
		t.Fatalf("exec before n2 publishes its address: %v", err)
	}

	publish := func(addr string) {
		admin.must(200, "PATCH", "/v1/nodes/n2/status", "application/merge-patch+json", `{"status":{"agentAddress":"`+addr+`"}}`)
	}
	publish(serveNode(t, "n2", nodeCredentials(t, c, "n2")))
	deadline := time.Now().Add(10 * time.Second)
	for {
		stdout, stderr, code, err := execIn(t, cli, "far-1", opts, strings.NewReader("hello"))
		if err == nil {
			if stdout != "hello" || stderr != "err\n" || code != 3 {
				t.Fatalf("exec on n2: stdout %q stderr %q code %d", stdout, stderr, code)
			}
			break
		}
		// The watch cache may not have the new status yet.
		if time.Now().After(deadline) {
			t.Fatalf("exec on n2 through its endpoint: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// An endpoint that answers with another node's certificate is not n2.
	publish(serveNode(t, "n3", nodeCredentials(t, c, "n3")))
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, _, _, err := execIn(t, cli, "far-1", opts, strings.NewReader("hello"))
		if err != nil && strings.Contains(err.Error(), "node n2's agent is not connected") && strings.Contains(err.Error(), "for spiffe://apitest/node/n3, but it acts for spiffe://apitest/node/n2") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("exec through an endpoint with n3's certificate: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNodeEndpointAdmitsServersOnly: a node (or a user) cannot call
// another node's agent, even with a certificate of the cluster.
func TestNodeEndpointAdmitsServersOnly(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	addr := serveNode(t, "n2", nodeCredentials(t, c, "n2"))
	get := func(cert *tls.Certificate) (*http.Response, error) {
		// The caller's check of the endpoint is not what is tested here.
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{*cert}}, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		return (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + addr + "/healthz")
	}
	server, err := c.Creds.GetCertificate()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := get(server)
	if err != nil {
		t.Fatalf("a server calling a node's agent: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("a server calling a node's agent: %s", resp.Status)
	}
	for name, cert := range map[string]*tls.Certificate{"node": c.Node(t, "n1"), "user": c.User(t, "admin")} {
		if resp, err := get(cert); err == nil {
			resp.Body.Close()
			t.Fatalf("a %s called a node's agent: %s", name, resp.Status)
		}
	}
}
