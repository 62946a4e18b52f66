package client_test

import (
	"strings"
	"testing"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
)

func TestServiceFor(t *testing.T) {
	w := &types.Workload{}
	w.Name, w.Namespace, w.Labels = "web", "shop", map[string]string{"team": "a"}
	w.Spec.Template.Labels = map[string]string{"app": "web", "tier": "fe"}
	svc, err := client.ServiceFor(w, client.ExposeOptions{Port: 80, TargetPort: 8080, Type: types.ServiceNodePort, NodePort: 30080})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Name != "web" || svc.Namespace != "shop" || svc.Spec.Selector["app"] != "web" || svc.Spec.Selector["tier"] != "fe" || svc.Labels["team"] != "a" {
		t.Fatalf("service %+v", svc)
	}
	if p := svc.Spec.Ports[0]; p.Port != 80 || p.TargetPort != 8080 || p.Protocol != types.TCP || p.NodePort != 30080 || svc.Spec.Type != types.ServiceNodePort {
		t.Fatalf("port %+v type %s", p, svc.Spec.Type)
	}
	types.Default(svc)
	if errs := types.Validate(svc); len(errs) > 0 {
		t.Fatalf("the exposed service is invalid: %v", errs)
	}
	named, _ := client.ServiceFor(w, client.ExposeOptions{Name: "web-udp", Port: 53, Protocol: types.UDP})
	if named.Name != "web-udp" || named.Spec.Ports[0].TargetPort != 53 || named.Spec.Ports[0].Protocol != types.UDP {
		t.Fatalf("named: %+v", named)
	}
	for _, tc := range []struct {
		o    client.ExposeOptions
		want string
	}{
		{client.ExposeOptions{}, "--port 0: give the service's port"},
		{client.ExposeOptions{Port: 80, TargetPort: 70000}, "--target-port 70000"},
		{client.ExposeOptions{Port: 80, Protocol: "SCTP"}, `--protocol "SCTP"`},
		{client.ExposeOptions{Port: 80, Type: "LoadBalancer"}, `--type "LoadBalancer"`},
		{client.ExposeOptions{Port: 80, NodePort: 30080}, "--node-port needs --type NodePort"},
		{client.ExposeOptions{Port: 80, Headless: true, Type: types.ServiceNodePort}, "--headless gives the service no virtual IP"},
		{client.ExposeOptions{Port: 80, SessionAffinity: "Sticky"}, `--session-affinity "Sticky"`},
	} {
		if _, err := client.ServiceFor(w, tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.o, err, tc.want)
		}
	}
	bare := &types.Workload{}
	bare.Name = "bare"
	if _, err := client.ServiceFor(bare, client.ExposeOptions{Port: 80}); err == nil || !strings.Contains(err.Error(), "workload bare has no labels in its template") {
		t.Fatalf("a workload without labels: %v", err)
	}
}
