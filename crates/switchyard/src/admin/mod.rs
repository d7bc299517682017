//! The admin API on `[admin] listen`: liveness, readiness, metrics and the JSON views of
//! listeners, clusters and the effective configuration (SPEC section 5).

pub mod access_log;
pub mod api;
pub mod metrics;
pub mod server;
