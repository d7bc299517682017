//! The `switchyard` binary: command-line parsing, logging setup and exit codes only;
//! everything else lives in the library.
//!
//! Exit codes (SPEC section 2): 0 success, 1 invalid configuration or usage, 2 runtime
//! failure.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::sync::Arc;
use switchyard::config::{self, OutputFormat};

use switchyard::runtime::reload::ReloadTrigger;
use switchyard::runtime::signals::{Request, Signals};
use switchyard::runtime::upgrade;
use switchyard::runtime::{Server, StartOptions};

/// mimalloc instead of the system allocator: a request's header maps and buffers are
/// allocated and freed on every request, and glibc's malloc takes several hundred
/// instructions for each block past its small-size cache (`docs/performance.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tokio::sync::Notify;

const EXAMPLES: &str = "Examples:
  switchyard demo                              # three local backends and a balancer; prints what to try
  switchyard check -c switchyard.toml          # validate; print the resolved model or every error
  switchyard run -c switchyard.toml            # run a balancer (SIGHUP reloads; SIGTERM/Ctrl-C drains and exits)
  switchyard backend --listen 127.0.0.1:9001 --latency 5ms --error-rate 0.1";

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "An L4/L7 load balancer",
    after_help = EXAMPLES
)]
struct Cli {
    /// Log filter: a level (error, warn, info, debug, trace) or a RUST_LOG-style directive list.
    /// Overrides RUST_LOG.
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start three local backends and a balancer in one process, and print what to try.
    Demo(switchyard::demo::DemoArgs),
    /// Run a balancer.
    #[command(after_help = "Examples:
  switchyard run -c switchyard.toml
  switchyard run -c switchyard.toml --upgrade     # take over from the running instance
  switchyard run -c switchyard.toml --log-level debug")]
    Run(RunArgs),
    /// Validate a configuration: print the resolved model (exit 0) or every error (exit 1).
    #[command(after_help = "Examples:
  switchyard check -c switchyard.toml
  switchyard check -c switchyard.toml --format json | jq .clusters")]
    Check(CheckArgs),
    /// Fault-injecting test upstream (HTTP/1.1, h2c, gRPC health, WebSocket, TCP/UDP echo).
    Backend(switchyard::backend::BackendArgs),
    /// Load generator: open loop at a fixed rate (coordinated-omission corrected) or closed
    /// loop; HTTP/1.1, h2c, h2 over TLS; client timeouts, retries and a request mix.
    Bench(switchyard::loadgen::cli::BenchArgs),
    /// Chaos drill: real backends, the balancer with your configuration, open-loop load and
    /// a fault timeline; a pass/fail verdict, an HTML report and JSON (exit 0 pass, 1 fail).
    Drill(switchyard::drill::DrillArgs),
    /// Attach the IPIP decapsulation program on a backend's interface (packet tier) until
    /// SIGTERM/SIGINT, for kernels without an ipip device. Needs root.
    #[command(after_help = "Examples:
  switchyard xdp-decap --interface eth0
  switchyard xdp-decap --interface eth0 --mode generic")]
    XdpDecap(XdpDecapArgs),
}

