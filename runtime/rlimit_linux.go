package runtime

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

var rlimitByName = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK": unix.RLIMIT_STACK,
}

// setRlimits applies the spec's limits to pid (0 = the caller). Raising a hard
// limit needs CAP_SYS_RESOURCE and may still be refused (some hosts cap it
// even for root); the error says which limit and what the host allows.
func setRlimits(pid int, limits []specs.POSIXRlimit) error {
	for _, r := range limits {
		res := rlimitByName[r.Type]
		want := unix.Rlimit{Cur: r.Soft, Max: r.Hard}
		if err := unix.Prlimit(pid, res, &want, nil); err != nil {
			var have unix.Rlimit
			_ = unix.Prlimit(pid, res, nil, &have)
			return fmt.Errorf("process.rlimits: set %s to soft %d, hard %d: %w (this host allows at most hard %d: lower the limit in the spec)",
				r.Type, r.Soft, r.Hard, err, have.Max)
		}
	}
	return nil
}
