//! The file's top level: `[runtime]`, `[admin]`, `[access_log]`, `[defaults]`,
//! `[global_rate_limit]` and `[[xdp]]`; listeners and clusters have their own files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Node, Walker, cluster, is_prime, listener};
use crate::config::model::{
    AccessLog, Admin, AdminListen, Config, Defaults, GlobalRateLimit, L4Protocol, LogTarget,
    Runtime, Xdp, XdpForward, XdpMode, XdpVip,
};

/// The default admin address (SPEC 3.1).
pub(crate) const DEFAULT_ADMIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9901);

/// Walks the whole file.
pub(super) fn walk_root(w: &mut Walker<'_>, root: &Node<'_, '_>, source: &Path) -> Config {
    w.keys(
        root,
        &[
            "runtime",
            "admin",
            "access_log",
            "defaults",
            "listener",
            "cluster",
            "global_rate_limit",
            "xdp",
        ],
    );
    let runtime = walk_runtime(w, root);
    let admin = walk_admin(w, root);
    let access_log = walk_access_log(w, root);
    let defaults = walk_defaults(w, root);
    let clusters = cluster::walk_clusters(w, root, &defaults);
    let listeners = listener::walk_listeners(w, root);
    let global_rate_limit = walk_global_rate_limit(w, root);
    let xdp = walk_xdp(w, root);
    Config {
        source: source.to_path_buf(),
        runtime,
        admin,
        access_log,
        defaults,
        listeners,
        clusters,
        global_rate_limit,
        xdp,
    }
}

/// The elements of an array of tables `key` (`[[listener]]`), with paths `key[i]`.
pub(super) fn tables<'a, 'i>(
    w: &mut Walker<'_>,
    node: &Node<'a, 'i>,
    key: &str,
) -> Vec<Node<'a, 'i>> {
    if let Some(v) = node.get(key) {
        if v.get_ref().is_table() {
            let path = node.sub(key);
            w.err_hint(
                &v.span(),
                &path,
                "expected an array of tables, found a table",
                Some(format!("write [[{path}]] (double brackets)")),
            );
            return Vec::new();
        }
    }
    let Some(items) = w.array(node, key) else {
        return Vec::new();
    };
    let base = node.sub(key);
    items
        .iter()
        .enumerate()
        .filter_map(|(i, v)| w.as_node(v, format!("{base}[{i}]")))
        .collect()
}

fn walk_runtime(w: &mut Walker<'_>, root: &Node<'_, '_>) -> Runtime {
    let mut rt = Runtime {
        workers: 0,
        upgrade_socket: None,
    };
    let Some(n) = w.table(root, "runtime") else {
        return rt;
    };
    w.keys(&n, &["workers", "upgrade_socket"]);
    if let Some(workers) = w.u32_in(&n, "workers", 0, 4096) {
        rt.workers = workers as usize;
    }
    if let Some((s, _)) = w.string(&n, "upgrade_socket") {
        rt.upgrade_socket = (!s.is_empty()).then(|| PathBuf::from(s));
    }
    rt
}

fn walk_admin(w: &mut Walker<'_>, root: &Node<'_, '_>) -> Admin {
    let mut admin = Admin {
        listen: AdminListen::Tcp(DEFAULT_ADMIN),
        token_file: None,
    };
    let n = w.table(root, "admin");
    if let Some(n) = &n {
        w.keys(n, &["listen", "token_file"]);
        if let Some((s, span)) = w.string(n, "listen") {
            let path = n.sub("listen");
            if let Some(p) = s.strip_prefix("unix:") {
                if p.is_empty() {
                    w.err(
                        &span,
                        &path,
                        "a unix socket path is required after \"unix:\"",
                    );
                } else {
                    admin.listen = AdminListen::Unix(PathBuf::from(p));
                }
            } else if let Some(addr) = listen_addr(w, s, &span, &path) {
                admin.listen = AdminListen::Tcp(addr);
            }
        }
        if let Some((s, span)) = w.string(n, "token_file") {
            let p = w.base_dir.join(s);
            if !s.is_empty() && w.file_exists(&p, &span, &n.sub("token_file")) {
                admin.token_file = Some(p);
            }
        }
    }
    if let AdminListen::Tcp(addr) = admin.listen {
        let (span, path) = match &n {
            Some(n) if n.has("listen") => (
                n.get("listen").map(toml::Spanned::span).unwrap_or_default(),
                n.sub("listen"),
            ),
            Some(n) => (n.span.clone(), "admin.listen".to_string()),
            None => (0..0, "admin.listen".to_string()),
        };
        w.bind(addr, false, span, path, "the admin API".into());
    }
    admin
}

