//! The scenario file (`docs/drills.md`): which balancer configuration, which fleet, what
//! load, which faults when, and what counts as surviving.
//!
//! The file is read with serde into a raw shape that denies unknown keys, then checked
//! field by field into [`Scenario`], whose durations, rates and indexes are already
//! validated, so the runner never meets a bad value halfway through a drill. Every error
//! names the field (`fault[2].latency`) and, for syntax errors, the line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::backend::Latency;
use crate::loadgen::{Mix, MixEntry, Protocol, RetryOn};

/// The longest drill accepted (a drill is a rehearsal, not a soak test).
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// The largest fleet.
pub const MAX_BACKENDS: usize = 64;
/// The most slow clients one fault may open.
pub const MAX_SLOW_CLIENTS: usize = 5000;

/// Why a scenario is unusable (exit 3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ScenarioError {
    /// The scenario file.
    pub file: String,
    /// What is wrong, naming the field (and the line for syntax errors).
    pub message: String,
}

/// Where the balancer configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// The operator's file (its clusters' endpoints are replaced by the drill's backends).
    File(PathBuf),
    /// A configuration written in the scenario.
    Inline(String),
}

impl ConfigSource {
    /// A short label for reports.
    pub fn label(&self) -> String {
        match self {
            Self::File(p) => p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            Self::Inline(_) => "inline".to_owned(),
        }
    }

    /// The configuration text.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Self::File(p) => std::fs::read_to_string(p).map_err(|e| {
                format!(
                    "cannot read the balancer configuration {}: {e}",
                    p.display()
                )
            }),
            Self::Inline(text) => Ok(text.clone()),
        }
    }

    /// The path relative file names in the configuration resolve against.
    pub fn origin(&self, scenario: &Path) -> PathBuf {
        match self {
            Self::File(p) => p.clone(),
            Self::Inline(_) => scenario.to_path_buf(),
        }
    }
}

/// The balancer under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balancer {
    /// The configuration.
    pub config: ConfigSource,
    /// The configuration `--compare` (or the scenario's `compare`) sets beside it.
    pub compare: Option<ConfigSource>,
    /// The cluster whose endpoints become the drill's backends (`None`: every cluster).
    pub cluster: Option<String>,
    /// The listener the load goes to (`None`: the first HTTP(S) or TCP listener).
    pub listener: Option<String>,
}

/// The drill's fleet of `switchyard backend` instances.
#[derive(Debug, Clone, PartialEq)]
pub struct Backends {
    /// How many (named b1..bN).
    pub count: usize,
    /// Requests each serves at once; the rest queue (0 = unlimited).
    pub concurrency: usize,
    /// Service time of a request.
    pub service_time: Latency,
}

/// The client load.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    /// Open-loop arrivals per second.
    pub rate: f64,
    /// HTTP/1.1: the most client connections; HTTP/2: the connections multiplexed.
    pub connections: usize,
    /// HTTP version.
    pub protocol: Protocol,
    /// Per-attempt client timeout.
    pub timeout: Duration,
    /// Client retries.
    pub retries: u32,
    /// What clients retry.
    pub retry_on: RetryOn,
    /// Pause before each client retry.
    pub retry_backoff: Duration,
    /// The request mix.
    pub mix: Mix,
    /// HTTP/1.1: reuse client connections (`false`: a new connection per attempt).
    pub keepalive: bool,
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Real traffic is slow (`/healthz` is not).
    Slow {
        /// The new service time.
        latency: Latency,
    },
    /// Real traffic fails and/or is slow while `/healthz` keeps passing.
    Gray {
        /// Share of requests answered with `status`.
        error_rate: f64,
        /// The error status.
        status: u16,
        /// A new service time, if any.
        latency: Option<Latency>,
    },
    /// Real traffic and health checks fail.
    Failing {
        /// Share of requests answered with `status`.
        error_rate: f64,
        /// The error status.
        status: u16,
    },
    /// The backend is killed, and started again when the fault ends (if it ends).
    Dead,
    /// Failing (health checks included) and healthy in turns of `period`.
    Flapping {
        /// Length of each half-cycle.
        period: Duration,
    },
    /// Operator drain through the admin API; undrained when the fault ends (if it ends).
    Drain,
    /// `POST /api/v1/reload`.
    Reload,
    /// A crowd of clients that send their request heads a byte at a time.
    SlowClients {
        /// Connections held open.
        count: usize,
        /// Pause between bytes.
        interval: Duration,
    },
}

