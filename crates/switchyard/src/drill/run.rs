//! One drill run: start the fleet and the balancer, load it, play the timeline, sample
//! every second, then judge.
//!
//! Everything runs in this process on loopback: the backends ([`Fleet`]), the balancer
//! (`runtime::Server`, the same code as `switchyard run`) and the clients
//! ([`crate::loadgen`]). The timeline and the sampler share one loop, so a fault and the
//! sample that shows it are ordered without locks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::admin;
use super::config::{Drillable, rewrite};
use super::fleet::Fleet;
use super::scenario::{ConfigSource, Scenario};
use super::slow_clients::{Crowd, CrowdStats};
use super::thresholds::{EndpointSecond, EndpointSeries, Measured, Verdict, evaluate};
use super::timeline::{Action, Window, expand};
use crate::loadgen::{self, LoadSpec, Mode, Report, Target, Trust};
use crate::runtime::Server;

/// Why a drill could not run.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// The scenario or the balancer configuration is unusable (exit 3).
    #[error("{0}")]
    Invalid(String),
    /// Something failed while running (exit 2).
    #[error("{0}")]
    Runtime(String),
}

/// The result of one run against one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// The configuration's label (its file name, or `inline`).
    pub config: String,
    /// Every threshold's outcome.
    pub verdicts: Vec<Verdict>,
    /// Whether every threshold held.
    pub passed: bool,
    /// Requests the backends received during the run.
    pub upstream_attempts: u64,
    /// Upstream attempts per client request.
    pub amplification: f64,
    /// The highest share any degraded backend had in the last second of its fault.
    pub bad_share_at_end: Option<f64>,
    /// The client's report (totals and per-second series).
    pub load: Report,
    /// Per-second backend attempts and states.
    pub endpoints: EndpointSeries,
    /// When each fault was on.
    pub windows: Vec<Window>,
    /// Slow-client crowds: connections opened and closed by the balancer.
    pub slow_clients: Option<(u64, u64)>,
}

/// Called with a one-line status once a second.
pub type ProgressFn<'a> = &'a (dyn Fn(&str) + Sync);

/// Runs `scenario` against `config`.
pub async fn run(
    scenario: &Scenario,
    config: &ConfigSource,
    progress: ProgressFn<'_>,
) -> Result<RunResult, DrillError> {
    let mut fleet = Fleet::start(&scenario.backends, scenario.seed)
        .await
        .map_err(DrillError::Runtime)?;
    let text = config.read().map_err(DrillError::Invalid)?;
    let drillable = rewrite(
        &text,
        &fleet.addresses(),
        scenario.balancer.cluster.as_deref(),
        scenario.balancer.listener.as_deref(),
    )
    .map_err(|e| DrillError::Invalid(format!("{}: {e}", config.label())))?;
    let origin = config.origin(&scenario.path);
    let model = crate::config::load_str(&drillable.text, &origin).map_err(|errors| {
        DrillError::Invalid(format!(
            "{} (as rewritten for the drill):\n{errors}",
            config.label()
        ))
    })?;
    // `reload` faults make the balancer read its file again: a copy of the drill's
    // configuration (its `127.0.0.1:0` listeners keep their sockets: a reload matches
    // listeners by the configured address).
    let copy = TempConfig::new()
        .and_then(|copy| std::fs::write(&copy.path, &drillable.text).map(|()| copy))
        .map_err(|e| DrillError::Runtime(format!("cannot write the drill configuration: {e}")))?;
    let options = crate::runtime::server::StartOptions {
        config_path: Some(copy.path.clone()),
        ..Default::default()
    };
    let server = Server::start_with(model, options)
        .await
        .map_err(|e| DrillError::Runtime(format!("the balancer did not start: {e}")))?;
    let result = drive(scenario, config, &drillable, &server, &mut fleet, progress).await;
    drop(server);
    drop(fleet);
    result
}

