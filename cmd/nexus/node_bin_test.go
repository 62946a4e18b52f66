package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/controller/controllertest"
)

// TestNodeCordonDrainNodes drives node maintenance through the binary as
// an operator does: nexus nodes lists the nodes with their instances'
// requests, cordon shows SchedulingDisabled, drain moves the instances
// to the other node and says what it did, uncordon undoes the cordon;
// mistakes are refused with what to do.
func TestNodeCordonDrainNodes(t *testing.T) {
	srv := controllertest.Start(t, controllertest.Options{})
	srv.AddNode(t, "n1", 4000, nil, nil)
	controllertest.StartAgent(t, srv.Client, controllertest.Running(100*time.Millisecond))
	e := &e2e{t: t, dir: t.TempDir(), config: srv.AdminConfig}

	e.ok("apply", "-f", e.file("web.yaml", `kind: Workload
metadata: {name: web}
spec:
  replicas: 2
  strategy: {maxSurge: 1, maxUnavailable: 1}
  template:
    image: nexus.local/hello
    resources: {requests: {cpu: 250m, memory: 64Mi}}
`))
	e.ok("rollout", "status", "web", "--timeout", "30s")
	srv.AddNode(t, "n2", 4000, nil, nil)
	out := e.ok("nodes")
	if !regexp.MustCompile(`(?m)^NAME\s+STATUS\s+ROLES\s+ADDRESSES\s+CPU\(REQ/ALLOC\)\s+MEMORY\(REQ/ALLOC\)\s+INSTANCES\s+VERSION\s+KERNEL\s+CERT-EXPIRES\s+AGE\n` +
		`n1\s+Ready\s+agent\s+<none>\s+500m/4 \(13%\)\s+128Mi/8Gi \(2%\)\s+2\s+.*\n` +
		`n2\s+Ready\s+agent\s+<none>\s+0/4 \(0%\)\s+0/8Gi \(0%\)\s+0\s+`).MatchString(out) {
		t.Fatalf("nexus nodes:\n%s", out)
	}

	// Node names complete as the one argument, nothing after it.
	if out := e.ok("__complete", "node", "drain", ""); !strings.HasPrefix(out, "n1\nn2\n:4\n") {
		t.Fatalf("complete node drain: %q", out)
	}
	if out := e.ok("__complete", "node", "cordon", "n1", ""); !strings.HasPrefix(out, ":4\n") {
		t.Fatalf("complete after the node: %q", out)
	}

	if out := e.ok("node", "cordon", "n2"); out != "node/n2 cordoned\n" {
		t.Fatalf("cordon: %q", out)
	}
	if out := e.ok("node", "cordon", "n2"); out != "node/n2 already cordoned\n" {
		t.Fatalf("cordon again: %q", out)
	}
	if out := e.ok("get", "nodes"); !regexp.MustCompile(`(?m)^n2\s+Ready,SchedulingDisabled\s`).MatchString(out) {
		t.Fatalf("get nodes after cordon:\n%s", out)
	}
	e.ok("node", "uncordon", "n2")

	out = e.ok("node", "drain", "n1", "--timeout", "30s")
	if strings.Count(out, "deleted instance default/web-") != 2 || !strings.HasPrefix(out, "node/n1 cordoned\n") || !strings.HasSuffix(out, "node/n1 drained\n") ||
		!strings.Contains(out, "at least 1 must stay ready") {
		t.Fatalf("drain:\n%s", out)
	}
	out = e.ok("nodes")
	if !regexp.MustCompile(`(?m)^n1\s+Ready,SchedulingDisabled\s+agent\s+\S+\s+0/4 \(0%\)\s+0/8Gi \(0%\)\s+0\s`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^n2\s+Ready\s+agent\s+\S+\s+500m/4 \(13%\)\s+128Mi/8Gi \(2%\)\s+2\s`).MatchString(out) {
		t.Fatalf("nexus nodes after the drain:\n%s", out)
	}

	e.fails([]string{"give one node to drain"}, "node", "drain")
	e.fails([]string{`node "ghost" does not exist: nexus nodes lists the nodes`}, "node", "drain", "ghost")
	e.fails([]string{`node "ghost" does not exist`}, "node", "uncordon", "ghost")
	e.fails([]string{"--timeout -1s: must not be negative"}, "node", "drain", "n1", "--timeout", "-1s")
	e.fails([]string{"give one node to cordon"}, "node", "cordon", "a", "b")
}
