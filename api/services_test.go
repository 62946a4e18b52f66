package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api"
	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/servertest"
	"nexus.dev/nexus/api/types"
)

// svcBody is a Service of one port selecting app=NAME, with extra spec
// fields (YAML flow mappings, comma-led).
func svcBody(name, extra string) string {
	return fmt.Sprintf("kind: Service\nmetadata: {name: %s}\nspec: {selector: {app: %s}, ports: [{port: 80, targetPort: 8080}]%s}\n", name, name, extra)
}

func decodeService(t *testing.T, body []byte) *types.Service {
	t.Helper()
	var s types.Service
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("decode service: %v: %s", err, body)
	}
	return &s
}

// TestServiceAllocation: virtual IPs and node ports are allocated at create
// from the service ranges, shown in the create's answer, unique, checked
// when given, kept by updates, freed by delete; a refused create leaves
// nothing behind; a full range says what to do.
func TestServiceAllocation(t *testing.T) {
	small := api.ServiceRanges{IPv6: netip.MustParsePrefix("fd00:6e78:7400:ff::/124"), IPv4: netip.MustParsePrefix("10.71.255.0/29")}
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{Configure: func(cfg *api.Config) { cfg.ServiceRanges = small }})
	cl := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
	svcs := "/v1/namespaces/default/services"

	a := decodeService(t, cl.must(201, "POST", svcs, "application/yaml", svcBody("a", ", type: NodePort")).body)
	if len(a.Spec.VirtualIPs) != 2 {
		t.Fatalf("created with virtual IPs %v, want an IPv6 and an IPv4 one", a.Spec.VirtualIPs)
	}
	v6, v4 := netip.MustParseAddr(a.Spec.VirtualIPs[0]), netip.MustParseAddr(a.Spec.VirtualIPs[1])
	if !small.IPv6.Contains(v6) || !small.IPv4.Contains(v4) || v6 == small.IPv6.Addr() || v4 == small.IPv4.Addr() {
		t.Fatalf("virtual IPs %v outside the ranges %+v (or a network address)", a.Spec.VirtualIPs, small)
	}
	np := a.Spec.Ports[0].NodePort
	if np < types.MinNodePort || np > types.MaxNodePort {
		t.Fatalf("node port %d, want one of %d-%d", np, types.MinNodePort, types.MaxNodePort)
	}
	got := decodeService(t, cl.must(200, "GET", svcs+"/a", "", nil).body)
	if strings.Join(got.Spec.VirtualIPs, ",") != strings.Join(a.Spec.VirtualIPs, ",") || got.Spec.Ports[0].NodePort != np {
		t.Fatalf("stored %v %d, answered %v %d", got.Spec.VirtualIPs, got.Spec.Ports[0].NodePort, a.Spec.VirtualIPs, np)
	}

	// Given values that another service holds: refused, naming the field
	// and the holder, and nothing is stored or claimed.
	taken := cl.must(422, "POST", svcs, "application/yaml", svcBody("b", fmt.Sprintf(`, virtualIPs: ["%s"]`, v6)))
	if f := taken.problem.Fields; len(f) != 1 || f[0].Field != "spec.virtualIPs[0]" || !strings.Contains(f[0].Detail, "is already used by services/default/a") {
		t.Fatalf("taken virtual IP: %s", taken.body)
	}
	takenPort := cl.must(422, "POST", svcs, "application/yaml", svcBody("b", fmt.Sprintf(", type: NodePort, ports: [{port: 81, nodePort: %d}]", np)))
	if !strings.Contains(takenPort.problem.Detail, fmt.Sprintf("spec.ports[0].nodePort: node port %d/TCP is already used by services/default/a: choose another", np)) {
		t.Fatalf("taken node port: %s", takenPort.body)
	}
	cl.must(404, "GET", svcs+"/b", "", nil)
	// The same port number over UDP is another node port.
	udp := decodeService(t, cl.must(201, "POST", svcs, "application/yaml", svcBody("u", fmt.Sprintf(", type: NodePort, ports: [{port: 53, protocol: UDP, nodePort: %d}]", np))).body)
	cl.must(200, "DELETE", svcs+"/u", "", nil)
	_ = udp

	for _, tc := range []struct{ extra, want string }{
		{`, virtualIPs: ["fd00:1::10"]`, "fd00:1::10 is outside the service ranges (fd00:6e78:7400:ff::/124 and 10.71.255.0/29)"},
		{`, virtualIPs: ["fd00:6e78:7400:ff::"]`, "is the network or broadcast address of the service range"},
		{`, virtualIPs: ["fd00:6e78:7400:ff::5", "10.71.255.7"]`, "10.71.255.7 is the network or broadcast address"},
	} {
		r := cl.must(422, "POST", svcs, "application/yaml", svcBody("c", tc.extra))
		if !strings.Contains(r.problem.Detail, tc.want) {
			t.Errorf("%s: %s, want %q", tc.extra, r.problem.Detail, tc.want)
		}
	}

	// An update that leaves the allocations out keeps them; one that
	// changes a virtual IP is refused; a new port of a NodePort service
	// gets a node port.
	upd := cl.must(200, "PUT", svcs+"/a", "application/yaml", "kind: Service\nmetadata: {name: a}\nspec: {type: NodePort, selector: {app: a}, ports: [{name: http, port: 80, targetPort: 8080}, {name: admin, port: 81}]}\n")
	u := decodeService(t, upd.body)
	if strings.Join(u.Spec.VirtualIPs, ",") != strings.Join(a.Spec.VirtualIPs, ",") || u.Spec.Ports[0].NodePort != np || u.Spec.Ports[1].NodePort == 0 || u.Spec.Ports[1].NodePort == np {
		t.Fatalf("after an update without the allocations: %v, ports %+v", u.Spec.VirtualIPs, u.Spec.Ports)
	}
	moved := cl.must(422, "PATCH", svcs+"/a", "application/merge-patch+json", `{"spec":{"virtualIPs":["fd00:6e78:7400:ff::9"]}}`)
	if !strings.Contains(moved.problem.Detail, "spec.virtualIPs: cannot change once allocated") {
		t.Fatalf("changed virtual IP: %s", moved.body)
	}
	// Back to ClusterIP frees the node ports: another service takes one.
	cl.must(200, "PUT", svcs+"/a", "application/yaml", svcBody("a", ""))
	cl.must(201, "POST", svcs, "application/yaml", svcBody("d", fmt.Sprintf(", type: NodePort, ports: [{port: 80, nodePort: %d}]", np)))

	// Deleting frees the addresses: they can be given to another service.
	cl.must(200, "DELETE", svcs+"/a", "", nil)
	e := decodeService(t, cl.must(201, "POST", svcs, "application/yaml", svcBody("e", fmt.Sprintf(`, virtualIPs: ["%s", "%s"]`, v6, v4))).body)
	if e.Spec.VirtualIPs[0] != v6.String() || e.Spec.VirtualIPs[1] != v4.String() {
		t.Fatalf("given virtual IPs %v, want %s %s", e.Spec.VirtualIPs, v6, v4)
	}

	// Deleting a namespace frees its services' addresses too.
	cl.must(201, "POST", "/v1/namespaces", "application/yaml", "kind: Namespace\nmetadata: {name: gone}\n")
	g := decodeService(t, cl.must(201, "POST", "/v1/namespaces/gone/services", "application/yaml", svcBody("g", "")).body)
	cl.must(200, "DELETE", "/v1/namespaces/gone", "", nil)
	cl.must(201, "POST", svcs, "application/yaml", svcBody("g", fmt.Sprintf(`, virtualIPs: ["%s"]`, g.Spec.VirtualIPs[0])))

	// Headless services take nothing.
	h := decodeService(t, cl.must(201, "POST", svcs, "application/yaml", "kind: Service\nmetadata: {name: h}\nspec: {headless: true, selector: {app: h}}\n").body)
	if len(h.Spec.VirtualIPs) != 0 {
		t.Fatalf("headless service got %v", h.Spec.VirtualIPs)
	}
}

