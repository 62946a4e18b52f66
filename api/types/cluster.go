package types

import (
	"time"

	"nexus.dev/nexus/scheduler"
)

// Namespace groups namespaced objects; names are unique within one.
type Namespace struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       NamespaceSpec   `json:"spec,omitzero"`
	Status     NamespaceStatus `json:"status,omitzero"`
}

// NamespaceSpec is empty today; it exists so namespaces look like every
// other object.
type NamespaceSpec struct{}

// NamespaceStatus says whether the namespace is being deleted.
type NamespaceStatus struct {
	Phase string `json:"phase,omitempty"` // Active or Terminating
}

// Node is one machine that runs instances.
type Node struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       NodeSpec   `json:"spec,omitzero"`
	Status     NodeStatus `json:"status,omitzero"`
}

// NodeSpec is what operators set on a node.
type NodeSpec struct {
	// Unschedulable (cordoned) nodes get no new instances.
	Unschedulable bool              `json:"unschedulable,omitempty"`
	Taints        []scheduler.Taint `json:"taints,omitempty"`
	// ContainerPrefixes are the node's container address ranges: an IPv6
	// /64, then an IPv4 prefix (a /24 by default). The server allocates
	// them (its node-IPAM controller, moments after the Node is created)
	// and replaces any other value; the agent waits for them before it
	// starts containers, and the other nodes route them to this one.
	ContainerPrefixes []string `json:"containerPrefixes,omitempty"`
	// ClusterPrefixes are the cluster's ranges that every node's prefixes
	// come from (an IPv6 prefix, then an IPv4 one), set with
	// ContainerPrefixes: traffic from a container to them is not
	// translated.
	ClusterPrefixes []string `json:"clusterPrefixes,omitempty"`
}

// NodeStatus is what the node's agent reports.
type NodeStatus struct {
	Capacity ResourceList `json:"capacity,omitzero"`
	// Allocatable is Capacity minus what the node keeps for itself.
	Allocatable ResourceList `json:"allocatable,omitzero"`
	// Tiers are the isolation tiers the node can run.
	Tiers      []Isolation   `json:"tiers,omitempty"`
	Conditions []Condition   `json:"conditions,omitempty"`
	Addresses  []NodeAddress `json:"addresses,omitempty"`
	// AgentAddress is where servers reach the node's agent for logs and
	// exec (host:port, mutual TLS), when it runs apart from a server.
	AgentAddress string `json:"agentAddress,omitempty"`
	// ContainerPrefixes are the container address ranges the node's
	// networking serves, as its agent reports them: spec.containerPrefixes
	// once the agent has opened its networking with them.
	ContainerPrefixes []string     `json:"containerPrefixes,omitempty"`
	LastHeartbeat     time.Time    `json:"lastHeartbeat,omitzero"`
	Versions          NodeVersions `json:"versions,omitzero"`
	// CertificateExpiry is when the node's certificate expires.
	CertificateExpiry time.Time `json:"certificateExpiry,omitzero"`
	// Images present on the node (names or digests), for image locality.
	Images []string `json:"images,omitempty"`
	// ServiceDataPath is how the node balances Service traffic: "ebpf"
	// (connect-time, in cgroup hooks) or "nftables" (DNAT, the fallback
	// where the hooks cannot be used); empty until its networking is open.
	ServiceDataPath string `json:"serviceDataPath,omitempty"`
}

// NodeAddress is one address of a node.
type NodeAddress struct {
	Type    string `json:"type"` // InternalIP, ExternalIP or Hostname
	Address string `json:"address"`
}

// NodeVersions are the versions of what runs the node.
type NodeVersions struct {
	Nexus  string `json:"nexus,omitempty"`
	Kernel string `json:"kernel,omitempty"`
	OS     string `json:"os,omitempty"`
}

// Service gives a set of instances one stable address and name: the
// instances of its namespace whose labels match its selector, on the
// ports it lists. The server allocates its virtual IPs (and node ports) at
// create; the endpoints controller keeps the Endpoints of the same name
// current and says in status.conditions whether anything serves it.
type Service struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       ServiceSpec   `json:"spec"`
	Status     ServiceStatus `json:"status,omitzero"`
}

// ServiceType says where a service is reachable.
type ServiceType string

