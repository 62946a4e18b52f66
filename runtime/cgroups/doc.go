// Package cgroups places a container's processes in cgroups and applies the
// OCI linux.resources to them. It is the OCI runtime's only cgroup code.
//
// It works on pure cgroup v1, pure cgroup v2 and hybrid hosts (v1 controllers
// plus a cgroup2 mount, usually /sys/fs/cgroup/unified). The layout is read
// from /proc/self/mountinfo once per process. Every resource goes to the
// hierarchy that owns its controller; on hybrid hosts the container is also
// placed in a cgroup2 directory so that cgroup eBPF programs (connect4,
// cgroup_skb, device) can be attached to it.
//
// The runtime has no per-container helper process, so nothing here keeps
// state in memory that matters after exit: Paths records where the cgroups
// are and Load rebuilds a Manager from it in a later process. Device rules on
// cgroup v2 are eBPF programs attached with BPF_PROG_ATTACH (not bpf_link),
// so they stay attached after the runtime exits and vanish with the cgroup.
//
// Not supported, by design: linux.resources.rdma and network (ignored),
// memory.kernel and kernelTCP (ignored, removed from modern kernels),
// swappiness and disableOOMKiller on v2 (no such knob; ignored).
package cgroups
