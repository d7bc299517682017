//! One test per error class of the walker and the gate, each with its exact line and path.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use crate::config::load_str;

/// `(line, path, message, hint)` of every error in `text`.
fn errors(text: &str) -> Vec<(usize, String, String, Option<String>)> {
    match load_str(text, Path::new("t.toml")) {
        Ok(_) => Vec::new(),
        Err(e) => {
            e.0.into_iter()
                .map(|e| (e.line, e.path, e.message, e.hint))
                .collect()
        }
    }
}

/// The one error of `text`.
fn one(text: &str) -> (usize, String, String, Option<String>) {
    let mut e = errors(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.remove(0)
}

const CLUSTER: &str = "[[cluster]]\nname = \"b\"\nendpoints = [\"127.0.0.1:9000\"]\n";

fn tcp(extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:7000\"\nprotocol = \"tcp\"\ncluster = \"b\"\n{extra}\n{CLUSTER}"
    )
}

#[test]
fn a_wrong_type_names_what_was_expected() {
    let (line, path, msg, _) = one(&tcp("max_connections = \"many\""));
    assert_eq!((line, path.as_str()), (6, "listener[0].max_connections"));
    assert_eq!(msg, "expected an integer, found string");
}

#[test]
fn an_unknown_key_gets_a_did_you_mean() {
    let (line, path, msg, hint) = one(&tcp("idle_timout = \"1s\""));
    assert_eq!((line, path.as_str()), (6, "listener[0].idle_timout"));
    assert_eq!(msg, "unknown key \"idle_timout\"");
    assert_eq!(hint.as_deref(), Some("did you mean \"idle_timeout\"?"));
    let (_, _, _, hint) = one("[admn]\n");
    assert_eq!(hint.as_deref(), Some("did you mean \"admin\"?"));
}

#[test]
fn missing_required_keys_are_each_reported() {
    let e = errors("[[listener]]\ncluster = \"b\"\n[[cluster]]\n");
    let paths: Vec<_> = e.iter().map(|e| e.1.as_str()).collect();
    for p in [
        "listener[0].name",
        "listener[0].protocol",
        "listener[0].listen",
        "cluster[0].name",
        "cluster[0].endpoints",
    ] {
        assert!(paths.contains(&p), "{p} in {e:#?}");
    }
}

#[test]
fn endpoints_and_discovery_are_mutually_exclusive() {
    let text = format!("{}discovery = {{ dns = \"b.internal:80\" }}\n", CLUSTER);
    let e = errors(&text);
    assert!(
        e.iter()
            .any(|e| e.0 == 4 && e.2.contains("mutually exclusive")),
        "{e:#?}"
    );
}

#[test]
fn an_unknown_cluster_in_a_split_gets_a_did_you_mean() {
    let text = "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:7000\"\nprotocol = \"tcp\"\nsplit = [\n  { cluster = \"b\", weight = 1 },\n  { cluster = \"bb\", weight = 1 },\n]\n[[cluster]]\nname = \"b2\"\nendpoints = [\"127.0.0.1:9000\"]\n[[cluster]]\nname = \"b\"\nendpoints = [\"127.0.0.1:9000\"]\n";
    let (line, path, msg, hint) = one(text);
    assert_eq!((line, path.as_str()), (7, "listener[0].split[1].cluster"));
    assert_eq!(msg, "unknown cluster \"bb\"");
    assert_eq!(hint.as_deref(), Some("did you mean \"b2\"?"));
}

#[test]
fn duplicate_names_point_at_the_second_one() {
    let text = format!("{CLUSTER}{CLUSTER}");
    let (line, path, msg, _) = one(&text);
    assert_eq!((line, path.as_str()), (5, "cluster[1].name"));
    assert_eq!(
        msg,
        "duplicate cluster name \"b\" (first defined on line 2)"
    );
    let e = one(
        "[[cluster]]\nname = \"b\"\nendpoints = [\"127.0.0.1:9000\", { address = \"127.0.0.2:9000\", name = \"127.0.0.1:9000\" }]\n",
    );
    assert_eq!(e.1, "cluster[0].endpoints[1]");
}

