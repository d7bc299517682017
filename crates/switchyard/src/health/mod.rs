//! Active health checking: probes sent to every endpoint of a cluster with
//! `[cluster.health]`, off the request path, whose verdicts flip the endpoint's
//! `checked_healthy` fact after `healthy_threshold` / `unhealthy_threshold` results in a row.
//!
//! [`probe`] knows how to ask one endpoint once (tcp, http, grpc); [`active`] schedules the
//! probes (interval with jitter, first round at once) and applies their results. Passive
//! detection (outlier ejection on live traffic) lives with the cluster, since every tier
//! feeds it from its attempts.

pub mod active;
pub mod probe;

pub use active::{FirstRound, spawn_checks};
