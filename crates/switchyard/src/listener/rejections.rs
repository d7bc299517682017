//! `connections_rejected_total{listener, reason}`: every reason's series exists from
//! startup (SPEC 6), and listeners count by reason word without looking labels up.

use std::collections::HashMap;

use crate::admin::metrics::{self, Counter, Registry};

/// Every `reason` of `connections_rejected_total` (SPEC section 6).
pub const REASONS: [&str; 6] = [
    "max_connections",
    "per_ip",
    "proxy_protocol",
    "tls",
    "slow_head",
    "slow_body",
];

/// One listener's rejection counters.
#[derive(Debug)]
pub struct Rejections(HashMap<&'static str, Counter>);

impl Rejections {
    /// Creates every reason's series for `listener` at zero.
    pub fn new(listener: &str, registry: &Registry) -> Rejections {
        Rejections(
            REASONS
                .iter()
                .map(|&reason| {
                    let counter =
                        registry.counter(&metrics::CONNECTIONS_REJECTED_TOTAL, &[listener, reason]);
                    (reason, counter)
                })
                .collect(),
        )
    }

    /// Counts one rejection for `reason` (one of [`REASONS`]).
    pub fn count(&self, reason: &str) {
        if let Some(counter) = self.0.get(reason) {
            counter.inc();
        }
    }
}
