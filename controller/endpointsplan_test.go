package controller

import (
	"strings"
	"testing"

	"nexus.dev/nexus/api/types"
)

func TestEndpointsOf(t *testing.T) {
	svc := &types.Service{Spec: types.ServiceSpec{Selector: map[string]string{"app": "web"},
		Ports: []types.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: types.TCP}, {Name: "dns", Port: 53, Protocol: types.UDP}}}}
	svc.Name, svc.Namespace, svc.UID = "web", "default", "u1"
	inst := func(name, ns string, labels map[string]string, phase types.InstancePhase, ready bool, addrs ...string) *types.Instance {
		i := &types.Instance{}
		i.Name, i.Namespace, i.Labels = name, ns, labels
		i.Spec.NodeName = "n1"
		i.Status = types.InstanceStatus{Phase: phase, Ready: ready, Addresses: addrs}
		return i
	}
	web := map[string]string{"app": "web", "v": "2"}
	ep := endpointsOf(svc, []*types.Instance{
		inst("web-c", "default", web, types.PhaseRunning, true, "10.0.0.3", "fd00::3", "fd00::33"),
		inst("web-a", "default", web, types.PhaseRunning, true, "fd00::1"),
		inst("web-b", "default", web, types.PhaseStarting, false),
		inst("web-r", "default", web, types.PhaseRunning, true),             // ready without an address: not ready
		inst("web-d", "default", web, types.PhaseStopped, false, "fd00::4"), // finished: left out
		inst("web-e", "other", web, types.PhaseRunning, true, "fd00::5"),    // another namespace
		inst("api-a", "default", map[string]string{"app": "api"}, types.PhaseRunning, true, "fd00::6"),
	})
	var got []string
	for _, b := range ep.Backends {
		got = append(got, b.Instance+"="+strings.Join(b.Addresses, ",")+map[bool]string{true: "+", false: "-"}[b.Ready])
	}
	if want := "web-a=fd00::1+ web-b=- web-c=fd00::3,10.0.0.3+ web-r=-"; strings.Join(got, " ") != want {
		t.Fatalf("backends %s, want %s", strings.Join(got, " "), want)
	}
	if len(ep.Ports) != 2 || ep.Ports[0] != (types.EndpointPort{Name: "http", Port: 8080, Protocol: types.TCP}) || ep.Ports[1] != (types.EndpointPort{Name: "dns", Port: 53, Protocol: types.UDP}) {
		t.Fatalf("ports %+v", ep.Ports)
	}
	if errs := types.Validate(ep); len(errs) > 0 {
		t.Fatalf("the controller's endpoints are invalid: %v", errs)
	}
	for _, tc := range []struct {
		insts  []*types.Instance
		status types.ConditionStatus
		reason string
	}{
		{nil, types.ConditionFalse, types.ReasonNoMatchingInstances},
		{[]*types.Instance{inst("web-b", "default", web, types.PhaseStarting, false)}, types.ConditionFalse, types.ReasonNoReadyInstances},
		{[]*types.Instance{inst("web-a", "default", web, types.PhaseRunning, true, "fd00::1")}, types.ConditionTrue, types.ReasonReadyInstances},
	} {
		c := endpointsCondition(svc, endpointsOf(svc, tc.insts))
		if c.Status != tc.status || c.Reason != tc.reason || c.Message == "" {
			t.Errorf("%d instances: %+v, want %s %s", len(tc.insts), c, tc.status, tc.reason)
		}
	}
}
