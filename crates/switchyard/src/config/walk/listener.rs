//! `[[listener]]`: address, protocol, limits, `[listener.tls]`, and where traffic goes
//! (`cluster` / `split` / `[[listener.route]]` / sni `routes`), with the rules that tie
//! keys to protocols.

use std::net::SocketAddr;
use std::time::Duration;
use toml::de::DeValue;

use super::cluster::alpn_list;
use super::top::{listen_addr, tables};
use super::{Node, Walker, route};
use crate::config::model::{
    CertificatePair, Cidr, Listener, ListenerTls, Protocol, SniRoute, Target, TlsVersion,
    WeightedCluster,
};

const LISTENER_KEYS: &[&str] = &[
    "name",
    "listen",
    "protocol",
    "max_connections",
    "max_connections_per_ip",
    "header_read_timeout",
    "idle_timeout",
    "max_header_bytes",
    "max_request_body",
    "request_body_timeout",
    "min_request_body_rate",
    "http2_max_concurrent_streams",
    "proxy_protocol",
    "trusted_proxies",
    "http2_initial_stream_window",
    "http2_initial_connection_window",
    "tls",
    "route",
    "routes",
    "cluster",
    "split",
];

/// Keys that only make sense with an HTTP request.
const HTTP_ONLY: &[&str] = &[
    "max_header_bytes",
    "max_request_body",
    "request_body_timeout",
    "min_request_body_rate",
    "http2_max_concurrent_streams",
    "trusted_proxies",
    "http2_initial_stream_window",
    "http2_initial_connection_window",
    "route",
];

const PROTOCOLS: &[(&str, Protocol)] = &[
    ("tcp", Protocol::Tcp),
    ("udp", Protocol::Udp),
    ("tls-passthrough", Protocol::TlsPassthrough),
    ("http", Protocol::Http),
    ("https", Protocol::Https),
];

/// Walks every `[[listener]]`.
pub(super) fn walk_listeners(w: &mut Walker<'_>, root: &Node<'_, '_>) -> Vec<Listener> {
    let mut names = Vec::new();
    let mut out = Vec::new();
    for n in tables(w, root, "listener") {
        let l = walk_listener(w, &n);
        if let Some(v) = n.get("name") {
            names.push((l.name.clone(), v.span(), n.sub("name")));
        }
        out.push(l);
    }
    w.unique(&names, "listener");
    out
}

