package types

import (
	"cmp"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"nexus.dev/nexus/scheduler"
)

// Validate checks a defaulted object and returns every rule it breaks.
func Validate(o Object) FieldErrors {
	r := ResourceOf(o)
	if r == nil {
		return FieldErrors{{Field: "kind", Detail: "not a known resource"}}
	}
	var errs FieldErrors
	o.GetObjectMeta().validate(r.Namespaced, NewPath("metadata"), &errs)
	return append(errs, o.validate(r)...)
}

const (
	maxReplicas        = 100000
	maxPortNameLength  = 15
	maxSecretBytes     = 1 << 20
	maxServicePorts    = 100
	maxAffinityTimeout = 86400
	maxPriority        = 1000000000
)

// The node port range: what NodePort services are given, as Kubernetes'
// default, so that it stays clear of the ephemeral ports Linux hands out
// (32768-60999).
const (
	MinNodePort = 30000
	MaxNodePort = 32767
)

var (
	envName   = regexp.MustCompile(`^[-._a-zA-Z][-._a-zA-Z0-9]*$`)
	portName  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	secretKey = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)
)

func (o *Namespace) validate(*Resource) FieldErrors {
	var errs FieldErrors
	if p := o.Status.Phase; p != "" && p != namespacePhaseActive && p != "Terminating" {
		errs.add(NewPath("status").Child("phase"), "must be Active or Terminating, not %q", p)
	}
	return errs
}

func (o *Node) validate(*Resource) FieldErrors {
	var errs FieldErrors
	validateTaints(o.Spec.Taints, NewPath("spec").Child("taints"), &errs)
	validateNodePrefixes(o.Spec.ContainerPrefixes, o.Spec.ClusterPrefixes, NewPath("spec"), &errs)
	st := NewPath("status")
	validateResourceList(o.Status.Capacity, st.Child("capacity"), &errs)
	validateResourceList(o.Status.Allocatable, st.Child("allocatable"), &errs)
	for i, t := range o.Status.Tiers {
		validateIsolation(t, st.Child("tiers").Index(i), &errs)
	}
	for i, a := range o.Status.Addresses {
		p := st.Child("addresses").Index(i)
		switch a.Type {
		case "InternalIP", "ExternalIP":
			if _, err := netip.ParseAddr(a.Address); err != nil {
				errs.add(p.Child("address"), "must be an IP address, not %q", a.Address)
			}
		case "Hostname":
			if a.Address == "" {
				errs.add(p.Child("address"), "must not be empty")
			}
		default:
			errs.add(p.Child("type"), "must be InternalIP, ExternalIP or Hostname, not %q", a.Type)
		}
	}
	for i, c := range o.Status.ContainerPrefixes {
		if _, err := netip.ParsePrefix(c); err != nil {
			errs.add(st.Child("containerPrefixes").Index(i), "must be an address prefix such as fd00:1::/64, not %q", c)
		}
	}
	if a := o.Status.AgentAddress; a != "" {
		if ap, err := netip.ParseAddrPort(a); err != nil || ap.Port() == 0 || !ap.Addr().IsValid() || ap.Addr().IsUnspecified() {
			errs.add(st.Child("agentAddress"), "must be an IP address and port such as [fd00::1]:7444 or 10.0.0.1:7444, not %q", a)
		}
	}
	return errs
}

func (o *Server) validate(*Resource) FieldErrors {
	var errs FieldErrors
	st := NewPath("status")
	if u := o.Status.APIURL; u != "" {
		if pu, err := url.Parse(u); err != nil || pu.Scheme != "https" || pu.Host == "" || pu.Path != "" {
			errs.add(st.Child("apiURL"), "must be a URL like https://host:port, not %q", u)
		}
	}
	if a := o.Status.PeerAddress; a != "" {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			errs.add(st.Child("peerAddress"), "must be host:port, not %q", a)
		}
	}
	if id := o.Status.StoreMember.ID; id != "" {
		if _, err := strconv.ParseUint(id, 16, 64); err != nil {
			errs.add(st.Child("storeMember").Child("id"), "must be a member ID in hex, not %q", id)
		}
	}
	return errs
}

