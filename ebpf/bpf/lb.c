// Connect-time service load balancing: cgroup sock_addr programs that
// rewrite a service frontend (virtual IP or node port) to a ready backend
// when a socket connects or sends, and translate the backend back to the
// frontend where the application reads a peer address (recvmsg source,
// getpeername). Nothing touches packets: once a socket is connected it
// talks to the backend directly.
//
// Addresses are kept as 16 bytes in network byte order, IPv4 as
// v4-mapped IPv6 (::ffff:a.b.c.d), so one set of maps serves AF_INET and
// AF_INET6 sockets, and an AF_INET6 socket that connects to a v4-mapped
// frontend is balanced as well. Ports are in network byte order.
//
// Regenerate the Go bindings and objects with `make bpf`.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ECONNREFUSED 111

// The connect and sendmsg programs return 1 to let the call go on
// (rewritten or not) and 0 to fail it with the error set by
// bpf_set_retval. The recvmsg and getpeername programs must return 1.
#define SYSCALL_GO_ON 1
#define SYSCALL_FAIL 0

struct backend {
	__u32 addr[4];
	__u16 port;
	__u16 pad;
};

struct frontend_key {
	__u32 addr[4];
	__u16 port;
	__u8 proto; // IPPROTO_TCP or IPPROTO_UDP
	__u8 pad;
};

struct frontend {
	__u32 id; // keys the frontend's slots, members and affinities
	__u32 count; // backends in slots 0 .. count-1; 0 refuses
	__u64 affinity_ns; // session affinity timeout, 0 for none
};

struct slot_key {
	__u32 id;
	__u32 slot;
};

struct member_key {
	__u32 id;
	struct backend backend;
};

struct affinity_key {
	__u64 netns; // the client's network namespace cookie
	__u32 id;
	__u32 pad;
};

struct affinity {
	struct backend backend;
	__u32 pad;
	__u64 last_ns; // bpf_ktime_get_ns of the client's last connection
};

struct origin_key {
	__u64 cookie; // socket cookie
	struct backend backend;
	__u32 pad;
};

struct origin {
	struct backend frontend;
	__u32 id;
};

// Network namespaces whose sockets are balanced: the agent's own and
// its containers'. Other agents on the same machine have their own maps.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} allowed_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct frontend_key);
	__type(value, struct frontend);
} frontends SEC(".maps");

// A frontend's backends, dense in slots 0 .. count-1 so that one random
// number picks one with a single lookup.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct slot_key);
	__type(value, struct backend);
} slots SEC(".maps");

// Whether a backend still belongs to a frontend, for affinities.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct member_key);
	__type(value, __u8);
} members SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct affinity_key);
	__type(value, struct affinity);
} affinities SEC(".maps");

// The frontend a socket meant when it was sent to a backend, for the
// reverse translation of recvmsg and getpeername.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct origin_key);
	__type(value, struct origin);
} origins SEC(".maps");

enum verdict { NOT_OURS, REWRITE, REFUSE };

static __always_inline int allowed(__u64 netns)
{
	return bpf_map_lookup_elem(&allowed_netns, &netns) != NULL;
}

// pick chooses fk's backend for a client in netns: the one it was given
// last while its affinity lasts and the backend is still there, a random
// one otherwise.
static __always_inline enum verdict pick(__u64 netns, const struct frontend_key *fk,
					 struct backend *be, __u32 *id)
{
	struct frontend *fe = bpf_map_lookup_elem(&frontends, fk);
	if (!fe)
		return NOT_OURS;
	*id = fe->id;
	if (fe->count == 0)
		return REFUSE;

	struct affinity_key ak = {};
	__u64 now = 0;
	if (fe->affinity_ns) {
		ak.netns = netns;
		ak.id = fe->id;
		now = bpf_ktime_get_ns();
		struct affinity *a = bpf_map_lookup_elem(&affinities, &ak);
		if (a && now - a->last_ns < fe->affinity_ns) {
			struct member_key mk = {};
			mk.id = fe->id;
			mk.backend = a->backend;
			if (bpf_map_lookup_elem(&members, &mk)) {
				*be = a->backend;
				a->last_ns = now;
				return REWRITE;
			}
		}
	}

	struct slot_key sk = {};
	sk.id = fe->id;
	sk.slot = bpf_get_prandom_u32() % fe->count;
	struct backend *b = bpf_map_lookup_elem(&slots, &sk);
	if (!b)
		return REFUSE; // only while a Sync shrinks the frontend
	*be = *b;
	if (fe->affinity_ns) {
		struct affinity a = {};
		a.backend = *b;
		a.last_ns = now;
		bpf_map_update_elem(&affinities, &ak, &a, BPF_ANY);
	}
	return REWRITE;
}

// remember records, for the socket, which frontend the backend stands for.
static __always_inline void remember(struct bpf_sock_addr *ctx, const struct frontend_key *fk,
				     const struct backend *be, __u32 id)
{
	struct origin_key ok = {};
	ok.cookie = bpf_get_socket_cookie(ctx);
	ok.backend = *be;
	struct origin o = {};
	__builtin_memcpy(o.frontend.addr, fk->addr, sizeof(o.frontend.addr));
	o.frontend.port = fk->port;
	o.id = id;
	bpf_map_update_elem(&origins, &ok, &o, BPF_ANY);
}

