//! `[[cluster]]`: endpoints or discovery, balancing, pools, retry budget, and the
//! `[cluster.health]`, `[cluster.outlier]`, `[cluster.limits]` and `[cluster.tls]` tables.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use super::top::{maglev_size, tables};
use super::{Node, Walker, is_token};
use crate::config::model::{
    Balance, Cluster, ClusterTls, Defaults, Discovery, Endpoint, HashKey, Health, HealthKind,
    Limits, Outlier, RetryBudget, SendProxyProtocol, StatusRange, Sticky, UpstreamProtocol,
};
use crate::config::units;

const CLUSTER_KEYS: &[&str] = &[
    "name",
    "endpoints",
    "discovery",
    "balance",
    "hash_key",
    "maglev_table_size",
    "sticky",
    "slow_start",
    "connect_timeout",
    "drain_timeout",
    "max_requests_per_connection",
    "protocol",
    "send_proxy_protocol",
    "pool_idle_timeout",
    "pool_max_idle_per_endpoint",
    "tcp_keepalive",
    "retry_budget",
    "health",
    "outlier",
    "limits",
    "tls",
];

const BALANCES: &[(&str, Balance)] = &[
    ("round-robin", Balance::RoundRobin),
    ("weighted-round-robin", Balance::WeightedRoundRobin),
    ("random", Balance::Random),
    ("least-request", Balance::LeastRequest),
    ("p2c", Balance::P2c),
    ("p2c-ewma", Balance::P2cEwma),
    ("ring-hash", Balance::RingHash),
    ("maglev", Balance::Maglev),
];

/// Walks every `[[cluster]]`.
pub(super) fn walk_clusters(
    w: &mut Walker<'_>,
    root: &Node<'_, '_>,
    defaults: &Defaults,
) -> Vec<Cluster> {
    let nodes = tables(w, root, "cluster");
    let mut names = Vec::new();
    let mut out = Vec::new();
    for n in nodes {
        let c = walk_cluster(w, &n, defaults);
        if let Some(v) = n.get("name") {
            names.push((c.name.clone(), v.span(), n.sub("name")));
        }
        out.push(c);
    }
    w.unique(&names, "cluster");
    out
}