// validateNodePrefixes checks a Node's spec.containerPrefixes and
// spec.clusterPrefixes: both empty, or each an IPv6 prefix then an IPv4
// one, the node's IPv6 prefix a /64, each inside the cluster's.
func validateNodePrefixes(node, cluster []string, p Path, errs *FieldErrors) {
	if len(node) == 0 && len(cluster) == 0 {
		return
	}
	pair := func(name string, s []string) []netip.Prefix {
		f := p.Child(name)
		if len(s) != 2 {
			errs.add(f, "must be an IPv6 prefix, then an IPv4 prefix (%d entries given)", len(s))
			return nil
		}
		var out []netip.Prefix
		for i, v := range s {
			pr, err := netip.ParsePrefix(v)
			switch {
			case err != nil:
				errs.add(f.Index(i), "must be an address prefix such as fd00:1::/64 or 10.71.1.0/24, not %q", v)
			case pr != pr.Masked():
				errs.add(f.Index(i), "%q has bits set after the first %d: use %s", v, pr.Bits(), pr.Masked())
			case i == 0 && (!pr.Addr().Is6() || pr.Addr().Is4In6()):
				errs.add(f.Index(i), "must be an IPv6 prefix, not %q", v)
			case i == 1 && !pr.Addr().Is4():
				errs.add(f.Index(i), "must be an IPv4 prefix, not %q", v)
			default:
				out = append(out, pr)
			}
		}
		if len(out) != 2 {
			return nil
		}
		return out
	}
	n, c := pair("containerPrefixes", node), pair("clusterPrefixes", cluster)
	if n != nil && n[0].Bits() != 64 {
		errs.add(p.Child("containerPrefixes").Index(0), "must be a /64, not a /%d", n[0].Bits())
	}
	if n == nil || c == nil {
		return
	}
	for i := range n {
		if c[i].Bits() >= n[i].Bits() || !c[i].Contains(n[i].Addr()) {
			errs.add(p.Child("containerPrefixes").Index(i), "%s is not inside spec.clusterPrefixes[%d] %s", n[i], i, c[i])
		}
	}
}

func validateTaints(taints []scheduler.Taint, p Path, errs *FieldErrors) {
	for i, t := range taints {
		if msg := validateLabelKey(t.Key); msg != "" {
			errs.add(p.Index(i).Child("key"), "%s", msg)
		}
		if msg := validateLabelValue(t.Value); msg != "" {
			errs.add(p.Index(i).Child("value"), "%s", msg)
		}
		switch t.Effect {
		case scheduler.NoSchedule, scheduler.NoExecute, scheduler.PreferNoSchedule:
		default:
			errs.add(p.Index(i).Child("effect"), "must be NoSchedule, PreferNoSchedule or NoExecute, not %q", t.Effect)
		}
	}
}

func (o *Workload) validate(*Resource) FieldErrors {
	var errs FieldErrors
	s, p := &o.Spec, NewPath("spec")
	switch s.Kind {
	case KindService, KindJob, KindDaemon:
	default:
		errs.add(p.Child("kind"), "must be service, job or daemon, not %q", s.Kind)
	}
	count := func(name string, v *int32, min int32, only WorkloadKind) {
		switch {
		case v == nil:
		case s.Kind != only:
			errs.add(p.Child(name), "applies only to a %s workload, not a %s", only, s.Kind)
		case *v < min || *v > maxReplicas:
			errs.add(p.Child(name), "must be %d-%d", min, maxReplicas)
		}
	}
	count("replicas", s.Replicas, 0, KindService)
	count("completions", s.Completions, 1, KindJob)
	count("parallelism", s.Parallelism, 1, KindJob)
	count("backoffLimit", s.BackoffLimit, 0, KindJob)
	validateTemplate(&s.Template, p.Child("template"), &errs)
	if s.Kind == KindJob && s.Template.RestartPolicy == RestartAlways {
		errs.add(p.Child("template").Child("restartPolicy"), "a job's instances must be on-failure or never: always would never complete")
	}
	validatePlacement(&s.Placement, p.Child("placement"), &errs)
	st := p.Child("strategy")
	for _, f := range []struct {
		name string
		v    IntOrPercent
	}{{"maxSurge", s.Strategy.MaxSurge}, {"maxUnavailable", s.Strategy.MaxUnavailable}} {
		if f.v.IsPercent && f.v.Value > 100 {
			errs.add(st.Child(f.name), "must be at most 100%%, not %s", f.v)
		}
	}
	if s.Kind == KindService && s.Strategy.MaxSurge.Of(100, true) == 0 && s.Strategy.MaxUnavailable.Of(100, false) == 0 {
		errs.add(st, "maxSurge and maxUnavailable must not both be 0: a rollout could never make progress")
	}
	return errs
}