#[derive(Debug, clap::Args)]
struct XdpDecapArgs {
    /// The backend's interface that receives IPIP packets from the balancers.
    #[arg(long, value_name = "IF")]
    interface: String,
    /// Attach mode: native (driver) or generic (SKB mode).
    #[arg(long, value_enum, default_value = "native")]
    mode: DecapMode,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DecapMode {
    Native,
    Generic,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The configuration file.
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Take the listening sockets over from the instance running with this configuration
    /// file (zero-downtime binary upgrade); the old instance then drains and exits.
    #[arg(long)]
    upgrade: bool,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The configuration file.
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// How to print the resolved model.
    #[arg(long, value_enum, default_value = "toml")]
    format: OutputFormat,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let usage = error.use_stderr();
            let _ = error.print();
            // SPEC 2: `drill` reports usage errors as 3, so 1 always means "a threshold failed".
            let drill = std::env::args().nth(1).as_deref() == Some("drill");
            return if usage && drill {
                ExitCode::from(3)
            } else if usage {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // A drill's terminal is its progress line and summary: the in-process balancer's
    // routine logs (health flips, panic mode during the first checks) stay out of it unless
    // asked for.
    let level = match (&cli.command, cli.log_level.as_deref()) {
        (Command::Drill(_), None) if std::env::var_os("RUST_LOG").is_none() => Some("error"),
        (_, level) => level,
    };
    init_logging(level);
    match cli.command {
        Command::Check(args) => check(&args),
        Command::Run(args) => run(&args),
        Command::Demo(args) => runtime_exit(
            build_runtime(0)
                .and_then(|rt| rt.block_on(switchyard::demo::run(args)).context("demo")),
        ),
        Command::Backend(args) => runtime_exit(build_runtime(0).and_then(|rt| {
            rt.block_on(switchyard::backend::run(args))
                .context("backend")
        })),
        Command::Bench(args) => bench(args),
        Command::Drill(args) => match build_runtime(0) {
            Ok(rt) => ExitCode::from(rt.block_on(switchyard::drill::run_cli(args))),
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::from(2)
            }
        },
        Command::XdpDecap(args) => runtime_exit(xdp_decap(&args)),
    }
}

fn bench(args: switchyard::loadgen::cli::BenchArgs) -> ExitCode {
    use switchyard::loadgen::cli::BenchFailure;
    let runtime = match build_runtime(0) {
        Ok(rt) => rt,
        Err(error) => return runtime_exit(Err(error)),
    };
    match runtime.block_on(switchyard::loadgen::cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(BenchFailure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
        Err(BenchFailure::Runtime(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn xdp_decap(args: &XdpDecapArgs) -> anyhow::Result<()> {
    use switchyard::config::model::XdpMode;
    let mode = match args.mode {
        DecapMode::Native => XdpMode::Native,
        DecapMode::Generic => XdpMode::Generic,
    };
    let rt = build_runtime(1)?;
    rt.block_on(async {
        let mut signals = Signals::install().context("cannot install signal handlers")?;
        let decap = switchyard::xdp::decap::Decap::attach(&args.interface, mode)?;
        eprintln!(
            "{{\"event\":\"xdp-decap\",\"interface\":{}}}",
            serde_json::Value::from(decap.interface())
        );
        signals.shutdown_requested().await;
        drop(decap);
        Ok(())
    })
}

fn init_logging(level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(level) => EnvFilter::try_new(level),
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info")),
    }
    .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn check(args: &CheckArgs) -> ExitCode {
    match config::load_file(&args.config) {
        Ok(model) => match config::render(&model, args.format) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(2)
            }
        },
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &RunArgs) -> ExitCode {
    let model = match config::load_file(&args.config) {
        Ok(model) => model,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(1);
        }
    };
    let max_connections = model
        .listeners
        .iter()
        .map(|l| u64::from(l.max_connections))
        .sum();
    switchyard::runtime::limits::raise_open_file_limit(max_connections);
    let result = build_runtime(model.runtime.workers).and_then(|rt| {
        rt.block_on(async {
            let mut signals = Signals::install().context("cannot install signal handlers")?;
            let upgrade_path = upgrade::socket_path(&model, &args.config);
            let (inherited, handover) = if args.upgrade {
                let path = upgrade_path.clone();
                let (inherited, handover) =
                    tokio::task::spawn_blocking(move || upgrade::receive(&path)).await??;
                (Some(inherited), Some(handover))
            } else {
                (None, None)
            };
            let options = StartOptions {
                config_path: Some(args.config.clone()),
                inherited,
            };
            let server = Server::start_with(model, options).await?;
            if let Some(handover) = handover {
                upgrade::apply_operator_state(server.shared(), &handover.operator);
                tokio::task::spawn_blocking(move || handover.finish()).await??;
            }
            let handed_over = Arc::new(Notify::new());
            let upgrades = match upgrade::listen(
                &upgrade_path,
                Arc::clone(server.shared()),
                Arc::clone(&handed_over),
            ) {
                Ok(task) => Some(task),
                Err(error) => {
                    tracing::warn!(path = %upgrade_path.display(), %error, "cannot listen for `run --upgrade`; upgrades are unavailable");
                    None
                }
            };
            server.announce();
            let mut upgraded = false;
            loop {
                tokio::select! {
                    request = signals.next() => match request {
                        // Success and failure are logged and counted by the reload itself.
                        Request::Reload => { let _ = server.shared().reload(ReloadTrigger::Sighup); }
                        Request::Shutdown => break,
                    },
                    () = handed_over.notified() => {
                        upgraded = true;
                        break;
                    }
                }
            }
            if let Some(task) = upgrades {
                task.abort();
                if !upgraded {
                    let _ = std::fs::remove_file(&upgrade_path);
                }
            }
            server.shutdown().await;
            Ok(())
        })
    });
    runtime_exit(result)
}

/// `[runtime] workers = 1` gets a current-thread runtime: with one worker, the
/// multi-thread scheduler's queues and cross-thread wakeups are pure overhead.
fn build_runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if workers > 0 {
            builder.worker_threads(workers);
        }
        builder
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

fn runtime_exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