fn walk_cluster(w: &mut Walker<'_>, n: &Node<'_, '_>, defaults: &Defaults) -> Cluster {
    w.keys(n, CLUSTER_KEYS);
    let name = match w.req_string(n, "name") {
        Some(("", span)) => {
            w.err(&span, &n.sub("name"), "a cluster name must not be empty");
            String::new()
        }
        Some((s, _)) => s.to_string(),
        None => String::new(),
    };
    let endpoints = walk_endpoints(w, n);
    let discovery = walk_discovery(w, n);
    match (n.has("endpoints"), n.has("discovery")) {
        (true, true) => {
            let span = n.key_span("discovery");
            w.err(
                &span,
                &n.sub("discovery"),
                "`endpoints` and `discovery` are mutually exclusive",
            );
        }
        (false, false) => {
            let span = n.span.clone();
            w.err_hint(
                &span,
                &n.sub("endpoints"),
                "a cluster needs `endpoints` or `discovery`",
                Some("for example endpoints = [\"10.0.0.1:8080\"]".into()),
            );
        }
        _ => {}
    }

    let balance = w
        .word(
            n,
            "balance",
            &BALANCES.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        )
        .and_then(|s| BALANCES.iter().find(|(b, _)| *b == s).map(|(_, b)| *b))
        .unwrap_or(Balance::P2cEwma);
    let mut hash_key = HashKey::SourceIp;
    if let Some((s, span)) = w.string(n, "hash_key") {
        let path = n.sub("hash_key");
        if let Some(k) = parse_hash_key(w, s, &span, &path) {
            hash_key = k;
        }
        if n.has("balance") && !balance.is_hash() {
            w.err_hint(
                &n.key_span("hash_key"),
                &path,
                format!(
                    "hash_key applies only to balance = \"ring-hash\" or \"maglev\", not {:?}",
                    balance.as_str()
                ),
                None,
            );
        } else if !n.has("balance") {
            w.err_hint(
                &n.key_span("hash_key"),
                &path,
                "hash_key applies only to balance = \"ring-hash\" or \"maglev\" (the default is \"p2c-ewma\")",
                Some("add balance = \"maglev\"".into()),
            );
        }
    }
    let maglev_table_size = maglev_size(w, n).unwrap_or(65_537);
    if balance == Balance::Maglev && endpoints.len() > maglev_table_size as usize {
        let span = n
            .get("maglev_table_size")
            .map(toml::Spanned::span)
            .unwrap_or(n.span.clone());
        w.err(
            &span,
            &n.sub("maglev_table_size"),
            format!(
                "maglev_table_size {maglev_table_size} is smaller than the {} endpoints",
                endpoints.len()
            ),
        );
    }

    let sticky = walk_sticky(w, n);
    let slow_start = w
        .duration(n, "slow_start")
        .unwrap_or(Duration::from_secs(30));
    let connect_timeout = w.positive_duration(n, "connect_timeout", Duration::from_secs(1));
    let drain_timeout = w
        .duration(n, "drain_timeout")
        .unwrap_or(defaults.drain_timeout);
    let max_requests_per_connection = w
        .u32_in(n, "max_requests_per_connection", 0, u32::MAX)
        .unwrap_or(0);
    let protocol = match w.word(n, "protocol", &["http1", "h2", "auto"]) {
        Some("h2") => UpstreamProtocol::H2,
        Some("auto") => {
            if !n.has("tls") {
                let span = n
                    .get("protocol")
                    .map(toml::Spanned::span)
                    .unwrap_or_default();
                w.err_hint(
                    &span,
                    &n.sub("protocol"),
                    "protocol = \"auto\" chooses by ALPN and needs [cluster.tls]",
                    Some("use \"http1\" or \"h2\" for cleartext upstreams".into()),
                );
            }
            UpstreamProtocol::Auto
        }
        _ => UpstreamProtocol::Http1,
    };
    let send_proxy_protocol = match w.word(n, "send_proxy_protocol", &["off", "v1", "v2"]) {
        Some("v1") => SendProxyProtocol::V1,
        Some("v2") => SendProxyProtocol::V2,
        _ => SendProxyProtocol::Off,
    };
    let pool_idle_timeout = w
        .duration(n, "pool_idle_timeout")
        .unwrap_or(Duration::from_secs(4));
    let pool_max_idle_per_endpoint = w
        .u32_in(n, "pool_max_idle_per_endpoint", 0, u32::MAX)
        .unwrap_or(32);
    let tcp_keepalive = match w.duration(n, "tcp_keepalive") {
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
        None if n.has("tcp_keepalive") => None,
        None => Some(Duration::from_secs(60)),
    };
    let retry_budget = walk_retry_budget(w, n);
    let health = w
        .table(n, "health")
        .map(|h| walk_health(w, &h, n.has("tls")));
    let outlier = walk_outlier(w, n);
    let limits = walk_limits(w, n);
    let tls = w.table(n, "tls").map(|t| walk_tls(w, &t));
    Cluster {
        name,
        endpoints,
        discovery,
        balance,
        hash_key,
        maglev_table_size,
        sticky,
        slow_start,
        connect_timeout,
        drain_timeout,
        max_requests_per_connection,
        protocol,
        send_proxy_protocol,
        pool_idle_timeout,
        pool_max_idle_per_endpoint,
        tcp_keepalive,
        retry_budget,
        health,
        outlier,
        limits,
        tls,
    }
}

/// Parses a `hash_key` word.
fn parse_hash_key(w: &mut Walker<'_>, s: &str, span: &Range<usize>, path: &str) -> Option<HashKey> {
    match s {
        "source-ip" => return Some(HashKey::SourceIp),
        "5-tuple" => return Some(HashKey::FiveTuple),
        "path" => return Some(HashKey::Path),
        _ => {}
    }
    for (prefix, make) in [
        (
            "header:",
            (|s: String| HashKey::Header(s.to_ascii_lowercase())) as fn(String) -> HashKey,
        ),
        ("cookie:", HashKey::Cookie),
        ("jwt:", HashKey::Jwt),
    ] {
        if let Some(rest) = s.strip_prefix(prefix) {
            if rest.is_empty() || (prefix != "jwt:" && !is_token(rest)) {
                w.err(
                    span,
                    path,
                    format!("invalid name after {prefix:?} in {s:?}"),
                );
                return None;
            }
            return Some(make(rest.to_string()));
        }
    }
    let hint = super::did_you_mean(
        s,
        ["source-ip", "5-tuple", "path", "header:", "cookie:", "jwt:"],
    )
    .or_else(|| {
        Some("one of source-ip, 5-tuple, header:NAME, cookie:NAME, path, jwt:CLAIM".into())
    });
    w.err_hint(span, path, format!("unknown hash_key {s:?}"), hint);
    None
}