func (o *Instance) validate(*Resource) FieldErrors {
	var errs FieldErrors
	p := NewPath("spec")
	if o.Spec.Workload != "" {
		if msg := ValidateName(o.Spec.Workload); msg != "" {
			errs.add(p.Child("workload"), "%s", msg)
		}
	}
	if o.Spec.NodeName != "" {
		if msg := ValidateName(o.Spec.NodeName); msg != "" {
			errs.add(p.Child("nodeName"), "%s", msg)
		}
	}
	validateTemplate(&o.Spec.Template, p.Child("template"), &errs)
	validatePlacement(&o.Spec.Placement, p.Child("placement"), &errs)
	switch o.Status.Phase {
	case PhasePending, PhaseScheduled, PhasePreparing, PhaseStarting, PhaseRunning, PhaseSucceeded, PhaseFailed, PhaseStopped:
	default:
		errs.add(NewPath("status").Child("phase"), "unknown phase %q", o.Status.Phase)
	}
	if o.Status.Restarts < 0 {
		errs.add(NewPath("status").Child("restarts"), "must not be negative")
	}
	for i, a := range o.Status.Addresses {
		if _, err := netip.ParseAddr(a); err != nil {
			errs.add(NewPath("status").Child("addresses").Index(i), "must be an IP address, not %q", a)
		}
	}
	ep := NewPath("status").Child("events")
	if len(o.Status.Events) > MaxInstanceEvents {
		errs.add(ep, "has %d events: keep at most %d, the latest", len(o.Status.Events), MaxInstanceEvents)
	}
	for i, e := range o.Status.Events {
		if e.Type != EventNormal && e.Type != EventWarning {
			errs.add(ep.Index(i).Child("type"), "must be %s or %s, not %q", EventNormal, EventWarning, e.Type)
		}
		if e.Reason == "" || len(e.Reason) > 64 || strings.ContainsAny(e.Reason, " \t\n") {
			errs.add(ep.Index(i).Child("reason"), "must be one word of at most 64 bytes, such as Started, not %q", e.Reason)
		}
		if len(e.Message) > MaxEventMessage {
			errs.add(ep.Index(i).Child("message"), "is %d bytes long: at most %d", len(e.Message), MaxEventMessage)
		}
		if e.Count < 0 {
			errs.add(ep.Index(i).Child("count"), "must not be negative")
		}
	}
	if u := o.Status.Resources; u != nil {
		validateUsage(u, NewPath("status").Child("resources"), &errs)
	}
	return errs
}

// validateUsage checks an instance's measured use: counts and amounts are
// never negative, and a measurement has a time.
func validateUsage(u *InstanceUsage, p Path, errs *FieldErrors) {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"cpuMillicores", u.CPUMillicores}, {"memoryBytes", u.MemoryBytes}, {"memoryLimitBytes", u.MemoryLimitBytes},
		{"oomKills", u.OOMKills}, {"pids", u.Pids},
	} {
		if f.v < 0 {
			errs.add(p.Child(f.name), "must not be negative, not %d", f.v)
		}
	}
	if u.SampledAt.IsZero() {
		errs.add(p.Child("sampledAt"), "must say when the numbers were measured")
	}
}

