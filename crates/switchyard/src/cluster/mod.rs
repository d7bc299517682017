//! Clusters and endpoints as the runtime holds them: the configured pool plus the live state
//! a picker reads (in-flight counts, latency estimates) and the metric handles resolved once
//! when the snapshot is built.
//!
//! The levels follow linkerd2-proxy's split: a listener chooses a *cluster* (logical), the
//! cluster's picker chooses an *endpoint* (concrete). Decisions themselves live in
//! `switchyard-algo`; this module only feeds them live numbers.

pub mod connect;
pub mod drain_cut;
mod hash_key;
mod pool;

pub mod endpoint;

pub use endpoint::{Endpoint, EndpointState, InFlight};
pub use hash_key::{PROTO_TCP, PROTO_UDP, connection_key, request_key};
pub use pool::{Cluster, ClusterBuildError};
