package types

import (
	"time"

	"nexus.dev/nexus/scheduler"
)

// Workload is something the user wants run: a long-running service with a
// number of replicas, a job that runs to completion, or a daemon on every
// eligible node. Controllers turn it into Instances.
type Workload struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       WorkloadSpec   `json:"spec"`
	Status     WorkloadStatus `json:"status,omitzero"`
}

// WorkloadKind is what a workload is: service, job or daemon.
type WorkloadKind string

const (
	// KindService keeps Replicas ready instances running.
	KindService WorkloadKind = "service"
	// KindJob runs instances until Completions of them succeed.
	KindJob WorkloadKind = "job"
	// KindDaemon runs one instance on every eligible node.
	KindDaemon WorkloadKind = "daemon"
)

// WorkloadSpec is what the user asks for.
type WorkloadSpec struct {
	Kind WorkloadKind `json:"kind"`
	// Replicas is how many ready instances a service keeps (default 1).
	Replicas *int32 `json:"replicas,omitempty"`
	// Completions is how many instances of a job must succeed (default 1),
	// Parallelism how many run at once (default 1), BackoffLimit how many
	// failures the job tolerates before it is failed (default 6).
	Completions  *int32 `json:"completions,omitempty"`
	Parallelism  *int32 `json:"parallelism,omitempty"`
	BackoffLimit *int32 `json:"backoffLimit,omitempty"`
	// Template is what each instance runs.
	Template  InstanceTemplate `json:"template"`
	Placement Placement        `json:"placement,omitzero"`
	Strategy  UpdateStrategy   `json:"strategy,omitzero"`
	// StopOnDisconnect makes an agent that lost every server for longer
	// than its lease stop this workload's instances, so a healed partition
	// never runs more copies than asked. Unset, it follows the replicas:
	// true for a service with more than one (StopsOnDisconnect), so a
	// scale from one to three turns it on.
	StopOnDisconnect *bool `json:"stopOnDisconnect,omitempty"`
}

// InstanceTemplate is the container an instance runs.
type InstanceTemplate struct {
	// Labels are set on every instance; services select instances by them.
	Labels map[string]string `json:"labels,omitempty"`
	// Image is an image reference ("nginx:1.27", "nexus.local/hello").
	Image string `json:"image"`
	// Command replaces the image's entrypoint, Args its command.
	Command    []string  `json:"command,omitempty"`
	Args       []string  `json:"args,omitempty"`
	WorkingDir string    `json:"workingDir,omitempty"`
	Env        []EnvVar  `json:"env,omitempty"`
	Resources  Resources `json:"resources,omitzero"`
	Ports      []Port    `json:"ports,omitempty"`
	// Liveness restarts an instance whose check fails; Readiness takes it
	// out of its services while its check fails.
	Liveness      *Probe        `json:"liveness,omitempty"`
	Readiness     *Probe        `json:"readiness,omitempty"`
	RestartPolicy RestartPolicy `json:"restartPolicy,omitempty"`
	// Isolation is the tier: container (default), sandbox (gVisor) or vm.
	Isolation Isolation `json:"isolation,omitempty"`
	// TerminationGracePeriodSeconds is how long a stopping instance has
	// between SIGTERM and SIGKILL (default 30).
	TerminationGracePeriodSeconds *int64 `json:"terminationGracePeriodSeconds,omitempty"`
}

// EnvVar is one environment variable: a value, or a key of a Secret.
type EnvVar struct {
	Name      string     `json:"name"`
	Value     string     `json:"value,omitempty"`
	ValueFrom *EnvSource `json:"valueFrom,omitempty"`
}

// EnvSource takes an environment variable's value from elsewhere.
type EnvSource struct {
	SecretKeyRef *SecretKeySelector `json:"secretKeyRef,omitempty"`
}

// SecretKeySelector names one key of a Secret in the same namespace.
type SecretKeySelector struct {
	Name string `json:"name"`
	Key  string `json:"key"`
	// Optional lets the instance start when the Secret or key is missing.
	Optional bool `json:"optional,omitempty"`
}