fn walk_listener(w: &mut Walker<'_>, n: &Node<'_, '_>) -> Listener {
    w.keys(n, LISTENER_KEYS);
    let name = match w.req_string(n, "name") {
        Some((s, span)) if s.is_empty() || s.contains('#') => {
            w.err(
                &span,
                &n.sub("name"),
                format!("invalid listener name {s:?} (not empty, no '#')"),
            );
            String::new()
        }
        Some((s, _)) => s.to_string(),
        None => String::new(),
    };
    let protocol = if n.has("protocol") {
        let words: Vec<&str> = PROTOCOLS.iter().map(|(s, _)| *s).collect();
        w.word(n, "protocol", &words)
            .and_then(|s| PROTOCOLS.iter().find(|(p, _)| *p == s).map(|(_, p)| *p))
    } else {
        w.missing(n, "protocol");
        None
    };
    let listen = match w.req_string(n, "listen") {
        Some((s, span)) => {
            let path = n.sub("listen");
            let a = listen_addr(w, s, &span, &path);
            if let Some(a) = a {
                let what = format!("listener {name:?}");
                w.bind(a, protocol == Some(Protocol::Udp), span, path, what);
            }
            a
        }
        None => None,
    }
    .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));

    // Keys tied to a protocol.
    if let Some(p) = protocol {
        // `header_read_timeout` bounds whatever is read before an upstream is chosen: the
        // HTTP head, the ClientHello (tls-passthrough) or a PROXY header.
        let proxy_header = matches!(
            n.get("proxy_protocol").map(|v| v.get_ref()),
            Some(DeValue::Boolean(true))
        );
        let reads_a_head =
            p.is_http() || p == Protocol::TlsPassthrough || (p == Protocol::Tcp && proxy_header);
        if n.has("header_read_timeout") && !reads_a_head {
            w.err(
                &n.key_span("header_read_timeout"),
                &n.sub("header_read_timeout"),
                format!(
                    "header_read_timeout applies to http/https and tls-passthrough listeners, or with proxy_protocol = true; not to {:?}",
                    p.as_str()
                ),
            );
        }
        if p == Protocol::Udp && n.has("proxy_protocol") {
            w.err(
                &n.key_span("proxy_protocol"),
                &n.sub("proxy_protocol"),
                "proxy_protocol applies to TCP-based listeners, not \"udp\"".to_string(),
            );
        }
        if !p.is_http() {
            for key in HTTP_ONLY {
                if n.has(key) {
                    let span = n.key_span(key);
                    w.err(
                        &span,
                        &n.sub(key),
                        format!(
                            "{key} applies only to http/https listeners, not {:?}",
                            p.as_str()
                        ),
                    );
                }
            }
        }
        if n.has("tls") && p != Protocol::Https {
            let span = n.key_span("tls");
            w.err(
                &span,
                &n.sub("tls"),
                format!(
                    "[listener.tls] applies only to https listeners, not {:?}",
                    p.as_str()
                ),
            );
        }
        if p == Protocol::Https && !n.has("tls") {
            w.err_hint(
                &n.span.clone(),
                &n.sub("tls"),
                "an https listener needs [listener.tls]",
                Some(
                    "add [listener.tls] with certificates = [{ cert = \"...\", key = \"...\" }]"
                        .into(),
                ),
            );
        }
        if n.has("routes") && p != Protocol::TlsPassthrough {
            let span = n.key_span("routes");
            let hint = p
                .is_http()
                .then(|| "HTTP listeners use [[listener.route]]".to_string());
            w.err_hint(
                &span,
                &n.sub("routes"),
                format!(
                    "routes (by SNI) apply only to tls-passthrough listeners, not {:?}",
                    p.as_str()
                ),
                hint,
            );
        }
    }

    let max_connections = w
        .u32_in(n, "max_connections", 1, u32::MAX)
        .unwrap_or(100_000);
    let max_connections_per_ip = w
        .u32_in(n, "max_connections_per_ip", 0, u32::MAX)
        .unwrap_or(0);
    // Zero would end every connection (and, after a response head, every exchange) at
    // once: refused rather than taken literally.
    let header_read_timeout =
        w.positive_duration(n, "header_read_timeout", Duration::from_secs(10));
    let idle_timeout = w.positive_duration(n, "idle_timeout", Duration::from_secs(60));
    let max_header_bytes = match w.size(n, "max_header_bytes") {
        Some(b) if !(8 * 1024..=16 << 20).contains(&b) => {
            let span = n
                .get("max_header_bytes")
                .map(toml::Spanned::span)
                .unwrap_or_default();
            w.err(
                &span,
                &n.sub("max_header_bytes"),
                "max_header_bytes must be between 8KiB and 16MiB",
            );
            16 * 1024
        }
        Some(b) => b,
        None => 16 * 1024,
    };
    let max_request_body = w.size(n, "max_request_body");
    let request_body_timeout = w
        .duration(n, "request_body_timeout")
        .unwrap_or(Duration::from_secs(20));
    let min_request_body_rate = w.size(n, "min_request_body_rate").unwrap_or(500);
    let http2_max_concurrent_streams = w
        .u32_in(n, "http2_max_concurrent_streams", 1, u32::MAX)
        .unwrap_or(128);
    let proxy_protocol = w.boolean(n, "proxy_protocol").unwrap_or(false);
    let trusted_proxies = walk_cidrs(w, n);
    // HTTP/2 windows: at least the protocol's 65535 default, at most 2^31-1.
    let window = |w: &mut Walker<'_>, key: &str, default: u32| match w.size_u32(n, key, 65_535) {
        Some(v) if v > i32::MAX as u32 => {
            let span = n.get(key).map(toml::Spanned::span).unwrap_or_default();
            w.err(
                &span,
                &n.sub(key),
                format!("{key} must be below 2GiB (2^31-1 bytes)"),
            );
            default
        }
        Some(v) => v,
        None => default,
    };
    let http2_initial_stream_window = window(w, "http2_initial_stream_window", 256 * 1024);
    let http2_initial_connection_window = window(w, "http2_initial_connection_window", 1 << 20);
    let tls = w.table(n, "tls").map(|t| walk_tls(w, &t));

    // Where traffic goes.
    let l4 = protocol.is_some_and(|p| !p.is_http());
    let target = walk_target(w, n, l4);
    let has_route = n.has("route");
    if target.is_some() && has_route {
        let key = if n.has("cluster") { "cluster" } else { "split" };
        let span = n.key_span(key);
        w.err(
            &span,
            &n.sub(key),
            format!("`{key}` on a listener and [[listener.route]] are mutually exclusive"),
        );
    }
    let mut routes = Vec::new();
    let mut sni_routes = Vec::new();
    let mut listener_target = None;
    match protocol {
        Some(Protocol::Http | Protocol::Https) => {
            if let Some(t) = target {
                routes.push(route::catch_all(&name, t));
            } else if has_route {
                routes = route::walk_routes(w, n, &name);
            } else {
                w.err_hint(
                    &n.span.clone(),
                    &n.path,
                    "an http listener needs `cluster`, `split` or [[listener.route]]",
                    None,
                );
            }
        }
        Some(Protocol::TlsPassthrough) => {
            if n.has("cluster") || n.has("split") {
                let key = if n.has("cluster") { "cluster" } else { "split" };
                let span = n.key_span(key);
                w.err_hint(
                    &span,
                    &n.sub(key),
                    "a tls-passthrough listener routes by SNI",
                    Some("write routes = [{ sni = \"*\", cluster = \"...\" }]".into()),
                );
            }
            if n.has("routes") {
                sni_routes = walk_sni_routes(w, n);
            } else {
                w.missing(n, "routes");
            }
        }
        Some(Protocol::Tcp | Protocol::Udp) => {
            if target.is_none() && !n.has("cluster") && !n.has("split") {
                w.err_hint(
                    &n.span.clone(),
                    &n.sub("cluster"),
                    "a tcp/udp listener needs `cluster` or `split`",
                    None,
                );
            }
            listener_target = target;
        }
        None => {}
    }
    Listener {
        name,
        listen,
        protocol: protocol.unwrap_or(Protocol::Tcp),
        max_connections,
        max_connections_per_ip,
        header_read_timeout,
        idle_timeout,
        max_header_bytes,
        max_request_body,
        request_body_timeout,
        min_request_body_rate,
        http2_max_concurrent_streams,
        proxy_protocol,
        trusted_proxies,
        http2_initial_stream_window,
        http2_initial_connection_window,
        tls,
        routes,
        sni_routes,
        target: listener_target,
    }
}

