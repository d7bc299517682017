//! The verdict: each threshold of the scenario checked against what a run measured.
//!
//! Pure functions over the recorded series, so a verdict can be recomputed from the JSON
//! report and every rule is unit-tested with exact figures. A threshold the scenario does
//! not set is not reported.

use std::collections::BTreeSet;

use serde::Serialize;

use super::scenario::Thresholds;
use super::timeline::Window;
use crate::loadgen::{SecondSummary, Summary};

/// Per-second attempts and state of each backend, as the drill sampled them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EndpointSeries {
    /// Backend names, b1..bN.
    pub names: Vec<String>,
    /// One entry per second of the load.
    pub seconds: Vec<EndpointSecond>,
}

/// One second of [`EndpointSeries`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointSecond {
    /// Seconds from the start of the load.
    pub second: u64,
    /// Requests each backend received in that second.
    pub attempts: Vec<u64>,
    /// Each endpoint's state in the balancer's admin API at the end of that second
    /// (`"down"` while the backend process is killed, `"?"` when unknown).
    pub states: Vec<String>,
}

impl EndpointSecond {
    /// Backend `b`'s share of the second's attempts (0 when there were none).
    pub fn share(&self, b: usize) -> f64 {
        let total: u64 = self.attempts.iter().sum();
        match (self.attempts.get(b), total) {
            (Some(&n), t) if t > 0 => n as f64 / t as f64,
            _ => 0.0,
        }
    }
}

/// What one run measured, as the thresholds need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured<'a> {
    /// The client's totals.
    pub summary: &'a Summary,
    /// The client's per-second series.
    pub client: &'a [SecondSummary],
    /// Requests the backends received.
    pub upstream_attempts: u64,
    /// Per-second backend figures.
    pub endpoints: &'a EndpointSeries,
    /// When each fault was on.
    pub windows: &'a [Window],
}

impl Measured<'_> {
    /// Upstream attempts per client request.
    pub fn amplification(&self) -> f64 {
        if self.summary.requests == 0 {
            0.0
        } else {
            self.upstream_attempts as f64 / self.summary.requests as f64
        }
    }
}

/// One threshold's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// The threshold's key in the scenario.
    pub name: &'static str,
    /// The bound, as written.
    pub limit: String,
    /// What was measured.
    pub actual: String,
    /// Whether it held.
    pub pass: bool,
}

/// Whole seconds from a degrading fault's start until its backend's share fell below
/// `below` and stayed there to the fault's end; `None` when it never did.
pub fn settle_seconds(
    endpoints: &EndpointSeries,
    window: &Window,
    backend: usize,
    below: f64,
) -> Option<u64> {
    let start = window.start_s.floor() as u64;
    let end = (window.end_s.ceil() as u64).max(start + 1);
    let seconds: Vec<&EndpointSecond> = endpoints
        .seconds
        .iter()
        .filter(|s| s.second >= start && s.second < end)
        .collect();
    if seconds.is_empty() {
        return None;
    }
    // The earliest second after which every second is under the bound.
    let mut settled: Option<u64> = None;
    for s in &seconds {
        if s.share(backend) < below {
            settled.get_or_insert(s.second);
        } else {
            settled = None;
        }
    }
    settled.map(|s| s - start)
}

/// Failed client requests sent during planned work (drain, reload).
pub fn lost_in_planned_windows(client: &[SecondSummary], windows: &[Window]) -> u64 {
    let mut seconds = BTreeSet::new();
    for w in windows.iter().filter(|w| w.planned) {
        let start = w.start_s.floor() as u64;
        let end = (w.end_s.ceil() as u64).max(start + 1);
        seconds.extend(start..end);
    }
    client
        .iter()
        .filter(|s| seconds.contains(&s.second))
        .map(|s| s.requests - s.successes)
        .sum()
}

/// The busiest backend's attempts over a fair share (1.0 = perfectly even).
pub fn imbalance(endpoints: &EndpointSeries) -> f64 {
    let n = endpoints.names.len();
    let mut totals = vec![0u64; n];
    for s in &endpoints.seconds {
        for (t, a) in totals.iter_mut().zip(&s.attempts) {
            *t += a;
        }
    }
    let sum: u64 = totals.iter().sum();
    match totals.iter().max() {
        Some(&max) if sum > 0 => max as f64 * n as f64 / sum as f64,
        _ => 0.0,
    }
}

fn ms(d: std::time::Duration) -> String {
    crate::config::units::format_duration(d)
}

