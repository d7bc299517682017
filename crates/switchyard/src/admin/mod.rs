//! The admin API on `[admin] listen`: liveness, readiness, metrics and the JSON views of
//! listeners, clusters and the effective configuration (SPEC section 5), and the dashboard
//! page that reads them.

pub mod access_log;
pub mod api;
pub mod dashboard;
pub mod metrics;
pub mod server;