/// The drill's copy of the balancer configuration, in a folder of its own that is removed
/// on drop.
struct TempConfig {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl TempConfig {
    fn new() -> std::io::Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "switchyard-drill-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("switchyard.toml");
        Ok(Self { dir, path })
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spec_for(scenario: &Scenario, target: Target) -> LoadSpec {
    let l = &scenario.load;
    let mut spec = LoadSpec::new(target);
    spec.protocol = l.protocol;
    spec.trust = Trust::Insecure;
    spec.mode = Mode::Open { rate: l.rate };
    spec.duration = scenario.duration;
    spec.timeout = l.timeout;
    spec.retries = l.retries;
    spec.retry_on = l.retry_on;
    spec.retry_backoff = l.retry_backoff;
    spec.mix = l.mix.clone();
    spec.connections = l.connections;
    spec.seed = scenario.seed;
    spec.keepalive = l.keepalive;
    // Enough for every request of a whole lifetime in flight, and a bound on memory.
    let lifetime = spec.request_lifetime().as_secs_f64() + 1.0;
    spec.max_in_flight = ((l.rate * lifetime * 2.0) as usize).clamp(1000, 50_000);
    spec
}

struct Sampler {
    names: Vec<String>,
    clusters: Vec<String>,
    last: Vec<u64>,
    baseline: Vec<u64>,
    series: EndpointSeries,
}

impl Sampler {
    async fn sample(&mut self, second: u64, fleet: &Fleet, admin_addr: Option<SocketAddr>) {
        let now = fleet.requests();
        let attempts = now
            .iter()
            .zip(&self.last)
            .map(|(n, l)| n.saturating_sub(*l))
            .collect();
        self.last = now;
        let mut states = BTreeMap::new();
        if let (Some(addr), Some(cluster)) = (admin_addr, self.clusters.first()) {
            if let Ok((200, body)) = admin::call(addr, http::Method::GET, "/api/v1/clusters").await
            {
                states = admin::states(&body, cluster);
            }
        }
        let states = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                if fleet.alive(i) {
                    states.get(n).cloned().unwrap_or_else(|| "?".to_owned())
                } else {
                    "down".to_owned()
                }
            })
            .collect();
        self.series.seconds.push(EndpointSecond {
            second,
            attempts,
            states,
        });
    }
}