fn walk_endpoints(w: &mut Walker<'_>, n: &Node<'_, '_>) -> Vec<Endpoint> {
    let Some(items) = w.array(n, "endpoints") else {
        return Vec::new();
    };
    let base = n.sub("endpoints");
    if items.is_empty() {
        let span = n
            .get("endpoints")
            .map(toml::Spanned::span)
            .unwrap_or_default();
        w.err(&span, &base, "a cluster needs at least one endpoint");
    }
    let mut out = Vec::new();
    let mut names = Vec::new();
    for (i, v) in items.iter().enumerate() {
        let path = format!("{base}[{i}]");
        let (addr_text, addr_span, addr_path, weight, name) = if v.get_ref().is_str() {
            let s = w.as_str(v, &path).unwrap_or_default();
            (s, v.span(), path.clone(), 1, None)
        } else {
            let Some(e) = w.as_node(v, path.clone()) else {
                continue;
            };
            w.keys(&e, &["address", "weight", "name"]);
            let weight = w.u32_in(&e, "weight", 1, 10_000).unwrap_or(1);
            let name = match w.string(&e, "name") {
                Some(("", span)) => {
                    w.err(&span, &e.sub("name"), "an endpoint name must not be empty");
                    None
                }
                Some((s, span)) => Some((s.to_string(), span)),
                None => None,
            };
            let Some((s, span)) = w.req_string(&e, "address") else {
                continue;
            };
            (s, span, e.sub("address"), weight, name)
        };
        let Some(address) = endpoint_addr(w, addr_text, &addr_span, &addr_path) else {
            continue;
        };
        let (name, name_span) = match name {
            Some((s, span)) => (s, span),
            None => (address.to_string(), addr_span.clone()),
        };
        names.push((name.clone(), name_span, path));
        out.push(Endpoint {
            name,
            address,
            weight,
        });
    }
    w.unique(&names, "endpoint");
    out
}

/// An endpoint address: a literal socket address (names need `discovery`).
fn endpoint_addr(
    w: &mut Walker<'_>,
    s: &str,
    span: &Range<usize>,
    path: &str,
) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        if a.port() == 0 || a.ip().is_unspecified() {
            w.err(
                span,
                path,
                format!("endpoint address {s:?} needs a specific address and a port other than 0"),
            );
            return None;
        }
        return Some(a);
    }
    let hint = match s.rsplit_once(':') {
        Some((host, port))
            if port.parse::<u16>().is_ok()
                && !host.is_empty()
                && host.parse::<std::net::IpAddr>().is_err() =>
        {
            Some(format!(
                "a host name needs discovery = {{ dns = \"{s}\" }} instead of endpoints"
            ))
        }
        _ if s.parse::<std::net::IpAddr>().is_ok() => Some(format!("add a port: \"{s}:80\"")),
        _ => Some("for example \"10.0.0.1:8080\" or \"[2001:db8::1]:8080\"".into()),
    };
    w.err_hint(span, path, format!("invalid endpoint address {s:?}"), hint);
    None
}

fn walk_discovery(w: &mut Walker<'_>, n: &Node<'_, '_>) -> Option<Discovery> {
    let d = w.table(n, "discovery")?;
    w.keys(&d, &["dns", "refresh", "resolver"]);
    let resolver = match w.string(&d, "resolver") {
        Some((s, span)) => match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                w.err_hint(
                    &span,
                    &d.sub("resolver"),
                    format!("invalid resolver address {s:?}"),
                    Some("write ip:port, for example \"10.0.0.2:53\"".into()),
                );
                None
            }
        },
        None => None,
    };
    let refresh = w.positive_duration(&d, "refresh", Duration::from_secs(30));
    let (dns, span) = w.req_string(&d, "dns")?;
    let ok = match dns.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0),
        None => false,
    };
    if !ok {
        w.err_hint(
            &span,
            &d.sub("dns"),
            format!("invalid discovery name {dns:?}"),
            Some("write host:port, for example \"api.internal:8080\"".into()),
        );
        return None;
    }
    Some(Discovery {
        dns: dns.to_string(),
        refresh,
        resolver,
    })
}

