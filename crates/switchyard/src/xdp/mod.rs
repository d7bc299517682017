//! The packet tier: an XDP program (`bpf/lb.c`) that balances a VIP's TCP/UDP packets to
//! backend hosts by Maglev, forwarding by DSR or IPIP, driven by the same binary, the same
//! clusters, health checks and Maglev code as the L4/L7 tier.
//!
//! Why it is split this way: the kernel side is a fixed program and a handful of maps; all
//! policy (which endpoints are eligible, what the table says, what the counters are called)
//! stays in Rust where it is tested like the rest of the runtime.
//!
//! - [`objects`]: the compiled programs, embedded at build time (or the reason they are not).
//! - [`layout`]: the byte layouts of the map keys and values, shared with `bpf/common.h`.
//! - [`dataplane`]: one loaded copy of the program and its maps (load, attach, write, test
//!   run); the only module that talks to aya.
//! - [`table`]: the Maglev table of a VIP from its cluster, and the slots resolved for the
//!   current eligibility (pure; `switchyard_algo` does the work).
//! - [`control`]: the control loop: watches endpoint eligibility, writes the inactive table
//!   and flips the VIP's index, exports the counters as metrics.
//! - [`decap`]: the backend side of IPIP (`switchyard xdp-decap`).
//! - [`error`]: what can go wrong, phrased for an operator (not root, no such interface,
//!   kernel or driver lacks a feature).

pub mod control;
pub mod dataplane;
pub mod decap;
pub mod error;
pub mod layout;
pub mod objects;
pub mod table;

pub use control::{ClusterSource, XdpRuntime, start};
pub use error::XdpError;