const (
	// ServiceClusterIP is reachable on its virtual IPs from inside the
	// cluster (containers and nodes).
	ServiceClusterIP ServiceType = "ClusterIP"
	// ServiceNodePort is also reachable from outside the cluster on a node
	// port (30000-32767) of every node's addresses.
	ServiceNodePort ServiceType = "NodePort"
)

// Session affinities.
const (
	SessionAffinityNone     = "None"
	SessionAffinityClientIP = "ClientIP"
)

// ServiceSpec selects instances by label and says which ports to serve.
type ServiceSpec struct {
	// Type is ClusterIP (default) or NodePort.
	Type ServiceType `json:"type,omitempty"`
	// Selector picks the instances of the service's namespace that carry
	// all of these labels.
	Selector map[string]string `json:"selector"`
	Ports    []ServicePort     `json:"ports"`
	// VirtualIPs are the service's addresses: an IPv6 one, then an IPv4
	// one when the cluster has an IPv4 prefix. The server allocates them
	// from the service ranges at create when they are left out (or checks
	// and claims the given ones); they never change afterwards.
	VirtualIPs []string `json:"virtualIPs,omitempty"`
	// Headless services get no virtual address: their name resolves to
	// the ready instances' own addresses.
	Headless bool `json:"headless,omitempty"`
	// SessionAffinity ClientIP sends a client to the backend it reached
	// last, for SessionAffinityTimeoutSeconds after its last connection;
	// None (default) picks a backend per connection.
	SessionAffinity string `json:"sessionAffinity,omitempty"`
	// SessionAffinityTimeoutSeconds is how long a ClientIP affinity lasts
	// (default 10800, 3 hours, as Kubernetes; 1-86400).
	SessionAffinityTimeoutSeconds *int32 `json:"sessionAffinityTimeoutSeconds,omitempty"`
}

// ServicePort maps a service port to a port of the selected instances.
type ServicePort struct {
	// Name is required when there are several ports; DNS SRV records and
	// the Endpoints' ports use it.
	Name     string   `json:"name,omitempty"`
	Port     int32    `json:"port"`
	Protocol Protocol `json:"protocol,omitempty"`
	// TargetPort is the instances' port (default: Port).
	TargetPort int32 `json:"targetPort,omitempty"`
	// NodePort is the port (30000-32767) a NodePort service also serves
	// on every node's addresses; allocated by the server when left out,
	// kept across updates.
	NodePort int32 `json:"nodePort,omitempty"`
}

// ServiceStatus is what the endpoints controller observed: conditions
// such as Endpoints (False with NoMatchingInstances or NoReadyInstances
// when nothing serves the service).
type ServiceStatus struct {
	Conditions []Condition `json:"conditions,omitempty"`
}

// ServiceConditionEndpoints is the type of a Service's condition that says
// whether it has ready backends.
const ServiceConditionEndpoints = "Endpoints"

// Reasons of the Endpoints condition.
const (
	ReasonNoMatchingInstances = "NoMatchingInstances"
	ReasonNoReadyInstances    = "NoReadyInstances"
	ReasonReadyInstances      = "ReadyInstances"
)

// DefaultSessionAffinityTimeoutSeconds is a ClientIP affinity's lifetime
// when not given.
const DefaultSessionAffinityTimeoutSeconds = 10800

// KeepAllocated copies into s what the server allocated for old and an
// update of it left out: the virtual IPs, and the node port of each port
// that keeps its number and protocol (when both are NodePort services).
// Updates (nexus apply of a file without them) therefore neither lose nor
// change them.
func (s *ServiceSpec) KeepAllocated(old *ServiceSpec) {
	if len(s.VirtualIPs) == 0 && s.Headless == old.Headless {
		s.VirtualIPs = old.VirtualIPs
	}
	if s.Type != ServiceNodePort || old.Type != ServiceNodePort {
		return
	}
	for i := range s.Ports {
		p := &s.Ports[i]
		if p.NodePort != 0 {
			continue
		}
		for _, o := range old.Ports {
			if o.Port == p.Port && o.Protocol.OrTCP() == p.Protocol.OrTCP() {
				p.NodePort = o.NodePort
			}
		}
	}
}