/// `cluster = "x"` or `split = [{ cluster, weight }]` in `n` (a listener or a route).
pub(super) fn walk_target(w: &mut Walker<'_>, n: &Node<'_, '_>, l4: bool) -> Option<Target> {
    if n.has("cluster") && n.has("split") {
        let span = n.key_span("split");
        w.err(
            &span,
            &n.sub("split"),
            "`cluster` and `split` are mutually exclusive",
        );
        return None;
    }
    if let Some((s, span)) = w.string(n, "cluster") {
        w.cluster_ref(s, span, n.sub("cluster"), l4);
        return Some(Target::Cluster(s.to_string()));
    }
    let items = w.array(n, "split")?;
    let base = n.sub("split");
    if items.is_empty() {
        let span = n.get("split").map(toml::Spanned::span).unwrap_or_default();
        w.err(
            &span,
            &base,
            "a split needs at least one { cluster, weight }",
        );
        return None;
    }
    let mut out = Vec::new();
    for (i, v) in items.iter().enumerate() {
        let Some(b) = w.as_node(v, format!("{base}[{i}]")) else {
            continue;
        };
        w.keys(&b, &["cluster", "weight"]);
        let cluster = w.req_string(&b, "cluster");
        if let Some((s, span)) = &cluster {
            w.cluster_ref(s, span.clone(), b.sub("cluster"), l4);
        }
        if !b.has("weight") {
            w.missing(&b, "weight");
        }
        let weight = w.u32_in(&b, "weight", 1, 1_000_000);
        if let (Some((c, _)), Some(weight)) = (cluster, weight) {
            out.push(WeightedCluster {
                cluster: c.to_string(),
                weight,
            });
        }
    }
    Some(Target::Split(out))
}

