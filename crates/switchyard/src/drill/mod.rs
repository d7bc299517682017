//! `switchyard drill`: rehearse an outage before it happens.
//!
//! A drill starts real backends, a real balancer with the operator's configuration and
//! real open-loop load, injects faults on a timeline, and answers "would this
//! configuration absorb the failure or amplify it?" with thresholds, a terminal summary,
//! an HTML report with charts and JSON. `--compare` runs the same scenario against a
//! second configuration in the same invocation, so the damage a setting prevents is
//! shown, not argued. The exit code (0 pass, 1 a threshold failed, 2 runtime failure,
//! 3 invalid scenario) lets a drill gate a configuration change in CI.
//!
//! Modules: [`scenario`] (the file format), [`timeline`] (faults to timed events),
//! [`config`] (the operator's file, made drillable), [`fleet`] (the backends),
//! [`slow_clients`], [`admin`], [`run`] (one run), [`thresholds`], [`report`], [`svg`].

pub mod admin;
pub mod config;
pub mod fleet;
pub mod report;
pub mod run;
pub mod scenario;
pub mod slow_clients;
pub mod svg;
pub mod thresholds;
pub mod timeline;

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;

pub use report::DrillReport;
pub use run::{DrillError, RunResult};
pub use scenario::{ConfigSource, Scenario};

/// Runs `scenario` against its configuration, then against `compare` (the argument, else
/// the scenario's own `compare`), reporting progress lines.
pub async fn drill(
    scenario: &Scenario,
    compare: Option<&ConfigSource>,
    progress: run::ProgressFn<'_>,
) -> Result<DrillReport, DrillError> {
    let mut runs = vec![run::run(scenario, &scenario.balancer.config, progress).await?];
    if let Some(other) = compare.or(scenario.balancer.compare.as_ref()) {
        runs.push(run::run(scenario, other, progress).await?);
    }
    Ok(DrillReport::new(scenario, runs))
}

/// Command-line arguments of `switchyard drill`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  switchyard drill drills/gray-failure.toml
  switchyard drill drills/gray-failure.toml --config /etc/switchyard/switchyard.toml --no-compare
  switchyard drill drills/retry-storm.toml --compare my-switchyard.toml --out /tmp/drill
  switchyard drill drills/deploy.toml --no-compare

Exit codes: 0 every threshold passed, 1 a threshold failed, 2 runtime failure,
3 invalid scenario, configuration or usage. With a comparison, the exit code is the
verdict of the scenario's own configuration; the comparison is shown beside it.")]
pub struct DrillArgs {
    /// The scenario file (docs/drills.md).
    pub scenario: PathBuf,
    /// Judge this balancer configuration instead of the scenario's own `config`.
    #[arg(long, value_name = "CONFIG.toml")]
    pub config: Option<PathBuf>,
    /// Run the same scenario against this balancer configuration too, side by side.
    #[arg(long, value_name = "CONFIG.toml")]
    pub compare: Option<PathBuf>,
    /// Skip the scenario's own `compare` configuration.
    #[arg(long, conflicts_with = "compare")]
    pub no_compare: bool,
    /// Where the HTML and JSON reports go.
    #[arg(long, default_value = "drill-report", value_name = "DIR")]
    pub out: PathBuf,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `switchyard drill`; returns the exit code.
pub async fn run_cli(args: DrillArgs) -> u8 {
    let mut scenario = match scenario::load(&args.scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 3;
        }
    };
    if args.no_compare {
        scenario.balancer.compare = None;
    }
    if let Some(config) = args.config {
        scenario.balancer.config = ConfigSource::File(config);
    }
    let compare = args.compare.map(ConfigSource::File);
    let terminal = std::io::stderr().is_terminal();
    let quiet = args.quiet;
    let progress = move |line: &str| {
        if quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        if terminal {
            let _ = write!(err, "\r{line}\x1b[K");
        } else {
            let _ = writeln!(err, "{line}");
        }
    };
    let result = drill(&scenario, compare.as_ref(), &progress).await;
    if terminal && !quiet {
        eprintln!();
    }
    let report = match result {
        Ok(r) => r,
        Err(DrillError::Invalid(e)) => {
            eprintln!("error: {e}");
            return 3;
        }
        Err(DrillError::Runtime(e)) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    print!("{}", report::text(&report));
    match write_reports(&report, &args.out) {
        Ok((html, json)) => println!(
            "report: {} (raw series: {})",
            html.display(),
            json.display()
        ),
        Err(e) => {
            eprintln!(
                "error: cannot write the report to {}: {e}",
                args.out.display()
            );
            return 2;
        }
    }
    if report.passed() { 0 } else { 1 }
}

/// Writes `NAME.html` and `NAME.json` into `dir`; returns their paths.
pub fn write_reports(
    report: &DrillReport,
    dir: &std::path::Path,
) -> std::io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let html = dir.join(format!("{}.html", report.scenario));
    let json = dir.join(format!("{}.json", report.scenario));
    std::fs::write(&html, report::html(report))?;
    let text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(&json, text)?;
    Ok((html, json))
}