/// Checks every threshold the scenario sets.
pub fn evaluate(t: &Thresholds, m: &Measured<'_>) -> Vec<Verdict> {
    let mut out = Vec::new();
    if let Some(min) = t.success_rate {
        let actual = m.summary.success_rate();
        out.push(Verdict {
            name: "success_rate",
            limit: format!(">= {:.2}%", min * 100.0),
            actual: format!("{:.2}%", actual * 100.0),
            pass: actual >= min,
        });
    }
    if let Some(max) = t.p99 {
        let actual = m.summary.latency_ms.p99;
        out.push(Verdict {
            name: "p99",
            limit: format!("<= {}", ms(max)),
            actual: format!("{actual:.1}ms"),
            pass: actual <= max.as_secs_f64() * 1000.0,
        });
    }
    if let Some(max) = t.amplification {
        let actual = m.amplification();
        out.push(Verdict {
            name: "amplification",
            limit: format!("<= {max:.2}"),
            actual: format!("{actual:.3}"),
            pass: actual <= max,
        });
    }
    if let Some(bad) = t.bad_share {
        let mut worst: Option<Option<u64>> = None;
        for w in m.windows.iter().filter(|w| w.degrades) {
            for &b in &w.backends {
                let settle = settle_seconds(m.endpoints, w, b, bad.below);
                worst = Some(match (worst, settle) {
                    (None, s) => s,
                    (Some(None), _) | (Some(_), None) => None,
                    (Some(Some(a)), Some(s)) => Some(a.max(s)),
                });
            }
        }
        if let Some(worst) = worst {
            let within = bad.within.as_secs();
            out.push(Verdict {
                name: "bad_share",
                limit: format!("< {:.1}% within {}", bad.below * 100.0, ms(bad.within)),
                actual: worst.map_or_else(|| "never".to_owned(), |s| format!("{s}s")),
                pass: worst.is_some_and(|s| s <= within),
            });
        }
    }
    if let Some(max) = t.lost {
        let actual = lost_in_planned_windows(m.client, m.windows);
        out.push(Verdict {
            name: "lost",
            limit: format!("<= {max}"),
            actual: actual.to_string(),
            pass: actual <= max,
        });
    }
    if let Some(max) = t.imbalance {
        let actual = imbalance(m.endpoints);
        out.push(Verdict {
            name: "imbalance",
            limit: format!("<= {max:.2}x fair share"),
            actual: format!("{actual:.2}x"),
            pass: actual <= max,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::loadgen::stats::Percentiles;

    fn endpoints(per_second: &[[u64; 2]]) -> EndpointSeries {
        EndpointSeries {
            names: vec!["b1".into(), "b2".into()],
            seconds: per_second
                .iter()
                .enumerate()
                .map(|(i, a)| EndpointSecond {
                    second: i as u64,
                    attempts: a.to_vec(),
                    states: vec!["healthy".into(); 2],
                })
                .collect(),
        }
    }

    fn window(start: f64, end: f64, planned: bool) -> Window {
        Window {
            label: "w".into(),
            kind: "slow",
            backends: vec![1],
            start_s: start,
            end_s: end,
            degrades: !planned,
            planned,
        }
    }

    fn second(i: u64, requests: u64, successes: u64) -> SecondSummary {
        SecondSummary {
            second: i,
            requests,
            successes,
            attempts: requests,
            p50_ms: 1.0,
            p99_ms: 2.0,
            max_ms: 3.0,
            errors: BTreeMap::new(),
            backends: BTreeMap::new(),
        }
    }

    fn summary(requests: u64, successes: u64, p99: f64) -> Summary {
        Summary {
            requests,
            successes,
            attempts: requests,
            latency_ms: Percentiles {
                p50: 1.0,
                p90: 1.0,
                p99,
                p999: p99,
                max: p99,
                mean: 1.0,
            },
            errors: BTreeMap::new(),
            backends: BTreeMap::new(),
        }
    }

    #[test]
    fn settling_is_the_start_of_the_last_run_under_the_bound() {
        // b2's share by second: 50%, 50%, 30%, 1%, 20% (blip), 1%, 1%.
        let e = endpoints(&[
            [50, 50],
            [50, 50],
            [70, 30],
            [99, 1],
            [80, 20],
            [99, 1],
            [99, 1],
        ]);
        assert_eq!(
            settle_seconds(&e, &window(1.0, 7.0, false), 1, 0.05),
            Some(4)
        );
        assert_eq!(
            settle_seconds(&e, &window(1.0, 4.0, false), 1, 0.05),
            Some(2)
        );
        assert_eq!(settle_seconds(&e, &window(1.0, 5.0, false), 1, 0.05), None);
    }

    #[test]
    fn only_failures_inside_planned_windows_are_lost() {
        let client = [
            second(0, 10, 10),
            second(1, 10, 7),
            second(2, 10, 9),
            second(3, 10, 0),
        ];
        assert_eq!(
            lost_in_planned_windows(&client, &[window(1.2, 2.5, true)]),
            4
        );
        assert_eq!(
            lost_in_planned_windows(&client, &[window(1.2, 2.5, true), window(2.0, 2.1, true)]),
            4
        );
        assert_eq!(
            lost_in_planned_windows(&client, &[window(3.0, 4.0, false)]),
            0
        );
    }

    #[test]
    fn imbalance_is_the_busiest_over_a_fair_share() {
        assert_eq!(imbalance(&endpoints(&[[75, 25], [75, 25]])), 1.5);
        assert_eq!(imbalance(&endpoints(&[[50, 50]])), 1.0);
        assert_eq!(imbalance(&endpoints(&[[0, 0]])), 0.0);
    }

    #[test]
    fn every_set_threshold_gets_a_verdict() {
        let s = summary(1000, 990, 450.0);
        let e = endpoints(&[[50, 50], [99, 1], [99, 1]]);
        let windows = [window(1.0, 3.0, false)];
        let m = Measured {
            summary: &s,
            client: &[],
            upstream_attempts: 1300,
            endpoints: &e,
            windows: &windows,
        };
        let t = Thresholds {
            success_rate: Some(0.995),
            p99: Some(Duration::from_millis(500)),
            amplification: Some(1.2),
            bad_share: Some(super::super::scenario::BadShare {
                below: 0.02,
                within: Duration::from_secs(1),
            }),
            lost: None,
            imbalance: None,
        };
        let v = evaluate(&t, &m);
        let got: Vec<(&str, &str, bool)> = v
            .iter()
            .map(|v| (v.name, v.actual.as_str(), v.pass))
            .collect();
        assert_eq!(
            got,
            [
                ("success_rate", "99.00%", false),
                ("p99", "450.0ms", true),
                ("amplification", "1.300", false),
                ("bad_share", "0s", true),
            ]
        );
    }
}
