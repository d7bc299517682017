//! One loaded copy of `xdp_lb` and its maps: the only code that calls aya for the balancer.
//!
//! Map sizes are set before the object is loaded (the C source only has placeholders). The
//! program is attached through a BPF link, so it detaches when this value is dropped, and
//! also when the process dies: a crashed balancer never leaves a program forwarding with a
//! table nobody maintains.

use std::time::Duration;

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp as XdpProgram, XdpMode};
use aya::{Ebpf, EbpfLoader};

use super::error::{Context as _, XdpError};
use super::layout::{BackendVal, Counters, FlowKey, FlowVal, VipKey, VipVal};
use super::objects;
use crate::config::model::XdpMode as ConfigMode;

/// How big the maps are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Entries of `vips` (two per VIP: the VIP and its address-only key).
    pub vips: u32,
    /// Slots of `maglev` (two tables per VIP).
    pub maglev_slots: u32,
    /// Entries of `backends` and `backend_stats`.
    pub backends: u32,
    /// Entries of `flows` (the LRU).
    pub flows: u32,
    /// Entries of `vip_stats`.
    pub vip_stats: u32,
}

/// A loaded (and maybe attached) balancer program with handles on its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    vips: HashMap<MapData, VipKey, VipVal>,
    maglev: Array<MapData, u32>,
    backends: Array<MapData, BackendVal>,
    flows: HashMap<MapData, FlowKey, FlowVal>,
    backend_stats: PerCpuArray<MapData, Counters>,
    vip_stats: PerCpuArray<MapData, Counters>,
    attached: Option<String>,
}

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// The XDP action (1 drop, 2 pass, 3 tx, 4 redirect).
    pub action: u32,
    /// The packet as the program left it.
    pub packet: Vec<u8>,
    /// The kernel's average time per repetition.
    pub per_run: Duration,
}

/// XDP action codes.
pub mod action {
    /// XDP_DROP.
    pub const DROP: u32 = 1;
    /// XDP_PASS.
    pub const PASS: u32 = 2;
    /// XDP_TX.
    pub const TX: u32 = 3;
    /// XDP_REDIRECT.
    pub const REDIRECT: u32 = 4;
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("attached", &self.attached)
            .finish_non_exhaustive()
    }
}

fn take<M>(ebpf: &mut Ebpf, name: &str) -> Result<M, XdpError>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| XdpError::Bpf {
        what: format!("map {name}"),
        detail: "missing from the object".into(),
    })?;
    M::try_from(map).context(|| format!("map {name}"))
}

impl Dataplane {
    /// Loads the program with maps of `sizes` (not attached yet).
    pub fn load(sizes: Sizes) -> Result<Dataplane, XdpError> {
        let bytes = objects::lb()?;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("vips", sizes.vips.max(1))
            .map_max_entries("maglev", sizes.maglev_slots.max(1))
            .map_max_entries("backends", sizes.backends.max(1))
            .map_max_entries("backend_stats", sizes.backends.max(1))
            .map_max_entries("flows", sizes.flows.max(1))
            .map_max_entries("vip_stats", sizes.vip_stats.max(1))
            .load(bytes)
            .context(|| "loading the XDP balancer's maps".into())?;
        let program: &mut XdpProgram = ebpf
            .program_mut("xdp_lb")
            .ok_or_else(|| XdpError::Bpf {
                what: "program xdp_lb".into(),
                detail: "missing from the object".into(),
            })?
            .try_into()
            .context(|| "program xdp_lb".into())?;
        program
            .load()
            .context(|| "loading xdp_lb into the kernel".into())?;
        Ok(Dataplane {
            vips: take(&mut ebpf, "vips")?,
            maglev: take(&mut ebpf, "maglev")?,
            backends: take(&mut ebpf, "backends")?,
            flows: take(&mut ebpf, "flows")?,
            backend_stats: take(&mut ebpf, "backend_stats")?,
            vip_stats: take(&mut ebpf, "vip_stats")?,
            ebpf,
            attached: None,
        })
    }

    fn program(&mut self) -> Result<&mut XdpProgram, XdpError> {
        program_of(&mut self.ebpf, "xdp_lb")
    }

    /// Attaches to `interface` in `mode`.
    pub fn attach(&mut self, interface: &str, mode: ConfigMode) -> Result<(), XdpError> {
        attach(self.program()?, interface, mode)?;
        self.attached = Some(interface.to_owned());
        Ok(())
    }

    /// The interface attached to, if any.
    pub fn interface(&self) -> Option<&str> {
        self.attached.as_deref()
    }

    /// Writes (replaces) a VIP entry.
    pub fn set_vip(&mut self, key: VipKey, value: VipVal) -> Result<(), XdpError> {
        self.vips.insert(key, value, 0).context(|| "vips".into())
    }

    /// Writes backend entry `index`.
    pub fn set_backend(&mut self, index: u32, value: BackendVal) -> Result<(), XdpError> {
        self.backends
            .set(index, value, 0)
            .context(|| format!("backends[{index}]"))
    }

    /// Writes `slots` into the `maglev` array from `base` on.
    pub fn write_table(&mut self, base: u32, slots: &[u32]) -> Result<(), XdpError> {
        for (i, &slot) in slots.iter().enumerate() {
            let index = base + i as u32;
            self.maglev
                .set(index, slot, 0)
                .context(|| format!("maglev[{index}]"))?;
        }
        Ok(())
    }

