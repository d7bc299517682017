//! The backend side of IPIP forwarding on a kernel without an ipip device:
//! `switchyard xdp-decap --interface IF` attaches `xdp_decap` (`bpf/decap.c`), which strips
//! the outer IPv4 header of IPIP packets so the inner packet, addressed to the VIP the
//! backend holds on `lo`, goes up the stack. The program stays attached while the command
//! runs and detaches when it exits (SIGTERM/SIGINT), like the balancer.
//!
//! In production, with a kernel that has the ipip module, a tunnel device does the same
//! job without a running process: `ip link add tunl0 type ipip external; ip link set tunl0
//! up` plus `rp_filter = 0` on it (docs/operations.md).

use aya::Ebpf;

use super::dataplane;
use super::error::XdpError;
use crate::config::model::XdpMode;

/// An attached decapsulation program; detaches when dropped.
#[derive(Debug)]
pub struct Decap {
    _ebpf: Ebpf,
    interface: String,
}

impl Decap {
    /// Attaches `xdp_decap` to `interface` in `mode`.
    pub fn attach(interface: &str, mode: XdpMode) -> Result<Decap, XdpError> {
        let ebpf = dataplane::attach_decap(interface, mode, "xdp_decap")?;
        Ok(Decap {
            _ebpf: ebpf,
            interface: interface.to_owned(),
        })
    }

    /// The interface it is attached to.
    pub fn interface(&self) -> &str {
        &self.interface
    }
}
