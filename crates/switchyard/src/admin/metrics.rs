//! Prometheus exposition over plain atomics.
//!
//! SPEC section 6 asks for every family to be visible (HELP and TYPE) from startup and for
//! every series whose labels come from the configuration to exist with a zero value before
//! its first event. A general-purpose client prints nothing for a family without series, so
//! this module keeps its own small registry: the family table below is the single list of
//! what Switchyard exports, series are created when a snapshot is built (never per request),
//! and the hot path only touches the atomic behind a handle it resolved once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Histogram bucket upper bounds in seconds (SPEC section 6).
pub const BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The `le` label of each bucket, spelled once so the exposition never depends on float
/// formatting.
const BUCKET_LABELS: [&str; 15] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10", "30",
];

/// What a family measures, as Prometheus types it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic count.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Bucketed observations in seconds.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A metric family: name (without the `switchyard_` prefix), help text, type and label names.
#[derive(Debug)]
pub struct Family {
    /// Name without the prefix.
    pub name: &'static str,
    /// HELP text.
    pub help: &'static str,
    /// TYPE.
    pub kind: Kind,
    /// Label names, in exposition order.
    pub labels: &'static [&'static str],
}

/// The prefix of every exported name.
pub const PREFIX: &str = "switchyard_";

macro_rules! families {
    ($( $ident:ident = $name:literal, $kind:ident, [$($label:literal),*], $help:literal; )*) => {
        $(
            #[doc = $help]
            pub static $ident: Family = Family {
                name: $name,
                help: $help,
                kind: Kind::$kind,
                labels: &[$($label),*],
            };
        )*
        /// Every family, in exposition order.
        pub static ALL: &[&Family] = &[$(&$ident),*];
    };
}

families! {
    REQUESTS_TOTAL = "requests_total", Counter, ["listener", "route", "cluster", "code", "origin"],
        "HTTP requests answered, by the status sent and whether the upstream or the proxy made it.";
    REQUEST_DURATION_SECONDS = "request_duration_seconds", Histogram, ["route"],
        "Time from the request head to the end of the response, per route.";
    UPSTREAM_REQUEST_DURATION_SECONDS = "upstream_request_duration_seconds", Histogram, ["cluster", "endpoint"],
        "Time spent waiting on an upstream attempt, per endpoint.";
    ADDED_LATENCY_SECONDS = "added_latency_seconds", Histogram, ["route"],
        "Proxy time minus upstream time: the latency Switchyard itself adds.";
    ENDPOINT_STATE = "endpoint_state", Gauge, ["cluster", "endpoint", "state"],
        "1 for the endpoint's current state, 0 for the others.";
    ENDPOINT_IN_FLIGHT = "endpoint_in_flight", Gauge, ["cluster", "endpoint"],
        "Requests (L7) or connections (L4) currently on the endpoint.";
    EJECTIONS_TOTAL = "ejections_total", Counter, ["cluster", "endpoint", "reason"],
        "Outlier ejections, by reason.";
    RETRIES_TOTAL = "retries_total", Counter, ["cluster", "reason"],
        "Retry attempts made, by the retry.on word that allowed them.";
    RETRY_BUDGET_EXHAUSTED_TOTAL = "retry_budget_exhausted_total", Counter, ["cluster"],
        "Retries or hedges not made because the cluster's retry budget was spent.";
    HEDGES_TOTAL = "hedges_total", Counter, ["cluster"],
        "Hedged (extra) attempts made.";
    SHED_TOTAL = "shed_total", Counter, ["cluster", "reason"],
        "Requests refused fast by a cluster limit or an open circuit.";
    RATE_LIMITED_TOTAL = "rate_limited_total", Counter, ["route"],
        "Requests answered 429 by a route's rate limit.";
    CONNECTIONS_ACTIVE = "connections_active", Gauge, ["listener"],
        "Downstream connections currently open.";
    CONNECTIONS_TOTAL = "connections_total", Counter, ["listener"],
        "Downstream connections accepted (extension).";
    CONNECTIONS_REJECTED_TOTAL = "connections_rejected_total", Counter, ["listener", "reason"],
        "Downstream connections refused or cut off by a limit.";
    UPSTREAM_CONNECT_ERRORS_TOTAL = "upstream_connect_errors_total", Counter, ["cluster", "endpoint", "reason"],
        "Failed upstream connects, by reason: refused, timeout or other (extension).";
    TLS_HANDSHAKES_TOTAL = "tls_handshakes_total", Counter, ["listener", "resumed"],
        "Completed downstream TLS handshakes.";
    TLS_HANDSHAKE_ERRORS_TOTAL = "tls_handshake_errors_total", Counter, ["listener", "reason"],
        "Failed downstream TLS handshakes.";
    TLS_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS = "tls_certificate_expiry_timestamp_seconds", Gauge, ["listener", "name"],
        "Expiry (Unix time) of each served certificate.";
    TLS_CERTIFICATE_RELOADS_TOTAL = "tls_certificate_reloads_total", Counter, ["listener", "result"],
        "Certificate files re-read after a change or SIGHUP, by result (extension; a failure keeps the certificates in service).";
    HEALTH_CHECKS_TOTAL = "health_checks_total", Counter, ["cluster", "result"],
        "Active health checks, by result.";
    UPSTREAM_POOL_CONNECTIONS = "upstream_pool_connections", Gauge, ["cluster", "state"],
        "Pooled upstream connections, by state (idle, active).";
    L4_FLOWS_ACTIVE = "l4_flows_active", Gauge, ["listener"],
        "L4 flows (TCP connections, UDP flows) currently relayed.";
    BYTES_TOTAL = "bytes_total", Counter, ["listener", "direction"],
        "Bytes relayed, rx (from the client) and tx (to the client).";
    CONFIG_RELOADS_TOTAL = "config_reloads_total", Counter, ["result"],
        "Configuration reloads, by result.";
    DNS_RESOLUTIONS_TOTAL = "dns_resolutions_total", Counter, ["cluster", "result"],
        "DNS discovery lookups, by result (extension; a failure keeps the last good set).";
    RATE_LIMIT_BACKEND_ERRORS_TOTAL = "rate_limit_backend_errors_total", Counter, [],
        "Failures to reach the shared rate-limit store (local buckets used instead).";
    XDP_PACKETS_TOTAL = "xdp_packets_total", Counter, ["vip", "endpoint", "action"],
        "Packets seen by the XDP tier, by action (tx, pass, drop).";
    XDP_BYTES_TOTAL = "xdp_bytes_total", Counter, ["vip", "endpoint"],
        "Bytes forwarded by the XDP tier.";
    XDP_FLOW_TABLE_ENTRIES = "xdp_flow_table_entries", Gauge, ["interface"],
        "Flows remembered in the XDP tier's flow table.";
    ACCESS_LOG_DROPPED_TOTAL = "access_log_dropped_total", Counter, [],
        "Access-log lines dropped because the writer fell behind.";
}

