package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/api/types"
)

// servicesManifest is the backends (an HTTP server with a readiness
// probe, and a UDP DNS responder) and a client on every node.
const servicesManifest = `kind: Workload
metadata: {name: web}
spec:
  replicas: 6
  template:
    image: nexus.local/hello
    labels: {app: web}
    ports: [{name: http, port: 8080}]
    readiness: {http: {path: /healthz, port: 8080}, periodSeconds: 1, failureThreshold: 1}
---
kind: Workload
metadata: {name: dns}
spec:
  replicas: 3
  template:
    image: nexus.local/hello
    labels: {app: dns}
    command: [/nexus, hello, --dns-port, "5353"]
---
kind: Workload
metadata: {name: client}
spec:
  kind: daemon
  template:
    image: nexus.local/hello
    labels: {app: client}
`

// servicesE2E is a cluster of one server and three agents, a1 and a2
// balancing services with eBPF and a3 with the nftables fallback, and a
// fifth host outside the cluster.
type servicesE2E struct {
	*clusterE2E
	outside int // the index of the host outside the cluster
}

// TestServicesEndToEnd is the services promise through the binaries on
// netns hosts, for each data path (a client on a1, eBPF; on a3, the
// nftables fallback): web.default.svc resolves and answers over IPv6 and
// IPv4; 3,000 new connections spread over the six backends on three
// nodes within 15 % of even; a backend that turns unready gets no new
// connection 1 s after it is reported unready; an established connection
// lives through an endpoint change; a scale to zero refuses connections
// at once (ECONNREFUSED) and a scale up serves again; UDP DNS queries
// through a service's virtual IPs are answered by its backends; and a
// node port answers a host outside the cluster at every agent's address,
// from backends on several nodes.
func TestServicesEndToEnd(t *testing.T) {
	c := newClusterNet(t, 5, 10*time.Minute)
	e := &servicesE2E{clusterE2E: &clusterE2E{clusterNet: c}, outside: 4}
	ip1 := c.nw.Hosts[0].IPv6.String()
	s1 := c.server(0, "s1")
	e.servers, e.cli = []*clusterProc{s1}, s1
	atok := c.token(s1, "agent", 3)
	for i, name := range []string{"a1", "a2", "a3"} {
		extra := []string{"--join", ip1, "--token", atok.Token, "--ca-pin", atok.CAPin}
		if name == "a3" {
			extra = append(extra, "--service-datapath", "nftables")
		}
		e.agents = append(e.agents, c.agent(i+1, name, extra...))
	}
	modes := e.waitNodes()
	if modes["a1"] != "ebpf" || modes["a2"] != "ebpf" || modes["a3"] != "nftables" {
		t.Fatalf("service data paths %v: want a1 and a2 ebpf, a3 nftables (forced)", modes)
	}
	if out := e.ok("nodes", "-o", "wide"); !strings.Contains(out, "SERVICE-DATAPATH") || !strings.Contains(out, "nftables") {
		t.Fatalf("nexus nodes -o wide does not show the data path:\n%s", out)
	}

	e.ok("apply", "-f", e.file("services.yaml", servicesManifest))
	e.ok("expose", "workload/web", "--port", "80", "--target-port", "8080")
	e.ok("expose", "workload/dns", "--port", "53", "--target-port", "5353", "--protocol", "UDP")
	e.ok("expose", "workload/web", "--name", "web-np", "--type", "NodePort", "--port", "80", "--target-port", "8080")
	e.waitInstances("web", "6 ready on 3 agents", 90*time.Second, func(is []types.Instance) bool {
		on := readyOn(is)
		return len(on) == 3 && on["a1"]+on["a2"]+on["a3"] == 6
	})
	e.waitInstances("dns", "3 ready", 60*time.Second, func(is []types.Instance) bool { return len(readyOn(is)) > 0 && countReady(is) == 3 })
	clients := e.waitInstances("client", "one ready on each agent", 60*time.Second, func(is []types.Instance) bool { return len(readyOn(is)) == 3 })
	e.waitEndpoints("web", 6)
	e.waitEndpoints("dns", 3)
	webVIPs := e.virtualIPs("web")
	dnsVIPs := e.virtualIPs("dns")
	if len(webVIPs) != 2 || len(dnsVIPs) != 2 {
		t.Fatalf("virtual IPs web %v, dns %v: want an IPv6 and an IPv4 one each", webVIPs, dnsVIPs)
	}

	for _, node := range []string{"a1", "a3"} {
		client := instanceOn(t, clients, node)
		t.Run("from "+node, func(t *testing.T) {
			e.byName(t, client)
			e.spread(t, client)
			e.udpThroughVIP(t, client, dnsVIPs)
			e.unready(t, client)
			e.establishedLives(t, client)
		})
	}
	e.scaleToZero(clients)
	e.nodePort()
}