#[test]
fn listen_addresses_conflict_across_wildcards_and_with_admin() {
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:7000\"\n{}[[listener]]\nname = \"m\"\nlisten = \"0.0.0.0:7000\"\nprotocol = \"tcp\"\ncluster = \"b\"\n",
        tcp("")
    );
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!(e[0].1, "listener[0].listen");
    assert!(e[0].2.contains("conflicts with the admin API"), "{e:#?}");
    assert_eq!(e[1].1, "listener[1].listen");
    // Port 0 never conflicts.
    let zero = tcp("").replace("7000", "0") + "[admin]\nlisten = \"127.0.0.1:0\"\n";
    assert!(errors(&zero).is_empty());
}

#[test]
fn weights_must_be_positive_and_bounded() {
    let e = errors(&tcp("").replace(
        "cluster = \"b\"",
        "split = [{ cluster = \"b\", weight = 0 }]",
    ));
    assert_eq!(e[0].1, "listener[0].split[0].weight");
    assert_eq!(e[0].2, "0 is out of range (1-1000000)");
    let e = one(
        "[[cluster]]\nname = \"b\"\nendpoints = [{ address = \"127.0.0.1:1\", weight = 10001 }]\n",
    );
    assert_eq!(e.1, "cluster[0].endpoints[0].weight");
}

#[test]
fn regexes_must_compile() {
    let text = "[[listener]]\nname = \"h\"\nlisten = \"127.0.0.1:8080\"\nprotocol = \"http\"\n[[listener.route]]\nmatch = { path_regex = \"^/u/(\" }\ncluster = \"b\"\n[[listener.route]]\nmatch = { headers = { x = \"/[/\" } }\ncluster = \"b\"\n[[cluster]]\nname = \"b\"\nendpoints = [\"127.0.0.1:9000\"]\n";
    let e: Vec<_> = errors(text)
        .into_iter()
        .filter(|e| !e.2.starts_with("not implemented"))
        .collect();
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!(
        (e[0].0, e[0].1.as_str()),
        (6, "listener[0].route[0].match.path_regex")
    );
    assert_eq!(
        (e[1].0, e[1].1.as_str()),
        (9, "listener[0].route[1].match.headers.x")
    );
}

#[test]
fn hash_key_needs_a_hash_balance_and_an_l4_key_on_l4_listeners() {
    let e = one(&tcp("").replace(
        "endpoints = [\"127.0.0.1:9000\"]",
        "endpoints = [\"127.0.0.1:9000\"]\nbalance = \"round-robin\"\nhash_key = \"5-tuple\"",
    ));
    assert_eq!((e.0, e.1.as_str()), (11, "cluster[0].hash_key"));
    assert!(e.2.contains("applies only to balance"), "{e:?}");
    let e = errors(&tcp("").replace(
        "endpoints = [\"127.0.0.1:9000\"]",
        "endpoints = [\"127.0.0.1:9000\"]\nbalance = \"maglev\"\nhash_key = \"header:x-user\"",
    ));
    assert!(
        e.iter()
            .any(|e| e.1 == "listener[0].cluster" && e.2.contains("does not have")),
        "{e:#?}"
    );
}

#[test]
fn maglev_tables_must_be_prime() {
    let e = one(&format!(
        "{CLUSTER}balance = \"maglev\"\nmaglev_table_size = 65536\n"
    ));
    assert_eq!((e.0, e.1.as_str()), (5, "cluster[0].maglev_table_size"));
    assert_eq!(e.2, "maglev_table_size 65536 is not a prime");
}

#[test]
fn durations_and_sizes_are_parsed_with_hints() {
    let (line, path, _, hint) = one(&tcp("idle_timeout = \"1d\""));
    assert_eq!((line, path.as_str()), (6, "listener[0].idle_timeout"));
    assert!(hint.unwrap().contains("24h"));
    let text = "[[listener]]\nname = \"h\"\nlisten = \"127.0.0.1:8080\"\nprotocol = \"http\"\ncluster = \"b\"\nmax_header_bytes = \"4KiB\"\nmax_request_body = \"10MB\"\n"
        .to_string()
        + CLUSTER;
    let e: Vec<_> = errors(&text)
        .into_iter()
        .filter(|e| !e.2.starts_with("not implemented"))
        .collect();
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].2.contains("8KiB"));
    assert!(e[1].3.as_deref().unwrap().contains("10MiB"));
}

