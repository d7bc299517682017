/* SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0 */
/*
 * Switchyard's packet tier: the layouts shared by the BPF programs and the control plane
 * (crates/switchyard/src/xdp/maps.rs writes the same bytes; keep both in step).
 * Every multi-byte field holding an address or a port is in network byte order, exactly
 * as it sits in the packet; everything else is host order (the BPF target is the host's
 * endianness: clang -target bpf on x86_64 emits bpfel).
 */
#ifndef SWITCHYARD_BPF_COMMON_H
#define SWITCHYARD_BPF_COMMON_H

#include <linux/types.h>

/* A slot or flow that names no backend. */
#define NO_BACKEND 0xffffffffu

/* vip_val.flags */
#define VIP_F_IPIP 1u            /* encapsulate (else: DSR, rewrite the MAC only) */
#define VIP_F_SKIP_FLOW_LOOKUP 2u /* benchmarks only: every packet takes the Maglev path */

/* backend.flags */
#define BACKEND_F_HEALTHY 1u

/* vip_stats index = vip index * VIP_STATS_PER_VIP + one of these */
#define VIP_STAT_PASS 0
#define VIP_STAT_DROP 1
#define VIP_STATS_PER_VIP 2

/* Key of the vips map. port == 0 && proto == 0: the address-only entry, used to recognise
 * fragments and packets with IP options addressed to a VIP (they carry no usable ports). */
struct vip_key {
	__u32 addr;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

/* Value of the vips map: replaced whole by the control plane, so a reader sees the old or
 * the new table choice, never a mix. */
struct vip_val {
	__u32 index;    /* the VIP's number: vip_stats, backend ownership */
	__u32 flags;    /* VIP_F_* */
	__u32 size;     /* Maglev table size M (a prime) */
	__u32 active;   /* 0 or 1: which of the two tables packets read */
	__u32 base[2];  /* where table 0 and table 1 start in the maglev array */
	__u32 pad[2];
};

/* Value of the backends array. */
struct backend {
	__u32 addr;     /* the backend host's address (IPIP outer destination, DSR next hop) */
	__u32 src;      /* IPIP outer source: the balancer's address towards this backend */
	__u32 flags;    /* BACKEND_F_* */
	__u32 vip;      /* the VIP index this backend entry belongs to */
};

/* Key and value of the flows LRU. */
struct flow_key {
	__u32 src;
	__u32 dst;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct flow_val {
	__u32 backend;
	__u32 pad;
};

/* Per-CPU counters. */
struct counters {
	__u64 packets;
	__u64 bytes;
};

#endif