// TestServiceRangeExhausted: concurrent creates in a small range get
// distinct addresses until it is full; then the answer says what to do,
// and the failed creates left nothing claimed (deleting one service makes
// room for exactly one more).
func TestServiceRangeExhausted(t *testing.T) {
	small := api.ServiceRanges{IPv6: netip.MustParsePrefix("fd00:6e78:7400:ff::/112"), IPv4: netip.MustParsePrefix("10.71.255.0/28")}
	b := apitest.NexusStore(t)
	c := servertest.StartServer(t, b, servertest.ServerOptions{Configure: func(cfg *api.Config) { cfg.ServiceRanges = small }})
	cl := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
	svcs := "/v1/namespaces/default/services"
	const creates, usable = 20, 14 // a /28 less its network and broadcast addresses
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		byAddr  = map[string]string{}
		full    int
		unknown []string
	)
	for i := range creates {
		wg.Go(func() {
			name := fmt.Sprintf("s%d", i)
			r := cl.do("POST", svcs, "application/yaml", svcBody(name, ""))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case r.code == 201:
				for _, a := range decodeService(t, r.body).Spec.VirtualIPs {
					if other, dup := byAddr[a]; dup {
						t.Errorf("%s and %s both got %s", name, other, a)
					}
					byAddr[a] = name
				}
			case r.code == 409 && r.problem.Reason == api.ReasonExhausted:
				full++
				if !strings.Contains(r.problem.Detail, "no free virtual IPv4 address for Service "+name+": all 14 of the service range 10.71.255.0/28 are in use; delete Services you no longer need, or make this one headless") {
					t.Errorf("exhausted: %s", r.problem.Detail)
				}
			default:
				unknown = append(unknown, fmt.Sprintf("%d %s", r.code, r.body))
			}
		})
	}
	wg.Wait()
	if len(byAddr) != 2*usable || full != creates-usable || len(unknown) > 0 {
		t.Fatalf("%d addresses given, %d creates found the range full, others %v; want %d and %d", len(byAddr), full, unknown, 2*usable, creates-usable)
	}
	// Exactly the claims of the stored services exist.
	resp, err := b.Client(t).Get(context.Background(), "/nexus/v1/_claims/serviceips/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 2*usable {
		t.Fatalf("%d address claims in the store, want %d", len(resp.Kvs), 2*usable)
	}
	cl.must(200, "DELETE", svcs+"/"+byAddr["10.71.255.1"], "", nil)
	cl.must(201, "POST", svcs, "application/yaml", svcBody("again", ""))
	cl.must(409, "POST", svcs, "application/yaml", svcBody("more", ""))

	// Node ports: every TCP one held (claims written as the server does)
	// but one; the first NodePort service gets it, the next is told.
	cli := b.Client(t)
	var ops []clientv3.Op
	flush := func() {
		if _, err := cli.Txn(context.Background()).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
		ops = nil
	}
	for p := types.MinNodePort; p <= types.MaxNodePort; p++ {
		if p != 31000 {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/nexus/v1/_claims/nodeports/tcp/%d", p), `{"object":"services/x/y","uid":"u"}`))
		}
		if len(ops) == 100 {
			flush()
		}
	}
	flush()
	cl.must(200, "DELETE", svcs+"/again", "", nil)
	last := decodeService(t, cl.must(201, "POST", svcs, "application/yaml", svcBody("np", ", type: NodePort")).body)
	if last.Spec.Ports[0].NodePort != 31000 {
		t.Fatalf("the one free node port is 31000, got %d", last.Spec.Ports[0].NodePort)
	}
	cl.must(200, "DELETE", svcs+"/"+byAddr["10.71.255.2"], "", nil)
	r := cl.must(409, "POST", svcs, "application/yaml", svcBody("np2", ", type: NodePort"))
	if !strings.Contains(r.problem.Detail, "no free node port for spec.ports[0] (80/TCP) of Service np2: all 2768 of 30000-32767 are in use for TCP; delete NodePort Services you no longer need, or use type ClusterIP") {
		t.Fatalf("node ports exhausted: %s", r.problem.Detail)
	}
	// That refusal took no address either.
	cl.must(201, "POST", svcs, "application/yaml", svcBody("np3", ""))
}