async fn wait_ready(admin_addr: Option<SocketAddr>, cluster: Option<&String>, n: usize) {
    let (Some(addr), Some(cluster)) = (admin_addr, cluster) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok((200, body)) = admin::call(addr, http::Method::GET, "/api/v1/clusters").await {
            let states = admin::states(&body, cluster);
            if states.len() >= n && states.values().all(|s| s == "healthy") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn apply(
    action: &Action,
    fleet: &mut Fleet,
    crowds: &mut BTreeMap<usize, Crowd>,
    crowd_stats: &mut Vec<Arc<CrowdStats>>,
    admin_addr: Option<SocketAddr>,
    drillable: &Drillable,
    target: SocketAddr,
) -> Result<(), DrillError> {
    let endpoint_call = |backend: usize, verb: &'static str| {
        let clusters = drillable.clusters.clone();
        async move {
            let addr = admin_addr.ok_or_else(|| {
                DrillError::Runtime(format!("{verb}: the balancer's admin API is not on TCP"))
            })?;
            for cluster in &clusters {
                let path = format!(
                    "/api/v1/clusters/{}/endpoints/b{}/{verb}",
                    admin::segment(cluster),
                    backend + 1
                );
                let (status, body) = admin::call(addr, http::Method::POST, &path)
                    .await
                    .map_err(DrillError::Runtime)?;
                if status != 200 {
                    return Err(DrillError::Runtime(format!(
                        "{verb} b{}: admin answered {status}: {}",
                        backend + 1,
                        body.trim()
                    )));
                }
            }
            Ok(())
        }
    };
    match action {
        Action::Degrade { backend, how } => fleet.degrade(*backend, *how),
        Action::Restore { backend } => fleet.restore(*backend),
        Action::Kill { backend } => fleet.kill(*backend),
        Action::Start { backend } => fleet.restart(*backend).await.map_err(DrillError::Runtime)?,
        Action::Drain { backend } => endpoint_call(*backend, "drain").await?,
        Action::Undrain { backend } => endpoint_call(*backend, "undrain").await?,
        Action::Reload => {
            let addr = admin_addr.ok_or_else(|| {
                DrillError::Runtime("reload: the balancer's admin API is not on TCP".into())
            })?;
            let (status, body) = admin::call(addr, http::Method::POST, "/api/v1/reload")
                .await
                .map_err(DrillError::Runtime)?;
            if status != 200 {
                return Err(DrillError::Runtime(format!(
                    "fault reload: POST /api/v1/reload answered {status}: {}",
                    body.trim()
                )));
            }
        }
        Action::SlowClients {
            id,
            count,
            interval,
        } => {
            let crowd = Crowd::start(target, *count, *interval);
            crowd_stats.push(Arc::clone(&crowd.stats));
            crowds.insert(*id, crowd);
        }
        Action::StopSlowClients { id } => {
            if let Some(crowd) = crowds.remove(id) {
                crowd.stop();
            }
        }
    }
    Ok(())
}

fn status_line(
    scenario: &Scenario,
    config: &str,
    elapsed: Duration,
    windows: &[Window],
    p: &loadgen::Progress,
    previous: &mut (u64, u64),
) -> String {
    let t = elapsed.as_secs_f64();
    let phase: Vec<&str> = windows
        .iter()
        .filter(|w| w.start_s <= t && t < w.end_s)
        .map(|w| w.label.as_str())
        .collect();
    let phase = if phase.is_empty() {
        "steady".to_owned()
    } else {
        phase.join(", ")
    };
    // Rate and success over the last second of answers; p99 of the last settled second.
    let (requests, successes) = (p.summary.requests, p.summary.successes);
    let rate = requests.saturating_sub(previous.0);
    let ok = successes.saturating_sub(previous.1);
    *previous = (requests, successes);
    let success = if rate == 0 {
        100.0
    } else {
        ok as f64 * 100.0 / rate as f64
    };
    let p99 = p.last_second.as_ref().map_or(0.0, |s| s.p99_ms);
    format!(
        "[{}] {config} {:>4.0}s/{}s  {phase}  {rate} req/s  success {success:.1}%  p99 {p99:.0}ms  in flight {}",
        scenario.name,
        t,
        scenario.duration.as_secs(),
        p.in_flight
    )
}

async fn drive(
    scenario: &Scenario,
    config: &ConfigSource,
    drillable: &Drillable,
    server: &Server,
    fleet: &mut Fleet,
    progress: ProgressFn<'_>,
) -> Result<RunResult, DrillError> {
    let admin_addr = server.admin_address();
    let target = server.address_of(&drillable.listener).ok_or_else(|| {
        DrillError::Runtime(format!("listener {:?} is not bound", drillable.listener))
    })?;
    wait_ready(
        admin_addr,
        drillable.clusters.first(),
        scenario.backends.count,
    )
    .await;
    let (events, windows) = expand(&scenario.faults, scenario.duration);
    let names = fleet.names();
    let baseline = fleet.requests();
    let mut sampler = Sampler {
        names: names.clone(),
        clusters: drillable.clusters.clone(),
        last: baseline.clone(),
        baseline,
        series: EndpointSeries {
            names,
            seconds: Vec::new(),
        },
    };
    let authority = target.to_string();
    let spec = spec_for(
        scenario,
        Target {
            tls: drillable.tls,
            authority: authority.clone(),
            host: "localhost".into(),
            addr: target,
            path: "/".into(),
        },
    );
    let label = config.label();
    let running = loadgen::start(spec).map_err(|e| DrillError::Runtime(e.to_string()))?;
    let started = running.started();
    let mut crowds = BTreeMap::new();
    let mut crowd_stats = Vec::new();
    let seconds = scenario.duration.as_secs() + u64::from(scenario.duration.subsec_nanos() > 0);
    let mut next_event = 0usize;
    let mut next_sample = 1u64;
    let mut failure = None;
    let mut previous = (0, 0);
    while next_sample <= seconds {
        let sample_at = started + Duration::from_secs(next_sample);
        let event_at = events.get(next_event).map(|e| started + e.at);
        match event_at {
            Some(at) if at <= sample_at => {
                tokio::time::sleep_until(at).await;
                let action = &events[next_event].action;
                next_event += 1;
                if let Err(e) = apply(
                    action,
                    fleet,
                    &mut crowds,
                    &mut crowd_stats,
                    admin_addr,
                    drillable,
                    target,
                )
                .await
                {
                    failure = Some(e);
                    break;
                }
            }
            _ => {
                tokio::time::sleep_until(sample_at).await;
                sampler.sample(next_sample - 1, fleet, admin_addr).await;
                progress(&status_line(
                    scenario,
                    &label,
                    started.elapsed(),
                    &windows,
                    &running.progress(),
                    &mut previous,
                ));
                next_sample += 1;
            }
        }
    }
    let load = running
        .finish()
        .await
        .map_err(|e| DrillError::Runtime(e.to_string()))?;
    let slow_clients = (!crowd_stats.is_empty()).then(|| {
        crowd_stats.iter().fold((0, 0), |(o, c), stats| {
            use std::sync::atomic::Ordering::Relaxed;
            (
                o + stats.opened.load(Relaxed),
                c + stats.closed.load(Relaxed),
            )
        })
    });
    for (_, crowd) in std::mem::take(&mut crowds) {
        crowd.stop();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let upstream_attempts: u64 = fleet
        .requests()
        .iter()
        .zip(&sampler.baseline)
        .map(|(n, b)| n.saturating_sub(*b))
        .sum();
    let endpoints = sampler.series;
    let measured = Measured {
        summary: &load.summary,
        client: &load.series,
        upstream_attempts,
        endpoints: &endpoints,
        windows: &windows,
    };
    let verdicts = evaluate(&scenario.thresholds, &measured);
    let amplification = measured.amplification();
    let bad_share_at_end = windows
        .iter()
        .filter(|w| w.degrades)
        .flat_map(|w| {
            let last = (w.end_s.ceil() as u64).saturating_sub(1);
            let second = endpoints.seconds.iter().find(|s| s.second == last);
            w.backends
                .iter()
                .filter_map(move |&b| second.map(|s| s.share(b)))
        })
        .reduce(f64::max);
    Ok(RunResult {
        config: label,
        passed: verdicts.iter().all(|v| v.pass),
        verdicts,
        upstream_attempts,
        amplification,
        bad_share_at_end,
        load,
        endpoints,
        windows,
        slow_clients,
    })
}
