//! The validated, typed configuration model.
//!
//! Everything here has passed validation and carries every default of SPEC section 3.1, so
//! the runtime never re-checks a value or guesses a default. The model is plain data
//! (serialisable for `switchyard check --format toml|json` and `GET /api/v1/config`); the
//! runtime compiles it into its own structures (regexes, pickers, metric handles) when a
//! snapshot is built.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// A whole, valid configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// The file the configuration was read from (relative paths inside it resolve against its folder).
    pub source: PathBuf,
    /// `[runtime]`.
    pub runtime: Runtime,
    /// `[admin]`.
    pub admin: Admin,
    /// `[access_log]`.
    pub access_log: AccessLog,
    /// `[defaults]`.
    pub defaults: Defaults,
    /// `[[listener]]`, in file order.
    pub listeners: Vec<Listener>,
    /// `[[cluster]]`, in file order.
    pub clusters: Vec<Cluster>,
    /// `[global_rate_limit]`.
    pub global_rate_limit: Option<GlobalRateLimit>,
    /// `[[xdp]]`.
    pub xdp: Vec<Xdp>,
}

impl Config {
    /// The cluster called `name`.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

/// `[runtime]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Runtime {
    /// Worker threads; 0 = one per CPU core.
    pub workers: usize,
    /// Unix socket for `run --upgrade`; `None` = derived from the config file's absolute path.
    pub upgrade_socket: Option<PathBuf>,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Admin {
    /// Where the admin API listens. Default `127.0.0.1:9901`.
    pub listen: AdminListen,
    /// Optional file holding a Bearer token required for non-GET requests.
    pub token_file: Option<PathBuf>,
}

/// The admin API's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminListen {
    /// A TCP address (port 0 allowed).
    Tcp(SocketAddr),
    /// `unix:/path`.
    Unix(PathBuf),
}

/// `[access_log]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessLog {
    /// `enabled` (default true).
    pub enabled: bool,
    /// `path`: `"-"` is stdout.
    pub path: LogTarget,
    /// `include_query` (default false).
    pub include_query: bool,
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogTarget {
    /// `"-"`.
    Stdout,
    /// A file, reopened on SIGUSR1.
    File(PathBuf),
}

/// `[defaults]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Defaults {
    /// Bounds shutdown and `run --upgrade`; default of each cluster's `drain_timeout`. Default 30s.
    #[serde(with = "duration_str")]
    pub drain_timeout: Duration,
    /// Keep accepting this long after SIGTERM. Default 0s.
    #[serde(with = "duration_str")]
    pub shutdown_delay: Duration,
}

/// A listener's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// L4 TCP.
    Tcp,
    /// L4 UDP.
    Udp,
    /// L4 TLS routed by SNI without termination.
    TlsPassthrough,
    /// Cleartext HTTP/1.1 + h2c.
    Http,
    /// TLS-terminated HTTP/1.1 + h2.
    Https,
}

impl Protocol {
    /// The word used in the configuration and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::TlsPassthrough => "tls-passthrough",
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }

    /// Whether this is an L7 (HTTP) listener.
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Https)
    }
}

/// `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listener {
    /// Unique name.
    pub name: String,
    /// Address to bind (port 0 allowed).
    pub listen: SocketAddr,
    /// Protocol.
    pub protocol: Protocol,
    /// Default 100000.
    pub max_connections: u32,
    /// Default 0 = off (IPv4 addresses and IPv6 /64 prefixes are counted).
    pub max_connections_per_ip: u32,
    /// Default 10s.
    #[serde(with = "duration_str")]
    pub header_read_timeout: Duration,
    /// Default 60s.
    #[serde(with = "duration_str")]
    pub idle_timeout: Duration,
    /// Bytes; default 16 KiB, at least 8 KiB.
    pub max_header_bytes: u64,
    /// Bytes; `None` = unlimited (bodies stream).
    pub max_request_body: Option<u64>,
    /// Default 20s.
    #[serde(with = "duration_str")]
    pub request_body_timeout: Duration,
    /// Bytes per second; default 500; 0 = off.
    pub min_request_body_rate: u64,
    /// Default 128.
    pub http2_max_concurrent_streams: u32,
    /// Default false.
    pub proxy_protocol: bool,
    /// CIDRs whose forwarding headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Bytes; default 256 KiB.
    pub http2_initial_stream_window: u32,
    /// Bytes; default 1 MiB.
    pub http2_initial_connection_window: u32,
    /// `[listener.tls]` (https only).
    pub tls: Option<ListenerTls>,
    /// HTTP routes in file order (`cluster =`/`split =` shorthand becomes one catch-all route).
    /// Empty for L4 listeners.
    pub routes: Vec<Route>,
    /// tls-passthrough routes, in file order. Empty elsewhere.
    pub sni_routes: Vec<SniRoute>,
    /// tcp / udp: where connections or flows go. `None` elsewhere.
    pub target: Option<Target>,
}

