//! `switchyard backend`: the fault-injecting test upstream.
//!
//! Every proxy test and chaos drill needs upstreams that misbehave on demand: slow, failing,
//! resetting, or healthy to health checks while failing real traffic (gray failure). This
//! module is that upstream, in-process for tests ([`spawn`]) and as a subcommand ([`run`]). It
//! speaks HTTP/1.1 and h2c on one port, gRPC health and echo, WebSocket echo, or raw TCP / UDP
//! echo, and its faults change at run time through [`Control`] or `PUT /control`.

mod body;
mod control;
mod echo;
mod faults;
mod grpc;
mod http;
mod server;
mod units;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use faults::{Control, ControlSnapshot, FaultState, Latency};

/// Command-line arguments of `switchyard backend`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  switchyard backend --listen 127.0.0.1:9001 --name b1
  switchyard backend --listen 127.0.0.1:0 --latency 5ms..50ms --error-rate 0.1 --seed 42
  switchyard backend --listen 127.0.0.1:9002 --reset-rate 0.05 --error-status 502
  switchyard backend --listen 127.0.0.1:9003 --tcp-echo --udp-echo

Faults change at run time:
  curl -X PUT localhost:9001/control -d '{\"error_rate\":1.0}'   # gray failure: /healthz still 200
  curl localhost:9001/control")]
pub struct BackendArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub listen: SocketAddr,
    /// Name sent in every `x-backend` header (default: the bound address).
    #[arg(long)]
    pub name: Option<String>,
    /// Delay before answering real traffic: "5ms", or a uniform range "5ms..50ms".
    #[arg(long, value_parser = Latency::parse, value_name = "DUR|MIN..MAX")]
    pub latency: Option<Latency>,
    /// Share of real requests (0-1) answered with --error-status (gRPC: status 14 UNAVAILABLE).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate, value_name = "RATIO")]
    pub error_rate: f64,
    /// HTTP status of an injected error.
    #[arg(long, default_value_t = 503, value_name = "STATUS", value_parser = clap::value_parser!(u16).range(200..=599))]
    pub error_status: u16,
    /// Share of real requests (0-1) whose connection is reset (RST) without any response.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate, value_name = "RATIO")]
    pub reset_rate: f64,
    /// Delay between a response's head and its body (slow body), e.g. "2s".
    #[arg(long, value_parser = parse_duration_arg, value_name = "DUR")]
    pub body_delay: Option<Duration>,
    /// HTTP status of `/healthz`.
    #[arg(long, default_value_t = 200, value_name = "STATUS", value_parser = clap::value_parser!(u16).range(200..=599))]
    pub healthz_status: u16,
    /// Apply latency, errors and resets to `/healthz` and gRPC health checks too.
    #[arg(long)]
    pub apply_to_healthz: bool,
    /// Start with gRPC health answering NOT_SERVING.
    #[arg(long)]
    pub grpc_not_serving: bool,
    /// Seed for fault sampling: the same seed and request order give the same faults.
    #[arg(long, env = "SWITCHYARD_SEED")]
    pub seed: Option<u64>,
    /// Serve a raw TCP echo (with half-close) instead of HTTP.
    #[arg(long)]
    pub tcp_echo: bool,
    /// Also serve a UDP datagram echo on the same address and port.
    #[arg(long)]
    pub udp_echo: bool,
    /// Real requests served at once (workers); the rest wait in line, like a server with
    /// a fixed worker pool. 0 = unlimited.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub concurrency: usize,
}

impl Default for BackendArgs {
    /// Listens on `127.0.0.1:0` with no faults.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            name: None,
            latency: None,
            error_rate: 0.0,
            error_status: 503,
            reset_rate: 0.0,
            body_delay: None,
            healthz_status: 200,
            apply_to_healthz: false,
            grpc_not_serving: false,
            seed: None,
            tcp_echo: false,
            udp_echo: false,
            concurrency: 0,
        }
    }
}

impl BackendArgs {
    /// A fault-free backend named `name` on `127.0.0.1:0`, for tests.
    pub fn for_test(name: &str) -> Self {
        Self {
            name: Some(name.to_owned()),
            ..Self::default()
        }
    }

    /// The initial fault state these arguments describe.
    pub fn faults(&self) -> FaultState {
        FaultState {
            latency: self.latency.unwrap_or_default(),
            error_rate: self.error_rate,
            error_status: self.error_status,
            reset_rate: self.reset_rate,
            healthz_status: self.healthz_status,
            grpc_serving: !self.grpc_not_serving,
            body_delay: self.body_delay.unwrap_or(Duration::ZERO),
            apply_to_healthz: self.apply_to_healthz,
            ..FaultState::default()
        }
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("expected a ratio from 0 to 1, got {s:?}")),
    }
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    units::parse_duration(s).map_err(|e| e.to_string())
}

