package controller

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"nexus.dev/nexus/api/types"
)

// endpointsOf is what a Service's Endpoints should hold, given the
// instances of its namespace: every instance its selector matches that
// has not finished, by name, with its node, its addresses (IPv6 first, one
// per family) and its readiness, and the Service's ports as the instances
// serve them. Pure: the controller compares the result with what is
// stored and writes the difference.
func endpointsOf(svc *types.Service, insts []*types.Instance) *types.Endpoints {
	ep := &types.Endpoints{TypeMeta: types.TypeMeta{APIVersion: types.APIVersion, Kind: "Endpoints"}}
	ep.Name, ep.Namespace = svc.Name, svc.Namespace
	ep.OwnerReferences = []types.OwnerReference{{Kind: "Service", Name: svc.Name, UID: svc.UID, Controller: true}}
	for _, p := range svc.Spec.Ports {
		target := p.TargetPort
		if target == 0 {
			target = p.Port
		}
		ep.Ports = append(ep.Ports, types.EndpointPort{Name: p.Name, Port: target, Protocol: p.Protocol.OrTCP()})
	}
	sel := types.SelectorFromMap(svc.Spec.Selector)
	for _, i := range insts {
		if i.Namespace != svc.Namespace || len(svc.Spec.Selector) == 0 || !sel.Matches(i.Labels) || terminal(i.Status.Phase) {
			continue
		}
		addrs := backendAddresses(i.Status.Addresses)
		ep.Backends = append(ep.Backends, types.EndpointBackend{
			Instance: i.Name, Node: i.Spec.NodeName, Addresses: addrs,
			Ready: i.Status.Ready && i.Status.Phase == types.PhaseRunning && len(addrs) > 0,
		})
	}
	slices.SortFunc(ep.Backends, func(a, b types.EndpointBackend) int { return strings.Compare(a.Instance, b.Instance) })
	return ep
}

// backendAddresses are an instance's addresses as Endpoints hold them:
// the first IPv6 and the first IPv4 one, in that order, in canonical form;
// anything unreadable is left out.
func backendAddresses(addrs []string) []string {
	var v6, v4 netip.Addr
	for _, a := range addrs {
		ip, err := netip.ParseAddr(a)
		if err != nil || ip.Zone() != "" {
			continue
		}
		ip = ip.Unmap()
		switch {
		case ip.Is4() && !v4.IsValid():
			v4 = ip
		case ip.Is6() && !v6.IsValid():
			v6 = ip
		}
	}
	var out []string
	for _, ip := range []netip.Addr{v6, v4} {
		if ip.IsValid() {
			out = append(out, ip.String())
		}
	}
	return out
}

// endpointsCondition is the Service's Endpoints condition for ep: whether
// anything serves it, and if not what the user should look at.
func endpointsCondition(svc *types.Service, ep *types.Endpoints) types.Condition {
	sel := types.SelectorFromMap(svc.Spec.Selector).String()
	c := types.Condition{Type: types.ServiceConditionEndpoints}
	switch ready := ep.ReadyCount(); {
	case len(ep.Backends) == 0:
		c.Status, c.Reason = types.ConditionFalse, types.ReasonNoMatchingInstances
		c.Message = fmt.Sprintf("no instance in namespace %s has the labels %s: check the selector against the labels of your workload's template (nexus get instances -n %s -l %s)", svc.Namespace, sel, svc.Namespace, sel)
	case ready == 0:
		c.Status, c.Reason = types.ConditionFalse, types.ReasonNoReadyInstances
		c.Message = fmt.Sprintf("none of the %d instances with the labels %s is ready: connections are refused until one is; check their phase and readiness probe (nexus describe instances -n %s -l %s)", len(ep.Backends), sel, svc.Namespace, sel)
	default:
		c.Status, c.Reason = types.ConditionTrue, types.ReasonReadyInstances
		c.Message = "ready instances serve it (nexus describe service " + svc.Name + " lists them)"
	}
	return c
}

// sameEndpoints reports whether two Endpoints hold the same ports,
// backends and owner.
func sameEndpoints(a, b *types.Endpoints) bool {
	return sameJSON(a.Ports, b.Ports) && sameJSON(a.Backends, b.Backends) && sameJSON(a.OwnerReferences, b.OwnerReferences)
}