/// An IP network, `10.0.0.0/8` or `::1/128` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address (host bits zeroed).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies inside this network. IPv4-mapped IPv6 addresses match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `[listener.tls]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListenerTls {
    /// Certificates; the first is the default for clients without a matching SNI.
    pub certificates: Vec<CertificatePair>,
    /// Default `["h2", "http/1.1"]`.
    pub alpn: Vec<String>,
    /// Require client certificates signed by this CA.
    pub client_ca: Option<PathBuf>,
    /// Default 1.2.
    pub min_version: TlsVersion,
    /// Default false.
    pub forward_client_cert: bool,
}

/// A certificate chain and its private key (paths resolved against the config file's folder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificatePair {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// A minimum TLS version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3.
    #[serde(rename = "1.3")]
    Tls13,
}

/// Where a route or an L4 listener sends traffic.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// One cluster.
    Cluster(String),
    /// A weighted split, chosen per request / connection / flow.
    Split(Vec<WeightedCluster>),
}

impl Target {
    /// Every cluster this target can send to.
    pub fn clusters(&self) -> Vec<&str> {
        match self {
            Target::Cluster(c) => vec![c.as_str()],
            Target::Split(s) => s.iter().map(|w| w.cluster.as_str()).collect(),
        }
    }
}

/// One branch of a split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeightedCluster {
    /// Cluster name.
    pub cluster: String,
    /// Weight > 0.
    pub weight: u32,
}

/// A tls-passthrough route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SniRoute {
    /// An exact name, `*.example.com`, or `*` (default route). Lowercased.
    pub sni: String,
    /// Cluster name.
    pub cluster: String,
}

/// An L7 route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// The route's name, else `"<listener>#<index>"`.
    pub name: String,
    /// What the request must match.
    pub matcher: RouteMatch,
    /// What to do with it.
    pub action: RouteAction,
    /// Optional rewrite of the path prefix and/or Host sent upstream.
    pub rewrite: Option<Rewrite>,
    /// Default 15s.
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// `None` = off.
    #[serde(with = "opt_duration_str")]
    pub max_duration: Option<Duration>,
    /// Default equal to `timeout`.
    #[serde(with = "duration_str")]
    pub per_try_timeout: Duration,
    /// Retry policy (default: connect-failure and refused-stream only, 2 attempts).
    pub retry: RetryPolicy,
    /// Optional hedging.
    pub hedge: Option<Hedge>,
    /// Optional rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Optional authentication.
    pub auth: Option<Auth>,
    /// Request header edits.
    pub request_headers: HeaderOps,
    /// Response header edits.
    pub response_headers: HeaderOps,
}

/// A route's matchers; all must hold.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RouteMatch {
    /// Hosts (exact or `*.` wildcard, lowercased); any of them. Empty = any host.
    pub hosts: Vec<String>,
    /// Path matcher.
    pub path: Option<PathMatch>,
    /// Methods (uppercase); any of them. Empty = any method.
    pub methods: Vec<String>,
    /// Header name (lowercased) and value matcher.
    pub headers: Vec<(String, ValueMatch)>,
    /// Cookie name and value matcher.
    pub cookies: Vec<(String, ValueMatch)>,
    /// Query parameter name and value matcher.
    pub query: Vec<(String, ValueMatch)>,
    /// JWT claim name and value matcher.
    pub jwt_claims: Vec<(String, ValueMatch)>,
}

/// How a path is matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    /// `path = "/exact"`.
    Exact(String),
    /// `path_prefix = "/v2/"`.
    Prefix(String),
    /// `path_regex = "^/u/[0-9]+$"` (validated to compile).
    Regex(String),
}

/// A value matcher: `"/.../"` is a regex, anything else exact and case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueMatch {
    /// Exact, case-sensitive.
    Exact(String),
    /// A regex (validated to compile), without the surrounding slashes.
    Regex(String),
}

/// A route's action.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    /// Forward to a cluster or a split.
    Forward(Target),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer directly.
    DirectResponse(DirectResponse),
}

/// `redirect = { scheme, host, path, code }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redirect {
    /// Replacement scheme.
    pub scheme: Option<String>,
    /// Replacement host.
    pub host: Option<String>,
    /// Replacement path.
    pub path: Option<String>,
    /// 301, 302, 303, 307 or 308 (default 301).
    pub code: u16,
}