// Endpoints are the instances behind a Service, as the endpoints
// controller sees them: one object of the Service's name and namespace,
// written only by the controller (users and agents read it). Agents turn
// the ready backends into their load-balancing tables and DNS answers.
type Endpoints struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	// Ports are the Service's ports as the backends serve them (Port is
	// the target port).
	Ports []EndpointPort `json:"ports,omitempty"`
	// Backends are the instances the Service's selector matches that are
	// not finished, ordered by name.
	Backends []EndpointBackend `json:"backends,omitempty"`
}

// EndpointPort is one port of the backends.
type EndpointPort struct {
	Name     string   `json:"name,omitempty"`
	Port     int32    `json:"port"`
	Protocol Protocol `json:"protocol"`
}

// EndpointBackend is one instance behind a Service.
type EndpointBackend struct {
	Instance string `json:"instance"`
	// Node is where it runs; empty while it is not scheduled.
	Node string `json:"node,omitempty"`
	// Addresses are the instance's addresses, IPv6 first; empty until its
	// agent reports them.
	Addresses []string `json:"addresses,omitempty"`
	// Ready is the instance's readiness: only ready backends get traffic.
	Ready bool `json:"ready"`
}

// ReadyCount is how many of the backends are ready.
func (e *Endpoints) ReadyCount() int {
	n := 0
	for _, b := range e.Backends {
		if b.Ready {
			n++
		}
	}
	return n
}

// NetworkPolicy limits which traffic reaches or leaves selected instances.
// An instance selected by any policy accepts only what some policy allows.
type NetworkPolicy struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       NetworkPolicySpec `json:"spec"`
}

// NetworkPolicySpec selects instances and lists what they may receive and send.
type NetworkPolicySpec struct {
	Selector map[string]string `json:"selector"`
	Ingress  []PolicyRule      `json:"ingress,omitempty"`
	Egress   []PolicyRule      `json:"egress,omitempty"`
	// Types are the directions the policy restricts: Ingress, Egress or
	// both (default: Ingress, plus Egress when egress rules are given).
	Types []string `json:"types,omitempty"`
}

// PolicyRule allows traffic from or to its peers on its ports (any peer or
// port when the list is empty).
type PolicyRule struct {
	Peers []PolicyPeer `json:"peers,omitempty"`
	Ports []PolicyPort `json:"ports,omitempty"`
}

// PolicyPeer is one side of allowed traffic: instances by label (in this
// namespace, or another one), or an address range.
type PolicyPeer struct {
	Selector  map[string]string `json:"selector,omitempty"`
	Namespace string            `json:"namespace,omitempty"`
	CIDR      string            `json:"cidr,omitempty"`
}

// PolicyPort is a port (0: every port) and protocol.
type PolicyPort struct {
	Port     int32    `json:"port,omitempty"`
	Protocol Protocol `json:"protocol,omitempty"`
}

// Secret holds small pieces of sensitive data, encrypted at rest.
type Secret struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Type       string `json:"type,omitempty"`
	// Data values are base64 in JSON.
	Data map[string][]byte `json:"data,omitempty"`
	// StringData is a write-only convenience: merged into Data on write.
	StringData map[string]string `json:"stringData,omitempty"`
}

// ServiceAccount is an identity for programs, authenticated with bearer
// tokens.
type ServiceAccount struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
}

// Server is one control-plane server of the cluster. Each server writes
// its own every few seconds, so agents and clients find every server and
// can fail over between them; a lastHeartbeat that stops moving means the
// server is down or cut off.
type Server struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Status     ServerStatus `json:"status,omitzero"`
}

// ServerStatus is what a server reports about itself.
type ServerStatus struct {
	// APIURL is where other machines reach its API (https://host:port).
	APIURL string `json:"apiURL,omitempty"`
	// PeerAddress is its store member's QUIC address (host:port), where
	// the join service answers too.
	PeerAddress string `json:"peerAddress,omitempty"`
	// StoreMember is its place in the replicated store.
	StoreMember StoreMember `json:"storeMember,omitzero"`
	// LastHeartbeat is when it last wrote this status.
	LastHeartbeat time.Time `json:"lastHeartbeat,omitzero"`
}

// StoreMember is a server's member of the replicated store.
type StoreMember struct {
	// ID is the member's ID in hex, as `etcdctl member list` shows it.
	ID string `json:"id,omitempty"`
	// Learner is true until the member has caught up and votes.
	Learner bool `json:"learner,omitempty"`
}