// Resources are what an instance asks for (requests, used for placement)
// and may not exceed (limits, enforced by its cgroup).
type Resources struct {
	Requests ResourceList `json:"requests,omitzero"`
	Limits   ResourceList `json:"limits,omitzero"`
}

// ResourceList is an amount of CPU and memory.
type ResourceList struct {
	CPU    MilliCPU `json:"cpu,omitempty"`
	Memory Bytes    `json:"memory,omitempty"`
}

// Protocol is TCP or UDP.
type Protocol string

const (
	TCP Protocol = "TCP"
	UDP Protocol = "UDP"
)

// OrTCP is p, or TCP, every port's default, when p is empty (an object
// not defaulted yet).
func (p Protocol) OrTCP() Protocol {
	if p == "" {
		return TCP
	}
	return p
}

// Port is a port the container listens on, optionally published on the
// node (HostPort).
type Port struct {
	Name     string   `json:"name,omitempty"`
	Port     int32    `json:"port"`
	HostPort int32    `json:"hostPort,omitempty"`
	Protocol Protocol `json:"protocol,omitempty"`
}

// Probe is a health check: exactly one of HTTP, TCP and Exec.
type Probe struct {
	HTTP *HTTPProbe `json:"http,omitempty"`
	TCP  *TCPProbe  `json:"tcp,omitempty"`
	Exec *ExecProbe `json:"exec,omitempty"`
	// InitialDelaySeconds before the first check; PeriodSeconds between
	// checks (default 10); TimeoutSeconds for one check (default 1);
	// FailureThreshold consecutive failures make it fail (default 3),
	// SuccessThreshold consecutive successes make it pass (default 1).
	InitialDelaySeconds int32 `json:"initialDelaySeconds,omitempty"`
	PeriodSeconds       int32 `json:"periodSeconds,omitempty"`
	TimeoutSeconds      int32 `json:"timeoutSeconds,omitempty"`
	FailureThreshold    int32 `json:"failureThreshold,omitempty"`
	SuccessThreshold    int32 `json:"successThreshold,omitempty"`
}

// HTTPProbe passes on a 2xx or 3xx answer to GET Path on Port.
type HTTPProbe struct {
	Path string `json:"path,omitempty"`
	Port int32  `json:"port"`
}

// TCPProbe passes when a connection to Port is accepted.
type TCPProbe struct {
	Port int32 `json:"port"`
}

// ExecProbe passes when Command exits 0 inside the container.
type ExecProbe struct {
	Command []string `json:"command"`
}

// RestartPolicy says when an exited instance is started again.
type RestartPolicy string

const (
	RestartAlways    RestartPolicy = "always"
	RestartOnFailure RestartPolicy = "on-failure"
	RestartNever     RestartPolicy = "never"
)

// Isolation is an isolation tier.
type Isolation string

const (
	IsolationContainer Isolation = "container"
	IsolationSandbox   Isolation = "sandbox"
	IsolationVM        Isolation = "vm"
)

// Placement says where instances may and should go. Constraints and
// affinities are written in the scheduler's constraint syntax ("zone=eu",
// "gpu in (a100,h100)", "kernel version >=6.1", "ssd exists").
type Placement struct {
	Constraints  []string                 `json:"constraints,omitempty"`
	Affinities   []Affinity               `json:"affinities,omitempty"`
	AntiAffinity []scheduler.AntiAffinity `json:"antiAffinity,omitempty"`
	Spread       *scheduler.Spread        `json:"spread,omitempty"`
	Tolerations  []scheduler.Toleration   `json:"tolerations,omitempty"`
	// Priority orders instances when the cluster is full: a higher one may
	// preempt strictly lower ones.
	Priority int32 `json:"priority,omitempty"`
}

// Affinity is a soft preference (positive weight) or aversion (negative)
// for nodes matching a constraint.
type Affinity struct {
	Constraint string `json:"constraint"`
	Weight     int    `json:"weight"`
}