    /// Backend `index`'s counters summed over CPUs.
    pub fn backend_counters(&self, index: u32) -> Result<Counters, XdpError> {
        sum(&self.backend_stats, index)
    }

    /// VIP counter `index` summed over CPUs.
    pub fn vip_counters(&self, index: u32) -> Result<Counters, XdpError> {
        sum(&self.vip_stats, index)
    }

    /// The entries in the flow table (one syscall per entry: call it rarely).
    pub fn flow_entries(&self) -> usize {
        self.flows.keys().filter(Result::is_ok).count()
    }

    /// The backend a flow is remembered with, if it is.
    pub fn flow_backend(&self, key: &FlowKey) -> Option<u32> {
        self.flows.get(key, 0).ok().map(|v| v[0])
    }

    /// Forgets every remembered flow.
    pub fn clear_flows(&mut self) -> Result<(), XdpError> {
        let keys: Vec<FlowKey> = self.flows.keys().filter_map(Result::ok).collect();
        for key in keys {
            let _ = self.flows.remove(&key);
        }
        Ok(())
    }

    /// Runs the program on `packet` `repeat` times (`BPF_PROG_TEST_RUN`) as if it arrived
    /// on interface `ifindex` of the calling thread's network namespace (0: none; then
    /// `bpf_fib_lookup` has no device to start from and forwarding fails).
    pub fn test_run(
        &mut self,
        packet: &[u8],
        ifindex: u32,
        repeat: u32,
    ) -> Result<RunResult, XdpError> {
        let mut out = vec![0u8; packet.len() + 256];
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress
        let ctx: [u32; 6] = [0, packet.len() as u32, 0, ifindex, 0, 0];
        let ctx_bytes: Vec<u8> = ctx.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let program = self.program()?;
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                ctx_in: (ifindex != 0).then_some(&ctx_bytes[..]),
                repeat: repeat.max(1),
                ..TestRunOptions::default()
            })
            .context(|| "BPF_PROG_TEST_RUN".into())?;
        out.truncate(result.data_size_out as usize);
        Ok(RunResult {
            action: result.return_value,
            packet: out,
            per_run: result.duration,
        })
    }
}

impl Dataplane {
    /// Like [`Dataplane::test_run`] in the kernel's live-frames mode: every repetition
    /// starts from a fresh copy of `packet` (a plain repeated run would feed the program
    /// its own encapsulated output) and XDP_TX frames really leave through `ifindex`.
    /// Returns the average time per packet.
    pub fn test_run_live(
        &mut self,
        packet: &[u8],
        ifindex: u32,
        repeat: u32,
    ) -> Result<Duration, XdpError> {
        let ctx: [u32; 6] = [0, packet.len() as u32, 0, ifindex, 0, 0];
        let ctx_bytes: Vec<u8> = ctx.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let program = self.program()?;
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(packet),
                ctx_in: Some(&ctx_bytes[..]),
                repeat: repeat.max(1),
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..TestRunOptions::default()
            })
            .context(|| "BPF_PROG_TEST_RUN (live frames)".into())?;
        Ok(result.duration)
    }
}

fn sum(map: &PerCpuArray<MapData, Counters>, index: u32) -> Result<Counters, XdpError> {
    let values = map
        .get(&index, 0)
        .context(|| format!("counters[{index}]"))?;
    Ok(values
        .iter()
        .fold([0, 0], |acc, c| [acc[0] + c[0], acc[1] + c[1]]))
}

fn program_of<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut XdpProgram, XdpError> {
    ebpf.program_mut(name)
        .ok_or_else(|| XdpError::Bpf {
            what: format!("program {name}"),
            detail: "missing from the object".into(),
        })?
        .try_into()
        .context(|| format!("program {name}"))
}

/// Attaches `program` to `interface`, with errors an operator can act on.
pub(crate) fn attach(
    program: &mut XdpProgram,
    interface: &str,
    mode: ConfigMode,
) -> Result<(), XdpError> {
    let aya_mode = match mode {
        ConfigMode::Native => XdpMode::Driver,
        ConfigMode::Generic => XdpMode::Skb,
    };
    match program.attach(interface, aya_mode) {
        Ok(_) => Ok(()),
        Err(aya::programs::ProgramError::UnknownInterface { .. }) => {
            Err(XdpError::NoInterface(interface.to_owned()))
        }
        Err(e) => Err(XdpError::from_aya(
            format!(
                "attaching to {interface} in {} mode",
                match mode {
                    ConfigMode::Native => "native",
                    ConfigMode::Generic => "generic",
                }
            ),
            &e,
        )),
    }
}

/// Loads the decapsulation object and attaches its program `name` (`xdp_decap` or
/// `xdp_pass`) to `interface`. Detaches when the returned value is dropped.
pub fn attach_decap(interface: &str, mode: ConfigMode, name: &str) -> Result<Ebpf, XdpError> {
    let mut ebpf = Ebpf::load(objects::decap()?).context(|| "loading the decap object".into())?;
    let program = program_of(&mut ebpf, name)?;
    program
        .load()
        .context(|| format!("loading {name} into the kernel"))?;
    attach(program, interface, mode)?;
    Ok(ebpf)
}