/// `direct_response = { status, body }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectResponse {
    /// 100-599.
    pub status: u16,
    /// Body (default empty).
    pub body: String,
}

/// `rewrite = { path_prefix, host }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rewrite {
    /// Replaces the matched `path_prefix`.
    pub path_prefix: Option<String>,
    /// Replaces the Host sent upstream.
    pub host: Option<String>,
}

/// A route's retry policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Attempts including the first (default 2).
    pub attempts: u32,
    /// Retry conditions.
    pub on: Vec<RetryOn>,
    /// Default 25ms.
    #[serde(with = "duration_str")]
    pub backoff_base: Duration,
    /// Default 250ms.
    #[serde(with = "duration_str")]
    pub backoff_max: Duration,
    /// Replay buffer in bytes (default 64 KiB).
    pub buffer: u64,
    /// A stricter per-route budget ratio.
    pub budget: Option<f64>,
    /// A stricter per-route floor.
    pub min_retries_per_second: Option<u32>,
}

/// A retry condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// Refused or connect timeout (never reached an upstream).
    ConnectFailure,
    /// HTTP/2 REFUSED_STREAM (never processed).
    RefusedStream,
    /// Reset before a complete response head.
    Reset,
    /// Per-try timeout with no head.
    Timeout,
    /// Upstream 502/503/504.
    GatewayError,
    /// Any upstream 5xx.
    #[serde(rename = "5xx")]
    Any5xx,
    /// A specific status.
    Status(u16),
}

impl RetryOn {
    /// The word as written in `retry.on` (and the `reason` label of `retries_total`).
    pub fn word(&self) -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed(match self {
            RetryOn::ConnectFailure => "connect-failure",
            RetryOn::RefusedStream => "refused-stream",
            RetryOn::Reset => "reset",
            RetryOn::Timeout => "timeout",
            RetryOn::GatewayError => "gateway-error",
            RetryOn::Any5xx => "5xx",
            RetryOn::Status(status) => return std::borrow::Cow::Owned(status.to_string()),
        })
    }

    /// Whether the condition is met by an upstream response with `status`.
    pub fn matches_status(&self, status: u16) -> bool {
        match self {
            RetryOn::GatewayError => matches!(status, 502..=504),
            RetryOn::Any5xx => (500..=599).contains(&status),
            RetryOn::Status(wanted) => *wanted == status,
            _ => false,
        }
    }

    /// Whether the condition proves the request never reached an upstream, so it is safe
    /// to retry whatever the method (SPEC 4).
    pub fn never_sent(&self) -> bool {
        matches!(self, RetryOn::ConnectFailure | RetryOn::RefusedStream)
    }
}

/// `hedge = { after, max_extra }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hedge {
    /// When to send an extra attempt.
    pub after: HedgeAfter,
    /// Extra attempts (default 1).
    pub max_extra: u32,
}

/// When a hedge fires.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HedgeAfter {
    /// A fixed delay.
    Delay(#[serde(with = "duration_str")] Duration),
    /// That percentile (1-99) of recent first-attempt time-to-head.
    Percentile(u8),
}

/// `rate_limit = { key, rate, per, burst }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    /// What the bucket is keyed by.
    pub key: RateLimitKey,
    /// Tokens per `per`.
    pub rate: u32,
    /// Refill period.
    #[serde(with = "duration_str")]
    pub per: Duration,
    /// Bucket capacity (default `rate`).
    pub burst: u32,
}

/// A rate-limit key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitKey {
    /// The resolved client address.
    SourceIp,
    /// A request header (lowercased name).
    Header(String),
    /// A verified JWT claim.
    Jwt(String),
    /// One bucket for the whole route.
    Route,
}

/// `auth = { jwt = { ... } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Auth {
    /// JWT verification.
    pub jwt: JwtAuth,
}

/// JWT verification settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JwtAuth {
    /// Required `iss`.
    pub issuer: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// JWKS file (resolved path).
    pub jwks_file: PathBuf,
}

/// Header edits: remove, then set, then add.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HeaderOps {
    /// Headers appended.
    pub add: Vec<(String, String)>,
    /// Headers replaced.
    pub set: Vec<(String, String)>,
    /// Headers removed (lowercased names).
    pub remove: Vec<String>,
}

/// A balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Round robin.
    RoundRobin,
    /// Smooth weighted round robin.
    WeightedRoundRobin,
    /// Weighted random.
    Random,
    /// Least in-flight requests (weighted).
    LeastRequest,
    /// Power of two choices by in-flight.
    P2c,
    /// Power of two choices by peak EWMA latency.
    P2cEwma,
    /// Consistent hashing on a ring.
    RingHash,
    /// Maglev consistent hashing.
    Maglev,
}