/// Why a backend could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The TCP listener could not bind.
    #[error("backend: cannot bind {address}: {source}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The UDP echo socket could not bind.
    #[error("backend: cannot bind UDP {address}: {source}")]
    BindUdp {
        /// The address asked for.
        address: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// Installing the signal handlers failed.
    #[error("backend: cannot wait for signals: {0}")]
    Signal(std::io::Error),
}

/// A running backend. Dropping it stops the server at once; [`BackendHandle::shutdown`] stops
/// it gracefully.
#[derive(Debug)]
#[must_use = "dropping the handle stops the backend"]
pub struct BackendHandle {
    addr: SocketAddr,
    udp_addr: Option<SocketAddr>,
    control: Control,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl BackendHandle {
    /// The bound TCP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound UDP echo address (same port as TCP), with `--udp-echo`.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// The backend's name (the `x-backend` header).
    pub fn name(&self) -> &str {
        self.control.name()
    }

    /// The shared fault state and counters (the same as `/control`).
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Stops accepting, lets in-flight requests finish (at most 5 s), then stops.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for BackendHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Resolves when `rx` turns `true` or its sender is gone.
pub(crate) async fn wait_shutdown(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn bind(args: &BackendArgs) -> Result<(TcpListener, Option<UdpSocket>), BackendError> {
    let bind_err = |source| BackendError::Bind {
        address: args.listen,
        source,
    };
    if !args.udp_echo {
        return Ok((
            TcpListener::bind(args.listen).await.map_err(bind_err)?,
            None,
        ));
    }
    // UDP must share the TCP port; with port 0 the chosen port may be taken for UDP, so retry.
    let attempts = if args.listen.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let tcp = TcpListener::bind(args.listen).await.map_err(bind_err)?;
        let addr = tcp.local_addr().map_err(bind_err)?;
        match UdpSocket::bind(addr).await {
            Ok(udp) => return Ok((tcp, Some(udp))),
            Err(e) => last = Some((addr, e)),
        }
    }
    let (address, source) = last.unwrap_or_else(|| {
        (
            args.listen,
            std::io::Error::other("no attempt to bind UDP was made"),
        )
    });
    Err(BackendError::BindUdp { address, source })
}

/// Binds and starts serving in background tasks; returns at once.
pub async fn spawn(args: BackendArgs) -> Result<BackendHandle, BackendError> {
    let (tcp, udp) = bind(&args).await?;
    let addr = tcp.local_addr().map_err(|source| BackendError::Bind {
        address: args.listen,
        source,
    })?;
    let udp_addr = udp.as_ref().and_then(|u| u.local_addr().ok());
    let name = args.name.clone().unwrap_or_else(|| addr.to_string());
    let control = Control::new(name, args.faults(), args.seed);
    let (tx, rx) = watch::channel(false);
    let mode = if args.tcp_echo {
        server::Mode::TcpEcho(control.clone())
    } else {
        server::Mode::Http(Arc::new(http::Shared::new(
            control.clone(),
            rx.clone(),
            args.concurrency,
        )))
    };
    let mut tasks = vec![tokio::spawn(server::accept_loop(tcp, mode, rx.clone()))];
    if let Some(udp) = udp {
        tasks.push(tokio::spawn(echo::udp(udp, control.clone(), rx)));
    }
    Ok(BackendHandle {
        addr,
        udp_addr,
        control,
        shutdown: tx,
        tasks,
    })
}

/// `switchyard backend`: serve until Ctrl-C or SIGTERM, reporting the bound address on stderr.
pub async fn run(args: BackendArgs) -> Result<(), BackendError> {
    // Handlers first: a supervisor may signal as soon as it reads the listening line.
    let signals = install_signals()?;
    let handle = spawn(args).await?;
    let listening = |listener: &str, addr: SocketAddr| {
        crate::runtime::server::listening_event(listener, &addr.to_string())
    };
    eprintln!("{}", listening("backend", handle.local_addr()));
    if let Some(udp) = handle.udp_addr() {
        eprintln!("{}", listening("backend-udp", udp));
    }
    let mut signals = signals;
    signals.shutdown_requested().await;
    handle.shutdown().await;
    Ok(())
}

fn install_signals() -> Result<crate::runtime::signals::Signals, BackendError> {
    crate::runtime::signals::Signals::install().map_err(BackendError::Signal)
}