/// A counter handle: cloning shares the series.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge handle: cloning shares the series.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Adds `n` (which may be negative).
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one unless the value already reached `limit`; says whether it did.
    pub fn try_inc(&self, limit: i64) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v < limit).then_some(v + 1)
            })
            .is_ok()
    }

    /// Sets the value.
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct HistogramCore {
    /// Observations per bucket (not cumulative; the last slot is +Inf).
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// A histogram handle (seconds): cloning shares the series.
#[derive(Debug, Clone, Default)]
pub struct Histogram(Arc<HistogramCore>);

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS.len());
        self.0.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.0.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone)]
enum Series {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

impl Series {
    fn new(kind: Kind) -> Series {
        match kind {
            Kind::Counter => Series::Counter(Counter::default()),
            Kind::Gauge => Series::Gauge(Gauge::default()),
            Kind::Histogram => Series::Histogram(Histogram::default()),
        }
    }
}

type SeriesMap = BTreeMap<Vec<String>, Series>;

/// The exposition format a scraper asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// Chooses the format from an `Accept` header value.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// The response's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Every family and its series. One per process: snapshots register their series here.
#[derive(Debug)]
pub struct Registry {
    families: Vec<(&'static Family, Mutex<SeriesMap>)>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// A registry holding every family of [`ALL`]; families without labels get their one
    /// series at once, so they print `0` from startup.
    pub fn new() -> Registry {
        let families = ALL
            .iter()
            .map(|&family| {
                let mut series = SeriesMap::new();
                if family.labels.is_empty() {
                    series.insert(Vec::new(), Series::new(family.kind));
                }
                (family, Mutex::new(series))
            })
            .collect();
        Registry { families }
    }

    /// The counter of `family` with these label values, created at zero if new.
    pub fn counter(&self, family: &'static Family, labels: &[&str]) -> Counter {
        match self.series(family, Kind::Counter, labels) {
            Series::Counter(c) => c,
            _ => Counter::default(),
        }
    }

    /// The gauge of `family` with these label values, created at zero if new.
    pub fn gauge(&self, family: &'static Family, labels: &[&str]) -> Gauge {
        match self.series(family, Kind::Gauge, labels) {
            Series::Gauge(g) => g,
            _ => Gauge::default(),
        }
    }

    /// The histogram of `family` with these label values, created empty if new.
    pub fn histogram(&self, family: &'static Family, labels: &[&str]) -> Histogram {
        match self.series(family, Kind::Histogram, labels) {
            Series::Histogram(h) => h,
            _ => Histogram::default(),
        }
    }

    /// Drops every series of `family` whose labels fail `keep` (after a reload removed the
    /// listener, cluster or endpoint they describe).
    pub fn retain(&self, family: &'static Family, keep: impl Fn(&[String]) -> bool) {
        if let Some(mut map) = self.map(family) {
            map.retain(|labels, _| keep(labels));
        }
    }

    fn map(&self, family: &'static Family) -> Option<MutexGuard<'_, SeriesMap>> {
        self.families
            .iter()
            .find(|(f, _)| std::ptr::eq(*f, family))
            .map(|(_, m)| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn series(&self, family: &'static Family, kind: Kind, labels: &[&str]) -> Series {
        debug_assert_eq!(family.kind, kind, "{} used as the wrong kind", family.name);
        debug_assert_eq!(
            family.labels.len(),
            labels.len(),
            "{} label count",
            family.name
        );
        let Some(mut map) = self.map(family) else {
            // Not one of ALL: a detached handle keeps the caller working without exporting.
            return Series::new(kind);
        };
        let key: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        map.entry(key).or_insert_with(|| Series::new(kind)).clone()
    }

    /// The whole exposition.
    pub fn render(&self, format: Format) -> String {
        let mut out = String::with_capacity(16 * 1024);
        for (family, map) in &self.families {
            let map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            render_family(&mut out, family, &map, format);
        }
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

fn render_family(out: &mut String, family: &Family, series: &SeriesMap, format: Format) {
    let name = family.name;
    let type_name = match (format, family.kind) {
        (Format::OpenMetrics, Kind::Counter) => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    };
    let _ = writeln!(out, "# HELP {PREFIX}{type_name} {}", family.help);
    let _ = writeln!(out, "# TYPE {PREFIX}{type_name} {}", family.kind.as_str());
    for (values, series) in series {
        let labels = label_set(family.labels, values);
        match series {
            Series::Counter(c) => {
                let _ = writeln!(out, "{PREFIX}{name}{} {}", braces(&labels), c.get());
            }
            Series::Gauge(g) => {
                let _ = writeln!(out, "{PREFIX}{name}{} {}", braces(&labels), g.get());
            }
            Series::Histogram(h) => render_histogram(out, name, &labels, h),
        }
    }
}

fn render_histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0u64;
    for (slot, le) in BUCKET_LABELS
        .iter()
        .chain(std::iter::once(&"+Inf"))
        .enumerate()
    {
        cumulative += h.0.buckets[slot].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{PREFIX}{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
        );
    }
    let sum = h.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(out, "{PREFIX}{name}_sum{} {sum}", braces(labels));
    let _ = writeln!(out, "{PREFIX}{name}_count{} {}", braces(labels), h.count());
}

fn label_set(names: &[&str], values: &[String]) -> String {
    let mut s = String::new();
    for (i, (name, value)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{name}=\"");
        for ch in value.chars() {
            match ch {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exposed_before_any_event() {
        let text = Registry::new().render(Format::Prometheus);
        for family in ALL {
            assert!(
                text.contains(&format!("# TYPE switchyard_{} ", family.name)),
                "{} missing",
                family.name
            );
        }
        assert!(text.contains("\nswitchyard_access_log_dropped_total 0\n"));
    }

    #[test]
    fn labelled_series_print_with_escaped_values() {
        let registry = Registry::new();
        registry.counter(&BYTES_TOTAL, &["we\"b", "rx"]).add(42);
        let text = registry.render(Format::Prometheus);
        assert!(
            text.contains("switchyard_bytes_total{listener=\"we\\\"b\",direction=\"rx\"} 42\n")
        );
    }

    #[test]
    fn handles_share_one_series() {
        let registry = Registry::new();
        registry.gauge(&CONNECTIONS_ACTIVE, &["pg"]).inc();
        registry.gauge(&CONNECTIONS_ACTIVE, &["pg"]).inc();
        assert_eq!(registry.gauge(&CONNECTIONS_ACTIVE, &["pg"]).get(), 2);
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let registry = Registry::new();
        let h = registry.histogram(&REQUEST_DURATION_SECONDS, &["api"]);
        h.observe(std::time::Duration::from_millis(3));
        h.observe(std::time::Duration::from_secs(60));
        let text = registry.render(Format::Prometheus);
        assert!(text.contains(
            "switchyard_request_duration_seconds_bucket{route=\"api\",le=\"0.0025\"} 0\n"
        ));
        assert!(text.contains(
            "switchyard_request_duration_seconds_bucket{route=\"api\",le=\"0.005\"} 1\n"
        ));
        assert!(
            text.contains(
                "switchyard_request_duration_seconds_bucket{route=\"api\",le=\"30\"} 1\n"
            )
        );
        assert!(
            text.contains(
                "switchyard_request_duration_seconds_bucket{route=\"api\",le=\"+Inf\"} 2\n"
            )
        );
        assert!(text.contains("switchyard_request_duration_seconds_sum{route=\"api\"} 60.003\n"));
        assert!(text.contains("switchyard_request_duration_seconds_count{route=\"api\"} 2\n"));
    }

    #[test]
    fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
        let text = Registry::new().render(Format::OpenMetrics);
        assert!(text.contains("# TYPE switchyard_requests counter\n"));
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text;version=1.0.0")),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Prometheus);
    }

    #[test]
    fn retain_drops_series_of_removed_things() {
        let registry = Registry::new();
        registry.gauge(&CONNECTIONS_ACTIVE, &["old"]);
        registry.gauge(&CONNECTIONS_ACTIVE, &["new"]);
        registry.retain(&CONNECTIONS_ACTIVE, |labels| labels[0] == "new");
        let text = registry.render(Format::Prometheus);
        assert!(!text.contains("listener=\"old\""));
        assert!(text.contains("listener=\"new\""));
    }
}