impl FaultKind {
    /// The word used in scenario files.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Slow { .. } => "slow",
            Self::Gray { .. } => "gray",
            Self::Failing { .. } => "failing",
            Self::Dead => "dead",
            Self::Flapping { .. } => "flapping",
            Self::Drain => "drain",
            Self::Reload => "reload",
            Self::SlowClients { .. } => "slow-clients",
        }
    }

    /// Whether it makes its backend bad for traffic (the `bad_share` threshold watches it).
    pub fn degrades(&self) -> bool {
        matches!(
            self,
            Self::Slow { .. } | Self::Gray { .. } | Self::Failing { .. } | Self::Flapping { .. }
        )
    }

    /// Whether clients should lose nothing across it (the `lost` threshold watches it).
    pub fn is_planned(&self) -> bool {
        matches!(self, Self::Drain | Self::Reload)
    }
}

/// One fault on the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// What it does.
    pub kind: FaultKind,
    /// When it starts, from the start of the load.
    pub at: Duration,
    /// How long it lasts (`None`: until the end; instant kinds ignore it).
    pub duration: Option<Duration>,
    /// The backends it hits (0-based), in order.
    pub backends: Vec<usize>,
    /// With several backends: the delay between one backend's fault and the next's.
    pub stagger: Duration,
}

/// Pass/fail bounds; absent ones are not checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Thresholds {
    /// The least share of client requests that succeed (with their retries).
    pub success_rate: Option<f64>,
    /// The highest client p99 (from the intended send time).
    pub p99: Option<Duration>,
    /// The most upstream attempts per client request.
    pub amplification: Option<f64>,
    /// A degraded backend's share of attempts must fall below `below` within `within` of
    /// its fault's start, and stay below while the fault lasts.
    pub bad_share: Option<BadShare>,
    /// The most client requests that may fail during a drain or reload.
    pub lost: Option<u64>,
    /// The most attempts any backend may get, as a multiple of a fair share.
    pub imbalance: Option<f64>,
}

/// See [`Thresholds::bad_share`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BadShare {
    /// The share bound (0-1).
    pub below: f64,
    /// How long the balancer may take.
    pub within: Duration,
}

