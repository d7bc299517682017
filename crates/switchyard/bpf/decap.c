// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * The backend side of the packet tier's IPIP mode, for kernels without an ipip device
 * (`switchyard xdp-decap --interface IF`): an IPv4-in-IPv4 packet loses its outer header
 * and goes up the stack as the inner packet, addressed to the VIP the backend holds on a
 * local interface. Everything else passes untouched. In production a kernel ipip device
 * (`ip link add tunl0 type ipip external`) does the same job.
 *
 * Also here: xdp_pass, the do-nothing program native veth XDP needs on the peer of an
 * interface whose program answers XDP_TX (the tests attach it).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > data_end)
		return XDP_PASS;
	/* Only a plain outer header: options or fragments are left to the kernel (which
	 * drops an IPIP packet it has no device for). */
	if (outer->version != 4 || outer->ihl != 5 || outer->protocol != IPPROTO_IPIP ||
	    (outer->frag_off & bpf_htons(0x3fff)))
		return XDP_PASS;
	struct iphdr *inner = (void *)(outer + 1);
	if ((void *)(inner + 1) > data_end || inner->version != 4)
		return XDP_PASS;
	struct ethhdr copy;
	__builtin_memcpy(&copy, eth, sizeof(copy));
	if (bpf_xdp_adjust_head(ctx, (int)sizeof(struct iphdr)))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth, &copy, sizeof(copy));
	return XDP_PASS;
}

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
