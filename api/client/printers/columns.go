package printers

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/security/authz"
)

// column is one column of a kind's table.
type column struct {
	name  string
	value func(o types.Object, env rowEnv) string
}

// rowEnv is what a row is printed with besides its object: the clock ages
// are computed against, and the Endpoints of the Services printed (by
// namespace/name) for their ENDPOINTS column.
type rowEnv struct {
	now       time.Time
	endpoints map[string]*types.Endpoints
}

// NodeRoleLabelPrefix marks a node's roles: a label
// node-role.nexus.dev/<role> (any value) gives it the role <role>.
const NodeRoleLabelPrefix = "node-role.nexus.dev/"

const none = "<none>"

func nameCol() column {
	return column{"NAME", func(o types.Object, _ rowEnv) string { return o.GetObjectMeta().Name }}
}

func ageCol() column {
	return column{"AGE", func(o types.Object, env rowEnv) string { return Age(o.GetObjectMeta().CreationTimestamp, env.now) }}
}

// columnsOf is the table of a kind: NAME, the kind's own columns, AGE,
// and with wide the extra ones.
func columnsOf(kind string, wide bool) []column {
	c := kindColumns[kind]
	cols := append([]column{nameCol()}, c.normal...)
	cols = append(cols, ageCol())
	if wide {
		cols = append(cols, c.wide...)
	}
	return cols
}

type kindCols struct{ normal, wide []column }

// Instance columns that get, ps and top share.
var (
	instanceWorkloadCol = typed("WORKLOAD", func(i *types.Instance) string { return orNone(i.Spec.Workload) })
	instanceNodeCol     = typed("NODE", func(i *types.Instance) string { return orNone(i.Spec.NodeName) })
	instancePhaseCol    = typed("PHASE", func(i *types.Instance) string { return orNone(string(i.Status.Phase)) })
	instanceRestartsCol = typed("RESTARTS", func(i *types.Instance) string { return strconv.Itoa(int(i.Status.Restarts)) })
)

// typed adapts a column of one kind.
func typed[T types.Object](name string, f func(T) string) column {
	return column{name, func(o types.Object, _ rowEnv) string {
		t, ok := o.(T)
		if !ok {
			return ""
		}
		return f(t)
	}}
}

