//! `switchyard demo`: three fault-injecting backends and a balancer in one process, so a new
//! user sees balancing, metrics and fault injection with nothing but curl.

use std::net::SocketAddr;
use std::path::Path;

use crate::backend::{self, BackendArgs, BackendHandle};
use crate::config;
use crate::runtime::signals::Signals;
use crate::runtime::{Server, StartError};

/// Arguments of `switchyard demo`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  switchyard demo                                  # balancer on 127.0.0.1:8080, admin on 127.0.0.1:9901
  switchyard demo --listen 127.0.0.1:0 --admin 127.0.0.1:0   # any free ports")]
pub struct DemoArgs {
    /// The balancer's address (falls back to a free port when taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The admin API's address (falls back to a free port when taken).
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A backend could not start.
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    /// The generated configuration was refused (a bug: it is built here).
    #[error("demo configuration: {0}")]
    Config(#[from] config::ConfigErrors),
    /// The balancer could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Signals could not be watched.
    #[error("cannot wait for signals: {0}")]
    Signal(#[from] std::io::Error),
}

/// The demo's configuration for these backends and addresses: an HTTP listener (HTTP/1.1
/// and h2c) whose `/shop/` route splits 90/10 between a stable cluster (the first two
/// backends) and a canary (the third), and a catch-all route to the stable cluster.
pub fn demo_config(listen: SocketAddr, admin: SocketAddr, backends: &[SocketAddr]) -> String {
    let endpoint = |i: usize| {
        backends
            .get(i)
            .map(|a| format!("{{ address = \"{a}\", name = \"demo-{}\" }}", i + 1))
            .unwrap_or_default()
    };
    format!(
        r#"# switchyard demo: an HTTP balancer with a canary split over three local backends.
[admin]
listen = "{admin}"

[[listener]]
name = "demo"
listen = "{listen}"
protocol = "http"

  [[listener.route]]
  name = "shop"
  match = {{ path_prefix = "/shop/" }}
  split = [ {{ cluster = "stable", weight = 90 }}, {{ cluster = "canary", weight = 10 }} ]
  timeout = "2s"
  response_headers = {{ add = {{ "x-demo" = "canary-split" }} }}

  [[listener.route]]
  name = "default"
  cluster = "stable"
  timeout = "2s"

[[cluster]]
name = "stable"
balance = "p2c-ewma"
connect_timeout = "500ms"
endpoints = [ {}, {} ]

[[cluster]]
name = "canary"
connect_timeout = "500ms"
endpoints = [ {} ]
"#,
        endpoint(0),
        endpoint(1),
        endpoint(2)
    )
}

async fn start(text: &str) -> Result<Server, DemoError> {
    let config = config::load_str(text, Path::new("<demo>"))?;
    Ok(Server::start(config).await?)
}

/// Runs the demo until Ctrl-C.
pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let mut signals = Signals::install()?;
    let mut backends: Vec<BackendHandle> = Vec::new();
    for i in 1..=3 {
        backends.push(backend::spawn(BackendArgs::for_test(&format!("demo-{i}"))).await?);
    }
    let addresses: Vec<SocketAddr> = backends.iter().map(BackendHandle::local_addr).collect();
    let server = match start(&demo_config(args.listen, args.admin, &addresses)).await {
        Ok(server) => server,
        Err(DemoError::Start(StartError::Bind(_) | StartError::Admin(_))) => {
            eprintln!(
                "demo: {} or {} is taken; using free ports",
                args.listen, args.admin
            );
            let any = SocketAddr::from(([127, 0, 0, 1], 0));
            start(&demo_config(any, any, &addresses)).await?
        }
        Err(e) => return Err(e),
    };
    let listen = server.address_of("demo").unwrap_or(args.listen);
    let admin = server.admin_address().unwrap_or(args.admin);
    server.announce();
    println!(
        "switchyard demo is running: an HTTP balancer on {listen} over three backends ({}).

Try:
  curl -si http://{listen}/ | grep x-backend                       # p2c-ewma over demo-1 and demo-2
  for i in $(seq 50); do curl -s -D - -o /dev/null http://{listen}/shop/cart | grep x-backend; done | sort | uniq -c
                                                                   # /shop/: 90% stable, 10% canary (demo-3)
  curl -si --http2-prior-knowledge http://{listen}/ | head -3      # h2c on the same port
  curl -s -X PUT http://{b3}/control -d '{{\"error_rate\":1.0}}'     # the canary fails: its 503s pass through untouched
  curl -s -X PUT http://{b1}/control -d '{{\"latency\":\"200ms\"}}'   # demo-1 slows: p2c-ewma moves traffic to demo-2
  curl -s http://{admin}/metrics | grep requests_total             # by route, cluster, code and origin
  curl -s http://{admin}/api/v1/clusters

Ctrl-C stops everything.",
        addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        b1 = addresses[0],
        b3 = addresses[2],
    );
    signals.shutdown_requested().await;
    server.shutdown().await;
    for backend in backends {
        backend.shutdown().await;
    }
    Ok(())
}
