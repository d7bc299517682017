//! The bytes of every map key and value, exactly as `bpf/common.h` lays them out. Values
//! are plain arrays (which aya accepts as `Pod` without any `unsafe impl`), built and read
//! by the functions here, so the layout lives in one Rust file beside one C header.
//!
//! Addresses and ports are in network byte order (as in the packet); other fields are in
//! host order.

use std::net::Ipv4Addr;

/// `NO_BACKEND`: a slot or flow naming no backend.
pub const NO_BACKEND: u32 = u32::MAX;
/// `VIP_F_IPIP`.
pub const VIP_F_IPIP: u32 = 1;
/// `VIP_F_SKIP_FLOW_LOOKUP` (benchmarks: every packet takes the Maglev path).
pub const VIP_F_SKIP_FLOW_LOOKUP: u32 = 2;
/// `BACKEND_F_HEALTHY`.
pub const BACKEND_F_HEALTHY: u32 = 1;
/// `VIP_STAT_PASS` / `VIP_STAT_DROP`, and how many counters each VIP has.
pub const VIP_STAT_PASS: u32 = 0;
/// See [`VIP_STAT_PASS`].
pub const VIP_STAT_DROP: u32 = 1;
/// See [`VIP_STAT_PASS`].
pub const VIP_STATS_PER_VIP: u32 = 2;

/// IP protocol numbers.
pub const PROTO_TCP: u8 = 6;
/// See [`PROTO_TCP`].
pub const PROTO_UDP: u8 = 17;

/// `struct vip_key` (8 bytes).
pub type VipKey = [u8; 8];
/// `struct vip_val` (8 x u32).
pub type VipVal = [u32; 8];
/// `struct backend` (4 x u32).
pub type BackendVal = [u32; 4];
/// `struct flow_key` (16 bytes).
pub type FlowKey = [u8; 16];
/// `struct flow_val` (2 x u32).
pub type FlowVal = [u32; 2];
/// `struct counters` (packets, bytes).
pub type Counters = [u64; 2];

/// An IPv4 address as the packet holds it, read as a host `u32`.
pub fn wire_addr(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// The key of a VIP: address, port, protocol.
pub fn vip_key(ip: Ipv4Addr, port: u16, proto: u8) -> VipKey {
    let a = ip.octets();
    let p = port.to_be_bytes();
    [a[0], a[1], a[2], a[3], p[0], p[1], proto, 0]
}

/// The address-only key (fragments, options, other protocols to a VIP address).
pub fn vip_address_key(ip: Ipv4Addr) -> VipKey {
    vip_key(ip, 0, 0)
}

/// A VIP's value: its index, flags, table size, active table and the two table bases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vip {
    /// The VIP's number.
    pub index: u32,
    /// `VIP_F_*`.
    pub flags: u32,
    /// Maglev table size.
    pub size: u32,
    /// 0 or 1.
    pub active: u32,
    /// Where the two tables start in the `maglev` array.
    pub base: [u32; 2],
}

impl Vip {
    /// The map value.
    pub fn encode(&self) -> VipVal {
        [
            self.index,
            self.flags,
            self.size,
            self.active,
            self.base[0],
            self.base[1],
            0,
            0,
        ]
    }
}

/// A backend entry.
pub fn backend_val(addr: Ipv4Addr, src: Ipv4Addr, healthy: bool, vip: u32) -> BackendVal {
    [
        wire_addr(addr),
        wire_addr(src),
        if healthy { BACKEND_F_HEALTHY } else { 0 },
        vip,
    ]
}

/// A flow key from its 5-tuple.
pub fn flow_key(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, proto: u8) -> FlowKey {
    let (s, d) = (src.octets(), dst.octets());
    let (sp, dp) = (sport.to_be_bytes(), dport.to_be_bytes());
    [
        s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3], sp[0], sp[1], dp[0], dp[1], proto, 0, 0, 0,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hold_network_order_bytes() {
        let ip = Ipv4Addr::new(198, 19, 0, 10);
        assert_eq!(vip_key(ip, 80, PROTO_TCP), [198, 19, 0, 10, 0, 80, 6, 0]);
        assert_eq!(vip_address_key(ip), [198, 19, 0, 10, 0, 0, 0, 0]);
        assert_eq!(wire_addr(ip).to_ne_bytes(), [198, 19, 0, 10]);
        let k = flow_key(ip, Ipv4Addr::new(1, 2, 3, 4), 0x1234, 53, PROTO_UDP);
        assert_eq!(&k[8..13], &[0x12, 0x34, 0, 53, 17]);
    }
}