/// Parses a literal socket address for a `listen` key.
pub(super) fn listen_addr(
    w: &mut Walker<'_>,
    s: &str,
    span: &std::ops::Range<usize>,
    path: &str,
) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            let hint = if s.parse::<std::net::IpAddr>().is_ok() {
                Some(format!("add a port: \"{s}:8080\" (or \":0\" for any)"))
            } else if s.contains(':') && !s.starts_with('[') && s.matches(':').count() > 1 {
                Some("write IPv6 addresses in brackets: \"[::1]:8080\"".into())
            } else {
                Some(
                    "listen on a literal address such as \"0.0.0.0:8080\" or \"127.0.0.1:0\""
                        .into(),
                )
            };
            w.err_hint(span, path, format!("invalid listen address {s:?}"), hint);
            None
        }
    }
}

fn walk_access_log(w: &mut Walker<'_>, root: &Node<'_, '_>) -> AccessLog {
    let mut log = AccessLog {
        enabled: true,
        path: LogTarget::Stdout,
        include_query: false,
    };
    let Some(n) = w.table(root, "access_log") else {
        return log;
    };
    w.keys(&n, &["path", "enabled", "include_query"]);
    if let Some(b) = w.boolean(&n, "enabled") {
        log.enabled = b;
    }
    if let Some(b) = w.boolean(&n, "include_query") {
        log.include_query = b;
    }
    if let Some((s, span)) = w.string(&n, "path") {
        if s == "-" {
            log.path = LogTarget::Stdout;
        } else if s.is_empty() {
            w.err_hint(
                &span,
                &n.sub("path"),
                "an access log path must not be empty",
                Some("write \"-\" for stdout, or enabled = false".into()),
            );
        } else {
            log.path = LogTarget::File(w.base_dir.join(s));
        }
    }
    log
}

fn walk_defaults(w: &mut Walker<'_>, root: &Node<'_, '_>) -> Defaults {
    let mut d = Defaults {
        drain_timeout: Duration::from_secs(30),
        shutdown_delay: Duration::ZERO,
    };
    let Some(n) = w.table(root, "defaults") else {
        return d;
    };
    w.keys(&n, &["drain_timeout", "shutdown_delay"]);
    if let Some(t) = w.duration(&n, "drain_timeout") {
        d.drain_timeout = t;
    }
    if let Some(t) = w.duration(&n, "shutdown_delay") {
        d.shutdown_delay = t;
    }
    d
}

fn walk_global_rate_limit(w: &mut Walker<'_>, root: &Node<'_, '_>) -> Option<GlobalRateLimit> {
    let n = w.table(root, "global_rate_limit")?;
    w.keys(&n, &["redis", "timeout"]);
    let timeout = w.positive_duration(
        &n,
        "timeout",
        crate::http::global_limit::DEFAULT_CALL_TIMEOUT,
    );
    let (s, span) = w.req_string(&n, "redis")?;
    if !(s.starts_with("redis://") || s.starts_with("rediss://")) || s.len() <= "redis://".len() {
        w.err_hint(
            &span,
            &n.sub("redis"),
            format!("invalid redis URL {s:?}"),
            Some("for example \"redis://127.0.0.1:6379\"".into()),
        );
        return None;
    }
    Some(GlobalRateLimit {
        redis: s.to_string(),
        timeout,
    })
}

