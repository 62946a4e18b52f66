package embed

import (
	"net/netip"
	"reflect"
	"testing"

	"nexus.dev/nexus/agent"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/networking/dns"
	"nexus.dev/nexus/networking/lb"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// TestDNSRecords: a Service with virtual IPs is named with its own ports;
// a headless one with the ports its Endpoints give and its ready
// backends only; every instance behind a Service with addresses gets a
// name once, ready or not; a Service without Endpoints is named all the
// same.
func TestDNSRecords(t *testing.T) {
	web := &types.Service{Spec: types.ServiceSpec{VirtualIPs: []string{"fd00:ff::10", "10.71.255.10"},
		Ports: []types.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: types.TCP}}}}
	web.Namespace, web.Name = "default", "web"
	webEP := &types.Endpoints{
		Ports: []types.EndpointPort{{Name: "http", Port: 8080, Protocol: types.TCP}},
		Backends: []types.EndpointBackend{
			{Instance: "web-a", Addresses: []string{"fd00:1::5", "10.71.1.5"}, Ready: true},
			{Instance: "web-b", Addresses: []string{"fd00:2::7"}, Ready: false},
			{Instance: "web-c"}, // no address yet: no name
		},
	}
	db := &types.Service{Spec: types.ServiceSpec{Headless: true}}
	db.Namespace, db.Name = "default", "db"
	dbEP := &types.Endpoints{
		Ports: []types.EndpointPort{{Name: "pg", Port: 5432, Protocol: types.TCP}},
		Backends: []types.EndpointBackend{
			{Instance: "web-a", Addresses: []string{"fd00:1::5", "10.71.1.5"}, Ready: true}, // behind both
			{Instance: "db-b", Addresses: []string{"fd00:2::8"}, Ready: false},
		},
	}
	lone := &types.Service{Spec: types.ServiceSpec{VirtualIPs: []string{"fd00:ff::11"},
		Ports: []types.ServicePort{{Port: 53, Protocol: types.UDP}}}}
	lone.Namespace, lone.Name = "other", "lone"

	got := dnsRecords([]agent.ServiceView{{Service: db, Endpoints: dbEP}, {Service: web, Endpoints: webEP}, {Service: lone}})
	want := dns.Records{
		Services: []dns.Service{
			{Namespace: "default", Name: "db", Headless: true,
				Ports:    []dns.Port{{Name: "pg", Port: 5432, Protocol: lb.TCP}},
				Backends: []dns.Backend{{Instance: "web-a", Addrs: addrs("fd00:1::5", "10.71.1.5")}}},
			{Namespace: "default", Name: "web", VirtualIPs: addrs("fd00:ff::10", "10.71.255.10"),
				Ports: []dns.Port{{Name: "http", Port: 80, Protocol: lb.TCP}}},
			{Namespace: "other", Name: "lone", VirtualIPs: addrs("fd00:ff::11"),
				Ports: []dns.Port{{Port: 53, Protocol: lb.UDP}}},
		},
		Instances: []dns.Instance{
			{Namespace: "default", Name: "web-a", Addrs: addrs("fd00:1::5", "10.71.1.5")},
			{Namespace: "default", Name: "db-b", Addrs: addrs("fd00:2::8")},
			{Namespace: "default", Name: "web-b", Addrs: addrs("fd00:2::7")},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("records:\n got %+v\nwant %+v", got, want)
	}
}