func validateTemplate(t *InstanceTemplate, p Path, errs *FieldErrors) {
	validateLabels(t.Labels, p.Child("labels"), errs)
	if t.Image == "" {
		errs.add(p.Child("image"), "must name an image, e.g. \"nginx:1.27\" or \"nexus.local/hello\"")
	} else if _, err := name.ParseReference(t.Image); err != nil {
		errs.add(p.Child("image"), "%q is not an image reference: %v", t.Image, err)
	}
	seenEnv := map[string]bool{}
	for i, e := range t.Env {
		ep := p.Child("env").Index(i)
		if !envName.MatchString(e.Name) {
			errs.add(ep.Child("name"), "must be letters, digits, '_', '-' and '.', not starting with a digit, not %q", e.Name)
		} else if seenEnv[e.Name] {
			errs.add(ep.Child("name"), "%s is set twice", e.Name)
		}
		seenEnv[e.Name] = true
		if e.ValueFrom != nil {
			if e.Value != "" {
				errs.add(ep, "set value or valueFrom, not both")
			}
			ref := e.ValueFrom.SecretKeyRef
			if ref == nil {
				errs.add(ep.Child("valueFrom"), "must have secretKeyRef")
				continue
			}
			rp := ep.Child("valueFrom").Child("secretKeyRef")
			if msg := ValidateName(ref.Name); msg != "" {
				errs.add(rp.Child("name"), "%s", msg)
			}
			if !secretKey.MatchString(ref.Key) {
				errs.add(rp.Child("key"), "must be letters, digits, '-', '_' and '.', not %q", ref.Key)
			}
		}
	}
	rp := p.Child("resources")
	validateResourceList(t.Resources.Requests, rp.Child("requests"), errs)
	validateResourceList(t.Resources.Limits, rp.Child("limits"), errs)
	req, lim := t.Resources.Requests, t.Resources.Limits
	if lim.CPU != 0 && req.CPU > lim.CPU {
		errs.add(rp.Child("requests").Child("cpu"), "%s is more than the limit %s", req.CPU, lim.CPU)
	}
	if lim.Memory != 0 && req.Memory > lim.Memory {
		errs.add(rp.Child("requests").Child("memory"), "%s is more than the limit %s", req.Memory, lim.Memory)
	}
	validatePorts(t.Ports, p.Child("ports"), errs)
	validateProbe(t.Liveness, p.Child("liveness"), errs)
	validateProbe(t.Readiness, p.Child("readiness"), errs)
	switch t.RestartPolicy {
	case RestartAlways, RestartOnFailure, RestartNever:
	default:
		errs.add(p.Child("restartPolicy"), "must be always, on-failure or never, not %q", t.RestartPolicy)
	}
	validateIsolation(t.Isolation, p.Child("isolation"), errs)
	if g := t.TerminationGracePeriodSeconds; g != nil && (*g < 0 || *g > 3600) {
		errs.add(p.Child("terminationGracePeriodSeconds"), "must be 0-3600")
	}
}

func validateResourceList(r ResourceList, p Path, errs *FieldErrors) {
	if r.CPU < 0 {
		errs.add(p.Child("cpu"), "must not be negative")
	}
	if r.Memory < 0 {
		errs.add(p.Child("memory"), "must not be negative")
	}
}

func validateIsolation(i Isolation, p Path, errs *FieldErrors) {
	switch i {
	case IsolationContainer, IsolationSandbox, IsolationVM:
	default:
		errs.add(p, "must be container, sandbox or vm, not %q", i)
	}
}

func validPort(n int32) bool { return n >= 1 && n <= 65535 }

func validateProtocol(proto Protocol, p Path, errs *FieldErrors) {
	if proto != TCP && proto != UDP {
		errs.add(p, "must be TCP or UDP, not %q", proto)
	}
}

