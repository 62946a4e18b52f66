package client

import (
	"errors"
	"fmt"
	"maps"

	"nexus.dev/nexus/api/types"
)

// ExposeOptions say how `nexus expose` puts a Service in front of a
// workload.
type ExposeOptions struct {
	// Name of the Service (default: the workload's).
	Name string
	// Port is the Service's port; TargetPort the instances' (default Port).
	Port, TargetPort int32
	Protocol         types.Protocol // TCP (default) or UDP
	Type             types.ServiceType
	// NodePort asks for this node port (a NodePort Service; 0: any free one).
	NodePort        int32
	SessionAffinity string // None (default) or ClientIP
	Headless        bool
}

// ServiceFor is the Service that exposes w: it selects w's instances by
// their template labels and serves one port. The server checks the rest
// (ranges, free node ports); this refuses what cannot make sense, naming
// the flag.
func ServiceFor(w *types.Workload, o ExposeOptions) (*types.Service, error) {
	if len(w.Spec.Template.Labels) == 0 {
		return nil, fmt.Errorf("workload %s has no labels in its template (spec.template.labels), so a service cannot select its instances: add some (nexus edit workload %s, e.g. labels: {app: %s}) and expose it again", w.Name, w.Name, w.Name)
	}
	if o.Port < 1 || o.Port > 65535 {
		return nil, fmt.Errorf("--port %d: give the service's port, 1-65535, e.g. --port 80", o.Port)
	}
	if o.TargetPort == 0 {
		o.TargetPort = o.Port
	}
	if o.TargetPort < 1 || o.TargetPort > 65535 {
		return nil, fmt.Errorf("--target-port %d: must be the instances' port, 1-65535", o.TargetPort)
	}
	o.Protocol = o.Protocol.OrTCP()
	if o.Protocol != types.TCP && o.Protocol != types.UDP {
		return nil, fmt.Errorf("--protocol %q: must be TCP or UDP", o.Protocol)
	}
	if o.Type == "" {
		o.Type = types.ServiceClusterIP
	}
	if o.Type != types.ServiceClusterIP && o.Type != types.ServiceNodePort {
		return nil, fmt.Errorf("--type %q: must be ClusterIP or NodePort", o.Type)
	}
	if o.NodePort != 0 && o.Type != types.ServiceNodePort {
		return nil, errors.New("--node-port needs --type NodePort")
	}
	if o.Headless && (o.Type == types.ServiceNodePort || o.SessionAffinity == types.SessionAffinityClientIP) {
		return nil, errors.New("--headless gives the service no virtual IP to balance: leave out --type NodePort and --session-affinity ClientIP")
	}
	if a := o.SessionAffinity; a != "" && a != types.SessionAffinityNone && a != types.SessionAffinityClientIP {
		return nil, fmt.Errorf("--session-affinity %q: must be None or ClientIP", a)
	}
	svc := &types.Service{TypeMeta: types.TypeMeta{APIVersion: types.APIVersion, Kind: "Service"}}
	svc.Name, svc.Namespace = w.Name, w.Namespace
	if o.Name != "" {
		svc.Name = o.Name
	}
	svc.Labels = maps.Clone(w.Labels)
	svc.Spec = types.ServiceSpec{Type: o.Type, Selector: maps.Clone(w.Spec.Template.Labels), Headless: o.Headless, SessionAffinity: o.SessionAffinity,
		Ports: []types.ServicePort{{Port: o.Port, TargetPort: o.TargetPort, Protocol: o.Protocol, NodePort: o.NodePort}}}
	return svc, nil
}
