//! The configuration loader against fixture files: error positions, defaults, the
//! not-implemented gate, rendering, and robustness (no panic on any input).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use switchyard::config::model::{AdminListen, Balance, HashKey, LogTarget, Protocol, Target};
use switchyard::config::{self, OutputFormat, load_file, load_str, render};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

#[test]
fn three_mistakes_give_exactly_three_errors_with_lines_and_hints() {
    let errs = load_file(&fixture("three_mistakes.toml")).unwrap_err();
    let e = errs.errors();
    assert_eq!(e.len(), 3, "{errs}");

    assert_eq!((e[0].line, e[0].column), (9, 1));
    assert_eq!(e[0].path, "cluster[0].conect_timeout");
    assert_eq!(e[0].message, "unknown key \"conect_timeout\"");
    assert_eq!(
        e[0].hint.as_deref(),
        Some("did you mean \"connect_timeout\"?")
    );

    assert_eq!((e[1].line, e[1].column), (15, 11));
    assert_eq!(e[1].path, "listener[0].cluster");
    assert_eq!(e[1].message, "unknown cluster \"backend-v2\"");
    assert_eq!(e[1].hint.as_deref(), Some("did you mean \"backend-v1\"?"));

    assert_eq!((e[2].line, e[2].column), (16, 16));
    assert_eq!(e[2].path, "listener[0].idle_timeout");
    assert_eq!(e[2].hint.as_deref(), Some("no spaces: write \"5s\""));

    let text = errs.to_string();
    assert!(
        text.starts_with(&format!(
            "{}:9:1: cluster[0].conect_timeout: unknown key \"conect_timeout\" (did you mean \"connect_timeout\"?)\n",
            fixture("three_mistakes.toml").display()
        )),
        "{text}"
    );
    assert!(text.ends_with("\n3 errors"), "{text}");
}

#[test]
fn a_valid_tcp_config_resolves_with_every_default() {
    let c = load_file(&fixture("tcp.toml")).unwrap();
    assert_eq!(c.runtime.workers, 2);
    assert_eq!(c.runtime.upgrade_socket, None);
    assert_eq!(c.access_log.path, LogTarget::Stdout);
    assert!(c.access_log.enabled);
    assert_eq!(c.defaults.drain_timeout, Duration::from_secs(10));
    assert_eq!(c.defaults.shutdown_delay, Duration::from_secs(1));

    let pg = &c.listeners[0];
    assert_eq!(pg.protocol, Protocol::Tcp);
    assert_eq!(pg.max_connections, 100_000);
    assert_eq!(pg.idle_timeout, Duration::from_secs(3600));
    assert_eq!(pg.max_header_bytes, 16 * 1024);
    assert_eq!(pg.target, Some(Target::Cluster("postgres".into())));
    assert!(pg.routes.is_empty());
    let canary = &c.listeners[1];
    assert_eq!(canary.idle_timeout, Duration::from_secs(60));
    assert_eq!(canary.max_connections, 500);
    assert!(matches!(&canary.target, Some(Target::Split(s)) if s.len() == 2 && s[1].weight == 1));

    let postgres = &c.clusters[0];
    assert_eq!(postgres.balance, Balance::Maglev);
    assert_eq!(postgres.hash_key, HashKey::SourceIp);
    assert_eq!(postgres.maglev_table_size, 251);
    assert_eq!(postgres.endpoints[0].name, "127.0.0.1:5432");
    assert_eq!(postgres.endpoints[0].weight, 1);
    assert_eq!(postgres.endpoints[1].name, "replica");
    assert_eq!(postgres.endpoints[1].address.to_string(), "[::1]:5433");
    assert_eq!(postgres.connect_timeout, Duration::from_secs(1));
    assert_eq!(
        postgres.drain_timeout,
        Duration::from_secs(10),
        "from [defaults]"
    );
    assert_eq!(postgres.tcp_keepalive, Some(Duration::from_secs(60)));
    assert_eq!(postgres.slow_start, Duration::from_secs(30));
    assert_eq!(postgres.retry_budget.ratio, Some(0.2));
    assert_eq!(postgres.limits.max_pending_requests, 1024);
    assert!(postgres.outlier.is_some());
    assert!(postgres.health.is_none());

    let next = &c.clusters[1];
    assert_eq!(next.balance, Balance::P2cEwma);
    assert_eq!(next.maglev_table_size, 65_537);
    assert_eq!(next.connect_timeout, Duration::from_millis(250));
    assert_eq!(next.tcp_keepalive, None);
}

#[test]
fn an_empty_file_gets_the_spec_defaults() {
    let c = load_str("", Path::new("empty.toml")).unwrap();
    assert_eq!(
        c.admin.listen,
        AdminListen::Tcp("127.0.0.1:9901".parse().unwrap())
    );
    assert_eq!(c.defaults.drain_timeout, Duration::from_secs(30));
    assert_eq!(c.defaults.shutdown_delay, Duration::ZERO);
    assert!(c.listeners.is_empty());
}

#[test]
fn every_spec_key_is_accepted_and_none_is_gated() {
    // The SPEC's full example: every key it writes is implemented, so it loads whole.
    let config = load_file(&fixture("full.toml")).unwrap_or_else(|errs| panic!("{errs}"));
    let api_v1 = config.clusters.iter().find(|c| c.name == "api-v1").unwrap();
    assert_eq!(api_v1.drain_timeout, Duration::from_secs(30));
    let route = &config.listeners[0].routes[0];
    assert_eq!(route.name, "api");
    assert_eq!(route.max_duration, None, "\"0s\" is off");
}