func validatePortName(n string, p Path, errs *FieldErrors) {
	if n != "" && (len(n) > maxPortNameLength || !portName.MatchString(n)) {
		errs.add(p, "must be at most 15 lower-case letters, digits and '-' (an IANA service name), not %q", n)
	}
}

func validatePorts(ports []Port, p Path, errs *FieldErrors) {
	names := map[string]bool{}
	used := map[[2]any]bool{}
	for i, port := range ports {
		pp := p.Index(i)
		validatePortName(port.Name, pp.Child("name"), errs)
		if port.Name != "" {
			if names[port.Name] {
				errs.add(pp.Child("name"), "%q is used by another port", port.Name)
			}
			names[port.Name] = true
		}
		if !validPort(port.Port) {
			errs.add(pp.Child("port"), "must be 1-65535")
		}
		if port.HostPort != 0 && !validPort(port.HostPort) {
			errs.add(pp.Child("hostPort"), "must be 1-65535 (or 0 for none)")
		}
		validateProtocol(port.Protocol, pp.Child("protocol"), errs)
		key := [2]any{port.Port, port.Protocol}
		if used[key] {
			errs.add(pp.Child("port"), "%d/%s is listed twice", port.Port, port.Protocol)
		}
		used[key] = true
	}
}

func validateProbe(pr *Probe, p Path, errs *FieldErrors) {
	if pr == nil {
		return
	}
	n := 0
	if pr.HTTP != nil {
		n++
		if !validPort(pr.HTTP.Port) {
			errs.add(p.Child("http").Child("port"), "must be 1-65535")
		}
		if !strings.HasPrefix(pr.HTTP.Path, "/") {
			errs.add(p.Child("http").Child("path"), "must start with '/', not %q", pr.HTTP.Path)
		}
	}
	if pr.TCP != nil {
		n++
		if !validPort(pr.TCP.Port) {
			errs.add(p.Child("tcp").Child("port"), "must be 1-65535")
		}
	}
	if pr.Exec != nil {
		n++
		if len(pr.Exec.Command) == 0 || pr.Exec.Command[0] == "" {
			errs.add(p.Child("exec").Child("command"), "must name a program to run")
		}
	}
	if n != 1 {
		errs.add(p, "must have exactly one of http, tcp and exec, not %d", n)
	}
	for _, f := range []struct {
		name string
		v    int32
		min  int32
	}{
		{"initialDelaySeconds", pr.InitialDelaySeconds, 0},
		{"periodSeconds", pr.PeriodSeconds, 1},
		{"timeoutSeconds", pr.TimeoutSeconds, 1},
		{"failureThreshold", pr.FailureThreshold, 1},
		{"successThreshold", pr.SuccessThreshold, 1},
	} {
		if f.v < f.min || f.v > 3600 {
			errs.add(p.Child(f.name), "must be %d-3600", f.min)
		}
	}
}

