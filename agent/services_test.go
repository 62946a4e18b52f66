package agent

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/networking/lb"
)

func service(ns, name string, spec types.ServiceSpec) *types.Service {
	s := &types.Service{Spec: spec}
	s.Namespace, s.Name = ns, name
	return s
}

func endpoints(ports []types.EndpointPort, backends ...types.EndpointBackend) *types.Endpoints {
	return &types.Endpoints{Ports: ports, Backends: backends}
}

func aps(ss ...string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, s := range ss {
		out = append(out, netip.MustParseAddrPort(s))
	}
	return out
}

func fe(s string, p lb.Protocol) lb.Frontend {
	return lb.Frontend{Addr: netip.MustParseAddrPort(s), Proto: p}
}

// TestServiceTable: the node's frontends are each port on each virtual
// IP and each node port on each node address, with the ready backends of
// the frontend's family on the target port the Endpoints give for the
// port's name; affinity is the Service's timeout; a headless Service has
// no frontend; a frontend two Services claim is served once.
func TestServiceTable(t *testing.T) {
	affinity := int32(60)
	web := service("default", "web", types.ServiceSpec{
		Type:       types.ServiceNodePort,
		VirtualIPs: []string{"fd00:ff::10", "10.71.255.10"},
		Ports: []types.ServicePort{
			{Name: "http", Port: 80, TargetPort: 8080, Protocol: types.TCP, NodePort: 30080},
			{Name: "dns", Port: 53, TargetPort: 53, Protocol: types.UDP},
		},
		SessionAffinity: types.SessionAffinityClientIP, SessionAffinityTimeoutSeconds: &affinity,
	})
	webEP := endpoints(
		// The instances serve http on 9090 now: the Endpoints win over
		// the Service's targetPort.
		[]types.EndpointPort{{Name: "http", Port: 9090, Protocol: types.TCP}, {Name: "dns", Port: 5353, Protocol: types.UDP}},
		types.EndpointBackend{Instance: "web-a", Addresses: []string{"fd00:1::5", "10.71.1.5"}, Ready: true},
		types.EndpointBackend{Instance: "web-b", Addresses: []string{"fd00:2::7"}, Ready: true},
		types.EndpointBackend{Instance: "web-c", Addresses: []string{"fd00:3::9", "10.71.3.9"}, Ready: false},
	)
	headless := service("default", "db", types.ServiceSpec{Headless: true, Ports: []types.ServicePort{{Port: 5432}}})
	headlessEP := endpoints(nil, types.EndpointBackend{Instance: "db-a", Addresses: []string{"fd00:1::6"}, Ready: true})
	// Without Endpoints yet: frontends that refuse, with the default
	// affinity.
	lone := service("other", "lone", types.ServiceSpec{
		VirtualIPs:      []string{"fd00:ff::11"},
		Ports:           []types.ServicePort{{Port: 443, TargetPort: 8443, Protocol: types.TCP}},
		SessionAffinity: types.SessionAffinityClientIP,
	})
	// A stale view that gives another Service web's IPv6 virtual IP and
	// port: web, first by key, keeps the frontend.
	stale := service("zz", "stale", types.ServiceSpec{
		VirtualIPs: []string{"fd00:ff::10"},
		Ports:      []types.ServicePort{{Port: 80, TargetPort: 80, Protocol: types.TCP}},
	})
	views := []ServiceView{{Service: headless, Endpoints: headlessEP}, {Service: lone}, {Service: web, Endpoints: webEP}, {Service: stale}}
	slices.SortFunc(views, func(a, b ServiceView) int {
		return compareKeys(a.Service.Namespace, a.Service.Name, b.Service.Namespace, b.Service.Name)
	})
	nodeIPs := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}

	got := serviceTable(views, nodeIPs).Sorted()
	minute := time.Minute
	want := lb.Table{
		{Frontend: fe("[fd00:ff::10]:80", lb.TCP), Service: "default/web", Backends: aps("[fd00:1::5]:9090", "[fd00:2::7]:9090"), Affinity: minute},
		{Frontend: fe("10.71.255.10:80", lb.TCP), Service: "default/web", Backends: aps("10.71.1.5:9090"), Affinity: minute},
		{Frontend: fe("[fd00:ff::10]:53", lb.UDP), Service: "default/web", Backends: aps("[fd00:1::5]:5353", "[fd00:2::7]:5353"), Affinity: minute},
		{Frontend: fe("10.71.255.10:53", lb.UDP), Service: "default/web", Backends: aps("10.71.1.5:5353"), Affinity: minute},
		{Frontend: fe("192.0.2.1:30080", lb.TCP), Service: "default/web", Backends: aps("10.71.1.5:9090"), Affinity: minute, NodePort: true},
		{Frontend: fe("[2001:db8::1]:30080", lb.TCP), Service: "default/web", Backends: aps("[fd00:1::5]:9090", "[fd00:2::7]:9090"), Affinity: minute, NodePort: true},
		{Frontend: fe("[fd00:ff::11]:443", lb.TCP), Service: "other/lone", Affinity: types.DefaultSessionAffinityTimeoutSeconds * time.Second},
	}.Sorted()
	if err := got.Validate(); err != nil {
		t.Errorf("the table is not valid: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d frontends, want %d:\n got %v\nwant %v", len(got), len(want), got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Frontend != w.Frontend || g.Service != w.Service || !slices.Equal(g.Backends, w.Backends) || g.Affinity != w.Affinity || g.NodePort != w.NodePort {
			t.Errorf("entry %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

// TestServiceTableTargetPortWithoutEndpointsPort: Endpoints that do not
// list a Service port (written before the port was added) send it to the
// Service's targetPort.
func TestServiceTableTargetPortWithoutEndpointsPort(t *testing.T) {
	svc := service("default", "web", types.ServiceSpec{
		VirtualIPs: []string{"fd00:ff::10"},
		Ports:      []types.ServicePort{{Name: "admin", Port: 81, TargetPort: 8081, Protocol: types.TCP}},
	})
	ep := endpoints([]types.EndpointPort{{Name: "http", Port: 8080, Protocol: types.TCP}},
		types.EndpointBackend{Instance: "web-a", Addresses: []string{"fd00:1::5"}, Ready: true})
	got := serviceTable([]ServiceView{{Service: svc, Endpoints: ep}}, nil)
	if len(got) != 1 || !slices.Equal(got[0].Backends, aps("[fd00:1::5]:8081")) {
		t.Errorf("table %+v, want one frontend to [fd00:1::5]:8081", got)
	}
}