#[test]
fn ranges_of_statuses_ratios_and_percentages_are_checked() {
    let text = format!(
        "{CLUSTER}[cluster.outlier]\nerror_rate = 1.5\nmax_ejection_percent = 101\n[cluster.health]\nkind = \"http\"\nexpect_status = \"200-699\"\njitter = \"150%\"\n"
    );
    let e: Vec<_> = errors(&text)
        .into_iter()
        .filter(|e| !e.2.starts_with("not implemented"))
        .map(|e| e.1)
        .collect();
    assert_eq!(
        e,
        [
            "cluster[0].outlier.error_rate",
            "cluster[0].outlier.max_ejection_percent",
            "cluster[0].health.expect_status",
            "cluster[0].health.jitter",
        ]
    );
}

#[test]
fn http_only_keys_on_l4_listeners_are_errors_not_gated_twice() {
    let (line, path, msg, _) = one(&tcp("max_header_bytes = \"16KiB\""));
    assert_eq!((line, path.as_str()), (6, "listener[0].max_header_bytes"));
    assert_eq!(
        msg,
        "max_header_bytes applies only to http/https listeners, not \"tcp\""
    );
    let (_, path, msg, _) = one(&tcp("header_read_timeout = \"5s\""));
    assert_eq!(path, "listener[0].header_read_timeout");
    assert!(msg.contains("with proxy_protocol = true"), "{msg}");
    assert!(
        crate::config::load_str(
            &tcp("header_read_timeout = \"5s\"\nproxy_protocol = true"),
            std::path::Path::new("t.toml")
        )
        .is_ok(),
        "a PROXY header is a head to read"
    );
}

#[test]
fn cluster_and_routes_are_mutually_exclusive_on_a_listener() {
    let text = "[[listener]]\nname = \"h\"\nlisten = \"127.0.0.1:8080\"\nprotocol = \"http\"\ncluster = \"b\"\n[[listener.route]]\ncluster = \"b\"\n".to_string() + CLUSTER;
    let e = errors(&text);
    assert!(
        e.iter()
            .any(|e| e.0 == 5 && e.2.contains("mutually exclusive")),
        "{e:#?}"
    );
}

#[test]
fn a_zero_idle_or_header_read_timeout_is_refused_at_its_line() {
    for key in ["idle_timeout", "header_read_timeout"] {
        let text = tcp(&format!("proxy_protocol = true\n{key} = \"0s\""));
        let (line, path, msg, _) = one(&text);
        assert_eq!(
            (line, path.as_str()),
            (7, format!("listener[0].{key}").as_str())
        );
        assert_eq!(msg, format!("{key} must be greater than 0"));
    }
}

#[test]
fn a_clusters_drain_timeout_defaults_to_the_defaults_one_and_is_checked_at_its_line() {
    let text = format!(
        "[defaults]\ndrain_timeout = \"7s\"\n{CLUSTER}[[cluster]]\nname = \"c\"\nendpoints = [\"127.0.0.1:9001\"]\ndrain_timeout = \"10s\"\n"
    );
    let config = load_str(&text, Path::new("t.toml")).unwrap();
    let timeouts: Vec<_> = config.clusters.iter().map(|c| c.drain_timeout).collect();
    assert_eq!(timeouts, [Duration::from_secs(7), Duration::from_secs(10)]);
    let e = one(&format!("{CLUSTER}drain_timeout = \"10 s\"\n"));
    assert_eq!((e.0, e.1.as_str()), (4, "cluster[0].drain_timeout"));
}

#[test]
fn a_tls_health_check_needs_the_clusters_tls() {
    let e = one(&format!("{CLUSTER}[cluster.health]\nkind = \"tls\"\n"));
    assert_eq!((e.0, e.1.as_str()), (5, "cluster[0].health.kind"));
    assert!(e.2.contains("which this cluster lacks"), "{}", e.2);
}