func validatePlacement(pl *Placement, p Path, errs *FieldErrors) {
	for i, c := range pl.Constraints {
		if _, err := scheduler.ParseConstraint(c); err != nil {
			errs.add(p.Child("constraints").Index(i), "%v", err)
		}
	}
	for i, a := range pl.Affinities {
		ap := p.Child("affinities").Index(i)
		if _, err := scheduler.ParseConstraint(a.Constraint); err != nil {
			errs.add(ap.Child("constraint"), "%v", err)
		}
		if a.Weight == 0 || a.Weight < -100 || a.Weight > 100 {
			errs.add(ap.Child("weight"), "must be -100..100 and not 0 (negative repels)")
		}
	}
	for i, a := range pl.AntiAffinity {
		ap := p.Child("antiAffinity").Index(i)
		if a.Group != "" {
			if msg := ValidateName(a.Group); msg != "" {
				errs.add(ap.Child("workload"), "%s", msg)
			}
		}
		if !a.Hard && (a.Weight < 1 || a.Weight > 100) {
			errs.add(ap.Child("weight"), "a soft anti-affinity needs a weight of 1-100")
		}
	}
	if s := pl.Spread; s != nil {
		sp := p.Child("spread")
		if s.Topology == "" {
			errs.add(sp.Child("topology"), "must be zone, rack or a node label key")
		}
		if s.MaxSkew < 0 {
			errs.add(sp.Child("maxSkew"), "must not be negative")
		}
		if s.Weight < 0 || s.Weight > 100 {
			errs.add(sp.Child("weight"), "must be 0-100")
		}
	}
	for i, t := range pl.Tolerations {
		tp := p.Child("tolerations").Index(i)
		if t.Exists && t.Value != "" {
			errs.add(tp.Child("value"), "must be empty when exists is true")
		}
		if t.Key == "" && !t.Exists {
			errs.add(tp.Child("key"), "must be set unless exists is true (which tolerates every taint)")
		}
		switch t.Effect {
		case "", scheduler.NoSchedule, scheduler.NoExecute, scheduler.PreferNoSchedule:
		default:
			errs.add(tp.Child("effect"), "must be NoSchedule, PreferNoSchedule, NoExecute or empty (all), not %q", t.Effect)
		}
		if t.Seconds != nil {
			if *t.Seconds < 0 {
				errs.add(tp.Child("tolerationSeconds"), "must not be negative (0 evicts at once; leave it out to tolerate for ever)")
			}
			if t.Effect != scheduler.NoExecute {
				errs.add(tp.Child("tolerationSeconds"), "applies only to effect NoExecute (how long an instance stays on a node after the taint appears), not %q", cmp.Or(string(t.Effect), "any effect"))
			}
		}
	}
	if pl.Priority < -maxPriority || pl.Priority > maxPriority {
		errs.add(p.Child("priority"), "must be between -1000000000 and 1000000000")
	}
}

func (o *Service) validate(*Resource) FieldErrors {
	var errs FieldErrors
	s, p := &o.Spec, NewPath("spec")
	if len(s.Selector) == 0 {
		errs.add(p.Child("selector"), "must select instances by at least one label, e.g. {app: web} (an empty selector would match every instance of the namespace)")
	}
	validateLabels(s.Selector, p.Child("selector"), &errs)
	switch s.Type {
	case ServiceClusterIP, ServiceNodePort:
	default:
		errs.add(p.Child("type"), "must be ClusterIP or NodePort, not %q", s.Type)
	}
	if s.Headless && s.Type == ServiceNodePort {
		errs.add(p.Child("type"), "a headless service has no virtual IP to balance, so it cannot be NodePort: leave out headless or type")
	}
	validateServicePorts(s, p.Child("ports"), &errs)
	validateVirtualIPs(s, p.Child("virtualIPs"), &errs)
	switch a := s.SessionAffinity; a {
	case SessionAffinityNone, SessionAffinityClientIP:
		if a == SessionAffinityClientIP && s.Headless {
			errs.add(p.Child("sessionAffinity"), "a headless service is not balanced, so ClientIP affinity does not apply: use None")
		}
	default:
		errs.add(p.Child("sessionAffinity"), "must be None or ClientIP, not %q", a)
	}
	if t := s.SessionAffinityTimeoutSeconds; t != nil {
		switch {
		case s.SessionAffinity != SessionAffinityClientIP:
			errs.add(p.Child("sessionAffinityTimeoutSeconds"), "applies only to sessionAffinity ClientIP")
		case *t < 1 || *t > maxAffinityTimeout:
			errs.add(p.Child("sessionAffinityTimeoutSeconds"), "must be 1-%d (seconds), not %d", maxAffinityTimeout, *t)
		}
	}
	return errs
}