var kindColumns = map[string]kindCols{
	"Workload": {
		normal: []column{
			typed("KIND", func(w *types.Workload) string { return string(w.Spec.Kind) }),
			typed("READY", workloadReady),
			typed("UP-TO-DATE", func(w *types.Workload) string { return strconv.Itoa(int(w.Status.UpdatedReplicas)) }),
			typed("IMAGE", func(w *types.Workload) string { return w.Spec.Template.Image }),
		},
		wide: []column{
			typed("PORTS", func(w *types.Workload) string { return ports(w.Spec.Template.Ports) }),
			typed("ISOLATION", func(w *types.Workload) string { return orNone(string(w.Spec.Template.Isolation)) }),
			typed("SELECTOR", func(w *types.Workload) string { return labels(w.Spec.Template.Labels) }),
		},
	},
	"Instance": {
		normal: []column{
			instancePhaseCol,
			typed("READY", func(i *types.Instance) string {
				if i.Status.Ready {
					return "1/1"
				}
				return "0/1"
			}),
			instanceNodeCol,
			instanceRestartsCol,
			typed("ADDRESS", func(i *types.Instance) string { return first(i.Status.Addresses) }),
		},
		wide: []column{
			instanceWorkloadCol,
			typed("IMAGE", func(i *types.Instance) string { return i.Spec.Template.Image }),
			typed("LAST-EXIT", lastExit),
		},
	},
	"Node": {
		normal: []column{
			typed("STATUS", nodeStatus),
			typed("ROLES", nodeRoles),
			typed("VERSION", func(n *types.Node) string { return orNone(n.Status.Versions.Nexus) }),
			typed("ADDRESS", nodeAddress),
		},
		wide: []column{
			typed("CPU", func(n *types.Node) string {
				return quantity(n.Status.Capacity.CPU.String(), n.Status.Capacity.CPU == 0)
			}),
			typed("MEMORY", func(n *types.Node) string {
				return quantity(n.Status.Capacity.Memory.String(), n.Status.Capacity.Memory == 0)
			}),
			typed("TIERS", func(n *types.Node) string { return orNone(joinAny(n.Status.Tiers)) }),
			typed("KERNEL", func(n *types.Node) string { return orNone(n.Status.Versions.Kernel) }),
			typed("OS", func(n *types.Node) string { return orNone(n.Status.Versions.OS) }),
			typed("SERVICE-DATAPATH", func(n *types.Node) string { return orNone(n.Status.ServiceDataPath) }),
			{"CERT-EXPIRES", func(o types.Object, env rowEnv) string {
				n, ok := o.(*types.Node)
				if !ok {
					return ""
				}
				return certExpiry(n.Status.CertificateExpiry, env.now)
			}},
		},
	},
	"Server": {
		normal: []column{
			typed("API", func(s *types.Server) string { return orNone(s.Status.APIURL) }),
			typed("PEER", func(s *types.Server) string { return orNone(s.Status.PeerAddress) }),
			typed("MEMBER", serverMember),
			{"HEARTBEAT", func(o types.Object, env rowEnv) string {
				s, ok := o.(*types.Server)
				if !ok || s.Status.LastHeartbeat.IsZero() {
					return none
				}
				return Age(s.Status.LastHeartbeat, env.now) + " ago"
			}},
		},
		wide: []column{
			typed("MEMBER-ID", func(s *types.Server) string { return orNone(s.Status.StoreMember.ID) }),
		},
	},
	"Service": {
		normal: []column{
			typed("TYPE", func(s *types.Service) string { return orNone(string(s.Spec.Type)) }),
			typed("VIRTUAL-IPS", VirtualIPs),
			typed("PORTS", func(s *types.Service) string { return servicePorts(s.Spec.Ports) }),
			{"ENDPOINTS", func(o types.Object, env rowEnv) string {
				ep := env.endpoints[o.GetObjectMeta().Namespace+"/"+o.GetObjectMeta().Name]
				if ep == nil {
					return none
				}
				return ReadyOfTotal(ep)
			}},
		},
		wide: []column{
			typed("SELECTOR", func(s *types.Service) string { return labels(s.Spec.Selector) }),
			typed("AFFINITY", func(s *types.Service) string { return orNone(s.Spec.SessionAffinity) }),
		},
	},
	"Endpoints": {
		normal: []column{
			typed("READY", ReadyOfTotal),
			typed("BACKENDS", readyAddresses),
		},
	},
	"Namespace": {normal: []column{typed("STATUS", func(n *types.Namespace) string { return orNone(n.Status.Phase) })}},
	"Secret": {
		normal: []column{
			typed("TYPE", func(s *types.Secret) string { return s.Type }),
			typed("DATA", func(s *types.Secret) string { return strconv.Itoa(len(s.Data)) }),
		},
	},
	"NetworkPolicy": {
		normal: []column{
			typed("SELECTOR", func(n *types.NetworkPolicy) string { return labels(n.Spec.Selector) }),
			typed("TYPES", func(n *types.NetworkPolicy) string { return orNone(strings.Join(n.Spec.Types, ",")) }),
		},
	},
	"Role":        {normal: []column{typed("RULES", func(r *types.Role) string { return strconv.Itoa(len(r.Rules)) })}},
	"ClusterRole": {normal: []column{typed("RULES", func(r *types.ClusterRole) string { return strconv.Itoa(len(r.Rules)) })}},
	"RoleBinding": {normal: []column{
		typed("ROLE", func(b *types.RoleBinding) string { return b.RoleRef.Kind + "/" + b.RoleRef.Name }),
		typed("SUBJECTS", func(b *types.RoleBinding) string { return subjects(b.Subjects) }),
	}},
	"ClusterRoleBinding": {normal: []column{
		typed("ROLE", func(b *types.ClusterRoleBinding) string { return b.RoleRef.Kind + "/" + b.RoleRef.Name }),
		typed("SUBJECTS", func(b *types.ClusterRoleBinding) string { return subjects(b.Subjects) }),
	}},
}

// VirtualIPs is how a Service's addresses are shown: None for a headless
// one, <pending> before the server gave them.
func VirtualIPs(s *types.Service) string {
	switch {
	case s.Spec.Headless:
		return "None"
	case len(s.Spec.VirtualIPs) == 0:
		return "<pending>"
	}
	return strings.Join(s.Spec.VirtualIPs, ",")
}

// ReadyOfTotal is ready/total of an Endpoints' backends.
func ReadyOfTotal(ep *types.Endpoints) string {
	return fmt.Sprintf("%d/%d", ep.ReadyCount(), len(ep.Backends))
}

// readyAddresses lists the ready backends' addresses with the first
// port, at most three backends and how many more.
func readyAddresses(ep *types.Endpoints) string {
	var s []string
	n := 0
	for _, b := range ep.Backends {
		if !b.Ready || len(b.Addresses) == 0 {
			continue
		}
		n++
		if len(s) < 3 {
			a := b.Addresses[0]
			if len(ep.Ports) > 0 {
				a = net.JoinHostPort(a, strconv.Itoa(int(ep.Ports[0].Port)))
			}
			s = append(s, a)
		}
	}
	if n > len(s) {
		s = append(s, fmt.Sprintf("+%d more", n-len(s)))
	}
	return orNone(strings.Join(s, ","))
}