#[test]
fn endpoint_names_need_discovery() {
    let e = one("[[cluster]]\nname = \"b\"\nendpoints = [\"backend.internal:80\"]\n");
    assert_eq!(e.1, "cluster[0].endpoints[0]");
    assert!(e.3.unwrap().contains("discovery"));
}

#[test]
fn a_certificate_that_is_not_pem_is_refused() {
    let dir = std::env::temp_dir().join(format!("sy-walk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bad.pem"), "not a certificate").unwrap();
    let text = format!("{CLUSTER}[cluster.tls]\nca = \"bad.pem\"\n");
    let e: Vec<_> = match load_str(&text, &dir.join("s.toml")) {
        Err(e) => {
            e.0.into_iter()
                .filter(|e| !e.message.starts_with("not implemented"))
                .collect()
        }
        Ok(_) => Vec::new(),
    };
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!((e[0].line, e[0].path.as_str()), (5, "cluster[0].tls.ca"));
    assert!(e[0].message.contains("no PEM certificate"), "{}", e[0]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn http_shorthand_becomes_a_catch_all_route_and_routes_get_default_names() {
    // The walker alone (before the gate), so the HTTP model can be inspected.
    let text = "[[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:8080\"\nprotocol = \"http\"\ncluster = \"b\"\n[[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:8081\"\nprotocol = \"http\"\n[[listener.route]]\nname = \"api\"\ncluster = \"b\"\n[[listener.route]]\ncluster = \"b\"\n".to_string() + CLUSTER;
    let pos = crate::config::raw::Positions::new(&text, Path::new("t.toml"));
    let tree = crate::config::raw::parse(&text, &pos).unwrap();
    let (c, errs) = super::walk(&tree, &pos, Path::new("t.toml"));
    assert!(errs.is_empty(), "{errs:#?}");
    assert_eq!(c.listeners[0].routes.len(), 1);
    assert_eq!(c.listeners[0].routes[0].name, "plain#0");
    assert_eq!(
        c.listeners[0].routes[0].per_try_timeout,
        std::time::Duration::from_secs(15)
    );
    let names: Vec<_> = c.listeners[1]
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["api", "web#1"]);
}

#[test]
fn admin_accepts_a_unix_socket() {
    let c = load_str(
        &format!("[admin]\nlisten = \"unix:/run/sy.sock\"\n{}", tcp("")),
        Path::new("t.toml"),
    )
    .unwrap();
    assert_eq!(
        c.admin.listen,
        crate::config::model::AdminListen::Unix("/run/sy.sock".into())
    );
}

#[test]
fn every_error_is_collected_not_only_the_first() {
    let text = "[runtime]\nworkers = -1\n[defaults]\ndrain_timeout = \"1x\"\n[admin]\nlisten = \"nowhere\"\n[[cluster]]\nname = \"b\"\nendpoints = []\nbalance = \"fastest\"\n";
    let lines: Vec<_> = errors(text).into_iter().map(|e| e.0).collect();
    assert_eq!(lines, [2, 4, 6, 9, 10]);
}

#[test]
fn the_global_rate_limit_timeout_defaults_to_5ms_and_must_be_positive() {
    let text = format!(
        "{}[global_rate_limit]\nredis = \"redis://127.0.0.1:6379\"\n",
        tcp("")
    );
    let config = load_str(&text, Path::new("t.toml")).unwrap();
    let global = config.global_rate_limit.unwrap();
    assert_eq!(global.timeout, std::time::Duration::from_millis(5));

    let text = format!("{}timeout = \"20ms\"\n", text);
    let config = load_str(&text, Path::new("t.toml")).unwrap();
    assert_eq!(
        config.global_rate_limit.unwrap().timeout,
        std::time::Duration::from_millis(20)
    );

    let text = format!(
        "{}[global_rate_limit]\nredis = \"redis://127.0.0.1:6379\"\ntimeout = \"0s\"\n",
        tcp("")
    );
    let (line, path, msg, _) = one(&text);
    assert_eq!((line, path.as_str()), (12, "global_rate_limit.timeout"));
    assert_eq!(msg, "timeout must be greater than 0");
}