fn walk_xdp(w: &mut Walker<'_>, root: &Node<'_, '_>) -> Vec<Xdp> {
    let mut out = Vec::new();
    for n in tables(w, root, "xdp") {
        w.keys(&n, &["interface", "mode", "flow_table_size", "vip"]);
        let interface = match w.req_string(&n, "interface") {
            Some((s, span)) if s.is_empty() || s.len() > 15 || s.contains(['/', ' ']) => {
                w.err(
                    &span,
                    &n.sub("interface"),
                    format!("invalid interface name {s:?}"),
                );
                String::new()
            }
            Some((s, _)) => s.to_string(),
            None => String::new(),
        };
        let mode = match w.word(&n, "mode", &["native", "generic"]) {
            Some("generic") => XdpMode::Generic,
            _ => XdpMode::Native,
        };
        let flow_table_size = w
            .u32_in(&n, "flow_table_size", 1, u32::MAX)
            .unwrap_or(1_000_000);
        let mut vips = Vec::new();
        for v in tables(w, &n, "vip") {
            vips.push(walk_vip(w, &v));
        }
        if !n.has("vip") {
            w.missing(&n, "vip");
        }
        out.push(Xdp {
            interface,
            mode,
            flow_table_size,
            vips,
        });
    }
    out
}

fn walk_vip(w: &mut Walker<'_>, n: &Node<'_, '_>) -> XdpVip {
    w.keys(
        n,
        &[
            "address",
            "protocol",
            "cluster",
            "forward",
            "maglev_table_size",
        ],
    );
    let address = w
        .req_string(n, "address")
        .and_then(|(s, span)| {
            let a = listen_addr(w, s, &span, &n.sub("address"))?;
            if a.ip().is_unspecified() || a.port() == 0 {
                w.err(
                    &span,
                    &n.sub("address"),
                    format!("a VIP needs a specific address and port, not {a}"),
                );
            } else if a.is_ipv6() {
                w.err(
                    &span,
                    &n.sub("address"),
                    format!("the packet tier serves IPv4 VIPs only, not {a}"),
                );
            }
            Some(a)
        })
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let protocol = match w.word(n, "protocol", &["tcp", "udp"]) {
        Some("udp") => L4Protocol::Udp,
        _ => L4Protocol::Tcp,
    };
    let cluster = match w.req_string(n, "cluster") {
        Some((s, span)) => {
            w.cluster_ref(s, span, n.sub("cluster"), true);
            s.to_string()
        }
        None => String::new(),
    };
    let forward = match w.word(n, "forward", &["ipip", "dsr"]) {
        Some("dsr") => XdpForward::Dsr,
        _ => XdpForward::Ipip,
    };
    let maglev_table_size = maglev_size(w, n).unwrap_or(65_537);
    XdpVip {
        address,
        protocol,
        cluster,
        forward,
        maglev_table_size,
    }
}

/// The largest Maglev table accepted (a prime below 2^24): bounds memory per cluster.
pub(super) const MAX_MAGLEV: u32 = 16_777_213;

/// `maglev_table_size`, checked to be a prime within bounds, if written.
pub(super) fn maglev_size(w: &mut Walker<'_>, n: &Node<'_, '_>) -> Option<u32> {
    let size = w.u32_in(n, "maglev_table_size", 2, MAX_MAGLEV)?;
    if !is_prime(size) {
        let span = n
            .get("maglev_table_size")
            .map(toml::Spanned::span)
            .unwrap_or_default();
        w.err_hint(
            &span,
            &n.sub("maglev_table_size"),
            format!("maglev_table_size {size} is not a prime"),
            Some("for example 65537 or 655373".into()),
        );
        return None;
    }
    Some(size)
}