/// A validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// What it rehearses.
    pub description: String,
    /// The file it was read from.
    pub path: PathBuf,
    /// How long the load runs.
    pub duration: Duration,
    /// Seed for the backends' fault sampling and the request mix.
    pub seed: u64,
    /// The balancer.
    pub balancer: Balancer,
    /// The fleet.
    pub backends: Backends,
    /// The load.
    pub load: Load,
    /// The timeline.
    pub faults: Vec<Fault>,
    /// The verdict's bounds.
    pub thresholds: Thresholds,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    #[serde(default)]
    description: String,
    duration: String,
    seed: Option<u64>,
    balancer: RawBalancer,
    backends: RawBackends,
    load: RawLoad,
    #[serde(default)]
    fault: Vec<RawFault>,
    #[serde(default)]
    thresholds: RawThresholds,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBalancer {
    config: Option<String>,
    inline: Option<String>,
    compare: Option<String>,
    cluster: Option<String>,
    listener: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackends {
    count: usize,
    #[serde(default)]
    concurrency: usize,
    service_time: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    rate: f64,
    connections: Option<usize>,
    protocol: Option<String>,
    timeout: Option<String>,
    #[serde(default)]
    retries: u32,
    retry_on: Option<Vec<String>>,
    retry_backoff: Option<String>,
    mix: Option<Vec<String>>,
    keepalive: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    kind: String,
    at: String,
    duration: Option<String>,
    backend: Option<usize>,
    backends: Option<Vec<usize>>,
    stagger: Option<String>,
    latency: Option<String>,
    error_rate: Option<f64>,
    status: Option<u16>,
    period: Option<String>,
    count: Option<usize>,
    interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThresholds {
    success_rate: Option<f64>,
    p99: Option<String>,
    amplification: Option<f64>,
    bad_share: Option<RawBadShare>,
    lost: Option<u64>,
    imbalance: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBadShare {
    below: f64,
    within: String,
}

fn dur(field: &str, s: &str) -> Result<Duration, String> {
    crate::config::units::parse_duration(s).map_err(|e| format!("{field}: {e}"))
}

fn ratio(field: &str, r: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(format!("{field}: expected a ratio from 0 to 1, got {r}"))
    }
}

fn status(field: &str, s: Option<u16>) -> Result<u16, String> {
    match s.unwrap_or(503) {
        s @ 200..=599 => Ok(s),
        s => Err(format!("{field}: expected a status 200-599, got {s}")),
    }
}

fn latency(field: &str, s: &str) -> Result<Latency, String> {
    Latency::parse(s).map_err(|e| format!("{field}: {e}"))
}

/// Reads and validates the scenario at `path`.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let err = |message: String| ScenarioError {
        file: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    parse(&text, path).map_err(err)
}

/// Validates scenario `text`; relative paths resolve against `path`'s folder.
pub fn parse(text: &str, path: &Path) -> Result<Scenario, String> {
    let raw: RawScenario = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let file = |p: &str| ConfigSource::File(dir.join(p));
    let config = match (raw.balancer.config, raw.balancer.inline) {
        (Some(p), None) => file(&p),
        (None, Some(text)) => ConfigSource::Inline(text),
        _ => return Err("balancer: give exactly one of `config` (a file) or `inline`".into()),
    };
    let duration = dur("duration", &raw.duration)?;
    if duration.is_zero() || duration > MAX_DURATION {
        return Err("duration: must be above 0 and at most 1h".into());
    }
    let b = raw.backends;
    if b.count == 0 || b.count > MAX_BACKENDS {
        return Err(format!("backends.count: from 1 to {MAX_BACKENDS}"));
    }
    let backends = Backends {
        count: b.count,
        concurrency: b.concurrency,
        service_time: match &b.service_time {
            Some(s) => latency("backends.service_time", s)?,
            None => Latency::default(),
        },
    };
    let load = parse_load(raw.load)?;
    let faults = raw
        .fault
        .into_iter()
        .enumerate()
        .map(|(i, f)| parse_fault(f, i, backends.count))
        .collect::<Result<Vec<_>, _>>()?;
    let t = raw.thresholds;
    let thresholds = Thresholds {
        success_rate: t
            .success_rate
            .map(|r| ratio("thresholds.success_rate", r))
            .transpose()?,
        p99: t.p99.map(|p| dur("thresholds.p99", &p)).transpose()?,
        amplification: t.amplification,
        bad_share: t
            .bad_share
            .map(|b| {
                Ok::<_, String>(BadShare {
                    below: ratio("thresholds.bad_share.below", b.below)?,
                    within: dur("thresholds.bad_share.within", &b.within)?,
                })
            })
            .transpose()?,
        lost: t.lost,
        imbalance: t.imbalance,
    };
    Ok(Scenario {
        name: raw.name.unwrap_or_else(|| {
            path.file_stem()
                .map_or_else(|| "drill".to_owned(), |s| s.to_string_lossy().into_owned())
        }),
        description: raw.description,
        path: path.to_path_buf(),
        duration,
        seed: raw.seed.unwrap_or(1),
        balancer: Balancer {
            config,
            compare: raw.balancer.compare.as_deref().map(file),
            cluster: raw.balancer.cluster,
            listener: raw.balancer.listener,
        },
        backends,
        load,
        faults,
        thresholds,
    })
}

fn parse_load(l: RawLoad) -> Result<Load, String> {
    if !(l.rate.is_finite() && l.rate > 0.0 && l.rate <= 100_000.0) {
        return Err(format!("load.rate: from above 0 to 100000, got {}", l.rate));
    }
    let protocol = match l.protocol.as_deref() {
        None => Protocol::Http1,
        Some(p) => Protocol::parse(p).map_err(|e| format!("load.protocol: {e}"))?,
    };
    let mix = match l.mix {
        None => Mix::new(vec![MixEntry::get("/")]),
        Some(entries) => Mix::new(
            entries
                .iter()
                .map(|e| MixEntry::parse(e))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("load.mix: {e}"))?,
        ),
    }
    .ok_or("load.mix: at least one entry")?;
    Ok(Load {
        rate: l.rate,
        connections: l.connections.unwrap_or(256).clamp(1, 10_000),
        protocol,
        timeout: l
            .timeout
            .map_or(Ok(Duration::from_secs(5)), |t| dur("load.timeout", &t))?,
        retries: l.retries.min(10),
        retry_on: match l.retry_on {
            None => RetryOn::default(),
            Some(words) => RetryOn::parse(words.iter().map(String::as_str))
                .map_err(|e| format!("load.retry_on: {e}"))?,
        },
        retry_backoff: l
            .retry_backoff
            .map_or(Ok(Duration::ZERO), |t| dur("load.retry_backoff", &t))?,
        mix,
        keepalive: l.keepalive.unwrap_or(true),
    })
}

