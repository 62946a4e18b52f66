package types

// The defaults below are the documented ones; changing one changes what
// every stored object that left the field out means.
const (
	DefaultReplicas               = 1
	DefaultCompletions            = 1
	DefaultParallelism            = 1
	DefaultBackoffLimit           = 6
	DefaultTerminationGracePeriod = 30
	DefaultProbePeriodSeconds     = 10
	DefaultProbeTimeoutSeconds    = 1
	DefaultProbeFailureThreshold  = 3
	DefaultProbeSuccessThreshold  = 1
	DefaultMaxSurgePercent        = 25
	DefaultMaxUnavailablePercent  = 25
	DefaultSecretType             = "Opaque"
	DefaultServiceSessionAffinity = SessionAffinityNone
	DefaultNamespace              = "default"
	namespacePhaseActive          = "Active"
	defaultHTTPProbePath          = "/"
)

func ptr[T any](v T) *T { return &v }

func (o *Namespace) setDefaults() {
	if o.Status.Phase == "" {
		o.Status.Phase = namespacePhaseActive
	}
}

func (o *Node) setDefaults() {}

func (o *Server) setDefaults() {}

func (o *Workload) setDefaults() {
	s := &o.Spec
	if s.Kind == "" {
		s.Kind = KindService
	}
	switch s.Kind {
	case KindService:
		if s.Replicas == nil {
			s.Replicas = ptr[int32](DefaultReplicas)
		}
		if s.Strategy.MaxSurge.IsZero() && s.Strategy.MaxUnavailable.IsZero() {
			s.Strategy = UpdateStrategy{MaxSurge: Percent(DefaultMaxSurgePercent), MaxUnavailable: Percent(DefaultMaxUnavailablePercent)}
		}
	case KindJob:
		if s.Completions == nil {
			s.Completions = ptr[int32](DefaultCompletions)
		}
		if s.Parallelism == nil {
			s.Parallelism = ptr[int32](DefaultParallelism)
		}
		if s.BackoffLimit == nil {
			s.BackoffLimit = ptr[int32](DefaultBackoffLimit)
		}
	}
	s.Template.setDefaults(s.Kind)
}

func (t *InstanceTemplate) setDefaults(kind WorkloadKind) {
	if t.RestartPolicy == "" {
		t.RestartPolicy = RestartAlways
		if kind == KindJob {
			t.RestartPolicy = RestartOnFailure
		}
	}
	if t.Isolation == "" {
		t.Isolation = IsolationContainer
	}
	if t.TerminationGracePeriodSeconds == nil {
		t.TerminationGracePeriodSeconds = ptr[int64](DefaultTerminationGracePeriod)
	}
	for i := range t.Ports {
		if t.Ports[i].Protocol == "" {
			t.Ports[i].Protocol = TCP
		}
	}
	for _, p := range []*Probe{t.Liveness, t.Readiness} {
		if p == nil {
			continue
		}
		if p.PeriodSeconds == 0 {
			p.PeriodSeconds = DefaultProbePeriodSeconds
		}
		if p.TimeoutSeconds == 0 {
			p.TimeoutSeconds = DefaultProbeTimeoutSeconds
		}
		if p.FailureThreshold == 0 {
			p.FailureThreshold = DefaultProbeFailureThreshold
		}
		if p.SuccessThreshold == 0 {
			p.SuccessThreshold = DefaultProbeSuccessThreshold
		}
		if p.HTTP != nil && p.HTTP.Path == "" {
			p.HTTP.Path = defaultHTTPProbePath
		}
	}
}

func (o *Instance) setDefaults() {
	o.Spec.Template.setDefaults("")
	if o.Status.Phase == "" {
		o.Status.Phase = PhasePending
		if o.Spec.NodeName != "" {
			o.Status.Phase = PhaseScheduled
		}
	}
}

func (o *Service) setDefaults() {
	for i := range o.Spec.Ports {
		p := &o.Spec.Ports[i]
		if p.Protocol == "" {
			p.Protocol = TCP
		}
		if p.TargetPort == 0 {
			p.TargetPort = p.Port
		}
	}
	if o.Spec.Type == "" {
		o.Spec.Type = ServiceClusterIP
	}
	if o.Spec.SessionAffinity == "" {
		o.Spec.SessionAffinity = DefaultServiceSessionAffinity
	}
	if o.Spec.SessionAffinity == SessionAffinityClientIP && o.Spec.SessionAffinityTimeoutSeconds == nil {
		o.Spec.SessionAffinityTimeoutSeconds = ptr[int32](DefaultSessionAffinityTimeoutSeconds)
	}
}

func (o *Endpoints) setDefaults() {
	for i := range o.Ports {
		if o.Ports[i].Protocol == "" {
			o.Ports[i].Protocol = TCP
		}
	}
}

func (o *NetworkPolicy) setDefaults() {
	for _, rules := range [][]PolicyRule{o.Spec.Ingress, o.Spec.Egress} {
		for i := range rules {
			for j := range rules[i].Ports {
				if rules[i].Ports[j].Protocol == "" {
					rules[i].Ports[j].Protocol = TCP
				}
			}
		}
	}
	if len(o.Spec.Types) == 0 {
		o.Spec.Types = []string{"Ingress"}
		if len(o.Spec.Egress) > 0 {
			o.Spec.Types = append(o.Spec.Types, "Egress")
		}
	}
}

// setDefaults merges StringData into Data, as Kubernetes does: StringData
// is never stored.
func (o *Secret) setDefaults() {
	if o.Type == "" {
		o.Type = DefaultSecretType
	}
	if len(o.StringData) > 0 && o.Data == nil {
		o.Data = make(map[string][]byte, len(o.StringData))
	}
	for k, v := range o.StringData {
		o.Data[k] = []byte(v)
	}
	o.StringData = nil
}

func (o *ServiceAccount) setDefaults()     {}
func (o *Role) setDefaults()               {}
func (o *ClusterRole) setDefaults()        {}
func (o *RoleBinding) setDefaults()        {}
func (o *ClusterRoleBinding) setDefaults() {}

// Default fills in every field the user may leave out, in place.
func Default(o Object) { o.setDefaults() }