// waitNodes waits for the three agents to be Ready and to report their
// service data path, and returns the data paths by node.
func (e *servicesE2E) waitNodes() map[string]string {
	modes := map[string]string{}
	e.waitFor("three Ready agents with their service data path", func() (bool, string) {
		out, err := e.nexus("get", "nodes", "-o", "json")
		var list struct{ Items []types.Node }
		if err != nil || json.Unmarshal([]byte(out), &list) != nil {
			return false, out
		}
		clear(modes)
		for _, n := range list.Items {
			if slices.ContainsFunc(n.Status.Conditions, func(c types.Condition) bool { return c.Type == "Ready" && c.Status == types.ConditionTrue }) && n.Status.ServiceDataPath != "" {
				modes[n.Name] = n.Status.ServiceDataPath
			}
		}
		return len(modes) == 3, out
	})
	return modes
}

func (e *servicesE2E) file(name, content string) string {
	p := filepath.Join(e.t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func countReady(is []types.Instance) int {
	n := 0
	for _, v := range readyOn(is) {
		n += v
	}
	return n
}

func instanceOn(t testing.TB, is []types.Instance, node string) types.Instance {
	for _, i := range is {
		if i.Spec.NodeName == node {
			return i
		}
	}
	t.Fatalf("no instance on %s", node)
	return types.Instance{}
}

// waitEndpoints waits until service name has ready ready backends.
func (e *servicesE2E) waitEndpoints(name string, ready int) {
	e.t.Helper()
	e.waitFor(fmt.Sprintf("%d ready backends of service %s", ready, name), func() (bool, string) {
		out, err := e.nexus("get", "endpoints", name, "-o", "json")
		var ep types.Endpoints
		if err != nil || json.Unmarshal([]byte(out), &ep) != nil {
			return false, out
		}
		n := 0
		for _, b := range ep.Backends {
			if b.Ready {
				n++
			}
		}
		return n == ready, out
	})
}

func (e *servicesE2E) service(name string) types.Service {
	e.t.Helper()
	var s types.Service
	if out := e.ok("get", "svc", name, "-o", "json"); json.Unmarshal([]byte(out), &s) != nil {
		e.t.Fatalf("service %s: %s", name, out)
	}
	return s
}

func (e *servicesE2E) virtualIPs(name string) []string { return e.service(name).Spec.VirtualIPs }

// exec runs the applet args in instance i.
func (e *servicesE2E) exec(i types.Instance, args ...string) (string, error) {
	return e.nexus(append([]string{"exec", i.Name, "--"}, args...)...)
}

// byName: the client resolves web.default.svc through the cluster DNS and
// fetches from it over IPv6 and IPv4.
func (e *servicesE2E) byName(t *testing.T, client types.Instance) {
	for _, family := range []string{"-6", "-4"} {
		out, err := e.exec(client, "fetch", family, "http://web.default.svc/")
		if err != nil || !strings.HasPrefix(out, "hello from web-") {
			t.Fatalf("fetch %s http://web.default.svc/ from %s: %v\n%s", family, client.Name, err, out)
		}
	}
	// The search list makes the bare name work in the namespace.
	if out, err := e.exec(client, "fetch", "http://web/"); err != nil || !strings.HasPrefix(out, "hello from web-") {
		t.Fatalf("fetch http://web/ from %s: %v\n%s", client.Name, err, out)
	}
}

var tallyLine = regexp.MustCompile(`^(\d+) (.*)$`)

// tally runs fetch -n n from the client and returns the count per answer.
func (e *servicesE2E) tally(t testing.TB, client types.Instance, n int, url string) (map[string]int, error) {
	out, err := e.exec(client, "fetch", "-n", strconv.Itoa(n), url)
	got := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		m := tallyLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		c, _ := strconv.Atoi(m[1])
		got[m[2]] = c
	}
	return got, err
}

// spread: 3,000 new connections through the virtual IP reach each of the
// six backends within 15 % of 500.
func (e *servicesE2E) spread(t *testing.T, client types.Instance) {
	for _, vip := range e.virtualIPs("web") {
		url := "http://" + net.JoinHostPort(vip, "80") + "/"
		got, err := e.tally(t, client, 3000, url)
		if err != nil {
			t.Fatalf("3000 connections to %s from %s: %v (%v)", url, client.Name, err, got)
		}
		if len(got) != 6 {
			t.Fatalf("3000 connections to %s reached %d backends, want the 6: %v", url, len(got), got)
		}
		for who, n := range got {
			if n < 425 || n > 575 {
				t.Errorf("3000 connections to %s: %s answered %d, want 500 ± 15 %%: %v", url, who, n, got)
			}
		}
		t.Logf("3000 connections to %s from %s: %v", url, client.Name, got)
	}
}

// udpThroughVIP: DNS queries over UDP to the dns service's virtual IPs are
// answered by its backends (the reply's source is the virtual IP, or
// Go's resolver would drop it).
func (e *servicesE2E) udpThroughVIP(t *testing.T, client types.Instance, vips []string) {
	for _, vip := range vips {
		server := net.JoinHostPort(vip, "53")
		out, err := e.exec(client, "resolve", "-server", server, "-t", "TXT", "-n", "30", "anything")
		if err != nil || !strings.Contains(out, " dns-") || strings.Contains(out, "error") {
			t.Fatalf("30 UDP DNS queries to %s from %s: %v\n%s", server, client.Name, err, out)
		}
		t.Logf("UDP DNS through %s: %s", server, strings.ReplaceAll(strings.TrimSpace(out), "\n", ", "))
	}
}

// unready: a backend whose readiness probe fails gets no new connection
// once 1 s has passed since the API reported it unready.
func (e *servicesE2E) unready(t *testing.T, client types.Instance) {
	web, err := e.instances("web")
	if err != nil {
		t.Fatal(err)
	}
	victim := web[0]
	direct := "http://" + net.JoinHostPort(victim.Status.Addresses[0], "8080")
	if out, err := e.exec(client, "fetch", direct+"/healthz/fail"); err != nil {
		t.Fatalf("turn %s's health check off: %v\n%s", victim.Name, err, out)
	}
	defer func() {
		if out, err := e.exec(client, "fetch", direct+"/healthz/pass"); err != nil {
			t.Errorf("turn %s's health check on: %v\n%s", victim.Name, err, out)
		}
		e.waitEndpoints("web", 6)
	}()
	e.waitInstances("web", victim.Name+" unready", 30*time.Second, func(is []types.Instance) bool {
		for _, i := range is {
			if i.Name == victim.Name {
				return i.Status.Phase == types.PhaseRunning && !i.Status.Ready
			}
		}
		return false
	})
	time.Sleep(time.Second)
	got, err := e.tally(t, client, 300, "http://web/")
	if err != nil {
		t.Fatalf("300 connections to web with %s unready: %v (%v)", victim.Name, err, got)
	}
	if n := got["hello from "+victim.Name]; n > 0 {
		t.Fatalf("%s got %d of 300 new connections 1 s after it was reported unready: %v", victim.Name, n, got)
	}
}

// establishedLives: a kept-alive connection through the service lives
// through an endpoint change (a scale from 6 to 7 and back).
func (e *servicesE2E) establishedLives(t *testing.T, client types.Instance) {
	done := make(chan error, 1)
	var out string
	go func() {
		var err error
		out, err = e.exec(client, "fetch", "-hold", "6s", "-every", "100ms", "http://web/")
		done <- err
	}()
	time.Sleep(time.Second)
	e.ok("scale", "web", "7")
	e.waitEndpoints("web", 7)
	e.ok("scale", "web", "6")
	if err := <-done; err != nil {
		t.Fatalf("a connection held through a scale from 6 to 7 and back: %v\n%s", err, out)
	}
	e.waitEndpoints("web", 6)
}

// scaleToZero: with no backend a connection to the service is refused at
// once, from both data paths; after a scale up it is served again.
func (e *servicesE2E) scaleToZero(clients []types.Instance) {
	t := e.t
	e.ok("scale", "web", "0")
	e.waitEndpoints("web", 0)
	for _, node := range []string{"a1", "a3"} {
		client := instanceOn(t, clients, node)
		for _, vip := range e.virtualIPs("web") {
			url := "http://" + net.JoinHostPort(vip, "80") + "/"
			start := time.Now()
			got, err := e.tally(t, client, 3, url)
			took := time.Since(start)
			if err == nil || got["error: connection refused"] != 3 {
				t.Errorf("%s with no backend, from %s: %v, want 3 refusals", url, node, got)
			}
			if took > 5*time.Second {
				t.Errorf("%s with no backend, from %s: the 3 refusals took %v, want them at once", url, node, took)
			}
		}
	}
	e.ok("scale", "web", "6")
	e.waitEndpoints("web", 6)
	for _, node := range []string{"a1", "a3"} {
		client := instanceOn(t, clients, node)
		if out, err := e.exec(client, "fetch", "http://web/"); err != nil || !strings.HasPrefix(out, "hello from web-") {
			t.Errorf("fetch http://web/ from %s after scaling up again: %v\n%s", node, err, out)
		}
	}
}

// nodePort: the web-np service's node port answers a host outside the
// cluster at each agent's address, from backends on several nodes.
func (e *servicesE2E) nodePort() {
	t := e.t
	s := e.service("web-np")
	if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].NodePort < 30000 {
		t.Fatalf("web-np ports %+v: want a node port from 30000-32767", s.Spec.Ports)
	}
	port := strconv.Itoa(int(s.Spec.Ports[0].NodePort))
	bin := filepath.Join(t.TempDir(), "fetch")
	if err := os.Symlink(e.bin, bin); err != nil {
		t.Fatal(err)
	}
	outside := e.nw.Hosts[e.outside]
	for i, a := range e.agents {
		host := e.nw.Hosts[i+1]
		for _, addr := range []string{host.IPv6.String(), host.IPv4.String()} {
			url := "http://" + net.JoinHostPort(addr, port) + "/"
			out, err := exec.Command("nsenter", "--net="+outside.NetNS, bin, "-n", "60", url).CombinedOutput()
			if err != nil {
				t.Errorf("from outside, %s (node port of %s): %v\n%s", url, a.name, err, out)
				continue
			}
			nodes := map[string]bool{}
			web, _ := e.instances("web")
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				for _, i := range web {
					if strings.HasSuffix(line, "hello from "+i.Name) {
						nodes[i.Spec.NodeName] = true
					}
				}
			}
			if len(nodes) < 2 {
				t.Errorf("from outside, 60 connections to %s (node port of %s) reached backends on %d node(s), want several:\n%s", url, a.name, len(nodes), out)
			}
		}
	}
}