static __always_inline void key4(struct bpf_sock_addr *ctx, struct frontend_key *fk)
{
	fk->addr[2] = bpf_htonl(0xffff);
	fk->addr[3] = ctx->user_ip4;
	fk->port = ctx->user_port;
	fk->proto = ctx->protocol;
}

static __always_inline void key6(struct bpf_sock_addr *ctx, struct frontend_key *fk)
{
	fk->addr[0] = ctx->user_ip6[0];
	fk->addr[1] = ctx->user_ip6[1];
	fk->addr[2] = ctx->user_ip6[2];
	fk->addr[3] = ctx->user_ip6[3];
	fk->port = ctx->user_port;
	fk->proto = ctx->protocol;
}

static __always_inline int forward4(struct bpf_sock_addr *ctx)
{
	__u64 netns = bpf_get_netns_cookie(ctx);
	if (!allowed(netns))
		return SYSCALL_GO_ON;
	struct frontend_key fk = {};
	key4(ctx, &fk);
	struct backend be = {};
	__u32 id = 0;
	switch (pick(netns, &fk, &be, &id)) {
	case NOT_OURS:
		return SYSCALL_GO_ON;
	case REFUSE:
		bpf_set_retval(-ECONNREFUSED);
		return SYSCALL_FAIL;
	case REWRITE:
		break;
	}
	ctx->user_ip4 = be.addr[3];
	ctx->user_port = be.port;
	remember(ctx, &fk, &be, id);
	return SYSCALL_GO_ON;
}

static __always_inline int forward6(struct bpf_sock_addr *ctx)
{
	__u64 netns = bpf_get_netns_cookie(ctx);
	if (!allowed(netns))
		return SYSCALL_GO_ON;
	struct frontend_key fk = {};
	key6(ctx, &fk);
	struct backend be = {};
	__u32 id = 0;
	switch (pick(netns, &fk, &be, &id)) {
	case NOT_OURS:
		return SYSCALL_GO_ON;
	case REFUSE:
		bpf_set_retval(-ECONNREFUSED);
		return SYSCALL_FAIL;
	case REWRITE:
		break;
	}
	ctx->user_ip6[0] = be.addr[0];
	ctx->user_ip6[1] = be.addr[1];
	ctx->user_ip6[2] = be.addr[2];
	ctx->user_ip6[3] = be.addr[3];
	ctx->user_port = be.port;
	remember(ctx, &fk, &be, id);
	return SYSCALL_GO_ON;
}

// reverse4 and reverse6 show the frontend where the socket would see the
// backend it was sent to.
static __always_inline int reverse4(struct bpf_sock_addr *ctx)
{
	struct origin_key ok = {};
	ok.cookie = bpf_get_socket_cookie(ctx);
	ok.backend.addr[2] = bpf_htonl(0xffff);
	ok.backend.addr[3] = ctx->user_ip4;
	ok.backend.port = ctx->user_port;
	struct origin *o = bpf_map_lookup_elem(&origins, &ok);
	if (o) {
		ctx->user_ip4 = o->frontend.addr[3];
		ctx->user_port = o->frontend.port;
	}
	return SYSCALL_GO_ON;
}

static __always_inline int reverse6(struct bpf_sock_addr *ctx)
{
	struct origin_key ok = {};
	ok.cookie = bpf_get_socket_cookie(ctx);
	ok.backend.addr[0] = ctx->user_ip6[0];
	ok.backend.addr[1] = ctx->user_ip6[1];
	ok.backend.addr[2] = ctx->user_ip6[2];
	ok.backend.addr[3] = ctx->user_ip6[3];
	ok.backend.port = ctx->user_port;
	struct origin *o = bpf_map_lookup_elem(&origins, &ok);
	if (o) {
		ctx->user_ip6[0] = o->frontend.addr[0];
		ctx->user_ip6[1] = o->frontend.addr[1];
		ctx->user_ip6[2] = o->frontend.addr[2];
		ctx->user_ip6[3] = o->frontend.addr[3];
		ctx->user_port = o->frontend.port;
	}
	return SYSCALL_GO_ON;
}

SEC("cgroup/connect4")
int nexus_connect4(struct bpf_sock_addr *ctx) { return forward4(ctx); }

SEC("cgroup/connect6")
int nexus_connect6(struct bpf_sock_addr *ctx) { return forward6(ctx); }

SEC("cgroup/sendmsg4")
int nexus_sendmsg4(struct bpf_sock_addr *ctx) { return forward4(ctx); }

SEC("cgroup/sendmsg6")
int nexus_sendmsg6(struct bpf_sock_addr *ctx) { return forward6(ctx); }

SEC("cgroup/recvmsg4")
int nexus_recvmsg4(struct bpf_sock_addr *ctx) { return reverse4(ctx); }

SEC("cgroup/recvmsg6")
int nexus_recvmsg6(struct bpf_sock_addr *ctx) { return reverse6(ctx); }

SEC("cgroup/getpeername4")
int nexus_getpeer4(struct bpf_sock_addr *ctx) { return reverse4(ctx); }

SEC("cgroup/getpeername6")
int nexus_getpeer6(struct bpf_sock_addr *ctx) { return reverse6(ctx); }

char _license[] SEC("license") = "Dual MIT/GPL";