// UpdateStrategy says how a changed template rolls out.
type UpdateStrategy struct {
	// MaxSurge is how many instances above replicas may exist during a
	// rollout, MaxUnavailable how many below replicas may be unready (as
	// counts or percentages of replicas; defaults 25% each, as Kubernetes).
	MaxSurge       IntOrPercent `json:"maxSurge,omitzero"`
	MaxUnavailable IntOrPercent `json:"maxUnavailable,omitzero"`
}

// WorkloadStatus is what the controllers observed.
type WorkloadStatus struct {
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Replicas counts instances of any revision; Ready the ready ones;
	// Updated those of the current template.
	Replicas        int32 `json:"replicas,omitempty"`
	ReadyReplicas   int32 `json:"readyReplicas,omitempty"`
	UpdatedReplicas int32 `json:"updatedReplicas,omitempty"`
	// Succeeded and Failed count finished instances of a job.
	Succeeded int32 `json:"succeeded,omitempty"`
	Failed    int32 `json:"failed,omitempty"`
	// DesiredReplicas is how many instances the workload should have now:
	// replicas for a service, the eligible nodes for a daemon, the
	// instances a job runs at once.
	DesiredReplicas int32 `json:"desiredReplicas,omitempty"`
	// Revision is the hash of the current template.
	Revision       string      `json:"revision,omitempty"`
	Conditions     []Condition `json:"conditions,omitempty"`
	CompletionTime time.Time   `json:"completionTime,omitzero"`
	// History holds the last templates rolled out, oldest first, each with
	// its revision number; the current template is the last one. `nexus
	// rollout undo` copies one back into spec.template.
	History []TemplateRevision `json:"history,omitempty"`
}

// TemplateRevision is one template a workload has rolled out. Returning to
// an earlier template (an undo) gives it the next number, as Kubernetes
// does, so numbers only grow.
type TemplateRevision struct {
	Revision int64  `json:"revision"`
	Hash     string `json:"hash"`
	// ChangeCause is the workload's nexus.dev/change-cause annotation when
	// the template was first rolled out.
	ChangeCause string           `json:"changeCause,omitempty"`
	CreatedAt   time.Time        `json:"createdAt,omitzero"`
	Template    InstanceTemplate `json:"template"`
}

// Instance is one scheduled copy of a workload's template.
type Instance struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       InstanceSpec   `json:"spec"`
	Status     InstanceStatus `json:"status,omitzero"`
}

// InstanceSpec is written by the workload controller and, for NodeName, by
// the scheduler when it binds the instance.
type InstanceSpec struct {
	// Workload is the name of the workload in the same namespace.
	Workload string `json:"workload,omitempty"`
	// NodeName is the node the instance is bound to; empty until scheduled.
	NodeName string `json:"nodeName,omitempty"`
	// Revision is the hash of the template the instance was made from.
	Revision  string           `json:"revision,omitempty"`
	Template  InstanceTemplate `json:"template"`
	Placement Placement        `json:"placement,omitzero"`
	// StopOnDisconnect: see WorkloadSpec; the workload controller keeps it
	// equal to its workload's StopsOnDisconnect.
	StopOnDisconnect bool `json:"stopOnDisconnect,omitempty"`
}

// InstancePhase is where an instance is in its life.
type InstancePhase string

const (
	PhasePending   InstancePhase = "Pending"   // not yet bound to a node
	PhaseScheduled InstancePhase = "Scheduled" // bound, the agent has not started on it
	PhasePreparing InstancePhase = "Preparing" // pulling and unpacking the image
	PhaseStarting  InstancePhase = "Starting"
	PhaseRunning   InstancePhase = "Running"
	PhaseSucceeded InstancePhase = "Succeeded"
	PhaseFailed    InstancePhase = "Failed"
	PhaseStopped   InstancePhase = "Stopped" // stopped on purpose (deleted, drained, fenced)
)