impl Balance {
    /// The configuration word.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round-robin",
            Balance::WeightedRoundRobin => "weighted-round-robin",
            Balance::Random => "random",
            Balance::LeastRequest => "least-request",
            Balance::P2c => "p2c",
            Balance::P2cEwma => "p2c-ewma",
            Balance::RingHash => "ring-hash",
            Balance::Maglev => "maglev",
        }
    }

    /// Whether the policy uses `hash_key`.
    pub fn is_hash(self) -> bool {
        matches!(self, Balance::RingHash | Balance::Maglev)
    }
}

/// What a hash policy hashes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashKey {
    /// The client address.
    SourceIp,
    /// Source/destination address and port and protocol.
    FiveTuple,
    /// A request header (lowercased name).
    Header(String),
    /// A cookie.
    Cookie(String),
    /// The request path.
    Path,
    /// A verified JWT claim.
    Jwt(String),
}

impl HashKey {
    /// Whether the key is available on an L4 connection (no HTTP request).
    pub fn is_l4(&self) -> bool {
        matches!(self, HashKey::SourceIp | HashKey::FiveTuple)
    }
}

/// The upstream protocol of an HTTP cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (h2c, or h2 over TLS).
    H2,
    /// Chosen by ALPN (needs `[cluster.tls]`).
    Auto,
}

/// Sending a PROXY protocol header upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SendProxyProtocol {
    /// No header.
    Off,
    /// Text v1.
    V1,
    /// Binary v2.
    V2,
}

/// `[[cluster]]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    /// Unique name.
    pub name: String,
    /// Static endpoints (empty when `discovery` is used).
    pub endpoints: Vec<Endpoint>,
    /// DNS discovery.
    pub discovery: Option<Discovery>,
    /// Default p2c-ewma.
    pub balance: Balance,
    /// Default source-ip (used only by ring-hash / maglev).
    pub hash_key: HashKey,
    /// Maglev table size (a prime; default 65537).
    pub maglev_table_size: u32,
    /// Cookie affinity.
    pub sticky: Option<Sticky>,
    /// Default 30s; 0 = off.
    #[serde(with = "duration_str")]
    pub slow_start: Duration,
    /// Default 1s.
    #[serde(with = "duration_str")]
    pub connect_timeout: Duration,
    /// Default `[defaults] drain_timeout`.
    #[serde(with = "duration_str")]
    pub drain_timeout: Duration,
    /// 0 = unlimited.
    pub max_requests_per_connection: u32,
    /// Default http1.
    pub protocol: UpstreamProtocol,
    /// Default off.
    pub send_proxy_protocol: SendProxyProtocol,
    /// Default 4s.
    #[serde(with = "duration_str")]
    pub pool_idle_timeout: Duration,
    /// Default 32.
    pub pool_max_idle_per_endpoint: u32,
    /// Default 60s; `None` = off (`"0s"`).
    #[serde(with = "opt_duration_str")]
    pub tcp_keepalive: Option<Duration>,
    /// Default `{ ratio = 0.2, min_retries_per_second = 10 }`.
    pub retry_budget: RetryBudget,
    /// Active health checks.
    pub health: Option<Health>,
    /// Passive outlier detection (present by default).
    pub outlier: Option<Outlier>,
    /// Circuit breakers / bulkheads.
    pub limits: Limits,
    /// Re-encryption to upstreams.
    pub tls: Option<ClusterTls>,
}

/// A static endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// The configured name, else the normalised address (`ip:port` / `[v6]:port`).
    pub name: String,
    /// The address.
    pub address: SocketAddr,
    /// Default 1.
    pub weight: u32,
}

/// `discovery = { dns, refresh }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discovery {
    /// `host:port` to resolve.
    pub dns: String,
    /// Default 30s; a record's TTL shortens it.
    #[serde(with = "duration_str")]
    pub refresh: Duration,
    /// The DNS server to ask (`ip:port`); default: the system's (`/etc/resolv.conf`).
    pub resolver: Option<SocketAddr>,
}

/// `sticky = { cookie, ttl }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sticky {
    /// Cookie name.
    pub cookie: String,
    /// Max-Age (default 1h).
    #[serde(with = "duration_str")]
    pub ttl: Duration,
}

/// A cluster's retry budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RetryBudget {
    /// Retries per first attempt; `None` = unlimited.
    pub ratio: Option<f64>,
    /// A floor of retries per second.
    pub min_retries_per_second: u32,
}

