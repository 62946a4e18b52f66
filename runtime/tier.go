package runtime

import (
	"context"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Tier is the container lifecycle every isolation tier offers, so the agent
// drives a plain container, a gVisor sandbox or (later) a micro-VM the same
// way. *Runtime is the "container" tier.
type Tier interface {
	// Name is the tier's name in a workload spec: container, sandbox or vm.
	Name() string
	Create(ctx context.Context, id string, opts CreateOptions) error
	Start(ctx context.Context, id string) error
	State(id string) (specs.State, error)
	Kill(id string, sig syscall.Signal, all bool) error
	// Wait blocks until the container's process exits.
	Wait(ctx context.Context, id string) (ExitStatus, error)
	Delete(ctx context.Context, id string, force bool) error
}

// Name returns "container": the runtime itself is the default tier.
func (r *Runtime) Name() string { return "container" }

var _ Tier = (*Runtime)(nil)