// workloadReady is ready/wanted: ready replicas of a service or daemon,
// succeeded completions of a job.
func workloadReady(w *types.Workload) string {
	switch w.Spec.Kind {
	case types.KindJob:
		want := int32(1)
		if w.Spec.Completions != nil {
			want = *w.Spec.Completions
		}
		return fmt.Sprintf("%d/%d", w.Status.Succeeded, want)
	case types.KindDaemon:
		return fmt.Sprintf("%d/%d", w.Status.ReadyReplicas, w.Status.Replicas)
	}
	want := int32(1)
	if w.Spec.Replicas != nil {
		want = *w.Spec.Replicas
	}
	return fmt.Sprintf("%d/%d", w.Status.ReadyReplicas, want)
}

func lastExit(i *types.Instance) string {
	e := i.Status.LastExit
	if e == nil {
		return none
	}
	s := "code " + strconv.Itoa(int(e.Code))
	switch {
	case e.OOMKilled:
		s += " (OOM)"
	case e.Signal != "":
		s += " (" + e.Signal + ")"
	case e.Reason != "":
		s += " (" + e.Reason + ")"
	}
	return s
}

func nodeStatus(n *types.Node) string {
	s := "Unknown"
	if c := types.FindCondition(n.Status.Conditions, "Ready"); c != nil {
		switch c.Status {
		case types.ConditionTrue:
			s = "Ready"
		case types.ConditionFalse:
			s = "NotReady"
		}
	}
	if n.Spec.Unschedulable {
		s += ",SchedulingDisabled"
	}
	return s
}

// serverMember is a server's place in the store: voter or learner.
func serverMember(s *types.Server) string {
	switch {
	case s.Status.StoreMember.ID == "":
		return none
	case s.Status.StoreMember.Learner:
		return "learner"
	}
	return "voter"
}

func nodeRoles(n *types.Node) string {
	var roles []string
	for k := range n.Labels {
		if r, ok := strings.CutPrefix(k, NodeRoleLabelPrefix); ok && r != "" {
			roles = append(roles, r)
		}
	}
	slices.Sort(roles)
	return orNone(strings.Join(roles, ","))
}

// certExpiry says when a certificate expires: "in 11h", "expired", or
// <unknown> when the node has not said.
func certExpiry(t, now time.Time) string {
	switch {
	case t.IsZero():
		return "<unknown>"
	case !now.Before(t):
		return "expired"
	}
	return "in " + HumanDuration(t.Sub(now))
}

func nodeAddress(n *types.Node) string {
	for _, t := range []string{"InternalIP", "ExternalIP", "Hostname"} {
		for _, a := range n.Status.Addresses {
			if a.Type == t {
				return a.Address
			}
		}
	}
	return none
}

func ports(ps []types.Port) string {
	var s []string
	for _, p := range ps {
		v := strconv.Itoa(int(p.Port)) + "/" + string(p.Protocol.OrTCP())
		if p.HostPort != 0 {
			v = strconv.Itoa(int(p.HostPort)) + ":" + v
		}
		s = append(s, v)
	}
	return orNone(strings.Join(s, ","))
}

func servicePorts(ps []types.ServicePort) string {
	var s []string
	for _, p := range ps {
		v := strconv.Itoa(int(p.Port))
		if p.TargetPort != 0 && p.TargetPort != p.Port {
			v += "->" + strconv.Itoa(int(p.TargetPort))
		}
		if p.NodePort != 0 {
			v += ":" + strconv.Itoa(int(p.NodePort))
		}
		s = append(s, v+"/"+string(p.Protocol.OrTCP()))
	}
	return orNone(strings.Join(s, ","))
}

func labels(m map[string]string) string {
	if len(m) == 0 {
		return none
	}
	return types.SelectorFromMap(m).String()
}

func subjects(subs []authz.Subject) string {
	var s []string
	for _, sub := range subs {
		name := sub.Name
		if sub.Namespace != "" {
			name = sub.Namespace + "/" + name
		}
		s = append(s, sub.Kind+"/"+name)
	}
	return orNone(strings.Join(s, ","))
}

func first(s []string) string {
	if len(s) == 0 {
		return none
	}
	return s[0]
}

func orNone(s string) string {
	if s == "" {
		return none
	}
	return s
}

func quantity(s string, zero bool) string {
	if zero {
		return none
	}
	return s
}

func joinAny[T ~string](l []T) string {
	s := make([]string, len(l))
	for i, v := range l {
		s[i] = string(v)
	}
	return strings.Join(s, ",")
}
