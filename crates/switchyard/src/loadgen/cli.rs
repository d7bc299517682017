//! The `switchyard bench` subcommand: flags to a [`LoadSpec`], a run, and the report as
//! text or JSON.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::{LoadSpec, Mix, MixEntry, Mode, Protocol, Report, RetryOn, Target, Trust};

fn duration(s: &str) -> Result<Duration, String> {
    crate::config::units::parse_duration(s).map_err(|e| e.to_string())
}

/// Command-line arguments of `switchyard bench`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  switchyard bench http://127.0.0.1:8080/ --rate 2000 --duration 30s      # open loop
  switchyard bench http://127.0.0.1:8080/ --connections 64 --duration 10s # closed loop
  switchyard bench https://127.0.0.1:8443/ --http 2 --insecure --rate 500 --json
  switchyard bench http://127.0.0.1:8080/ --rate 300 --timeout 1s --retries 2 \\
      --mix 'GET / 9' --mix 'POST /echo 1 1KiB'")]
pub struct BenchArgs {
    /// The URL: http://host:port/path (h2c with --http 2) or https://.
    pub url: String,
    /// Open loop at this many requests per second (latency from the intended send time).
    /// Without it, a closed loop of --concurrency workers.
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,
    /// How long to send.
    #[arg(short, long, default_value = "10s", value_parser = duration, value_name = "DUR")]
    pub duration: Duration,
    /// HTTP/1.1: the most connections open at once. HTTP/2: the connections multiplexed.
    #[arg(short, long, default_value_t = 16, value_name = "N")]
    pub connections: usize,
    /// Closed loop: workers (default: --connections for HTTP/1.1, 8 per connection for h2).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// HTTP version: 1.1 or 2 (h2c on http://, ALPN h2 on https://).
    #[arg(long = "http", default_value = "1.1", value_parser = Protocol::parse, value_name = "VERSION")]
    pub protocol: Protocol,
    /// Per-attempt client timeout.
    #[arg(long, default_value = "10s", value_parser = duration, value_name = "DUR")]
    pub timeout: Duration,
    /// Client retries after a failed attempt (0 = none).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub retries: u32,
    /// What a client retries: a comma-separated list of timeout, connect, reset, 5xx.
    #[arg(long, default_value = "timeout,connect,reset,5xx", value_name = "LIST")]
    pub retry_on: String,
    /// Pause before each retry.
    #[arg(long, default_value = "0ms", value_parser = duration, value_name = "DUR")]
    pub retry_backoff: Duration,
    /// A request kind "METHOD PATH [WEIGHT] [BODY]"; repeat for a mix (default: GET of
    /// the URL's path).
    #[arg(long, value_name = "ENTRY")]
    pub mix: Vec<String>,
    /// Trust this PEM CA file for https://.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,
    /// Accept any server certificate (test servers only).
    #[arg(long)]
    pub insecure: bool,
    /// Open loop: requests in flight past this are not sent and count as `overload`.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max_in_flight: usize,
    /// Seed of the request-mix draws.
    #[arg(long, default_value_t = 1, env = "SWITCHYARD_SEED")]
    pub seed: u64,
    /// Print the report (totals and per-second series) as JSON.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// The spec these flags describe.
    pub async fn spec(&self) -> Result<LoadSpec, String> {
        let target = Target::resolve(&self.url).await?;
        let mut spec = LoadSpec::new(target);
        spec.protocol = self.protocol;
        spec.trust = match (&self.ca, self.insecure) {
            (_, true) => Trust::Insecure,
            (Some(ca), false) => Trust::Ca(ca.clone()),
            (None, false) => Trust::System,
        };
        spec.connections = self.connections.max(1);
        spec.mode = match self.rate {
            Some(rate) if rate.is_finite() && rate > 0.0 && rate <= super::MAX_RATE => {
                Mode::Open { rate }
            }
            Some(rate) => {
                return Err(format!(
                    "--rate {rate}: must be above 0 and at most {}",
                    super::MAX_RATE
                ));
            }
            None => Mode::Closed {
                concurrency: self.concurrency.unwrap_or(match self.protocol {
                    Protocol::Http1 => spec.connections,
                    Protocol::H2 => spec.connections * 8,
                }),
            },
        };
        if self.duration > super::MAX_DURATION || self.duration.is_zero() {
            return Err("--duration must be above 0 and at most 1h".into());
        }
        spec.duration = self.duration;
        spec.timeout = self.timeout;
        spec.retries = self.retries;
        spec.retry_on = RetryOn::parse(self.retry_on.split(','))?;
        spec.retry_backoff = self.retry_backoff;
        if !self.mix.is_empty() {
            let entries = self
                .mix
                .iter()
                .map(|m| MixEntry::parse(m))
                .collect::<Result<Vec<_>, _>>()?;
            spec.mix = Mix::new(entries).ok_or("--mix: no usable entry")?;
        }
        spec.max_in_flight = self.max_in_flight.max(1);
        spec.seed = self.seed;
        Ok(spec)
    }
}

/// Runs `switchyard bench`: the report on stdout; errors as `Err` (exit 2) or usage (1).
pub async fn run(args: BenchArgs) -> Result<(), BenchFailure> {
    let spec = args.spec().await.map_err(BenchFailure::Usage)?;
    let running = super::start(spec.clone()).map_err(|e| BenchFailure::Usage(e.to_string()))?;
    let report = running
        .finish()
        .await
        .map_err(|e| BenchFailure::Runtime(e.to_string()))?;
    if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| BenchFailure::Runtime(e.to_string()))?;
        println!("{json}");
    } else {
        print!("{}", render(&spec, &report));
    }
    Ok(())
}

/// Why `switchyard bench` failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchFailure {
    /// Bad flags (exit 1).
    #[error("{0}")]
    Usage(String),
    /// The run failed (exit 2).
    #[error("{0}")]
    Runtime(String),
}

/// The text report.
pub fn render(spec: &LoadSpec, report: &Report) -> String {
    let s = &report.summary;
    let l = &s.latency_ms;
    let mut out = String::new();
    let mode = match spec.mode {
        Mode::Open { rate } => format!("open loop at {rate} req/s"),
        Mode::Closed { concurrency } => format!("closed loop, {concurrency} workers"),
    };
    let _ = writeln!(
        out,
        "{} {:?} over {} connection(s), {mode}, {:.1} s",
        spec.target.authority, spec.protocol, spec.connections, report.duration_s
    );
    let _ = writeln!(
        out,
        "requests   {} ({:.1} req/s achieved), success {:.3}%, attempts/request {:.3}",
        s.requests,
        report.rate_achieved,
        s.success_rate() * 100.0,
        s.attempts_per_request()
    );
    let _ = writeln!(
        out,
        "latency ms p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
        l.p50, l.p90, l.p99, l.p999, l.max, l.mean
    );
    if !s.errors.is_empty() {
        let errors: Vec<String> = s.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "errors     {}", errors.join(", "));
    }
    if !s.backends.is_empty() && s.backends.len() <= 32 {
        let b: Vec<String> = s.backends.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "backends   {}", b.join(", "));
    }
    out
}