fn walk_sticky(w: &mut Walker<'_>, n: &Node<'_, '_>) -> Option<Sticky> {
    let s = w.table(n, "sticky")?;
    w.keys(&s, &["cookie", "ttl"]);
    let ttl = w.duration(&s, "ttl").unwrap_or(Duration::from_secs(3600));
    let (cookie, span) = w.req_string(&s, "cookie")?;
    if !is_token(cookie) {
        w.err(
            &span,
            &s.sub("cookie"),
            format!("invalid cookie name {cookie:?}"),
        );
        return None;
    }
    Some(Sticky {
        cookie: cookie.to_string(),
        ttl,
    })
}

fn walk_retry_budget(w: &mut Walker<'_>, n: &Node<'_, '_>) -> RetryBudget {
    let mut b = RetryBudget {
        ratio: Some(0.2),
        min_retries_per_second: 10,
    };
    let Some(t) = w.table(n, "retry_budget") else {
        return b;
    };
    w.keys(&t, &["ratio", "min_retries_per_second"]);
    if let Some(v) = t.get("ratio") {
        let path = t.sub("ratio");
        if let Some(s) = v.get_ref().as_str() {
            if s == "unlimited" {
                b.ratio = None;
            } else {
                w.err_hint(
                    &v.span(),
                    &path,
                    format!("invalid ratio {s:?}"),
                    Some("a number >= 0, or \"unlimited\"".into()),
                );
            }
        } else if let Some(r) = w.as_number(v, &path) {
            if r < 0.0 {
                w.err(&v.span(), &path, format!("ratio {r} must not be negative"));
            } else {
                b.ratio = Some(r);
            }
        }
    }
    if let Some(m) = w.u32_in(&t, "min_retries_per_second", 0, u32::MAX) {
        b.min_retries_per_second = m;
    }
    b
}

fn walk_health(w: &mut Walker<'_>, h: &Node<'_, '_>, has_tls: bool) -> Health {
    w.keys(
        h,
        &[
            "kind",
            "path",
            "interval",
            "timeout",
            "unhealthy_threshold",
            "healthy_threshold",
            "expect_status",
            "expect_body",
            "service",
            "jitter",
        ],
    );
    if !h.has("kind") {
        w.missing(h, "kind");
    }
    let kind = match w.word(h, "kind", &["tcp", "http", "grpc", "tls"]) {
        Some("tcp") => HealthKind::Tcp,
        Some("grpc") => HealthKind::Grpc,
        Some("tls") => {
            if !has_tls {
                let span = h.get("kind").map(toml::Spanned::span).unwrap_or_default();
                w.err_hint(
                    &span,
                    &h.sub("kind"),
                    "kind = \"tls\" checks the handshake of [cluster.tls], which this cluster lacks",
                    Some("add [cluster.tls], or use kind = \"tcp\"".into()),
                );
            }
            HealthKind::Tls
        }
        _ => HealthKind::Http,
    };
    let path = match w.string(h, "path") {
        Some((p, span)) if !p.starts_with('/') => {
            w.err(
                &span,
                &h.sub("path"),
                format!("a health check path must start with '/': {p:?}"),
            );
            "/healthz".to_string()
        }
        Some((p, _)) => p.to_string(),
        None => "/healthz".to_string(),
    };
    let interval = w.positive_duration(h, "interval", Duration::from_secs(5));
    let timeout = w.positive_duration(h, "timeout", Duration::from_secs(2));
    let unhealthy_threshold = w.u32_in(h, "unhealthy_threshold", 1, u32::MAX).unwrap_or(3);
    let healthy_threshold = w.u32_in(h, "healthy_threshold", 1, u32::MAX).unwrap_or(2);
    let expect_status =
        walk_expect_status(w, h).unwrap_or_else(|| vec![StatusRange { from: 200, to: 399 }]);
    let expect_body = match w.string(h, "expect_body") {
        Some((s, span)) => w.value_match(s, &span, &h.sub("expect_body")),
        None => None,
    };
    let service = w
        .string(h, "service")
        .map(|(s, _)| s.to_string())
        .unwrap_or_default();
    let jitter_percent = match h.get("jitter") {
        Some(v) => {
            let p = h.sub("jitter");
            let r = match v.get_ref().as_str() {
                Some(s) => Some(units::parse_percent(s)),
                None => w.as_number(v, &p).map(units::check_percent),
            };
            r.and_then(|r| w.unit(v, &p, r)).unwrap_or(10.0)
        }
        None => 10.0,
    };
    Health {
        kind,
        path,
        interval,
        timeout,
        unhealthy_threshold,
        healthy_threshold,
        expect_status,
        expect_body,
        service,
        jitter_percent,
    }
}