// validateServicePorts checks a service's ports: named when there are
// several, unique by port and protocol, node ports only on a NodePort
// service and in range.
func validateServicePorts(s *ServiceSpec, p Path, errs *FieldErrors) {
	if len(s.Ports) == 0 && !s.Headless {
		errs.add(p, "must list at least one port, e.g. [{port: 80, targetPort: 8080}] (only a headless service may have none)")
	}
	if len(s.Ports) > maxServicePorts {
		errs.add(p, "has %d ports: at most %d", len(s.Ports), maxServicePorts)
	}
	names := map[string]bool{}
	used := map[[2]any]int{}
	nodePorts := map[[2]any]int{}
	for i, port := range s.Ports {
		pp := p.Index(i)
		validatePortName(port.Name, pp.Child("name"), errs)
		if len(s.Ports) > 1 && port.Name == "" {
			errs.add(pp.Child("name"), "must be set when a service has more than one port")
		}
		if port.Name != "" && names[port.Name] {
			errs.add(pp.Child("name"), "%q is used by another port", port.Name)
		}
		names[port.Name] = true
		if !validPort(port.Port) {
			errs.add(pp.Child("port"), "must be 1-65535, not %d", port.Port)
		}
		if !validPort(port.TargetPort) {
			errs.add(pp.Child("targetPort"), "must be 1-65535, not %d", port.TargetPort)
		}
		validateProtocol(port.Protocol, pp.Child("protocol"), errs)
		key := [2]any{port.Port, port.Protocol}
		if j, dup := used[key]; dup {
			errs.add(pp.Child("port"), "%d/%s is listed twice (also ports[%d])", port.Port, port.Protocol, j)
		} else {
			used[key] = i
		}
		if port.NodePort == 0 {
			continue
		}
		switch {
		case s.Type != ServiceNodePort:
			errs.add(pp.Child("nodePort"), "applies only to a service of type NodePort: set spec.type: NodePort, or leave nodePort out")
		case port.NodePort < MinNodePort || port.NodePort > MaxNodePort:
			errs.add(pp.Child("nodePort"), "must be %d-%d, not %d (or leave it out to get a free one)", MinNodePort, MaxNodePort, port.NodePort)
		}
		nkey := [2]any{port.NodePort, port.Protocol}
		if j, dup := nodePorts[nkey]; dup {
			errs.add(pp.Child("nodePort"), "%d/%s is also the node port of ports[%d]", port.NodePort, port.Protocol, j)
		} else {
			nodePorts[nkey] = i
		}
	}
}

// validateVirtualIPs checks the form of a service's virtual IPs: none for
// a headless service, else at most an IPv6 then an IPv4 address of unicast
// kind. Whether they are in the service ranges and free is the server's
// check, at create.
func validateVirtualIPs(s *ServiceSpec, p Path, errs *FieldErrors) {
	if s.Headless && len(s.VirtualIPs) > 0 {
		errs.add(p, "must be empty for a headless service")
		return
	}
	if len(s.VirtualIPs) > 2 {
		errs.add(p, "has %d addresses: at most an IPv6 one, then an IPv4 one", len(s.VirtualIPs))
		return
	}
	validateAddressPair(s.VirtualIPs, p, true, errs)
}

// validateAddressPair checks up to two addresses: each a unicast IPv6 or
// IPv4 address in canonical form, IPv6 first, one per family.
func validateAddressPair(addrs []string, p Path, unicast bool, errs *FieldErrors) {
	var families []bool // is4, for each well-formed address
	for i, a := range addrs {
		ip, err := netip.ParseAddr(a)
		switch {
		case err != nil || ip.Zone() != "" || ip.Is4In6():
			errs.add(p.Index(i), "must be an IPv6 or IPv4 address such as fd00:1::10 or 10.71.255.10, not %q", a)
			continue
		case unicast && (ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast()):
			errs.add(p.Index(i), "%s is not a unicast address a service can have", a)
		case ip.String() != a:
			errs.add(p.Index(i), "write the address as %s, not %q", ip, a)
		}
		families = append(families, ip.Is4())
	}
	if len(families) == 2 {
		switch {
		case families[0] == families[1]:
			errs.add(p, "must hold at most one IPv6 and one IPv4 address")
		case families[0]:
			errs.add(p, "must list the IPv6 address first, then the IPv4 one")
		}
	}
}

