package main

import (
	"strings"
	"testing"
)

// TestLogsBadInput: nexus logs says what is wrong with its flags, and why
// an instance has no log to read, in words a user can act on. Reading a
// log from a running agent is tested in package agent (TestAgentLogs),
// through the same client.
func TestLogsBadInput(t *testing.T) {
	e := newE2E(t)
	e.fails([]string{"give one instance, e.g. nexus logs web-7xk2p (nexus ps lists them)"}, "logs")
	e.fails([]string{"--tail -2: give a number of lines, 0 or more"}, "logs", "web-1", "--tail", "-2")
	e.fails([]string{`--since "yesterday": give a duration such as 30s, 5m or 2h, or an RFC 3339 time`}, "logs", "web-1", "--since", "yesterday")
	e.fails([]string{`instance name "Web_1": must be lower-case`}, "logs", "Web_1")
	e.fails([]string{"instances/web-1 in namespace default: not found"}, "logs", "web-1")

	e.file("insts.yaml", `kind: Instance
metadata: {name: pending}
spec: {template: {image: a}}
---
kind: Instance
metadata: {name: away}
spec: {nodeName: n9, template: {image: a}}
`)
	e.ok("apply", "-f", "insts.yaml")
	e.fails([]string{"instance default/pending is not scheduled yet: no node runs it (nexus describe instance pending -n default says why it waits)"}, "logs", "pending", "-f")
	r := e.fails([]string{"node n9's agent is not connected to this server", "check the node (nexus get node n9)"}, "logs", "away", "--tail", "5", "--since", "5m", "--timestamps")
	if strings.Contains(r.stderr, "store") {
		t.Errorf("the error blames the store for a node that is away:\n%s", r.stderr)
	}
}
