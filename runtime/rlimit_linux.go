package runtime

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/runtime/initstage"
)

// The container's limits take effect in two steps. The parent raises hard
// limits where the spec's are higher (that needs CAP_SYS_RESOURCE, which the
// init gives up with the rest of its capabilities), and the init sets every
// limit exactly right before execve, which only ever lowers one. Set any
// earlier, the limits would constrain the runtime's own setup: a Go init
// under the RLIMIT_AS of the conformance suite (1 GiB) dies allocating its
// heap ("runtime: cannot allocate memory").

// raiseHardLimits raises pid's hard limits to the spec's where they are
// lower. Some hosts cap them even for root; the error then says which limit
// and what the host allows.
func raiseHardLimits(pid int, limits []specs.POSIXRlimit) error {
	for _, r := range limits {
		res := initstage.RlimitByName[r.Type]
		var have unix.Rlimit
		if err := unix.Prlimit(pid, res, nil, &have); err != nil {
			return fmt.Errorf("process.rlimits: read %s: %w", r.Type, err)
		}
		if r.Hard <= have.Max {
			continue
		}
		if err := unix.Prlimit(pid, res, &unix.Rlimit{Cur: have.Cur, Max: r.Hard}, nil); err != nil {
			return fmt.Errorf("process.rlimits: set %s to soft %d, hard %d: %w (this host allows at most hard %d: lower the limit in the spec)",
				r.Type, r.Soft, r.Hard, err, have.Max)
		}
	}
	return nil
}
