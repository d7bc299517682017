//! `xdp_lb` under `BPF_PROG_TEST_RUN`: crafted packets in, the program's verdict and the
//! rewritten packet out, with no traffic. Checks the C hash and table lookup against the
//! algo crate over thousands of flows, the rules for fragments, IP options, oversized and
//! non-VIP packets, and measures the cost per packet (`bench/xdp.sh` runs it with a large
//! `XDP_BENCH_REPEAT` and prints the figures for docs/performance.md).
//!
//! `bpf_fib_lookup` needs a device with routes and neighbours, so the runs happen on a
//! thread inside a namespace with a veth pair, an address and permanent neighbour entries.

use std::net::{Ipv4Addr, SocketAddrV4};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use switchyard::xdp::dataplane::{Dataplane, RunResult, Sizes, action};
use switchyard::xdp::error::XdpError;
use switchyard::xdp::layout::{
    self, PROTO_TCP, PROTO_UDP, VIP_F_IPIP, VIP_F_SKIP_FLOW_LOOKUP, Vip,
};
use switchyard::xdp::table::{VipTable, predict};

use super::lab::{Lab, root_or_skip};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
const LB: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const M: u32 = 65_537;
const MTU: usize = 1500;

fn backend(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 20 + j as u8)
}

fn mac(j: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, 0x20 + j as u8]
}

/// Ethernet + IPv4 (+ options) + TCP/UDP header, `payload` zero bytes.
struct Packet {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    proto: u8,
    payload: usize,
    frag_off: u16,
    options: usize,
}

impl Packet {
    fn tcp(src: SocketAddrV4, dst: SocketAddrV4) -> Packet {
        Packet {
            src,
            dst,
            proto: PROTO_TCP,
            payload: 0,
            frag_off: 0x4000,
            options: 0,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let l4 = match self.proto {
            PROTO_TCP => 20,
            PROTO_UDP => 8,
            _ => 8,
        };
        let ihl = 20 + self.options;
        let total = ihl + l4 + self.payload;
        let mut p = Vec::with_capacity(14 + total);
        p.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x11]); // dst: the balancer
        p.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // src: the router
        p.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0u8; ihl];
        ip[0] = 0x40 | (ihl / 4) as u8;
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[6..8].copy_from_slice(&self.frag_off.to_be_bytes());
        ip[8] = 64;
        ip[9] = self.proto;
        ip[12..16].copy_from_slice(&self.src.ip().octets());
        ip[16..20].copy_from_slice(&self.dst.ip().octets());
        for b in ip.iter_mut().skip(20) {
            *b = 1; // NOP options
        }
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        p.extend_from_slice(&ip);
        let mut l4h = vec![0u8; l4];
        l4h[0..2].copy_from_slice(&self.src.port().to_be_bytes());
        l4h[2..4].copy_from_slice(&self.dst.port().to_be_bytes());
        if self.proto == PROTO_TCP {
            l4h[12] = 0x50;
            l4h[13] = 0x02; // SYN
        }
        p.extend_from_slice(&l4h);
        p.resize(14 + total, 0);
        p
    }
}

fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The program loaded with one VIP (TCP :80, and UDP :53) over b1..b3, all eligible.
fn program(flags: u32) -> (Dataplane, Vec<Option<u32>>) {
    let mut dp = Dataplane::load(Sizes {
        vips: 4,
        maglev_slots: 4 * M,
        backends: 8,
        flows: 65_536,
        vip_stats: 4,
    })
    .expect("load xdp_lb");
    let names: Vec<(String, u32)> = (1..=3).map(|j| (format!("b{j}"), 1)).collect();
    let slots = VipTable::build(&names, M)
        .expect("table")
        .resolve(&[true; 3]);
    let table: Vec<u32> = slots.iter().map(|s| s.expect("eligible")).collect();
    for j in 1..=3 {
        dp.set_backend((j - 1) as u32, layout::backend_val(backend(j), LB, true, 0))
            .expect("backend");
    }
    dp.write_table(0, &table).expect("table");
    let vip = Vip {
        index: 0,
        flags,
        size: M,
        active: 0,
        base: [0, M],
    };
    dp.set_vip(layout::vip_key(VIP, 80, PROTO_TCP), vip.encode())
        .expect("vip");
    dp.set_vip(layout::vip_key(VIP, 53, PROTO_UDP), vip.encode())
        .expect("vip");
    dp.set_vip(layout::vip_address_key(VIP), vip.encode())
        .expect("vip");
    (dp, slots)
}

