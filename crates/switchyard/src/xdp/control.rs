//! The control plane of the packet tier: loads one [`Dataplane`] per `[[xdp]]`, fills it
//! from the VIPs' clusters, and keeps it in step with their endpoints.
//!
//! A thread of its own (not a tokio task) runs the loop, because map writes are blocking
//! syscalls, a table rewrite can take tens of milliseconds, and the loop must not stall a
//! proxy worker. Every 200 ms it reads each VIP's cluster (through [`ClusterSource`], so a
//! reloaded snapshot is picked up by name) and, when the eligible set or the endpoint list
//! changed, rebuilds the VIP's slots:
//!
//! 1. backend entries of newly eligible endpoints are written (healthy);
//! 2. the slots are written into the VIP's *inactive* table (only the slots that differ);
//! 3. the VIP's map value is replaced with the other table marked active (one atomic
//!    update: a packet reads the old table or the new one, never a half-written one);
//! 4. endpoints no longer eligible lose their healthy flag, so their remembered flows are
//!    hashed afresh while every other remembered flow keeps its backend.
//!
//! Once a second it adds the BPF counters' growth to the Prometheus series; every five
//! seconds it counts the flow table. Every five seconds it also sends one empty UDP
//! datagram to each backend, which keeps the neighbour (ARP) entry `bpf_fib_lookup` needs
//! alive, and learns the local address the kernel would use towards the backend (the IPIP
//! outer source). Dropping the [`XdpRuntime`] stops the thread and detaches every program.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::dataplane::{Dataplane, Sizes};
use super::error::XdpError;
use super::layout::{
    self, NO_BACKEND, PROTO_TCP, PROTO_UDP, VIP_F_IPIP, VIP_STAT_DROP, VIP_STAT_PASS,
    VIP_STATS_PER_VIP, Vip, VipKey,
};
use super::table::VipTable;
use crate::admin::metrics::{self, Counter, Gauge, Registry};
use crate::cluster::Cluster;
use crate::config::model::{L4Protocol, Xdp, XdpForward, XdpVip};
use crate::runtime::clock;

/// Backend entries reserved per VIP (endpoints of its cluster over the process's life).
pub const MAX_BACKENDS_PER_VIP: u32 = 1024;

/// How the control loop finds a VIP's cluster: by name, in the configuration in force.
pub type ClusterSource = Arc<dyn Fn(&str) -> Option<Arc<Cluster>> + Send + Sync>;

const TICK: Duration = Duration::from_millis(200);
const STATS_EVERY: u32 = 5;
const FLOWS_EVERY: u32 = 25;
const PRIME_EVERY: Duration = Duration::from_secs(5);

/// The running packet tier: detaches everything when dropped (or on [`XdpRuntime::detach`]).
#[derive(Debug, Default)]
pub struct XdpRuntime {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    interfaces: Vec<String>,
}

impl XdpRuntime {
    /// The interfaces the tier is attached to.
    pub fn interfaces(&self) -> &[String] {
        &self.interfaces
    }

    /// Stops the control loop and detaches every program.
    pub fn detach(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
            for interface in &self.interfaces {
                info!(interface, "xdp detached");
            }
        }
    }
}

impl Drop for XdpRuntime {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Loads and attaches one program per `[[xdp]]` in `configs`, fills its tables from the
/// clusters `source` finds, and starts the control loop. No `[[xdp]]`: nothing happens.
pub fn start(
    configs: &[Xdp],
    source: ClusterSource,
    registry: &Arc<Registry>,
) -> Result<XdpRuntime, XdpError> {
    if configs.is_empty() {
        return Ok(XdpRuntime::default());
    }
    let mut instances = Vec::new();
    for config in configs {
        instances.push(Instance::start(config, &source, registry)?);
    }
    let interfaces = configs.iter().map(|c| c.interface.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = Arc::clone(&stop);
        let registry = Arc::clone(registry);
        std::thread::Builder::new()
            .name("xdp-control".into())
            .spawn(move || control_loop(instances, &source, &registry, &stop))
            .map_err(|e| XdpError::Bpf {
                what: "starting the xdp control thread".into(),
                detail: e.to_string(),
            })?
    };
    Ok(XdpRuntime {
        stop,
        thread: Some(thread),
        interfaces,
    })
}

fn control_loop(
    mut instances: Vec<Instance>,
    source: &ClusterSource,
    registry: &Registry,
    stop: &AtomicBool,
) {
    let mut tick = 0u32;
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(TICK);
        tick = tick.wrapping_add(1);
        for instance in &mut instances {
            if let Err(e) = instance.refresh(source, registry) {
                warn!(interface = %instance.interface, error = %e, "xdp table update failed");
            }
            if tick % STATS_EVERY == 0 {
                instance.export();
            }
            if tick % FLOWS_EVERY == 0 {
                instance.count_flows();
            }
        }
    }
    for instance in &mut instances {
        instance.export();
    }
    // Dropping the dataplanes closes their links: the programs detach here.
}

