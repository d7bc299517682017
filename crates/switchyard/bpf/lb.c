// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * Switchyard's packet tier: an XDP L4 balancer.
 *
 * For a packet to a configured VIP:port:protocol the program finds the flow's backend in
 * the flows LRU (so an established flow keeps its backend when the Maglev table changes),
 * else hashes the 5-tuple into the VIP's active Maglev table, remembers the choice, and
 * forwards: DSR (rewrite the Ethernet addresses, the backend holds the VIP on a local
 * interface and answers the client directly) or IPIP (push an outer IPv4 header addressed
 * to the backend). The next hop's MAC comes from the kernel's FIB and neighbour tables via
 * bpf_fib_lookup. Everything that is not a VIP's TCP/UDP passes untouched.
 *
 * The hash is xxh64 (seed 0) over the 13 bytes source address, destination address,
 * source port, destination port, protocol: byte for byte the `5-tuple` key of SPEC 3.1
 * (switchyard_algo::hash::key_for_five_tuple), so the control plane and the tests predict
 * every packet's slot with the same code as the L4/L7 tier. The table holds, per slot, the
 * backend that switchyard_algo::resolve_slots chose for the current eligibility.
 *
 * Rules for what is not a plain packet (docs/architecture.md, "Packet tier"):
 * - not IPv4 (IPv6, ARP, VLAN-tagged): XDP_PASS, not counted.
 * - IPv4 with IP options or fragmented (MF set or an offset), addressed to a VIP address:
 *   XDP_DROP, counted as drop. Non-first fragments carry no ports, so they cannot be hashed
 *   to the backend the first fragment went to; never forward half a datagram.
 * - a VIP packet whose headers are truncated or whose total length disagrees with the
 *   frame: XDP_DROP, counted as drop.
 * - a VIP packet that would exceed the egress MTU once encapsulated (bpf_fib_lookup's
 *   FRAG_NEEDED), or whose backend has no route or no resolved neighbour: XDP_DROP, drop.
 * - other IP protocols to a VIP address (ICMP, ...): XDP_PASS, counted as pass.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "common.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* Sizes are placeholders: the control plane sets every max_entries before loading. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	/* Replaced values are freed after an RCU grace period, never reused under a reader. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct vip_key);
	__type(value, struct vip_val);
} vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct backend);
} backends SEC(".maps");

/* One LRU shared by every CPU (not per-CPU): with generic XDP, veth or a NIC without
 * symmetric RSS a flow's packets may be handled by different CPUs, and a per-CPU table
 * would then miss and re-hash on a changed table; a shared table keeps the promise at the
 * cost of a shared hash bucket lock on insert (lookups are lock-free). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} backend_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} vip_stats SEC(".maps");

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL

static __always_inline __u64 rotl64(__u64 x, int r)
{
	return (x << r) | (x >> (64 - r));
}

/*
 * xxh64, seed 0, of the 13 bytes [src 4][dst 4][sport 2][dport 2][proto 1], the fields
 * given as they sit in the packet (network byte order). The input is fixed at 13 bytes,
 * so the general algorithm reduces to: one 8-byte lane, one 4-byte word, one byte, then
 * the avalanche. Little-endian loads, as xxh64 specifies, are what a bpfel load gives.
 */
static __always_inline __u64 flow_hash(__u32 src, __u32 dst, __u16 sport, __u16 dport,
				       __u8 proto)
{
	__u64 h = P5 + 13;
	__u64 k = ((__u64)dst << 32) | src;
	k *= P2;
	k = rotl64(k, 31);
	k *= P1;
	h ^= k;
	h = rotl64(h, 27) * P1 + P4;
	__u32 w = ((__u32)dport << 16) | sport;
	h ^= (__u64)w * P1;
	h = rotl64(h, 23) * P2 + P3;
	h ^= (__u64)proto * P5;
	h = rotl64(h, 11) * P1;
	h ^= h >> 33;
	h *= P2;
	h ^= h >> 29;
	h *= P3;
	h ^= h >> 32;
	return h;
}

static __always_inline void count(void *map, __u32 index, __u64 bytes)
{
	struct counters *c = bpf_map_lookup_elem(map, &index);
	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
}

static __always_inline int drop(__u32 vip, __u64 bytes)
{
	count(&vip_stats, vip * VIP_STATS_PER_VIP + VIP_STAT_DROP, bytes);
	return XDP_DROP;
}