fn lab() -> (Lab, u32) {
    let mut lab = Lab::new("run");
    lab.ns("t");
    lab.sh(
        "t",
        &format!(
            "ip link add eth0 type veth peer name eth1; ip link set eth0 mtu {MTU} up; ip link set eth1 up; \
             ip addr add {LB}/24 dev eth0; sysctl -qw net.ipv4.conf.eth0.forwarding=1; \
             for j in 1 2 3; do ip neigh add 198.18.0.2$j lladdr 02:00:00:00:00:2$j dev eth0 nud permanent; done"
        ),
    );
    let line = lab.output("t", "ip -o link show eth0");
    let ifindex = line
        .split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .expect("ifindex");
    (lab, ifindex)
}

fn run(dp: &mut Dataplane, packet: &[u8], ifindex: u32, repeat: u32) -> RunResult {
    dp.test_run(packet, ifindex, repeat).expect("test run")
}

#[test]
fn xdp_testrun_every_flow_is_encapsulated_to_the_predicted_backend() {
    if !root_or_skip("xdp_testrun_every_flow_is_encapsulated_to_the_predicted_backend") {
        return;
    }
    let (lab, ifindex) = lab();
    let (mismatches, bad_checksums, n) = lab.within("t", || {
        let (mut dp, slots) = program(VIP_F_IPIP);
        let mut rng = SmallRng::seed_from_u64(9);
        let (mut mismatches, mut bad) = (0, 0);
        let n = 5_000;
        for i in 0..n {
            let src = SocketAddrV4::new(Ipv4Addr::from(rng.random::<u32>()), rng.random());
            let (port, proto) = if i % 2 == 0 {
                (80, PROTO_TCP)
            } else {
                (53, PROTO_UDP)
            };
            let dst = SocketAddrV4::new(VIP, port);
            let mut packet = Packet::tcp(src, dst);
            packet.proto = proto;
            let bytes = packet.bytes();
            let out = run(&mut dp, &bytes, ifindex, 1);
            assert_eq!(out.action, action::TX, "flow {src}");
            let expected = predict(&slots, src, dst, proto).expect("slot") as usize + 1;
            let outer = &out.packet[14..34];
            let ok = out.packet.len() == bytes.len() + 20
                && out.packet[..6] == mac(expected)
                && outer[9] == 4
                && outer[16..20] == backend(expected).octets()
                && outer[12..16] == LB.octets()
                && out.packet[34..] == bytes[14..];
            if !ok {
                mismatches += 1;
            }
            if checksum(outer) != 0 {
                bad += 1;
            }
        }
        (mismatches, bad, n)
    });
    eprintln!("test run: {n} flows, {mismatches} mismatches, {bad_checksums} bad outer checksums");
    assert_eq!(mismatches, 0);
    assert_eq!(bad_checksums, 0);
}