/// `expect_status`: `"200-399"`, `"200,204"`, `200` or `[200, "300-399"]`.
fn walk_expect_status(w: &mut Walker<'_>, h: &Node<'_, '_>) -> Option<Vec<StatusRange>> {
    let v = h.get("expect_status")?;
    let path = h.sub("expect_status");
    let mut parts: Vec<(String, Range<usize>)> = Vec::new();
    match v.get_ref() {
        toml::de::DeValue::String(s) => {
            parts.extend(s.split(',').map(|p| (p.trim().to_string(), v.span())));
        }
        toml::de::DeValue::Integer(i) => parts.push((i.to_string(), v.span())),
        toml::de::DeValue::Array(a) => {
            for item in a.iter() {
                match item.get_ref() {
                    toml::de::DeValue::String(s) => parts.push((s.to_string(), item.span())),
                    toml::de::DeValue::Integer(i) => parts.push((i.to_string(), item.span())),
                    _ => w.wrong_type(item, &path, "a status or a range like \"200-399\""),
                }
            }
        }
        _ => {
            w.wrong_type(v, &path, "a status range like \"200-399\"");
            return None;
        }
    }
    let mut out = Vec::new();
    let mut ok = !parts.is_empty();
    for (p, span) in parts {
        let (a, b) = p.split_once('-').unwrap_or((&p, &p));
        let status = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|s| (100..=599).contains(s))
        };
        match (status(a), status(b)) {
            (Some(from), Some(to)) if from <= to => out.push(StatusRange { from, to }),
            _ => {
                w.err(
                    &span,
                    &path,
                    format!("invalid status range {p:?} (statuses are 100-599)"),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn walk_outlier(w: &mut Walker<'_>, n: &Node<'_, '_>) -> Option<Outlier> {
    let mut o = Outlier {
        consecutive_5xx: 5,
        consecutive_gateway_failures: 5,
        error_rate: None,
        window: Duration::from_secs(30),
        min_requests: 20,
        latency_factor: None,
        base_ejection: Duration::from_secs(30),
        max_ejection: Duration::from_secs(300),
        max_ejection_percent: 50.0,
        panic_threshold: 50.0,
    };
    let Some(t) = w.table(n, "outlier") else {
        return Some(o);
    };
    w.keys(
        &t,
        &[
            "enabled",
            "consecutive_5xx",
            "consecutive_gateway_failures",
            "error_rate",
            "window",
            "min_requests",
            "latency_factor",
            "base_ejection",
            "max_ejection",
            "max_ejection_percent",
            "panic_threshold",
        ],
    );
    let enabled = w.boolean(&t, "enabled").unwrap_or(true);
    if let Some(v) = w.u32_in(&t, "consecutive_5xx", 0, u32::MAX) {
        o.consecutive_5xx = v;
    }
    if let Some(v) = w.u32_in(&t, "consecutive_gateway_failures", 0, u32::MAX) {
        o.consecutive_gateway_failures = v;
    }
    o.error_rate = w.number_with(&t, "error_rate", units::check_ratio);
    if let Some(v) = w.duration(&t, "window") {
        o.window = v;
    }
    if let Some(v) = w.u32_in(&t, "min_requests", 0, u32::MAX) {
        o.min_requests = v;
    }
    o.latency_factor = w.number_with(&t, "latency_factor", |f| {
        if f >= 1.0 {
            Ok(f)
        } else {
            Err(units::UnitError {
                message: format!("latency_factor {f} must be at least 1"),
                hint: None,
            })
        }
    });
    if let Some(v) = w.duration(&t, "base_ejection") {
        o.base_ejection = v;
    }
    if let Some(v) = w.duration(&t, "max_ejection") {
        o.max_ejection = v;
    }
    if o.max_ejection < o.base_ejection {
        let span = t
            .get("max_ejection")
            .or(t.get("base_ejection"))
            .map(toml::Spanned::span)
            .unwrap_or_default();
        w.err(
            &span,
            &t.sub("max_ejection"),
            "max_ejection must be at least base_ejection",
        );
    }
    if let Some(v) = w.number_with(&t, "max_ejection_percent", units::check_percent) {
        o.max_ejection_percent = v;
    }
    if let Some(v) = w.number_with(&t, "panic_threshold", units::check_percent) {
        o.panic_threshold = v;
    }
    enabled.then_some(o)
}

fn walk_limits(w: &mut Walker<'_>, n: &Node<'_, '_>) -> Limits {
    let mut l = Limits {
        max_connections: 1024,
        max_pending_requests: 1024,
        max_requests: 1024,
        max_connections_per_endpoint: None,
        max_concurrent_streams_per_connection: None,
    };
    let Some(t) = w.table(n, "limits") else {
        return l;
    };
    w.keys(
        &t,
        &[
            "max_connections",
            "max_pending_requests",
            "max_requests",
            "max_connections_per_endpoint",
            "max_concurrent_streams_per_connection",
        ],
    );
    if let Some(v) = w.u32_in(&t, "max_connections", 1, u32::MAX) {
        l.max_connections = v;
    }
    if let Some(v) = w.u32_in(&t, "max_pending_requests", 0, u32::MAX) {
        l.max_pending_requests = v;
    }
    if let Some(v) = w.u32_in(&t, "max_requests", 1, u32::MAX) {
        l.max_requests = v;
    }
    l.max_connections_per_endpoint = w.u32_in(&t, "max_connections_per_endpoint", 1, u32::MAX);
    l.max_concurrent_streams_per_connection =
        w.u32_in(&t, "max_concurrent_streams_per_connection", 1, u32::MAX);
    l
}

fn walk_tls(w: &mut Walker<'_>, t: &Node<'_, '_>) -> ClusterTls {
    w.keys(t, &["sni", "ca", "client_cert", "client_key", "alpn"]);
    let sni = w.string(t, "sni").map(|(s, _)| s.to_string());
    let mut ca = None;
    if let Some((p, span)) = w.file_path(t, "ca") {
        if w.pem_certs(&p, &span, &t.sub("ca")) {
            ca = Some(p);
        }
    }
    let mut client_cert = None;
    if let Some((p, span)) = w.file_path(t, "client_cert") {
        if w.pem_certs(&p, &span, &t.sub("client_cert")) {
            client_cert = Some(p);
        }
    }
    let mut client_key = None;
    if let Some((p, span)) = w.file_path(t, "client_key") {
        if w.pem_key(&p, &span, &t.sub("client_key")) {
            client_key = Some(p);
        }
    }
    if t.has("client_cert") != t.has("client_key") {
        let (key, missing) = if t.has("client_cert") {
            ("client_cert", "client_key")
        } else {
            ("client_key", "client_cert")
        };
        let span = t.key_span(key);
        w.err(
            &span,
            &t.sub(missing),
            format!("{key} needs {missing} as well"),
        );
    }
    if let (Some(cert), Some(key)) = (&client_cert, &client_key) {
        let span = t
            .get("client_key")
            .map(toml::Spanned::span)
            .unwrap_or_default();
        if !w.key_pair(cert, key, &span, &t.sub("client_key")) {
            client_key = None;
        }
    }
    let alpn = alpn_list(w, t);
    ClusterTls {
        sni,
        ca,
        client_cert,
        client_key,
        alpn,
    }
}

/// An `alpn` list (default `["h2", "http/1.1"]`).
pub(super) fn alpn_list(w: &mut Walker<'_>, t: &Node<'_, '_>) -> Vec<String> {
    match w.str_list(t, "alpn") {
        Some(list) => {
            let mut out = Vec::new();
            for (s, span, path) in list {
                if let Some(word) = w.as_word(s, &span, &path, &["h2", "http/1.1"]) {
                    out.push(word.to_string());
                }
            }
            if out.is_empty() {
                let span = t.get("alpn").map(toml::Spanned::span).unwrap_or_default();
                w.err(
                    &span,
                    &t.sub("alpn"),
                    "alpn must list at least one protocol",
                );
            }
            out
        }
        None => vec!["h2".into(), "http/1.1".into()],
    }
}