fn walk_sni_routes(w: &mut Walker<'_>, n: &Node<'_, '_>) -> Vec<SniRoute> {
    let Some(items) = w.array(n, "routes") else {
        return Vec::new();
    };
    let base = n.sub("routes");
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for (i, v) in items.iter().enumerate() {
        let Some(r) = w.as_node(v, format!("{base}[{i}]")) else {
            continue;
        };
        w.keys(&r, &["sni", "cluster"]);
        let sni = w.req_string(&r, "sni");
        let cluster = w.req_string(&r, "cluster");
        if let Some((c, span)) = &cluster {
            w.cluster_ref(c, span.clone(), r.sub("cluster"), true);
        }
        let Some((sni, span)) = sni else { continue };
        let lower = sni.to_ascii_lowercase();
        let name_part = lower.strip_prefix("*.").unwrap_or(&lower);
        let valid = lower == "*"
            || (!name_part.is_empty()
                && name_part.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }));
        if !valid {
            w.err_hint(
                &span,
                &r.sub("sni"),
                format!("invalid sni {sni:?}"),
                Some("an exact name, \"*.example.com\", or \"*\"".into()),
            );
            continue;
        }
        seen.push((lower.clone(), span, r.sub("sni")));
        if let Some((c, _)) = cluster {
            out.push(SniRoute {
                sni: lower,
                cluster: c.to_string(),
            });
        }
    }
    w.unique(&seen, "sni");
    out
}

fn walk_cidrs(w: &mut Walker<'_>, n: &Node<'_, '_>) -> Vec<Cidr> {
    let Some(list) = w.str_list(n, "trusted_proxies") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (s, span, path) in list {
        match parse_cidr(s) {
            Some(c) => out.push(c),
            None => w.err_hint(
                &span,
                &path,
                format!("invalid CIDR {s:?}"),
                Some("for example \"10.0.0.0/8\" or \"::1/128\"".into()),
            ),
        }
    }
    out
}

/// Parses `10.0.0.0/8`, `::1/128` or a bare address; host bits are zeroed.
pub(crate) fn parse_cidr(s: &str) -> Option<Cidr> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (
            a.parse::<std::net::IpAddr>().ok()?,
            Some(p.parse::<u8>().ok()?),
        ),
        None => (s.parse::<std::net::IpAddr>().ok()?, None),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(max);
    if prefix > max {
        return None;
    }
    let addr = match addr {
        std::net::IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            std::net::IpAddr::V4((u32::from(a) & mask).into())
        }
        std::net::IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            std::net::IpAddr::V6((u128::from(a) & mask).into())
        }
    };
    Some(Cidr { addr, prefix })
}

fn walk_tls(w: &mut Walker<'_>, t: &Node<'_, '_>) -> ListenerTls {
    w.keys(
        t,
        &[
            "certificates",
            "alpn",
            "client_ca",
            "min_version",
            "forward_client_cert",
        ],
    );
    let mut certificates = Vec::new();
    if !t.has("certificates") {
        w.missing(t, "certificates");
    }
    if let Some(items) = w.array(t, "certificates") {
        let base = t.sub("certificates");
        if items.is_empty() {
            let span = t
                .get("certificates")
                .map(toml::Spanned::span)
                .unwrap_or_default();
            w.err(&span, &base, "at least one { cert, key } is required");
        }
        for (i, v) in items.iter().enumerate() {
            let Some(c) = w.as_node(v, format!("{base}[{i}]")) else {
                continue;
            };
            w.keys(&c, &["cert", "key"]);
            if !c.has("cert") {
                w.missing(&c, "cert");
            }
            if !c.has("key") {
                w.missing(&c, "key");
            }
            let cert = w
                .file_path(&c, "cert")
                .filter(|(p, span)| w.pem_certs(p, span, &c.sub("cert")));
            let key = w
                .file_path(&c, "key")
                .filter(|(p, span)| w.pem_key(p, span, &c.sub("key")));
            if let (Some((cert, _)), Some((key, key_span))) = (cert, key) {
                if w.key_pair(&cert, &key, &key_span, &c.sub("key")) {
                    certificates.push(CertificatePair { cert, key });
                }
            }
        }
    }
    let alpn = alpn_list(w, t);
    let mut client_ca = None;
    if let Some((p, span)) = w.file_path(t, "client_ca") {
        if w.pem_certs(&p, &span, &t.sub("client_ca")) {
            client_ca = Some(p);
        }
    }
    let min_version = match w.word(t, "min_version", &["1.2", "1.3"]) {
        Some("1.3") => TlsVersion::Tls13,
        _ => TlsVersion::Tls12,
    };
    let forward_client_cert = w.boolean(t, "forward_client_cert").unwrap_or(false);
    ListenerTls {
        certificates,
        alpn,
        client_ca,
        min_version,
        forward_client_cert,
    }
}