#[test]
fn xdp_testrun_fragments_options_oversized_and_strangers_follow_the_rules() {
    if !root_or_skip("xdp_testrun_fragments_options_oversized_and_strangers_follow_the_rules") {
        return;
    }
    let (lab, ifindex) = lab();
    lab.within("t", || {
        let (mut dp, _) = program(VIP_F_IPIP);
        let src = SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 2), 40_000);
        let vip = SocketAddrV4::new(VIP, 80);
        let verdict = |dp: &mut Dataplane, p: &Packet| run(dp, &p.bytes(), ifindex, 1).action;

        let plain = Packet::tcp(src, vip);
        assert_eq!(verdict(&mut dp, &plain), action::TX);
        let mut first_fragment = Packet::tcp(src, vip);
        first_fragment.frag_off = 0x2000; // MF
        assert_eq!(verdict(&mut dp, &first_fragment), action::DROP);
        let mut later_fragment = Packet::tcp(src, vip);
        later_fragment.frag_off = 0x0010;
        assert_eq!(verdict(&mut dp, &later_fragment), action::DROP);
        let mut options = Packet::tcp(src, vip);
        options.options = 4;
        assert_eq!(verdict(&mut dp, &options), action::DROP);
        // 1480 + 20 fits a 1500 MTU; one byte more does not once encapsulated.
        let mut fits = Packet::tcp(src, vip);
        fits.payload = MTU - 40 - 20;
        assert_eq!(verdict(&mut dp, &fits), action::TX);
        let mut oversized = Packet::tcp(src, vip);
        oversized.payload = MTU - 40 - 20 + 1;
        assert_eq!(verdict(&mut dp, &oversized), action::DROP);
        let stranger = Packet::tcp(src, SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 11), 80));
        assert_eq!(verdict(&mut dp, &stranger), action::PASS);
        let other_port = Packet::tcp(src, SocketAddrV4::new(VIP, 81));
        assert_eq!(verdict(&mut dp, &other_port), action::PASS);
        let mut icmp = Packet::tcp(src, vip);
        icmp.proto = 1;
        assert_eq!(verdict(&mut dp, &icmp), action::PASS);
        let mut truncated = plain.bytes();
        truncated.truncate(14 + 20 + 10);
        assert_eq!(run(&mut dp, &truncated, ifindex, 1).action, action::DROP);
        let arp = [vec![0xff; 12], vec![0x08, 0x06], vec![0; 28]].concat();
        assert_eq!(run(&mut dp, &arp, ifindex, 1).action, action::PASS);
        let counters = dp
            .vip_counters(layout::VIP_STAT_DROP)
            .expect("drop counter");
        assert_eq!(counters[0], 5, "every drop is counted");
        assert_eq!(dp.vip_counters(layout::VIP_STAT_PASS).expect("pass")[0], 1);
    });
}

/// ns per packet for a flow-table hit, a Maglev miss and a passed non-VIP packet.
#[test]
fn xdp_testrun_cost_per_packet() {
    if !root_or_skip("xdp_testrun_cost_per_packet") {
        return;
    }
    let repeat: u32 = std::env::var("XDP_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let (lab, ifindex) = lab();
    let figures = lab.within("t", || {
        let src = SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 2), 40_000);
        let syn = Packet::tcp(src, SocketAddrV4::new(VIP, 80)).bytes();
        let stranger =
            Packet::tcp(src, SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 11), 22)).bytes();
        let mut out = Vec::new();
        // DSR leaves the IP packet as it was, so a plain repeated run measures it; IPIP
        // grows the packet, so its runs use live frames (a fresh copy each time, the
        // frames really sent to the veth peer, which drops them).
        let (mut dp, _) = program(0);
        run(&mut dp, &syn, ifindex, 1);
        let hit = run(&mut dp, &syn, ifindex, repeat);
        assert_eq!(hit.action, action::TX);
        out.push(("dsr flow-table hit".to_owned(), hit.per_run));
        let (mut dp, _) = program(VIP_F_SKIP_FLOW_LOOKUP);
        let miss = run(&mut dp, &syn, ifindex, repeat);
        assert_eq!(miss.action, action::TX);
        out.push(("dsr Maglev miss".to_owned(), miss.per_run));
        for (label, flags) in [
            ("ipip flow-table hit (live frames)", VIP_F_IPIP),
            (
                "ipip Maglev miss (live frames)",
                VIP_F_IPIP | VIP_F_SKIP_FLOW_LOOKUP,
            ),
            ("dsr flow-table hit (live frames)", 0),
        ] {
            let (mut dp, _) = program(flags);
            match dp.test_run_live(&syn, ifindex, repeat) {
                Ok(per) => out.push((label.to_owned(), per)),
                // Some kernels refuse the live-frames mode (EPERM) even to root; the
                // plain runs above and below still measure the program.
                Err(error @ XdpError::NotPermitted { .. }) => {
                    eprintln!("xdp cost: {label}: not measured here ({error})");
                }
                Err(error) => panic!("live run: {error}"),
            }
        }
        let (mut dp, _) = program(VIP_F_IPIP);
        let pass = run(&mut dp, &stranger, ifindex, repeat);
        assert_eq!(pass.action, action::PASS);
        out.push(("non-VIP pass".to_owned(), pass.per_run));
        out
    });
    for (label, per_run) in &figures {
        eprintln!(
            "xdp cost: {label}: {} ns/packet (repeat {repeat})",
            per_run.as_nanos()
        );
    }
    assert!(figures.iter().all(|(_, d)| d.as_nanos() > 0));
}
