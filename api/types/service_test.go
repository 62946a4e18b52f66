package types

import (
	"reflect"
	"strings"
	"testing"
)

// TestServiceValidation: every rule of a Service's spec, each error naming
// the field and what to do.
func TestServiceValidation(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		want       []string // nil: valid
	}{
		{"minimal", `{selector: {app: web}, ports: [{port: 80}]}`, nil},
		{"node port", `{type: NodePort, selector: {app: web}, ports: [{port: 80, targetPort: 8080, nodePort: 30080}]}`, nil},
		{"two families", `{selector: {app: web}, ports: [{port: 80}], virtualIPs: ["fd00:1::10", "10.71.255.10"]}`, nil},
		{"headless without ports", `{headless: true, selector: {app: web}}`, nil},
		{"client ip", `{selector: {app: web}, ports: [{port: 80}], sessionAffinity: ClientIP, sessionAffinityTimeoutSeconds: 60}`, nil},
		{"no selector", `{ports: [{port: 80}]}`, []string{"spec.selector: must select instances by at least one label"}},
		{"bad selector", `{selector: {app: -web}, ports: [{port: 80}]}`, []string{`spec.selector["app"]`}},
		{"no ports", `{selector: {app: web}}`, []string{"spec.ports: must list at least one port"}},
		{"bad type", `{type: LoadBalancer, selector: {app: web}, ports: [{port: 80}]}`, []string{`spec.type: must be ClusterIP or NodePort, not "LoadBalancer"`}},
		{"port range", `{selector: {app: web}, ports: [{port: 0, targetPort: 70000}]}`, []string{"spec.ports[0].port: must be 1-65535, not 0", "spec.ports[0].targetPort: must be 1-65535, not 70000"}},
		{"bad protocol", `{selector: {app: web}, ports: [{port: 80, protocol: SCTP}]}`, []string{`spec.ports[0].protocol: must be TCP or UDP, not "SCTP"`}},
		{"duplicate port", `{selector: {app: web}, ports: [{name: a, port: 80}, {name: b, port: 80, protocol: TCP}]}`, []string{"spec.ports[1].port: 80/TCP is listed twice (also ports[0])"}},
		{"same port two protocols", `{selector: {app: web}, ports: [{name: a, port: 53}, {name: b, port: 53, protocol: UDP}]}`, nil},
		{"unnamed ports", `{selector: {app: web}, ports: [{port: 80}, {name: b, port: 81}]}`, []string{"spec.ports[0].name: must be set when a service has more than one port"}},
		{"duplicate name", `{selector: {app: web}, ports: [{name: a, port: 80}, {name: a, port: 81}]}`, []string{`spec.ports[1].name: "a" is used by another port`}},
		{"bad port name", `{selector: {app: web}, ports: [{name: HTTP_1, port: 80}]}`, []string{`spec.ports[0].name: must be at most 15 lower-case letters`}},
		{"node port on ClusterIP", `{selector: {app: web}, ports: [{port: 80, nodePort: 30080}]}`, []string{"spec.ports[0].nodePort: applies only to a service of type NodePort"}},
		{"node port range", `{type: NodePort, selector: {app: web}, ports: [{port: 80, nodePort: 8080}]}`, []string{"spec.ports[0].nodePort: must be 30000-32767, not 8080"}},
		{"node port twice", `{type: NodePort, selector: {app: web}, ports: [{name: a, port: 80, nodePort: 30080}, {name: b, port: 81, nodePort: 30080}]}`, []string{"spec.ports[1].nodePort: 30080/TCP is also the node port of ports[0]"}},
		{"headless NodePort", `{type: NodePort, headless: true, selector: {app: web}, ports: [{port: 80}]}`, []string{"spec.type: a headless service has no virtual IP to balance"}},
		{"headless with a node port", `{headless: true, selector: {app: web}, ports: [{port: 80, nodePort: 30080}]}`, []string{"spec.ports[0].nodePort: applies only to a service of type NodePort"}},
		{"headless with addresses", `{headless: true, selector: {app: web}, virtualIPs: ["fd00::10"]}`, []string{"spec.virtualIPs: must be empty for a headless service"}},
		{"headless affinity", `{headless: true, selector: {app: web}, sessionAffinity: ClientIP}`, []string{"spec.sessionAffinity: a headless service is not balanced"}},
		{"bad address", `{selector: {app: web}, ports: [{port: 80}], virtualIPs: ["web"]}`, []string{`spec.virtualIPs[0]: must be an IPv6 or IPv4 address`}},
		{"loopback", `{selector: {app: web}, ports: [{port: 80}], virtualIPs: ["::1"]}`, []string{"spec.virtualIPs[0]: ::1 is not a unicast address"}},
		{"not canonical", `{selector: {app: web}, ports: [{port: 80}], virtualIPs: ["fd00:0::10"]}`, []string{`spec.virtualIPs[0]: write the address as fd00::10`}},
		{"IPv4 first", `{selector: {app: web}, ports: [{port: 80}], virtualIPs: ["10.71.255.10", "fd00::10"]}`, []string{"spec.virtualIPs: must list the IPv6 address first"}},
		{"two IPv6", `{selector: {app: web}, ports: [{port: 80}], virtualIPs: ["fd00::10", "fd00::11"]}`, []string{"spec.virtualIPs: must hold at most one IPv6 and one IPv4 address"}},
		{"three addresses", `{selector: {app: web}, ports: [{port: 80}], virtualIPs: ["fd00::10", "10.0.0.1", "fd00::11"]}`, []string{"spec.virtualIPs: has 3 addresses"}},
		{"bad affinity", `{selector: {app: web}, ports: [{port: 80}], sessionAffinity: Cookie}`, []string{`spec.sessionAffinity: must be None or ClientIP, not "Cookie"`}},
		{"timeout without affinity", `{selector: {app: web}, ports: [{port: 80}], sessionAffinityTimeoutSeconds: 60}`, []string{"spec.sessionAffinityTimeoutSeconds: applies only to sessionAffinity ClientIP"}},
		{"timeout range", `{selector: {app: web}, ports: [{port: 80}], sessionAffinity: ClientIP, sessionAffinityTimeoutSeconds: 0}`, []string{"spec.sessionAffinityTimeoutSeconds: must be 1-86400 (seconds), not 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErrors(t, "kind: Service\nmetadata: {name: web, namespace: default}\nspec: "+tc.spec, tc.want)
		})
	}
}

