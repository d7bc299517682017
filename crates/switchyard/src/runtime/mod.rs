//! The running balancer: the snapshot every connection reads, the server that binds and
//! serves, its listener groups, reload, the shutdown sequence, and the process-wide clock and RNG.

pub mod clock;
pub mod limits;
pub mod listeners;
pub mod reload;
pub mod rng;
pub mod server;
pub mod shutdown;
pub mod signals;
pub mod snapshot;
pub mod upgrade;

pub use server::{BoundListener, Server, Shared, StartError, StartOptions};
pub use snapshot::Snapshot;