// InstanceStatus is what the agent running the instance reports.
type InstanceStatus struct {
	ObservedGeneration int64         `json:"observedGeneration,omitempty"`
	Phase              InstancePhase `json:"phase,omitempty"`
	Message            string        `json:"message,omitempty"`
	Ready              bool          `json:"ready,omitempty"`
	// Addresses are the instance's own addresses (IPv6 first).
	Addresses []string `json:"addresses,omitempty"`
	Restarts  int32    `json:"restarts,omitempty"`
	// StartedAt is when the agent's runtime started the process, at full
	// precision (not truncated to seconds as other times are).
	StartedAt time.Time `json:"startedAt,omitzero"`
	LastExit  *ExitInfo `json:"lastExit,omitempty"`
	// Progress is a short human description of long work (image pull).
	Progress   string      `json:"progress,omitempty"`
	Conditions []Condition `json:"conditions,omitempty"`
	// Events are what happened to the instance on its node, oldest first
	// (at most MaxInstanceEvents; a repeat of the latest counts up).
	Events []InstanceEvent `json:"events,omitempty"`
	// Resources is what the instance's container uses, from its cgroup;
	// absent until the agent has measured it.
	Resources *InstanceUsage `json:"resources,omitempty"`
}

// InstanceUsage is what an instance's container uses, as its agent
// measured it from the container's cgroup. The agent rewrites it only when
// a number changed noticeably (see docs/api.md), so an old SampledAt means
// steady use, not a stale report; the Node's heartbeat says whether the
// agent is alive.
type InstanceUsage struct {
	// CPUMillicores is the CPU used, in thousandths of a core, averaged
	// over the agent's sampling interval.
	CPUMillicores int64 `json:"cpuMillicores"`
	// MemoryBytes is the working set: memory in use minus the page cache
	// the kernel would reclaim first (what an OOM kill is decided on, as
	// Kubernetes reports it).
	MemoryBytes int64 `json:"memoryBytes"`
	// MemoryLimitBytes is the container's memory limit, 0 without one.
	MemoryLimitBytes int64 `json:"memoryLimitBytes,omitempty"`
	// OOMKills counts the processes the kernel's OOM killer killed in the
	// instance's containers since the instance was created, across
	// restarts.
	OOMKills int64 `json:"oomKills,omitempty"`
	// Pids is how many processes and threads the container has.
	Pids int64 `json:"pids,omitempty"`
	// SampledAt is when these numbers were measured.
	SampledAt time.Time `json:"sampledAt"`
}

// InstanceEvent is one thing that happened to an instance, as its agent
// saw it: nexus describe shows them.
type InstanceEvent struct {
	// Type is EventNormal or EventWarning.
	Type string `json:"type"`
	// Reason is one word a program can match (Pulled, Started, BackOff).
	Reason  string `json:"reason"`
	Message string `json:"message,omitempty"`
	// Count is how many times it happened in a row, FirstTime when it
	// first did and LastTime when it last did.
	Count     int32     `json:"count,omitempty"`
	FirstTime time.Time `json:"firstTime,omitzero"`
	LastTime  time.Time `json:"lastTime"`
}

// Instance event types.
const (
	EventNormal  = "Normal"
	EventWarning = "Warning"
)

// MaxInstanceEvents bounds an instance's event history.
const MaxInstanceEvents = 30

// MaxEventMessage bounds one event's message, in bytes.
const MaxEventMessage = 1024

// ExitInfo is how the last run of an instance's container ended.
type ExitInfo struct {
	Code       int32     `json:"code"`
	Signal     string    `json:"signal,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	OOMKilled  bool      `json:"oomKilled,omitempty"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
}

// StopsOnDisconnect is what a workload's spec.stopOnDisconnect means: as
// set, or, unset, true for a service with more than one replica (one
// whose other copies keep serving while a cut-off node's are stopped).
func (s *WorkloadSpec) StopsOnDisconnect() bool {
	if s.StopOnDisconnect != nil {
		return *s.StopOnDisconnect
	}
	return s.Kind == KindService && s.Replicas != nil && *s.Replicas > 1
}