static __always_inline __u16 ipv4_checksum(struct iphdr *ip)
{
	__u16 *p = (__u16 *)ip;
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*ip) / 2); i++)
		sum += p[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* The VIP entry for an address alone (fragments, options, other protocols). */
static __always_inline struct vip_val *vip_address(__u32 addr)
{
	struct vip_key k;
	__builtin_memset(&k, 0, sizeof(k));
	k.addr = addr;
	return bpf_map_lookup_elem(&vips, &k);
}

SEC("xdp")
int xdp_lb(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end)
		return XDP_PASS;
	if (iph->version != 4 || iph->ihl < 5)
		return XDP_PASS;
	__u64 frame = (__u64)(data_end - data);
	__u32 saddr = iph->saddr;
	__u32 daddr = iph->daddr;
	__u8 proto = iph->protocol;

	if (iph->ihl != 5 || (iph->frag_off & bpf_htons(0x3fff))) {
		struct vip_val *v = vip_address(daddr);
		if (!v)
			return XDP_PASS;
		return drop(v->index, frame);
	}

	__u16 sport, dport;
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = (void *)(iph + 1);
		if ((void *)(th + 1) > data_end)
			goto short_or_other;
		sport = th->source;
		dport = th->dest;
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *uh = (void *)(iph + 1);
		if ((void *)(uh + 1) > data_end)
			goto short_or_other;
		sport = uh->source;
		dport = uh->dest;
	} else {
		goto short_or_other;
	}

	struct vip_key vk;
	__builtin_memset(&vk, 0, sizeof(vk));
	vk.addr = daddr;
	vk.port = dport;
	vk.proto = proto;
	struct vip_val *vp = bpf_map_lookup_elem(&vips, &vk);
	if (!vp)
		return XDP_PASS;
	/* One read of the whole entry: the control plane replaces it, never edits it. */
	struct vip_val vip = *vp;
	__u16 ip_len = bpf_ntohs(iph->tot_len);
	if (ip_len < sizeof(*iph) || (__u64)ip_len + sizeof(*eth) > frame)
		return drop(vip.index, frame);

	struct flow_key fk;
	__builtin_memset(&fk, 0, sizeof(fk));
	fk.src = saddr;
	fk.dst = daddr;
	fk.sport = sport;
	fk.dport = dport;
	fk.proto = proto;

	__u32 bidx = NO_BACKEND;
	struct backend *be = 0;
	if (!(vip.flags & VIP_F_SKIP_FLOW_LOOKUP)) {
		struct flow_val *fv = bpf_map_lookup_elem(&flows, &fk);
		if (fv) {
			__u32 i = fv->backend;
			struct backend *b = bpf_map_lookup_elem(&backends, &i);
			/* A remembered backend that went unhealthy (or now belongs to another
			 * VIP after a reload) loses its flows: they are hashed afresh. */
			if (b && (b->flags & BACKEND_F_HEALTHY) && b->vip == vip.index) {
				bidx = i;
				be = b;
			}
		}
	}
	if (!be) {
		if (vip.size == 0)
			return drop(vip.index, frame);
		__u64 h = flow_hash(saddr, daddr, sport, dport, proto);
		__u32 slot = (__u32)(h % vip.size);
		__u32 pos = (vip.active & 1 ? vip.base[1] : vip.base[0]) + slot;
		__u32 *owner = bpf_map_lookup_elem(&maglev, &pos);
		if (!owner || *owner == NO_BACKEND)
			return drop(vip.index, frame);
		bidx = *owner;
		be = bpf_map_lookup_elem(&backends, &bidx);
		if (!be)
			return drop(vip.index, frame);
		struct flow_val nv = {.backend = bidx, .pad = 0};
		bpf_map_update_elem(&flows, &fk, &nv, BPF_ANY);
	}

	__u32 baddr = be->addr;
	__u32 bsrc = be->src;
	int ipip = vip.flags & VIP_F_IPIP;

	struct bpf_fib_lookup fib;
	__builtin_memset(&fib, 0, sizeof(fib));
	fib.family = AF_INET;
	fib.l4_protocol = proto;
	fib.tot_len = ip_len + (ipip ? sizeof(struct iphdr) : 0);
	fib.ifindex = ctx->ingress_ifindex;
	fib.ipv4_src = bsrc;
	fib.ipv4_dst = baddr;
	long rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return drop(vip.index, frame);
	/* DSR needs the backend on this L2: a routed next hop would forward by the VIP. */
	if (!ipip && fib.ipv4_dst != baddr)
		return drop(vip.index, frame);

	if (ipip) {
		__u8 tos = iph->tos;
		__u16 df = iph->frag_off & bpf_htons(0x4000);
		if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr)))
			return drop(vip.index, frame);
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		eth = data;
		struct iphdr *outer = (void *)(eth + 1);
		if ((void *)(outer + 1) > data_end)
			return drop(vip.index, frame);
		eth->h_proto = bpf_htons(ETH_P_IP);
		outer->version = 4;
		outer->ihl = 5;
		outer->tos = tos;
		outer->tot_len = bpf_htons(ip_len + sizeof(struct iphdr));
		outer->id = 0;
		outer->frag_off = df;
		outer->ttl = 64;
		outer->protocol = IPPROTO_IPIP;
		outer->check = 0;
		outer->saddr = bsrc;
		outer->daddr = baddr;
		outer->check = ipv4_checksum(outer);
	}
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	count(&backend_stats, bidx, frame);
	if (fib.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fib.ifindex, 0);

short_or_other: {
	struct vip_val *v = vip_address(daddr);
	if (!v)
		return XDP_PASS;
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP)
		return drop(v->index, frame);
	count(&vip_stats, v->index * VIP_STATS_PER_VIP + VIP_STAT_PASS, frame);
	return XDP_PASS;
}
}

char LICENSE[] SEC("license") = "GPL";
