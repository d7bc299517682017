//! The BPF objects `build.rs` compiled from `bpf/*.c`, embedded in the binary so a running
//! balancer never depends on a file next to it. A build without clang embeds empty objects
//! and the reason; [`lb`] and [`decap`] then refuse with that reason instead of failing
//! somewhere inside the ELF parser.

use super::error::XdpError;

static LB: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb.o"));
static DECAP: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/decap.o"));
static MISSING: &str = include_str!(concat!(env!("OUT_DIR"), "/bpf-missing.txt"));

fn present(bytes: &'static [u8]) -> Result<&'static [u8], XdpError> {
    if bytes.is_empty() {
        return Err(XdpError::NotBuilt(MISSING.trim().to_owned()));
    }
    Ok(bytes)
}

/// The balancer program (`xdp_lb`) and its maps.
pub fn lb() -> Result<&'static [u8], XdpError> {
    present(LB)
}

/// The decapsulation program (`xdp_decap`) and the do-nothing `xdp_pass`.
pub fn decap() -> Result<&'static [u8], XdpError> {
    present(DECAP)
}

/// Whether this build carries the BPF programs.
pub fn available() -> bool {
    !LB.is_empty() && !DECAP.is_empty()
}