/// The kind of active health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthKind {
    /// Connect only.
    Tcp,
    /// HTTP request.
    Http,
    /// grpc.health.v1.
    Grpc,
    /// TLS handshake.
    Tls,
}

/// `[cluster.health]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// Required.
    pub kind: HealthKind,
    /// Default `/healthz`.
    pub path: String,
    /// Default 5s.
    #[serde(with = "duration_str")]
    pub interval: Duration,
    /// Default 2s.
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// Default 3.
    pub unhealthy_threshold: u32,
    /// Default 2.
    pub healthy_threshold: u32,
    /// Default 200-399.
    pub expect_status: Vec<StatusRange>,
    /// Optional substring or regex.
    pub expect_body: Option<ValueMatch>,
    /// grpc service name (default "").
    pub service: String,
    /// Percent of the interval, default 10.
    pub jitter_percent: f64,
}

/// An inclusive range of HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StatusRange {
    /// First status.
    pub from: u16,
    /// Last status.
    pub to: u16,
}

impl StatusRange {
    /// Whether `status` lies in the range.
    pub fn contains(&self, status: u16) -> bool {
        (self.from..=self.to).contains(&status)
    }
}

/// `[cluster.outlier]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outlier {
    /// Default 5; 0 = off.
    pub consecutive_5xx: u32,
    /// Default 5; 0 = off.
    pub consecutive_gateway_failures: u32,
    /// `None` = off.
    pub error_rate: Option<f64>,
    /// Default 30s.
    #[serde(with = "duration_str")]
    pub window: Duration,
    /// Default 20.
    pub min_requests: u32,
    /// `None` = off.
    pub latency_factor: Option<f64>,
    /// Default 30s.
    #[serde(with = "duration_str")]
    pub base_ejection: Duration,
    /// Default 5m.
    #[serde(with = "duration_str")]
    pub max_ejection: Duration,
    /// Default 50.
    pub max_ejection_percent: f64,
    /// Default 50.
    pub panic_threshold: f64,
}

/// `[cluster.limits]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Default 1024.
    pub max_connections: u32,
    /// Default 1024.
    pub max_pending_requests: u32,
    /// Default 1024.
    pub max_requests: u32,
    /// Default unlimited.
    pub max_connections_per_endpoint: Option<u32>,
    /// Default unlimited.
    pub max_concurrent_streams_per_connection: Option<u32>,
}

/// `[cluster.tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterTls {
    /// Name sent and verified.
    pub sni: Option<String>,
    /// Trust anchors; `None` = system roots.
    pub ca: Option<PathBuf>,
    /// Client certificate for mTLS.
    pub client_cert: Option<PathBuf>,
    /// Its key.
    pub client_key: Option<PathBuf>,
    /// ALPN offered (default `["h2", "http/1.1"]`).
    pub alpn: Vec<String>,
}

/// `[global_rate_limit]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GlobalRateLimit {
    /// `redis://host:port`.
    pub redis: String,
    /// The longest a request waits for Redis before its local bucket decides (extension).
    pub timeout: Duration,
}

/// XDP attach mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XdpMode {
    /// Driver mode.
    Native,
    /// SKB mode.
    Generic,
}

/// How the packet tier forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XdpForward {
    /// IPIP encapsulation.
    Ipip,
    /// MAC rewrite (same L2).
    Dsr,
}

/// An L4 protocol of the packet tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum L4Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// `[[xdp]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Xdp {
    /// Interface name.
    pub interface: String,
    /// Default native.
    pub mode: XdpMode,
    /// Default 1000000.
    pub flow_table_size: u32,
    /// VIPs.
    pub vips: Vec<XdpVip>,
}

/// `[[xdp.vip]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct XdpVip {
    /// VIP:port.
    pub address: SocketAddr,
    /// tcp | udp.
    pub protocol: L4Protocol,
    /// Cluster name.
    pub cluster: String,
    /// Default ipip.
    pub forward: XdpForward,
    /// Default 65537 (prime).
    pub maglev_table_size: u32,
}

/// Serialises a `Duration` in the configuration's own syntax (`"250ms"`), so `check` output
/// can be fed back as a configuration.
pub(crate) mod duration_str {
    use std::time::Duration;

    pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&crate::config::units::format_duration(*d))
    }
}

/// [`duration_str`] for optional durations (`None` is written as `"0s"`).
pub(crate) mod opt_duration_str {
    use std::time::Duration;

    pub(crate) fn serialize<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_str(&crate::config::units::format_duration(
            d.unwrap_or_default(),
        ))
    }
}