/// One `[[xdp]]`: its program and VIPs.
struct Instance {
    interface: String,
    dataplane: Dataplane,
    vips: Vec<VipState>,
    flows_gauge: Gauge,
}

/// One endpoint as the packet tier sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    name: String,
    address: Ipv4Addr,
    weight: u32,
}

/// The counters of one backend entry.
struct MemberStats {
    packets: Counter,
    bytes: Counter,
    last: [u64; 2],
}

struct VipState {
    config: XdpVip,
    cluster: String,
    key: VipKey,
    address_key: VipKey,
    vip: Vip,
    label: String,
    members: Vec<Member>,
    table: VipTable,
    eligible: Vec<bool>,
    /// What each of the two tables holds (the kernel zero-fills arrays).
    shadow: [Vec<u32>; 2],
    /// Backend entry per endpoint name, kept for the process's life so a remembered flow
    /// never lands on an endpoint it was not sent to.
    indices: HashMap<String, u32>,
    next_index: u32,
    /// The outer source address towards each backend, learnt when primed.
    sources: HashMap<Ipv4Addr, Ipv4Addr>,
    primed: Option<Instant>,
    stats: HashMap<u32, MemberStats>,
    pass: (Counter, u64),
    drop: (Counter, u64),
}

fn protocol_number(p: L4Protocol) -> u8 {
    match p {
        L4Protocol::Tcp => PROTO_TCP,
        L4Protocol::Udp => PROTO_UDP,
    }
}

fn protocol_word(p: L4Protocol) -> &'static str {
    match p {
        L4Protocol::Tcp => "tcp",
        L4Protocol::Udp => "udp",
    }
}

/// The `vip` label of a VIP's series: `198.19.0.10:80/tcp`.
pub fn vip_label(vip: &XdpVip) -> String {
    format!("{}/{}", vip.address, protocol_word(vip.protocol))
}

fn members_of(cluster: &Cluster) -> Result<Vec<Member>, XdpError> {
    cluster
        .endpoints()
        .iter()
        .map(|e| match e.address.ip() {
            IpAddr::V4(address) => Ok(Member {
                name: e.name.clone(),
                address,
                weight: e.weight(),
            }),
            IpAddr::V6(_) => Err(XdpError::Config(format!(
                "cluster {:?}: endpoint {} is IPv6; the packet tier forwards IPv4 only",
                cluster.name(),
                e.address
            ))),
        })
        .collect()
}

fn eligibility(cluster: &Cluster) -> Vec<bool> {
    let now = clock::now();
    let panic = cluster.in_panic();
    cluster
        .endpoints()
        .iter()
        .map(|e| e.is_eligible_at(now, panic))
        .collect()
}