#[test]
fn turning_the_access_log_off_is_accepted() {
    let text = "[access_log]\nenabled = false\n";
    let config = load_str(text, std::path::Path::new("off.toml")).unwrap();
    assert!(!config.access_log.enabled);
}

#[test]
fn a_missing_certificate_is_reported_at_its_line() {
    let text = std::fs::read_to_string(fixture("full.toml"))
        .unwrap()
        .replace("certs/api.key", "certs/missing.key");
    let errs = load_str(&text, &fixture("full.toml")).unwrap_err();
    let e = errs
        .errors()
        .iter()
        .find(|e| e.path == "listener[0].tls.certificates[1].key")
        .unwrap_or_else(|| panic!("{errs}"));
    assert_eq!(e.line, 40);
    assert!(e.message.contains("cannot read"), "{e}");
}

#[test]
fn rendered_toml_and_json_parse_back() {
    let c = load_file(&fixture("tcp.toml")).unwrap();
    let json = render(&c, OutputFormat::Json).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["clusters"][0]["connect_timeout"], "1s");
    let toml_text = render(&c, OutputFormat::Toml).unwrap();
    let t: toml::Table = toml::from_str(&toml_text).unwrap();
    assert!(t.contains_key("listeners"), "{toml_text}");
}

#[test]
fn an_unreadable_file_is_one_error_naming_it() {
    let errs = load_file(Path::new("/nonexistent/switchyard.toml")).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(
        errs.to_string()
            .starts_with("/nonexistent/switchyard.toml: cannot read")
    );
}

#[test]
fn the_fuzz_corpus_replays_without_panicking() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut n = 0;
    for target in [
        "config_load",
        "units",
        "sni",
        "proxy_protocol",
        "http_head",
        "hpack",
        "h2_connection",
    ] {
        let Ok(dir) = std::fs::read_dir(corpus.join(target)) else {
            continue;
        };
        for entry in dir {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            if target == "sni" {
                let _ = switchyard::listener::sni::peek_client_hello(&bytes);
            } else if target == "proxy_protocol" {
                let _ = switchyard::listener::proxy_protocol::parse(&bytes);
            } else if target == "http_head" {
                let limits = switchyard::http::h1_server::head::HeadLimits {
                    max_header_bytes: 16 * 1024,
                    max_headers: 100,
                };
                let mut buf = bytes::BytesMut::from(&bytes[..]);
                let _ = switchyard::http::h1_server::head::parse(&mut buf, &limits);
            } else if target == "hpack" {
                // The target's framing: the first byte separates the blocks that follow.
                if let Some((&separator, rest)) = bytes.split_first() {
                    let mut decoder = switchyard::http::h2_codec::hpack::Decoder::new(256);
                    for block in rest.split(|&byte| byte == separator) {
                        let _ = decoder.decode(&bytes::Bytes::copy_from_slice(block), |_, _| {});
                    }
                }
            } else if target == "h2_connection" {
                let _ = switchyard::http::h2_server::scripted::serve_scripted(&bytes);
            } else if target == "config_load" {
                let _ = load_str(&text, Path::new("fuzz.toml"));
            } else {
                let _ = config::units::parse_duration(&text);
                let _ = config::units::parse_size(&text);
                let _ = config::units::parse_percent(&text);
            }
            n += 1;
        }
    }
    assert!(n > 0, "no corpus files under {}", corpus.display());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn load_str_never_panics_on_arbitrary_text(text in ".{0,400}") {
        let _ = load_str(&text, Path::new("p.toml"));
    }

    #[test]
    fn load_str_never_panics_on_mutated_valid_configs(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), ".{0,6}"), 1..6)
    ) {
        let base = std::fs::read_to_string(fixture("full.toml")).unwrap();
        let mut text = base.clone();
        for (at, len, insert) in edits {
            let chars: Vec<char> = text.chars().collect();
            let start = at.index(chars.len() + 1);
            let end = (start + len.index(8)).min(chars.len());
            let mut out: String = chars[..start].iter().collect();
            out.push_str(&insert);
            out.extend(&chars[end..]);
            text = out;
        }
        let _ = load_str(&text, &fixture("full.toml"));
    }
}

#[test]
fn an_xdp_vip_resolves_with_its_defaults_and_ipv6_vips_are_refused() {
    let base = "[[cluster]]\nname = \"d\"\nendpoints = [\"198.18.0.21:80\"]\n\
                [[xdp]]\ninterface = \"eth0\"\n  [[xdp.vip]]\n  cluster = \"d\"\n";
    let c = load_str(
        &format!("{base}  address = \"198.19.0.10:80\"\n"),
        Path::new("x.toml"),
    )
    .unwrap();
    let x = &c.xdp[0];
    assert_eq!(x.mode, switchyard::config::model::XdpMode::Native);
    assert_eq!(x.flow_table_size, 1_000_000);
    assert_eq!(x.vips[0].maglev_table_size, 65_537);
    assert_eq!(
        x.vips[0].forward,
        switchyard::config::model::XdpForward::Ipip
    );
    let errs = load_str(
        &format!("{base}  address = \"[2001:db8::1]:80\"\n"),
        Path::new("x.toml"),
    )
    .unwrap_err();
    assert!(errs.to_string().contains("IPv4 VIPs only"), "{errs}");
}
