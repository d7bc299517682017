//! The active checker's schedule: one task per endpoint of every cluster with
//! `[cluster.health]`. The first probe goes out at once (a new endpoint starts `unhealthy`
//! and one pass admits it, SPEC 3.1); after that every `interval`, spread by `jitter` so a
//! fleet's checks do not arrive in lockstep. A result flips the endpoint only after the
//! threshold's worth of results in a row ([`HealthState`]); a recovery starts the endpoint's
//! slow-start ramp. Checks never touch the request path: they only write the endpoint's
//! `checked_healthy` fact, which pickers read.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::Rng;
use switchyard_algo::health::{HealthState, Transition};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::probe::{self, ProbeSpec};
use crate::admin::metrics::{self, Counter, Registry};
use crate::cluster::Cluster;
use crate::runtime::{clock, rng};
use crate::tls::upstream::UpstreamTls;

/// Counts the endpoints whose first check has not finished, so `/ready` can wait for the
/// first round (SPEC 5).
#[derive(Debug, Default)]
pub struct FirstRound {
    pending: AtomicUsize,
    done: Notify,
}

impl FirstRound {
    fn finished_one(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_waiters();
        }
    }

    /// Waits until every endpoint was checked once.
    pub async fn wait(&self) {
        loop {
            let notified = self.done.notified();
            if self.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Spawns the checks of every cluster in `clusters` (with its `[cluster.tls]` client, if
/// any: checks then run over TLS) that has `[cluster.health]` onto
/// `tasks`. Returns the first-round tracker and the longest check timeout (how long the
/// first round may take at most).
pub fn spawn_checks(
    clusters: &[(Arc<Cluster>, Option<Arc<UpstreamTls>>)],
    registry: &Registry,
    tasks: &mut JoinSet<()>,
) -> (Arc<FirstRound>, Duration) {
    let first_round = Arc::new(FirstRound::default());
    let mut longest = Duration::ZERO;
    for (cluster, tls) in clusters {
        let Some(health) = &cluster.config.health else {
            continue;
        };
        longest = longest.max(health.timeout);
        let spec = Arc::new(ProbeSpec::new(
            health,
            cluster.config.protocol,
            cluster.config.connect_timeout,
            tls.clone(),
        ));
        let name = cluster.name();
        let results = Arc::new(Results {
            pass: registry.counter(&metrics::HEALTH_CHECKS_TOTAL, &[name, "pass"]),
            fail: registry.counter(&metrics::HEALTH_CHECKS_TOTAL, &[name, "fail"]),
        });
        for index in 0..cluster.endpoints().len() {
            first_round.pending.fetch_add(1, Ordering::AcqRel);
            tasks.spawn(check_endpoint(
                Arc::clone(cluster),
                index,
                Arc::clone(&spec),
                Arc::clone(&results),
                Arc::clone(&first_round),
            ));
        }
    }
    (first_round, longest)
}

/// `health_checks_total{cluster,result}`.
#[derive(Debug)]
struct Results {
    pass: Counter,
    fail: Counter,
}

/// The wait before the next check: `interval` plus or minus up to `jitter` percent of it.
pub fn next_delay(interval: Duration, jitter_percent: f64, unit: f64) -> Duration {
    let spread = interval.as_secs_f64() * (jitter_percent.clamp(0.0, 100.0) / 100.0);
    let offset = spread * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
    Duration::from_secs_f64((interval.as_secs_f64() + offset).max(0.0))
}

async fn check_endpoint(
    cluster: Arc<Cluster>,
    index: usize,
    spec: Arc<ProbeSpec>,
    results: Arc<Results>,
    first_round: Arc<FirstRound>,
) {
    let Some(endpoint) = cluster.endpoints().get(index).cloned() else {
        first_round.finished_one();
        return;
    };
    let health = &spec.health;
    // A reload hands over endpoints with their verdict: continue from it.
    let mut state = HealthState::new(endpoint.is_checked_healthy());
    let mut first = true;
    loop {
        let result = probe::check(&spec, endpoint.address).await;
        let pass = result.is_ok();
        if pass {
            results.pass.inc();
        } else {
            results.fail.inc();
        }
        // A new endpoint is admitted by its first pass; afterwards the thresholds rule.
        let transition = if !endpoint.was_admitted() && pass {
            state.admit()
        } else {
            state.record(pass, health.healthy_threshold, health.unhealthy_threshold)
        };
        if let Some(transition) = transition {
            let now = clock::now();
            let healthy = transition == Transition::BecameHealthy;
            endpoint.set_checked_healthy(healthy, now);
            match &result {
                Ok(()) => {
                    info!(cluster = cluster.name(), endpoint = %endpoint.name, "endpoint healthy")
                }
                Err(failure) => {
                    warn!(cluster = cluster.name(), endpoint = %endpoint.name, %failure, "endpoint unhealthy")
                }
            }
            cluster.refresh(now);
        }
        if first {
            first = false;
            first_round.finished_one();
        }
        let unit: f64 = rng::with_rng(|rng| rng.random());
        tokio::time::sleep(next_delay(health.interval, health.jitter_percent, unit)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_spreads_the_interval_both_ways() {
        let interval = Duration::from_secs(10);
        assert_eq!(next_delay(interval, 10.0, 0.0), Duration::from_secs(9));
        assert_eq!(next_delay(interval, 10.0, 0.5), Duration::from_secs(10));
        assert_eq!(next_delay(interval, 10.0, 1.0), Duration::from_secs(11));
        assert_eq!(next_delay(interval, 0.0, 1.0), interval);
        assert_eq!(next_delay(interval, 500.0, 0.0), Duration::ZERO);
    }
}
