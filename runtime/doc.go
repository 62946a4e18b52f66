// Package runtime is Nexus's OCI container runtime: it turns a runtime-spec
// bundle (config.json + root filesystem) into an isolated process.
//
// The model follows runc's, without its C pre-start stage and without a
// helper process per container:
//
//   - create validates the whole spec before touching anything, makes the
//     cgroup, and starts an init stage (the nexus-init program, executed
//     through a read-only, detached view of it so a container can never
//     overwrite it) inside the new namespaces and the cgroup, which it
//     enters without a write to cgroup.procs (cgroups.Join). The init builds
//     the root filesystem, drops privileges and then waits for start on a
//     unix socket in the container's state directory and on its sync
//     socket. create returns as soon as the init reports ready.
//   - start in the process that created the container writes to the sync
//     socket; any other process connects to the state directory's socket.
//     The init runs the startContainer hooks, loads seccomp and execs the
//     user's process, which keeps pid 1.
//   - state, kill and delete work from the state directory alone, so any
//     process (the CLI, or an agent that restarted) can manage a container it
//     did not create.
//
// Everything the init needs is sent to it over a socketpair as one message
// (initstage.Encode), so the init never parses config.json again.
package runtime