func TestServiceDefaults(t *testing.T) {
	s := decodeValid(t, "kind: Service\nmetadata: {name: web, namespace: default}\nspec: {selector: {app: web}, ports: [{port: 80}], sessionAffinity: ClientIP}").(*Service)
	p := s.Spec.Ports[0]
	if s.Spec.Type != ServiceClusterIP || p.Protocol != TCP || p.TargetPort != 80 {
		t.Fatalf("defaults: type %q, port %+v", s.Spec.Type, p)
	}
	if s.Spec.SessionAffinityTimeoutSeconds == nil || *s.Spec.SessionAffinityTimeoutSeconds != DefaultSessionAffinityTimeoutSeconds {
		t.Fatalf("ClientIP affinity timeout: %v, want %d", s.Spec.SessionAffinityTimeoutSeconds, DefaultSessionAffinityTimeoutSeconds)
	}
	none := decodeValid(t, "kind: Service\nmetadata: {name: web, namespace: default}\nspec: {selector: {app: web}, ports: [{port: 80}]}").(*Service)
	if none.Spec.SessionAffinity != SessionAffinityNone || none.Spec.SessionAffinityTimeoutSeconds != nil {
		t.Fatalf("default affinity %q, timeout %v", none.Spec.SessionAffinity, none.Spec.SessionAffinityTimeoutSeconds)
	}
}

