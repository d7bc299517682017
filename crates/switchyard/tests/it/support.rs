//! Shared test harness: start balancers and backends in-process on 127.0.0.1:0, bound
//! every await, read metrics.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use switchyard::backend::{self, BackendArgs, BackendHandle};
use switchyard::config;
use switchyard::runtime::Server;

/// Every await that could hang is bounded by this.
pub(crate) const LIMIT: Duration = Duration::from_secs(10);

/// Awaits `f`, failing the test after [`LIMIT`].
pub(crate) async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("timed out")
}

/// Starts a backend.
pub(crate) async fn backend(args: BackendArgs) -> BackendHandle {
    within(backend::spawn(args)).await.expect("backend starts")
}

/// `n` HTTP backends named `b1`..`bn`.
pub(crate) async fn http_backends(n: usize) -> Vec<BackendHandle> {
    let mut all = Vec::new();
    for i in 1..=n {
        all.push(backend(BackendArgs::for_test(&format!("b{i}"))).await);
    }
    all
}

/// `n` TCP echo backends named `e1`..`en`.
pub(crate) async fn echo_backends(n: usize) -> Vec<BackendHandle> {
    let mut all = Vec::new();
    for i in 1..=n {
        let mut args = BackendArgs::for_test(&format!("e{i}"));
        args.tcp_echo = true;
        all.push(backend(args).await);
    }
    all
}

/// An address nothing listens on (bound once, then released).
pub(crate) fn dead_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The `endpoints = [...]` value naming each address `name_i`.
pub(crate) fn endpoints(addresses: &[SocketAddr], names: &[&str]) -> String {
    let items: Vec<String> = addresses
        .iter()
        .zip(names)
        .map(|(a, n)| format!("{{ address = \"{a}\", name = \"{n}\" }}"))
        .collect();
    format!("[{}]", items.join(", "))
}

/// Loads `toml` (as if from `test.toml`) and starts a balancer on it.
pub(crate) async fn balancer(toml: &str) -> Server {
    let model = config::load_str(toml, Path::new("test.toml"))
        .unwrap_or_else(|errors| panic!("test config is invalid:\n{errors}\n---\n{toml}"));
    within(Server::start(model)).await.expect("balancer starts")
}

/// The `listen` address of listener `name`.
pub(crate) fn address(server: &Server, name: &str) -> SocketAddr {
    server.address_of(name).expect("listener bound")
}

/// GET on the admin API; (status, body).
pub(crate) async fn admin_get(server: &Server, path: &str) -> (u16, String) {
    let url = format!(
        "http://{}{path}",
        server.admin_address().expect("tcp admin")
    );
    let response = within(client().get(url).send())
        .await
        .expect("admin request");
    let status = response.status().as_u16();
    (status, within(response.text()).await.expect("admin body"))
}

/// The admin API, no access log, and the start of listener `web` (HTTP on any port): the
/// preamble of most L7 test configurations.
pub(crate) const WEB: &str = r#"
[admin]
listen = "127.0.0.1:0"
[access_log]
enabled = false
[[listener]]
name = "web"
listen = "127.0.0.1:0"
protocol = "http""#;

/// A client that keeps connections alive between requests.
pub(crate) fn keepalive_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(LIMIT)
        .build()
        .unwrap()
}

/// A client that opens a new connection for every request.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(LIMIT)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// An HTTP/2 client with prior knowledge (h2c), bounded by [`LIMIT`].
pub(crate) fn h2_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(LIMIT)
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

/// The value of one exact series line (`name{labels}`) in a Prometheus exposition.
pub(crate) fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The value of a series of the running server's registry.
pub(crate) async fn metric_of(server: &Server, series: &str) -> f64 {
    let (_, text) = admin_get(server, "/metrics").await;
    metric(&text, series).unwrap_or_else(|| panic!("series {series} missing"))
}

/// Reads `stream` once and fails unless the proxy closed it (EOF or reset, no data).
pub(crate) async fn assert_closed(stream: &mut tokio::net::TcpStream, what: &str) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 16];
    let read = within(stream.read(&mut buf)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{what}: {read:?}");
}

/// The contents of `path` once something was written there (at most [`LIMIT`] / 2 of
/// polling); the file is removed afterwards.
pub(crate) async fn read_when_written(path: &Path) -> String {
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(path).unwrap_or_default();
        if !text.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_file(path);
    text
}

/// A `redis-server` of the test's own on a free loopback port, stopped (by PID) on drop.
pub(crate) struct RedisServer {
    child: std::process::Child,
    /// `redis://127.0.0.1:PORT`.
    pub(crate) url: String,
}

impl RedisServer {
    /// Starts one and waits until it accepts connections. Panics when `redis-server` is not
    /// installed (`.ci/run` installs it).
    pub(crate) async fn start() -> RedisServer {
        let port = dead_address().port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server; .ci/run does)");
        let server = RedisServer {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {port}");
    }

    /// Stops it now (SIGKILL to its PID) and waits for it to exit.
    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A configuration file the test owns (removed on drop), for reload tests.
pub(crate) struct ConfigFile {
    path: std::path::PathBuf,
}

impl ConfigFile {
    /// Writes `toml` to a fresh file under the system temp directory.
    pub(crate) fn new(name: &str, toml: &str) -> ConfigFile {
        let dir = std::env::temp_dir().join(format!("switchyard-it-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, toml).unwrap();
        ConfigFile { path }
    }

    /// Replaces the file's contents.
    pub(crate) fn write(&self, toml: &str) {
        std::fs::write(&self.path, toml).unwrap();
    }

    /// Where it is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts a balancer on `file`, which SIGHUP-style reloads read again.
pub(crate) async fn balancer_from_file(file: &ConfigFile) -> Server {
    let model = config::load_file(file.path())
        .unwrap_or_else(|errors| panic!("test config is invalid:\n{errors}"));
    let options = switchyard::runtime::StartOptions {
        config_path: Some(file.path().to_path_buf()),
        inherited: None,
    };
    within(Server::start_with(model, options))
        .await
        .expect("balancer starts")
}

/// `POST /api/v1/reload`; (status, JSON body).
pub(crate) async fn admin_reload(server: &Server) -> (u16, serde_json::Value) {
    let url = format!(
        "http://{}/api/v1/reload",
        server.admin_address().expect("tcp admin")
    );
    let response = within(client().post(url).send()).await.expect("reload");
    let status = response.status().as_u16();
    (status, within(response.json()).await.expect("reload JSON"))
}

/// A raw HTTP/2 client (hyper, prior knowledge) over one connection to `address`, its
/// connection task spawned: for trailers, gRPC and bodies a test streams itself.
pub(crate) async fn h2_sender<B>(address: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    sender
}
