// Package sandbox is the "sandbox" isolation tier: it runs an OCI bundle
// under gVisor by driving runsc's OCI command line (create, start, state,
// kill, wait, delete).
//
// Why: a plain container shares the host kernel, so one kernel bug is a way
// out. gVisor puts a user-space kernel (the Sentry) between the workload and
// the host: the workload's system calls are intercepted and served by the
// Sentry, which itself uses a small, seccomp-filtered set of host calls.
// That is much stronger isolation than namespaces alone, paid for with
// overhead on every system call, file access and packet. The "vm" tier
// (a micro-VM per workload) is future work.
//
// # Host choices (Config defaults, found by experiment with Debian's runsc
// 0.0~20221219 on kernel 6.18 without /dev/kvm)
//
//   - Platform "ptrace": this runsc knows only ptrace and kvm (systrap came
//     later), and kvm needs /dev/kvm.
//   - Network "none": the sandbox keeps its own netstack with loopback only.
//     runsc's default, "sandbox", fails at start with "cannot run with
//     network enabled in root network namespace" on kernels >= ~6.7, which
//     expose /proc/sys/net/core/rmem_default in every network namespace and
//     so defeat runsc's root-namespace check (google/gvisor#10704, fixed in
//     newer runsc). "host" would share the host's network and is never a
//     default.
//   - --oci-seccomp: runsc ignores the spec's seccomp profile unless told;
//     with it the profile is applied inside the sandbox, on top of gVisor's
//     own host filter. Config.IgnoreSeccomp turns it off.
//   - cgroups: runsc puts the sandbox in cgroups itself (v1 controllers on
//     hybrid hosts, at /<id> when linux.cgroupsPath is empty) and removes
//     them on delete, but not after a failed create; Create removes those
//     empty leftovers itself. Config.IgnoreCgroups passes --ignore-cgroups.
//
// # Spec handling
//
// The user's bundle is handed to runsc unchanged: spec.Default()
// runs as is, so no adjusted copy is written. What this runsc does with it:
// the seccomp profile is applied only with --oci-seccomp (see above); the
// "cgroup" mount at /sys/fs/cgroup is skipped (an empty directory remains)
// and the "mqueue" mount is skipped silently; mount options gVisor does not
// know (nosuid, nodev, strictatime, ...) are ignored with a warning; masked
// paths such as /proc/kcore do not exist in gVisor's /proc at all;
// capabilities, rlimits, hostname and no_new_privs are honoured; gVisor
// mounts a tmpfs over an empty /tmp.
//
// # Exit status
//
// `runsc wait` can only report a status while the sandbox runs: once the
// root container's process exits the sandbox exits too, and a later wait
// fails with "exit status is unavailable" (and a wait before start fails
// with "not started"). So Create runs `runsc create` under a small shim,
// this binary re-executed (see IsShim and ShimMain), which is a child
// subreaper: the sandbox process is reparented to it, and it records the
// sandbox's exit status, which runsc makes the container's (128+n for
// signal n, the same encoding `runsc wait` prints), in the state directory.
// Wait reads that record, so it also works from another process; the
// binary's main must call IsShim/ShimMain first, like runtime.IsInit. If the
// shim is gone without a record, Wait falls back to `runsc wait`.
package sandbox