impl Instance {
    fn start(
        config: &Xdp,
        source: &ClusterSource,
        registry: &Registry,
    ) -> Result<Instance, XdpError> {
        let n = config.vips.len() as u32;
        let mut seen = std::collections::HashSet::new();
        for v in &config.vips {
            if !v.address.is_ipv4() {
                return Err(XdpError::Config(format!(
                    "vip {}: the packet tier serves IPv4 VIPs only",
                    v.address
                )));
            }
            if !seen.insert((v.address, protocol_number(v.protocol))) {
                return Err(XdpError::Config(format!(
                    "vip {} {} is listed twice on {}",
                    v.address,
                    protocol_word(v.protocol),
                    config.interface
                )));
            }
        }
        let maglev_slots = config
            .vips
            .iter()
            .try_fold(0u32, |acc, v| {
                acc.checked_add(v.maglev_table_size.checked_mul(2)?)
            })
            .ok_or_else(|| XdpError::Config("the Maglev tables are too large".into()))?;
        let sizes = Sizes {
            vips: 2 * n,
            maglev_slots,
            backends: n * MAX_BACKENDS_PER_VIP,
            flows: config.flow_table_size,
            vip_stats: n * VIP_STATS_PER_VIP,
        };
        check_forwarding(&config.interface)?;
        let mut dataplane = Dataplane::load(sizes)?;
        let mut vips = Vec::new();
        let mut base = 0u32;
        for (index, v) in config.vips.iter().enumerate() {
            let SocketAddr::V4(address) = v.address else {
                continue;
            };
            let cluster = source(&v.cluster).ok_or_else(|| {
                XdpError::Config(format!("vip {}: no cluster {:?}", v.address, v.cluster))
            })?;
            let state = VipState::new(
                v,
                index as u32,
                base,
                *address.ip(),
                address.port(),
                &cluster,
                registry,
            )?;
            base += 2 * v.maglev_table_size;
            vips.push(state);
        }
        for vip in &mut vips {
            vip.prime(true);
        }
        wait_for_neighbours(&vips);
        let mut addresses = std::collections::HashSet::new();
        for vip in &mut vips {
            let cluster = source(&vip.cluster);
            vip.apply(&mut dataplane, cluster.as_deref(), registry, true)?;
            // Address-only entries are written once per address: a second VIP on the same
            // address shares the first one's (its drops and passes count under the first).
            if addresses.insert(vip.address_key) {
                dataplane.set_vip(vip.address_key, vip.vip.encode())?;
            }
        }
        dataplane.attach(&config.interface, config.mode)?;
        info!(
            interface = %config.interface,
            mode = ?config.mode,
            vips = vips.len(),
            "xdp attached"
        );
        let flows_gauge = registry.gauge(&metrics::XDP_FLOW_TABLE_ENTRIES, &[&config.interface]);
        Ok(Instance {
            interface: config.interface.clone(),
            dataplane,
            vips,
            flows_gauge,
        })
    }

    fn refresh(&mut self, source: &ClusterSource, registry: &Registry) -> Result<(), XdpError> {
        for vip in &mut self.vips {
            // A backend whose local source address changed (a route appeared or moved)
            // gets its entry rewritten with the new IPIP outer source.
            let moved = vip.primed.is_none_or(|t| t.elapsed() >= PRIME_EVERY) && vip.prime(false);
            let cluster = source(&vip.cluster);
            vip.apply(&mut self.dataplane, cluster.as_deref(), registry, moved)?;
        }
        Ok(())
    }

    fn export(&mut self) {
        for vip in &mut self.vips {
            for (&index, stats) in &mut vip.stats {
                if let Ok(now) = self.dataplane.backend_counters(index) {
                    stats.packets.add(now[0].saturating_sub(stats.last[0]));
                    stats.bytes.add(now[1].saturating_sub(stats.last[1]));
                    stats.last = now;
                }
            }
            let base = vip.vip.index * VIP_STATS_PER_VIP;
            for (offset, (counter, last)) in [
                (VIP_STAT_PASS, &mut vip.pass),
                (VIP_STAT_DROP, &mut vip.drop),
            ] {
                if let Ok(now) = self.dataplane.vip_counters(base + offset) {
                    counter.add(now[0].saturating_sub(*last));
                    *last = now[0];
                }
            }
        }
    }

    fn count_flows(&mut self) {
        self.flows_gauge
            .set(i64::try_from(self.dataplane.flow_entries()).unwrap_or(i64::MAX));
    }
}

/// `bpf_fib_lookup` finds no next hop for a packet that arrived on an interface that does
/// not forward (it answers FWD_DISABLED), so every VIP packet would be dropped: refuse to
/// start instead, and say which sysctl to set.
fn check_forwarding(interface: &str) -> Result<(), XdpError> {
    let path = format!("/proc/sys/net/ipv4/conf/{interface}/forwarding");
    match std::fs::read_to_string(&path) {
        Ok(v) if v.trim() == "0" => Err(XdpError::Config(format!(
            "interface {interface:?} does not forward IPv4, so bpf_fib_lookup cannot find next hops for its packets: run `sysctl -w net.ipv4.conf.{interface}.forwarding=1`"
        ))),
        Ok(_) => Ok(()),
        Err(_) => Err(XdpError::NoInterface(interface.to_owned())),
    }
}