fn parse_fault(f: RawFault, i: usize, count: usize) -> Result<Fault, String> {
    let field = |name: &str| format!("fault[{i}].{name}");
    let unused = |present: bool, name: &str, kind: &str| {
        if present {
            Err(format!("{}: not used by kind = \"{kind}\"", field(name)))
        } else {
            Ok(())
        }
    };
    let kind = match f.kind.as_str() {
        "slow" => FaultKind::Slow {
            latency: latency(
                &field("latency"),
                f.latency
                    .as_deref()
                    .ok_or_else(|| format!("{}: required", field("latency")))?,
            )?,
        },
        "gray" => FaultKind::Gray {
            error_rate: ratio(
                &field("error_rate"),
                f.error_rate
                    .unwrap_or(if f.latency.is_some() { 0.0 } else { 1.0 }),
            )?,
            status: status(&field("status"), f.status)?,
            latency: f
                .latency
                .as_deref()
                .map(|l| latency(&field("latency"), l))
                .transpose()?,
        },
        "failing" => FaultKind::Failing {
            error_rate: ratio(&field("error_rate"), f.error_rate.unwrap_or(1.0))?,
            status: status(&field("status"), f.status)?,
        },
        "dead" | "restart" => FaultKind::Dead,
        "flapping" => FaultKind::Flapping {
            period: f
                .period
                .as_deref()
                .map_or(Ok(Duration::from_secs(2)), |p| dur(&field("period"), p))?,
        },
        "drain" => FaultKind::Drain,
        "reload" => FaultKind::Reload,
        "slow-clients" | "slowloris" => FaultKind::SlowClients {
            count: f.count.unwrap_or(100).min(MAX_SLOW_CLIENTS),
            interval: f
                .interval
                .as_deref()
                .map_or(Ok(Duration::from_secs(1)), |p| dur(&field("interval"), p))?,
        },
        other => {
            return Err(format!(
                "{}: unknown kind {other:?} (slow, gray, failing, dead, restart, flapping, drain, reload, slow-clients)",
                field("kind")
            ));
        }
    };
    let word = kind.word();
    if !matches!(kind, FaultKind::Slow { .. } | FaultKind::Gray { .. }) {
        unused(f.latency.is_some(), "latency", word)?;
    }
    if !matches!(kind, FaultKind::Gray { .. } | FaultKind::Failing { .. }) {
        unused(f.error_rate.is_some(), "error_rate", word)?;
        unused(f.status.is_some(), "status", word)?;
    }
    if !matches!(kind, FaultKind::Flapping { .. }) {
        unused(f.period.is_some(), "period", word)?;
    }
    if !matches!(kind, FaultKind::SlowClients { .. }) {
        unused(f.count.is_some(), "count", word)?;
        unused(f.interval.is_some(), "interval", word)?;
    }
    let duration = match (&f.duration, f.kind.as_str()) {
        (Some(d), _) => Some(dur(&field("duration"), d)?),
        // A restart is a short death; a reload's window is where lost requests are counted.
        (None, "restart" | "reload") => Some(Duration::from_secs(1)),
        (None, _) => None,
    };
    let backends = match (f.backend, f.backends) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{}: give backend or backends, not both",
                field("backend")
            ));
        }
        (Some(b), None) => vec![b],
        (None, Some(list)) => list,
        (None, None) => Vec::new(),
    };
    let needs_backend = !matches!(kind, FaultKind::Reload | FaultKind::SlowClients { .. });
    if needs_backend && backends.is_empty() {
        return Err(format!(
            "{}: required for kind = \"{word}\" (1-based)",
            field("backend")
        ));
    }
    if !needs_backend && !backends.is_empty() {
        return Err(format!(
            "{}: not used by kind = \"{word}\"",
            field("backend")
        ));
    }
    let backends = backends
        .into_iter()
        .map(|b| {
            if (1..=count).contains(&b) {
                Ok(b - 1)
            } else {
                Err(format!(
                    "{}: {b} is not a backend (1 to {count})",
                    field("backend")
                ))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Fault {
        kind,
        at: dur(&field("at"), &f.at)?,
        duration,
        backends,
        stagger: f
            .stagger
            .as_deref()
            .map_or(Ok(Duration::ZERO), |s| dur(&field("stagger"), s))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
duration = "10s"
[balancer]
inline = "x"
[backends]
count = 3
service_time = "1ms"
[load]
rate = 100
timeout = "1s"
retries = 2
mix = ["GET / 9", "POST /echo 1"]
"#;

    fn with(extra: &str) -> Result<Scenario, String> {
        parse(&format!("{BASE}{extra}"), Path::new("/d/s.toml"))
    }

    #[test]
    fn a_full_scenario_parses() {
        let s = with(
            r#"
[[fault]]
kind = "slow"
at = "2s"
duration = "5s"
backend = 3
latency = "900ms"
[[fault]]
kind = "drain"
at = "1s"
backends = [1, 2]
stagger = "2s"
duration = "1s"
[thresholds]
success_rate = 0.99
p99 = "500ms"
bad_share = { below = 0.05, within = "3s" }
"#,
        )
        .expect("valid");
        assert_eq!(s.name, "s");
        assert_eq!(s.duration, Duration::from_secs(10));
        assert_eq!(s.load.retries, 2);
        assert_eq!(s.load.mix.entries().len(), 2);
        assert_eq!(s.faults[0].backends, [2]);
        assert_eq!(
            s.faults[0].kind,
            FaultKind::Slow {
                latency: Latency::Fixed(Duration::from_millis(900))
            }
        );
        assert_eq!(s.faults[1].backends, [0, 1]);
        assert_eq!(s.faults[1].stagger, Duration::from_secs(2));
        assert_eq!(
            s.thresholds.bad_share,
            Some(BadShare {
                below: 0.05,
                within: Duration::from_secs(3)
            })
        );
        assert_eq!(s.balancer.config, ConfigSource::Inline("x".into()));
    }

    #[test]
    fn errors_name_the_field() {
        let e = with("[[fault]]\nkind = \"slow\"\nat = \"1s\"\nbackend = 4\nlatency = \"1s\"\n")
            .expect_err("bad");
        assert_eq!(e, "fault[0].backend: 4 is not a backend (1 to 3)");
        let e = with("[[fault]]\nkind = \"slow\"\nat = \"1s\"\nbackend = 1\n").expect_err("bad");
        assert_eq!(e, "fault[0].latency: required");
        let e = with("[[fault]]\nkind = \"dead\"\nat = \"1 s\"\nbackend = 1\n").expect_err("bad");
        assert!(e.starts_with("fault[0].at: "), "{e}");
        let e = with("[[fault]]\nkind = \"dead\"\nat = \"1s\"\nbackend = 1\nlatency = \"1s\"\n")
            .expect_err("bad");
        assert_eq!(e, "fault[0].latency: not used by kind = \"dead\"");
        let e = with("[thresholds]\nsuccess_rate = 2.0\n").expect_err("bad");
        assert_eq!(
            e,
            "thresholds.success_rate: expected a ratio from 0 to 1, got 2"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let e = with("[thresholds]\nsucess_rate = 0.9\n").expect_err("bad");
        assert!(e.contains("sucess_rate") && e.contains("line"), "{e}");
    }

    #[test]
    fn restarts_default_to_one_second_down() {
        let s = with("[[fault]]\nkind = \"restart\"\nat = \"1s\"\nbackend = 1\n").expect("valid");
        assert_eq!(
            (s.faults[0].kind.clone(), s.faults[0].duration),
            (FaultKind::Dead, Some(Duration::from_secs(1)))
        );
    }
}
