package main

import (
	"regexp"
	"strings"
	"testing"
)

// TestServiceCommands drives expose, get svc and describe svc through the
// binary: the service gets its addresses at create and shows them, its
// backends come from its Endpoints (written here as the endpoints
// controller would: this server runs no controllers), and bad requests
// are refused saying what to do.
func TestServiceCommands(t *testing.T) {
	e := newE2E(t)
	e.ok("apply", "-f", e.file("web.yaml", webManifest))
	e.ok("delete", "svc", "web")
	out := e.ok("expose", "workload/web", "--port", "80", "--target-port", "8080")
	if !regexp.MustCompile(`^service/web exposed: virtual IPs fd00:6e78:7400:ff::[0-9a-f]+,10\.71\.255\.\d+, port 80->8080/TCP\n$`).MatchString(out) {
		t.Fatalf("expose:\n%s", out)
	}
	out = e.ok("expose", "wl/web", "--name", "web-public", "--port", "443", "--target-port", "8443", "--type", "NodePort", "--node-port", "30443", "--session-affinity", "ClientIP")
	if !strings.Contains(out, "service/web-public exposed: virtual IPs ") || !strings.HasSuffix(out, ", port 443->8443/TCP, node port 30443\n") {
		t.Fatalf("expose NodePort:\n%s", out)
	}
	e.fails([]string{"spec.ports[0].nodePort: node port 30443/TCP is already used by services/default/web-public: choose another, or leave it out to get a free one"},
		"expose", "workload/web", "--name", "web-2", "--port", "443", "--type", "NodePort", "--node-port", "30443")
	e.fails([]string{"--node-port needs --type NodePort"}, "expose", "workload/web", "--name", "x", "--port", "80", "--node-port", "30001")
	e.fails([]string{`"svc/web": name the workload as workload/NAME`}, "expose", "svc/web", "--port", "80")
	e.fails([]string{"required flag(s) \"port\" not set"}, "expose", "workload/web")
	e.fails([]string{"not found"}, "expose", "workload/nope", "--port", "80")
	e.ok("apply", "-f", e.file("bare.yaml", "kind: Workload\nmetadata: {name: bare}\nspec: {replicas: 0, template: {image: nexus.local/hello}}\n"))
	e.fails([]string{"workload bare has no labels in its template (spec.template.labels), so a service cannot select its instances"}, "expose", "workload/bare", "--port", "80")

	// The backends, as the endpoints controller writes them.
	e.ok("apply", "-f", e.file("ep.yaml", `kind: Endpoints
metadata: {name: web}
ports: [{port: 8080, protocol: TCP}]
backends:
- {instance: web-abcde, node: n1, addresses: ["fd00:6e78:7400:1::5", "10.71.1.5"], ready: true}
- {instance: web-fghjk, node: n2, addresses: ["fd00:6e78:7400:2::7"]}
`))
	out = e.ok("get", "svc")
	if !regexp.MustCompile(`(?m)^NAME +TYPE +VIRTUAL-IPS +PORTS +ENDPOINTS +AGE$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^web +ClusterIP +fd00:6e78:7400:ff::[0-9a-f]+,10\.71\.255\.\d+ +80->8080/TCP +1/2 +\d+s$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^web-public +NodePort +\S+ +443->8443:30443/TCP +<none> +\d+s$`).MatchString(out) {
		t.Fatalf("get svc:\n%s", out)
	}
	if out := e.ok("get", "svc", "-o", "wide"); !strings.Contains(out, "SELECTOR") || !strings.Contains(out, "app=web") || !strings.Contains(out, "ClientIP") {
		t.Fatalf("get svc -o wide:\n%s", out)
	}
	out = e.ok("describe", "svc", "web")
	for _, want := range []string{
		"Kind:             Service\n",
		"  type: ClusterIP\n",
		"  virtualIPs:\n  - fd00:6e78:7400:ff::",
		"Backends:         1/2 ready\n  INSTANCE    NODE   ADDRESSES                       READY\n  web-abcde   n1     fd00:6e78:7400:1::5,10.71.1.5   true\n  web-fghjk   n2     fd00:6e78:7400:2::7             false\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("describe svc web lacks %q:\n%s", want, out)
		}
	}
	if out := e.ok("describe", "svc", "web-public"); !strings.Contains(out, "Backends:         <none> (no Endpoints yet") {
		t.Errorf("describe svc web-public:\n%s", out)
	}
	if out := e.ok("get", "ep"); !strings.Contains(out, "1/2") || !strings.Contains(out, "[fd00:6e78:7400:1::5]:8080") {
		t.Errorf("get ep:\n%s", out)
	}
	if out := e.ok("expose", "--help"); !strings.Contains(out, "Examples:") || !strings.Contains(out, "--session-affinity") || !strings.Contains(out, "--headless") {
		t.Errorf("expose --help:\n%s", out)
	}
}
