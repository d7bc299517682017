//! The fault timeline, expanded: every fault of the scenario becomes timed [`Event`]s for
//! the runner and a [`Window`] for the report and the thresholds.
//!
//! Expansion is pure (no clock, no sockets), so what a drill will do at which second is
//! unit-tested exactly: staggered faults start one backend after another, flapping
//! becomes its on/off edges, and a fault without a duration lasts until the end.

use std::time::Duration;

use super::scenario::{Fault, FaultKind};
use crate::backend::Latency;

/// How a backend's answers are made worse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Degrade {
    /// A new service time.
    Latency(Latency),
    /// Errors at `rate`, optionally a new service time; `healthz` makes health checks
    /// fail too.
    Errors {
        /// Share of requests that fail.
        rate: f64,
        /// Their status.
        status: u16,
        /// A new service time.
        latency: Option<Latency>,
        /// Whether `/healthz` fails too.
        healthz: bool,
    },
}

/// One step of the drill.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Make a backend's answers worse.
    Degrade {
        /// 0-based backend.
        backend: usize,
        /// How.
        how: Degrade,
    },
    /// Give a backend back its initial behaviour.
    Restore {
        /// 0-based backend.
        backend: usize,
    },
    /// Kill a backend (its connections close at once).
    Kill {
        /// 0-based backend.
        backend: usize,
    },
    /// Start a killed backend again on the same address.
    Start {
        /// 0-based backend.
        backend: usize,
    },
    /// Operator drain through the admin API.
    Drain {
        /// 0-based backend.
        backend: usize,
    },
    /// Undo [`Action::Drain`].
    Undrain {
        /// 0-based backend.
        backend: usize,
    },
    /// `POST /api/v1/reload`.
    Reload,
    /// Open a crowd of slow clients.
    SlowClients {
        /// The fault's index (names the crowd).
        id: usize,
        /// Connections.
        count: usize,
        /// Pause between bytes.
        interval: Duration,
    },
    /// Close that crowd.
    StopSlowClients {
        /// The fault's index.
        id: usize,
    },
}

/// An action at a time from the start of the load.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When.
    pub at: Duration,
    /// What.
    pub action: Action,
}

/// When a fault was on, for markers and thresholds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Window {
    /// `"slow b12"`, `"drain b1"`, `"reload"`, ...
    pub label: String,
    /// The fault kind's word.
    pub kind: &'static str,
    /// 0-based backends it hits.
    pub backends: Vec<usize>,
    /// Start, seconds from the start of the load.
    pub start_s: f64,
    /// End, seconds.
    pub end_s: f64,
    /// Whether it makes its backend bad for traffic.
    pub degrades: bool,
    /// Whether it is planned work clients should not notice (drain, reload).
    pub planned: bool,
}

const FAILING: Degrade = Degrade::Errors {
    rate: 1.0,
    status: 503,
    latency: None,
    healthz: true,
};