/// Waits up to a second for the kernel to resolve the backends' MAC addresses (primed by
/// [`VipState::prime`]), so the first packets do not meet an unresolved neighbour.
fn wait_for_neighbours(vips: &[VipState]) {
    let deadline = Instant::now() + Duration::from_secs(1);
    let wanted: Vec<Ipv4Addr> = vips
        .iter()
        .flat_map(|v| v.members.iter().map(|m| m.address))
        .collect();
    while Instant::now() < deadline {
        let table = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
        if wanted.iter().all(|ip| neighbour_resolved(&table, *ip)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `/proc/net/arp` text lists `ip` with a complete entry (flags 0x2).
pub fn neighbour_resolved(table: &str, ip: Ipv4Addr) -> bool {
    let ip = ip.to_string();
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        fields.next() == Some(ip.as_str()) && {
            let flags = fields.nth(1).unwrap_or("0x0");
            u32::from_str_radix(flags.trim_start_matches("0x"), 16).is_ok_and(|f| f & 2 != 0)
        }
    })
}

impl VipState {
    fn new(
        config: &XdpVip,
        index: u32,
        base: u32,
        ip: Ipv4Addr,
        port: u16,
        cluster: &Cluster,
        registry: &Registry,
    ) -> Result<VipState, XdpError> {
        let proto = protocol_number(config.protocol);
        let size = config.maglev_table_size;
        let members = members_of(cluster)?;
        let table = build_table(&members, size, &config.cluster)?;
        let mut flags = 0;
        if config.forward == XdpForward::Ipip {
            flags |= VIP_F_IPIP;
        }
        let label = vip_label(config);
        let pass = registry.counter(&metrics::XDP_PACKETS_TOTAL, &[&label, "", "pass"]);
        let drop = registry.counter(&metrics::XDP_PACKETS_TOTAL, &[&label, "", "drop"]);
        Ok(VipState {
            config: config.clone(),
            cluster: config.cluster.clone(),
            key: layout::vip_key(ip, port, proto),
            address_key: layout::vip_address_key(ip),
            vip: Vip {
                index,
                flags,
                size,
                active: 1,
                base: [base, base + size],
            },
            label,
            members,
            table,
            eligible: Vec::new(),
            shadow: [vec![0; size as usize], vec![0; size as usize]],
            indices: HashMap::new(),
            next_index: 0,
            sources: HashMap::new(),
            primed: None,
            stats: HashMap::new(),
            pass: (pass, 0),
            drop: (drop, 0),
        })
    }

    /// The backend entry of endpoint `name`, assigned on first sight.
    fn index_of(&mut self, name: &str, registry: &Registry) -> Result<u32, XdpError> {
        if let Some(&i) = self.indices.get(name) {
            return Ok(i);
        }
        if self.next_index >= MAX_BACKENDS_PER_VIP {
            return Err(XdpError::Config(format!(
                "vip {}: more than {MAX_BACKENDS_PER_VIP} distinct endpoints over this process's life; restart to reset",
                self.config.address
            )));
        }
        let i = self.vip.index * MAX_BACKENDS_PER_VIP + self.next_index;
        self.next_index += 1;
        self.indices.insert(name.to_owned(), i);
        self.stats.insert(
            i,
            MemberStats {
                packets: registry.counter(&metrics::XDP_PACKETS_TOTAL, &[&self.label, name, "tx"]),
                bytes: registry.counter(&metrics::XDP_BYTES_TOTAL, &[&self.label, name]),
                last: [0, 0],
            },
        );
        Ok(i)
    }

    /// Sends one empty datagram to every backend (keeps its neighbour entry resolved) and
    /// learns the local address towards it; true when one of those addresses changed.
    fn prime(&mut self, first: bool) -> bool {
        let mut changed = false;
        for m in &self.members {
            let target = SocketAddrV4::new(m.address, 9);
            let learnt = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).and_then(|s| {
                s.connect(target)?;
                let _ = s.send(&[]);
                s.local_addr()
            });
            match learnt {
                Ok(SocketAddr::V4(local)) => {
                    changed |= self.sources.insert(m.address, *local.ip()) != Some(*local.ip());
                }
                Ok(SocketAddr::V6(_)) => {}
                Err(e) if first => {
                    warn!(backend = %m.address, error = %e, "xdp: no route to backend");
                }
                Err(_) => {}
            }
        }
        self.primed = Some(Instant::now());
        changed
    }

    /// Brings the dataplane in step with `cluster` (see the module docs for the order).
    fn apply(
        &mut self,
        dp: &mut Dataplane,
        cluster: Option<&Cluster>,
        registry: &Registry,
        force: bool,
    ) -> Result<(), XdpError> {
        let (members, eligible) = match cluster {
            Some(c) => (members_of(c)?, eligibility(c)),
            None => (Vec::new(), Vec::new()),
        };
        let rebuilt = members != self.members;
        if !force && !rebuilt && eligible == self.eligible {
            return Ok(());
        }
        if rebuilt {
            self.table = build_table(&members, self.vip.size, &self.cluster)?;
            let gone: Vec<String> = self
                .members
                .iter()
                .filter(|m| !members.iter().any(|n| n.name == m.name))
                .map(|m| m.name.clone())
                .collect();
            for name in gone {
                if let Some(&i) = self.indices.get(&name) {
                    dp.set_backend(i, [0, 0, 0, self.vip.index])?;
                }
            }
            self.members = members;
            let _ = self.prime(false);
        }
        let mut index = Vec::with_capacity(self.members.len());
        for m in self.members.clone() {
            index.push(self.index_of(&m.name, registry)?);
        }
        // 1. newly eligible backends first.
        for (i, m) in self.members.iter().enumerate() {
            if eligible.get(i).copied().unwrap_or(false) {
                let src = self
                    .sources
                    .get(&m.address)
                    .copied()
                    .unwrap_or(Ipv4Addr::UNSPECIFIED);
                dp.set_backend(
                    index[i],
                    layout::backend_val(m.address, src, true, self.vip.index),
                )?;
            }
        }
        // 2. the inactive table, only the slots that differ.
        let slots: Vec<u32> = self
            .table
            .resolve(&eligible)
            .into_iter()
            .map(|s| s.map_or(NO_BACKEND, |local| index[local as usize]))
            .collect();
        let next = (1 - self.vip.active) as usize;
        let base = self.vip.base[next];
        let shadow = &mut self.shadow[next];
        for (slot, (&want, have)) in slots.iter().zip(shadow.iter_mut()).enumerate() {
            if want != *have {
                dp.write_table(base + slot as u32, &[want])?;
                *have = want;
            }
        }
        // 3. flip.
        self.vip.active = next as u32;
        dp.set_vip(self.key, self.vip.encode())?;
        // 4. the ineligible lose their flows.
        for (i, m) in self.members.iter().enumerate() {
            if !eligible.get(i).copied().unwrap_or(false) {
                dp.set_backend(
                    index[i],
                    layout::backend_val(m.address, Ipv4Addr::UNSPECIFIED, false, self.vip.index),
                )?;
            }
        }
        let up = eligible.iter().filter(|e| **e).count();
        info!(
            vip = %self.label,
            eligible = up,
            endpoints = self.members.len(),
            table = next,
            "xdp table written"
        );
        self.eligible = eligible;
        Ok(())
    }
}

fn build_table(members: &[Member], size: u32, cluster: &str) -> Result<VipTable, XdpError> {
    let specs: Vec<(String, u32)> = members.iter().map(|m| (m.name.clone(), m.weight)).collect();
    VipTable::build(&specs, size).map_err(|e| XdpError::Config(format!("cluster {cluster:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_arp_lines_are_read_by_address_and_flags() {
        let table = "IP address       HW type     Flags       HW address            Mask     Device\n\
                     198.18.0.21      0x1         0x2         aa:bb:cc:dd:ee:01     *        eth0\n\
                     198.18.0.22      0x1         0x0         00:00:00:00:00:00     *        eth0\n";
        assert!(neighbour_resolved(table, Ipv4Addr::new(198, 18, 0, 21)));
        assert!(!neighbour_resolved(table, Ipv4Addr::new(198, 18, 0, 22)));
        assert!(!neighbour_resolved(table, Ipv4Addr::new(198, 18, 0, 23)));
    }
}
