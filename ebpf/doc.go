// Package ebpf is the eBPF service data path: an lb.DataPath that balances
// service traffic when a socket connects, instead of translating every
// packet. cgroup sock_addr programs (bpf/lb.c) on the cgroup2 root rewrite
// a frontend address to a ready backend in connect(2) and, for UDP, in
// sendmsg(2); recvmsg(2) and getpeername(2) show the frontend again, so a
// DNS resolver that checks where its answer came from accepts it. Once a
// socket is connected it talks to its backend directly: no NAT, no
// conntrack entry, no proxy hop, and changing the backends never disturbs
// established connections.
//
// Backends are picked at random (bpf_get_prandom_u32), or, for a frontend
// with session affinity, the one the client's network namespace was given
// last while the affinity lasts. A frontend without backends refuses at
// once with ECONNREFUSED.
//
// The programs are held by bpf_links that are not pinned: they are
// detached when the DataPath is closed or its process exits. Only sockets
// of network namespaces the owner allowed (AllowNetns) are rewritten, so
// several agents on one machine leave each other's traffic alone.
//
// The C source is compiled with bpf2go and the objects are committed;
// `make bpf` regenerates them (it needs clang, llvm and libbpf-dev).
package ebpf