func (o *Endpoints) validate(*Resource) FieldErrors {
	var errs FieldErrors
	pp := NewPath("ports")
	names := map[string]bool{}
	for i, port := range o.Ports {
		p := pp.Index(i)
		validatePortName(port.Name, p.Child("name"), &errs)
		if names[port.Name] {
			errs.add(p.Child("name"), "%q is used by another port", port.Name)
		}
		names[port.Name] = true
		if !validPort(port.Port) {
			errs.add(p.Child("port"), "must be 1-65535, not %d", port.Port)
		}
		validateProtocol(port.Protocol, p.Child("protocol"), &errs)
	}
	seen := map[string]bool{}
	for i, b := range o.Backends {
		p := NewPath("backends").Index(i)
		if msg := ValidateName(b.Instance); msg != "" {
			errs.add(p.Child("instance"), "%s", msg)
		} else if seen[b.Instance] {
			errs.add(p.Child("instance"), "%s is listed twice", b.Instance)
		}
		seen[b.Instance] = true
		if b.Node != "" {
			if msg := ValidateName(b.Node); msg != "" {
				errs.add(p.Child("node"), "%s", msg)
			}
		}
		if len(b.Addresses) > 2 {
			errs.add(p.Child("addresses"), "has %d addresses: at most an IPv6 one, then an IPv4 one", len(b.Addresses))
		}
		validateAddressPair(b.Addresses, p.Child("addresses"), false, &errs)
		if b.Ready && len(b.Addresses) == 0 {
			errs.add(p.Child("ready"), "a ready backend needs an address")
		}
	}
	return errs
}

func (o *NetworkPolicy) validate(*Resource) FieldErrors {
	var errs FieldErrors
	s, p := &o.Spec, NewPath("spec")
	validateLabels(s.Selector, p.Child("selector"), &errs)
	for i, t := range s.Types {
		if t != "Ingress" && t != "Egress" {
			errs.add(p.Child("types").Index(i), "must be Ingress or Egress, not %q", t)
		}
	}
	for _, dir := range []struct {
		name  string
		rules []PolicyRule
	}{{"ingress", s.Ingress}, {"egress", s.Egress}} {
		for i, r := range dir.rules {
			rp := p.Child(dir.name).Index(i)
			for j, peer := range r.Peers {
				pp := rp.Child("peers").Index(j)
				switch {
				case peer.CIDR != "" && (peer.Selector != nil || peer.Namespace != ""):
					errs.add(pp, "set cidr, or selector and namespace, not both")
				case peer.CIDR != "":
					if _, err := netip.ParsePrefix(peer.CIDR); err != nil {
						errs.add(pp.Child("cidr"), "must be an address prefix such as 10.0.0.0/8, not %q", peer.CIDR)
					}
				default:
					validateLabels(peer.Selector, pp.Child("selector"), &errs)
					if peer.Namespace != "" {
						if msg := ValidateName(peer.Namespace); msg != "" {
							errs.add(pp.Child("namespace"), "%s", msg)
						}
					}
				}
			}
			for j, port := range r.Ports {
				pp := rp.Child("ports").Index(j)
				if port.Port != 0 && !validPort(port.Port) {
					errs.add(pp.Child("port"), "must be 1-65535 (or 0 for every port)")
				}
				validateProtocol(port.Protocol, pp.Child("protocol"), &errs)
			}
		}
	}
	return errs
}

func (o *Secret) validate(*Resource) FieldErrors {
	var errs FieldErrors
	size := 0
	for _, k := range sortedKeys(o.Data) {
		if !secretKey.MatchString(k) || len(k) > 253 {
			errs.add(NewPath("data").Key(k), "keys must be at most 253 letters, digits, '-', '_' and '.'")
		}
		size += len(k) + len(o.Data[k])
	}
	if size > maxSecretBytes {
		errs.add(NewPath("data"), "must be at most 1 MiB in all, not %d bytes", size)
	}
	if len(o.StringData) > 0 {
		errs.add(NewPath("stringData"), "is merged into data before validation; it must be empty here")
	}
	return errs
}

func (o *ServiceAccount) validate(*Resource) FieldErrors { return nil }