/// Expands `faults` for a load of `run` length: events sorted by time (ties keep the
/// scenario's order) and one window per fault and backend.
pub fn expand(faults: &[Fault], run: Duration) -> (Vec<Event>, Vec<Window>) {
    let mut events = Vec::new();
    let mut windows = Vec::new();
    for (id, fault) in faults.iter().enumerate() {
        let targets: Vec<Option<usize>> = if fault.backends.is_empty() {
            vec![None]
        } else {
            fault.backends.iter().copied().map(Some).collect()
        };
        for (k, backend) in targets.into_iter().enumerate() {
            let start = fault.at + fault.stagger.saturating_mul(k as u32);
            if start >= run {
                continue;
            }
            let end = fault.duration.map_or(run, |d| (start + d).min(run));
            let mut push = |at: Duration, action: Action| events.push(Event { at, action });
            let ends = fault.duration.is_some() && end < run;
            match (&fault.kind, backend) {
                (FaultKind::Slow { latency }, Some(b)) => {
                    push(
                        start,
                        Action::Degrade {
                            backend: b,
                            how: Degrade::Latency(*latency),
                        },
                    );
                    if ends {
                        push(end, Action::Restore { backend: b });
                    }
                }
                (
                    FaultKind::Gray {
                        error_rate,
                        status,
                        latency,
                    },
                    Some(b),
                ) => {
                    let how = Degrade::Errors {
                        rate: *error_rate,
                        status: *status,
                        latency: *latency,
                        healthz: false,
                    };
                    push(start, Action::Degrade { backend: b, how });
                    if ends {
                        push(end, Action::Restore { backend: b });
                    }
                }
                (FaultKind::Failing { error_rate, status }, Some(b)) => {
                    let how = Degrade::Errors {
                        rate: *error_rate,
                        status: *status,
                        latency: None,
                        healthz: true,
                    };
                    push(start, Action::Degrade { backend: b, how });
                    if ends {
                        push(end, Action::Restore { backend: b });
                    }
                }
                (FaultKind::Dead, Some(b)) => {
                    push(start, Action::Kill { backend: b });
                    if ends {
                        push(end, Action::Start { backend: b });
                    }
                }
                (FaultKind::Flapping { period }, Some(b)) => {
                    let period = (*period).max(Duration::from_millis(100));
                    let mut t = start;
                    let mut failing = true;
                    while t < end {
                        let action = if failing {
                            Action::Degrade {
                                backend: b,
                                how: FAILING,
                            }
                        } else {
                            Action::Restore { backend: b }
                        };
                        push(t, action);
                        failing = !failing;
                        t += period;
                    }
                    if !failing && ends {
                        push(end, Action::Restore { backend: b });
                    }
                }
                (FaultKind::Drain, Some(b)) => {
                    push(start, Action::Drain { backend: b });
                    if ends {
                        push(end, Action::Undrain { backend: b });
                    }
                }
                (FaultKind::Reload, _) => push(start, Action::Reload),
                (FaultKind::SlowClients { count, interval }, _) => {
                    push(
                        start,
                        Action::SlowClients {
                            id,
                            count: *count,
                            interval: *interval,
                        },
                    );
                    push(end, Action::StopSlowClients { id });
                }
                // Validation gives every backend fault a backend.
                (_, None) => continue,
            }
            let label = match (&fault.kind, backend) {
                (FaultKind::SlowClients { count, .. }, _) => format!("slow-clients x{count}"),
                (kind, Some(b)) => format!("{} b{}", kind.word(), b + 1),
                (kind, None) => kind.word().to_owned(),
            };
            windows.push(Window {
                label,
                kind: fault.kind.word(),
                backends: backend.into_iter().collect(),
                start_s: start.as_secs_f64(),
                end_s: end.as_secs_f64(),
                degrades: fault.kind.degrades(),
                planned: fault.kind.is_planned(),
            });
        }
    }
    events.sort_by_key(|e| e.at);
    (events, windows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn fault(kind: FaultKind, at: u64, duration: Option<u64>, backends: &[usize]) -> Fault {
        Fault {
            kind,
            at: s(at),
            duration: duration.map(s),
            backends: backends.to_vec(),
            stagger: Duration::ZERO,
        }
    }

    #[test]
    fn a_fault_starts_and_ends() {
        let slow = Latency::Fixed(Duration::from_millis(900));
        let (events, windows) = expand(
            &[fault(FaultKind::Slow { latency: slow }, 2, Some(5), &[11])],
            s(10),
        );
        assert_eq!(
            events,
            [
                Event {
                    at: s(2),
                    action: Action::Degrade {
                        backend: 11,
                        how: Degrade::Latency(slow)
                    }
                },
                Event {
                    at: s(7),
                    action: Action::Restore { backend: 11 }
                },
            ]
        );
        assert_eq!(windows[0].label, "slow b12");
        assert_eq!((windows[0].start_s, windows[0].end_s), (2.0, 7.0));
        assert!(windows[0].degrades && !windows[0].planned);
    }

    #[test]
    fn a_fault_without_duration_lasts_to_the_end_and_is_not_undone() {
        let (events, windows) = expand(&[fault(FaultKind::Dead, 3, None, &[0])], s(10));
        assert_eq!(
            events,
            [Event {
                at: s(3),
                action: Action::Kill { backend: 0 }
            }]
        );
        assert_eq!(windows[0].end_s, 10.0);
    }

    #[test]
    fn staggered_drains_go_one_backend_after_another() {
        let mut f = fault(FaultKind::Drain, 1, Some(2), &[0, 1, 2]);
        f.stagger = s(3);
        let (events, windows) = expand(&[f], s(8));
        let at: Vec<(u64, &Action)> = events.iter().map(|e| (e.at.as_secs(), &e.action)).collect();
        assert_eq!(
            at,
            [
                (1, &Action::Drain { backend: 0 }),
                (3, &Action::Undrain { backend: 0 }),
                (4, &Action::Drain { backend: 1 }),
                (6, &Action::Undrain { backend: 1 }),
                (7, &Action::Drain { backend: 2 }),
            ]
        );
        assert_eq!(windows.len(), 3);
        assert_eq!((windows[2].start_s, windows[2].end_s), (7.0, 8.0));
        assert!(windows[2].planned);
    }

    #[test]
    fn flapping_alternates_and_ends_restored() {
        let (events, _) = expand(
            &[fault(
                FaultKind::Flapping { period: s(2) },
                1,
                Some(5),
                &[0],
            )],
            s(10),
        );
        let at: Vec<(u64, bool)> = events
            .iter()
            .map(|e| (e.at.as_secs(), matches!(e.action, Action::Degrade { .. })))
            .collect();
        assert_eq!(at, [(1, true), (3, false), (5, true), (6, false)]);
    }

    #[test]
    fn faults_past_the_end_are_dropped() {
        let (events, windows) = expand(&[fault(FaultKind::Reload, 12, Some(1), &[])], s(10));
        assert!(events.is_empty() && windows.is_empty());
    }
}
