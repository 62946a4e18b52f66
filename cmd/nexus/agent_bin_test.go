package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/api/types"
)

// TestAgentJoin: a machine joins a cluster with `nexus agent --join` as a
// user runs it, on its own harness host beside a `nexus server`: its
// credentials are private files, its Node comes up Ready with the
// prefixes the server gave it and the address of its endpoint, two
// replicas constrained to it run there, `nexus logs` and `nexus exec` of
// its instances work through the server, and after a crash it starts
// again without a token and adopts its containers.
func TestAgentJoin(t *testing.T) {
	c := newClusterNet(t, 2, 90*time.Second)
	s1 := c.server(0, "s1")
	tok := c.token(s1, "agent", 1)
	hs, ha := c.nw.Hosts[0], c.nw.Hosts[1]
	a := c.agent(1, "w1", "--label", "role=worker", "--join", hs.IPv6.String(), "--token", tok.Token, "--ca-pin", tok.CAPin)
	for _, f := range []string{"node.key", "node.crt", "bundle.pem"} {
		fi, err := os.Stat(filepath.Join(a.dir, "pki", f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("the node's %s: %v; want mode 0600", f, err)
		}
	}
	nexus := func(args ...string) (string, error) {
		return c.nexus(hs, append([]string{"--config", s1.conf()}, args...)...)
	}

	c.waitFor("node w1 Ready with its prefixes and its agent's address", func() (bool, string) {
		out, err := nexus("get", "node", "w1", "-o", "json")
		var n types.Node
		if err != nil || json.Unmarshal([]byte(out), &n) != nil {
			return false, out
		}
		ready := slices.ContainsFunc(n.Status.Conditions, func(c types.Condition) bool { return c.Type == "Ready" && c.Status == types.ConditionTrue })
		return ready && len(n.Status.ContainerPrefixes) == 2 && n.Status.AgentAddress == net.JoinHostPort(ha.IPv6.String(), "7444"), out
	})

	manifest := filepath.Join(t.TempDir(), "web.yaml")
	if err := os.WriteFile(manifest, []byte(`kind: Workload
metadata: {name: web}
spec:
  replicas: 2
  template: {image: nexus.local/hello}
  placement: {constraints: ["role=worker"]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	c.ok(hs, "--config", s1.conf(), "apply", "-f", manifest)
	running := func() []types.Instance {
		var insts []types.Instance
		c.waitFor("2 instances of web Running on w1", func() (bool, string) {
			out, err := nexus("get", "instances", "-o", "json")
			var list struct{ Items []types.Instance }
			if err != nil || json.Unmarshal([]byte(out), &list) != nil {
				return false, out
			}
			insts = list.Items
			n := 0
			for _, in := range insts {
				if in.Spec.NodeName == "w1" && in.Status.Phase == types.PhaseRunning {
					n++
				}
			}
			return n == 2 && len(insts) == 2, out
		})
		return insts
	}
	insts := running()
	name := insts[0].Name
	// Logs and exec reach the agent on its own machine through the server.
	c.waitFor("the log of "+name, func() (bool, string) {
		out, err := nexus("logs", name)
		return err == nil && strings.Contains(out, "listening on"), out
	})
	if out, err := nexus("exec", name, "--", "hostname"); err != nil || strings.TrimSpace(out) != name {
		t.Fatalf("exec %s -- hostname: %v: %q", name, err, out)
	}

	// After a crash, a start without a token (nor --join): the
	// credentials and the servers are in the data directory, and the
	// containers are adopted, not restarted.
	a.kill9()
	a.args = slices.Clone(a.args[:5]) // the harness's own: agent --name w1 --exit-recorder-dir DIR
	a.start()
	after := running()
	for _, in := range after {
		i := slices.IndexFunc(insts, func(o types.Instance) bool { return o.Name == in.Name })
		if i < 0 || in.Status.Restarts != insts[i].Status.Restarts {
			t.Errorf("instance %s was replaced or restarted across the agent's restart", in.Name)
		}
	}
	// At once after the restart: the endpoint waits until the agent has
	// taken its containers back, rather than saying the instance is not
	// on the node.
	if out, err := nexus("exec", name, "--", "hostname"); err != nil || strings.TrimSpace(out) != name {
		t.Fatalf("exec right after the agent restarted: %v: %q", err, out)
	}
}

// waitFor polls cond every 200 ms until it holds or the cluster's time is
// up; the last output it gave is shown then.
func (c *clusterNet) waitFor(what string, cond func() (bool, string)) {
	c.t.Helper()
	last := ""
	for {
		ok, out := cond()
		if ok {
			return
		}
		last = out
		select {
		case <-c.ctx.Done():
			c.t.Fatalf("timed out waiting for %s; last:\n%s", what, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