func TestServiceUpdateRules(t *testing.T) {
	old := decodeValid(t, `kind: Service
metadata: {name: web, namespace: default}
spec: {type: NodePort, selector: {app: web}, virtualIPs: ["fd00::10", "10.71.255.10"], ports: [{name: http, port: 80, nodePort: 30080}, {name: dns, port: 53, protocol: UDP, nodePort: 30053}]}`).(*Service)
	// An update that leaves out what the server allocated keeps it.
	upd := decodeValid(t, `kind: Service
metadata: {name: web, namespace: default}
spec: {type: NodePort, selector: {app: web}, ports: [{name: http, port: 80}, {name: dns, port: 53, protocol: UDP}, {name: new, port: 81}]}`).(*Service)
	upd.Spec.KeepAllocated(&old.Spec)
	if !reflect.DeepEqual(upd.Spec.VirtualIPs, old.Spec.VirtualIPs) {
		t.Fatalf("virtual IPs after an update without them: %v", upd.Spec.VirtualIPs)
	}
	if got := []int32{upd.Spec.Ports[0].NodePort, upd.Spec.Ports[1].NodePort, upd.Spec.Ports[2].NodePort}; !reflect.DeepEqual(got, []int32{30080, 30053, 0}) {
		t.Fatalf("node ports after an update without them: %v, want the old ones and 0 for the new port", got)
	}
	if errs := ValidateUpdate(old, upd); len(errs) > 0 {
		t.Fatalf("update keeping the allocation: %v", errs)
	}
	moved := *upd
	moved.Spec.VirtualIPs = []string{"fd00::11", "10.71.255.10"}
	if errs := ValidateUpdate(old, &moved); len(errs) != 1 || errs[0].Field != "spec.virtualIPs" {
		t.Fatalf("changed virtual IPs: %v", errs)
	}
	headless := *upd
	headless.Spec.Headless, headless.Spec.VirtualIPs = true, nil
	if errs := ValidateUpdate(old, &headless); len(errs) == 0 || errs[0].Field != "spec.headless" {
		t.Fatalf("made headless: %v", errs)
	}
}

func TestEndpointsValidation(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"valid", `ports: [{name: http, port: 8080, protocol: TCP}]
backends:
- {instance: web-abcde, node: n1, addresses: ["fd00:1:2:3::5", "10.71.3.5"], ready: true}
- {instance: web-fghjk}`, nil},
		{"bad port", `ports: [{port: 0, protocol: SCTP}]`, []string{"ports[0].port: must be 1-65535, not 0", `ports[0].protocol: must be TCP or UDP, not "SCTP"`}},
		{"ready without address", `backends: [{instance: web-abcde, node: n1, ready: true}]`, []string{"backends[0].ready: a ready backend needs an address"}},
		{"bad address", `backends: [{instance: web-abcde, addresses: ["x"]}]`, []string{`backends[0].addresses[0]: must be an IPv6 or IPv4 address`}},
		{"IPv4 first", `backends: [{instance: web-abcde, addresses: ["10.71.3.5", "fd00::5"]}]`, []string{"backends[0].addresses: must list the IPv6 address first"}},
		{"twice", `backends: [{instance: web-abcde}, {instance: web-abcde}]`, []string{"backends[1].instance: web-abcde is listed twice"}},
		{"bad names", `backends: [{instance: Web, node: "n 1"}]`, []string{"backends[0].instance:", "backends[0].node:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErrors(t, "kind: Endpoints\nmetadata: {name: web, namespace: default}\n"+tc.body, tc.want)
		})
	}
	if r, ok := LookupResource("ep"); !ok || r.Kind != "Endpoints" || !r.Namespaced || r.HasStatus {
		t.Fatalf("endpoints resource: %+v", r)
	}
}

// wantErrors decodes doc, defaults and validates it, and wants exactly
// the errors want names (each a substring of one), or none for nil.
func wantErrors(t *testing.T, doc string, want []string) {
	t.Helper()
	o, err := DecodeAny([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	Default(o)
	errs := Validate(o)
	if want == nil {
		if len(errs) > 0 {
			t.Fatalf("want valid, got %v", errs)
		}
		return
	}
	if len(errs) != len(want) {
		t.Errorf("got %d errors (%v), want %d", len(errs), errs, len(want))
	}
	for _, w := range want {
		if !strings.Contains(errs.Error(), w) {
			t.Errorf("errors %q do not contain %q", errs.Error(), w)
		}
	}
}
