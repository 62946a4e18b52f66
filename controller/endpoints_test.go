package controller_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
)

var (
	services  = res("services")
	endpoints = res("endpoints")
)

func (e *env) endpointsOf(name string) (*types.Endpoints, error) {
	o, err := e.c.Get(context.Background(), endpoints, "default", name)
	if err != nil {
		return nil, err
	}
	return o.(*types.Endpoints), nil
}

func (e *env) serviceCondition(name string) *types.Condition {
	e.t.Helper()
	o, err := e.c.Get(context.Background(), services, "default", name)
	if err != nil {
		e.t.Fatal(err)
	}
	return types.FindCondition(o.(*types.Service).Status.Conditions, types.ServiceConditionEndpoints)
}

// setInstanceStatus changes an instance's status as its agent would.
func (e *env) setInstanceStatus(name string, change func(*types.InstanceStatus)) {
	e.t.Helper()
	for range 10 {
		o, err := e.c.Get(context.Background(), instances, "default", name)
		if err != nil {
			e.t.Fatal(err)
		}
		i := o.(*types.Instance)
		change(&i.Status)
		if _, err = e.c.UpdateStatus(context.Background(), i); client.IsConflict(err) {
			continue
		} else if err != nil {
			e.t.Fatal(err)
		}
		return
	}
	e.t.Fatalf("status of instance %s: conflicts all the time", name)
}

func backendsString(ep *types.Endpoints) string {
	var s []string
	for _, b := range ep.Backends {
		s = append(s, fmt.Sprintf("%s@%s%v ready=%v", b.Instance, b.Node, b.Addresses, b.Ready))
	}
	return strings.Join(s, "; ")
}

// TestEndpointsController: a Service's Endpoints follow the instances its
// selector matches (node, addresses, readiness) within moments of a change,
// its Endpoints condition says what is wrong when nothing serves it, and
// the Endpoints go with the Service.
func TestEndpointsController(t *testing.T) {
	e := startEnv(t, false)
	e.node("n1", 4000, nil, nil)
	e.startAgent(running(0))
	svc := &types.Service{TypeMeta: types.TypeMeta{APIVersion: "v1", Kind: "Service"}}
	svc.Name, svc.Namespace = "web", "default"
	svc.Spec = types.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []types.ServicePort{{Name: "http", Port: 80, TargetPort: 8080}}}
	e.create(svc)

	// Nothing matches yet: empty Endpoints, and a condition that says so.
	e.eventually("the condition of a service without instances", 10*time.Second, func() (bool, string) {
		c := e.serviceCondition("web")
		ep, err := e.endpointsOf("web")
		return c != nil && c.Status == types.ConditionFalse && c.Reason == types.ReasonNoMatchingInstances && err == nil && len(ep.Backends) == 0, fmt.Sprintf("%+v, %v", c, err)
	})
	if c := e.serviceCondition("web"); !strings.Contains(c.Message, "no instance in namespace default has the labels app=web: check the selector") {
		t.Fatalf("message: %q", c.Message)
	}

	e.create(service("web", 2))
	e.create(service("other", 1)) // other labels: not a backend
	e.eventually("two ready backends", 10*time.Second, func() (bool, string) {
		ep, err := e.endpointsOf("web")
		if err != nil {
			return false, err.Error()
		}
		ok := len(ep.Backends) == 2 && ep.ReadyCount() == 2
		for _, b := range ep.Backends {
			ok = ok && b.Node == "n1" && strings.Join(b.Addresses, ",") == "fd00::1,10.0.0.1" && strings.HasPrefix(b.Instance, "web-")
		}
		return ok, backendsString(ep)
	})
	ep, _ := e.endpointsOf("web")
	if len(ep.Ports) != 1 || ep.Ports[0] != (types.EndpointPort{Name: "http", Port: 8080, Protocol: types.TCP}) {
		t.Fatalf("endpoint ports %+v, want http 8080/TCP (the target port)", ep.Ports)
	}
	if len(ep.OwnerReferences) != 1 || ep.OwnerReferences[0].Kind != "Service" || ep.OwnerReferences[0].Name != "web" {
		t.Fatalf("owner %+v", ep.OwnerReferences)
	}
	e.eventually("condition True", 5*time.Second, func() (bool, string) {
		c := e.serviceCondition("web")
		return c != nil && c.Status == types.ConditionTrue && c.Reason == types.ReasonReadyInstances, fmt.Sprintf("%+v", c)
	})

	// Readiness: an instance that turns unready is marked so promptly
	// (watch-driven; the issue asks for under a second on a real cluster,
	// here the bound is generous for a loaded test machine).
	first := ep.Backends[0].Instance
	start := time.Now()
	e.setInstanceStatus(first, func(s *types.InstanceStatus) { s.Ready = false })
	e.eventually("the unready backend", 5*time.Second, func() (bool, string) {
		ep, err := e.endpointsOf("web")
		if err != nil {
			return false, err.Error()
		}
		for _, b := range ep.Backends {
			if b.Instance == first {
				return !b.Ready && ep.ReadyCount() == 1, backendsString(ep)
			}
		}
		return false, backendsString(ep)
	})
	t.Logf("readiness change reached the endpoints in %s", time.Since(start).Round(time.Millisecond))

	// An address change is followed too.
	e.setInstanceStatus(first, func(s *types.InstanceStatus) { s.Addresses, s.Ready = []string{"10.0.0.7", "fd00::7"}, true })
	e.eventually("the new addresses, IPv6 first", 5*time.Second, func() (bool, string) {
		ep, err := e.endpointsOf("web")
		if err != nil {
			return false, err.Error()
		}
		for _, b := range ep.Backends {
			if b.Instance == first {
				return b.Ready && strings.Join(b.Addresses, ",") == "fd00::7,10.0.0.7", backendsString(ep)
			}
		}
		return false, backendsString(ep)
	})

	// Nothing ready: the condition says which instances to look at.
	for _, b := range ep.Backends {
		e.setInstanceStatus(b.Instance, func(s *types.InstanceStatus) { s.Ready = false })
	}
	e.eventually("condition NoReadyInstances", 5*time.Second, func() (bool, string) {
		c := e.serviceCondition("web")
		return c != nil && c.Status == types.ConditionFalse && c.Reason == types.ReasonNoReadyInstances &&
			strings.Contains(c.Message, "none of the 2 instances with the labels app=web is ready"), fmt.Sprintf("%+v", c)
	})

	// Endpoints someone else changes or deletes are put back.
	if _, err := e.c.Delete(context.Background(), endpoints, "default", "web", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the endpoints made again", 5*time.Second, func() (bool, string) {
		ep, err := e.endpointsOf("web")
		return err == nil && len(ep.Backends) == 2, fmt.Sprint(err)
	})

	// The Endpoints go with the Service.
	if _, err := e.c.Delete(context.Background(), services, "default", "web", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the endpoints deleted with the service", 5*time.Second, func() (bool, string) {
		_, err := e.endpointsOf("web")
		return client.IsNotFound(err), fmt.Sprint(err)
	})
}
