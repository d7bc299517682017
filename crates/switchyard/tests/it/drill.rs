//! `switchyard drill` and `switchyard bench` (issue 10): every shipped scenario in `drills/`
//! passes with the recommended configuration; the gray-failure and retry-storm scenarios
//! fail their thresholds with the naive comparison (so the drill detects real damage); the
//! HTML report renders in headless Chromium with its charts; the load generator sends
//! exactly rate x duration and measures latency from the intended send time.

#![allow(clippy::unwrap_used)]
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use switchyard::backend::{BackendArgs, Latency};
use switchyard::drill::{self, DrillReport, RunResult, scenario};
use switchyard::loadgen::{self, LoadSpec, Mode, Protocol, Target};

use crate::browser::{Chromium, Picture, VIEWPORT, pixels_of, screenshot_dir};
use crate::support::*;

fn drills() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../drills")
}

/// Runs a shipped scenario; with `compare` its naive comparison too.
async fn shipped(name: &str, compare: bool) -> DrillReport {
    let mut s = scenario::load(&drills().join(format!("{name}.toml"))).unwrap();
    if !compare {
        s.balancer.compare = None;
    }
    let report = drill::drill(&s, None, &|_| {}).await.unwrap();
    eprintln!("{}", drill::report::text(&report));
    report
}

fn verdict(run: &RunResult, name: &str) -> bool {
    run.verdicts
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no verdict {name}"))
        .pass
}

fn failed(run: &RunResult) -> Vec<&'static str> {
    run.verdicts
        .iter()
        .filter(|v| !v.pass)
        .map(|v| v.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_drill_gray_failure_is_absorbed_by_defaults_and_detected_with_the_naive_config() {
    let report = shipped("gray-failure", true).await;
    let [defaults, naive] = &report.runs[..] else {
        panic!("two runs")
    };
    assert!(defaults.passed, "defaults failed {:?}", failed(defaults));
    assert!(!naive.passed);
    assert!(
        !verdict(naive, "p99"),
        "the slow backend's answers reach the tail"
    );
    assert!(!verdict(naive, "bad_share"), "round robin keeps feeding it");
    assert!(naive.amplification > defaults.amplification);
    assert!(report.passed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_drill_retry_storm_is_absorbed_by_defaults_and_detected_with_the_naive_config() {
    let report = shipped("retry-storm", true).await;
    let [defaults, naive] = &report.runs[..] else {
        panic!("two runs")
    };
    assert!(defaults.passed, "defaults failed {:?}", failed(defaults));
    assert!(
        !verdict(naive, "amplification"),
        "unbudgeted retries multiply the work"
    );
    assert!(
        !verdict(naive, "bad_share"),
        "no outlier detection keeps it in rotation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_drill_crash_and_restart_passes_with_defaults() {
    let report = shipped("crash-restart", false).await;
    let run = &report.runs[0];
    assert!(run.passed, "{:?}", failed(run));
    // The killed backend is shown down, then back.
    let b2: Vec<&str> = run
        .endpoints
        .seconds
        .iter()
        .map(|s| s.states[1].as_str())
        .collect();
    assert!(b2.contains(&"down") && b2.last() != Some(&"down"), "{b2:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_drill_rolling_deploy_loses_nothing() {
    let report = shipped("deploy", false).await;
    let run = &report.runs[0];
    assert!(run.passed, "{:?}", failed(run));
    assert_eq!(
        run.windows.iter().filter(|w| w.planned).count(),
        5,
        "4 drains and a reload"
    );
    let drained = run
        .endpoints
        .seconds
        .iter()
        .flat_map(|s| &s.states)
        .filter(|s| *s == "draining")
        .count();
    assert!(drained >= 4, "every backend is seen draining");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_drill_h2_connection_imbalance_passes_with_defaults() {
    let report = shipped("h2-imbalance", false).await;
    let run = &report.runs[0];
    assert!(run.passed, "{:?}", failed(run));
    assert_eq!(run.load.summary.requests, 3200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_drill_slowloris_crowd_leaves_normal_clients_alone() {
    let report = shipped("slowloris", false).await;
    let run = &report.runs[0];
    assert!(run.passed, "{:?}", failed(run));
    let (opened, _) = run.slow_clients.unwrap();
    assert!(opened >= 300, "the crowd connected: {opened}");
}

/// A two-second drill with one fault, written for the browser check.
const SMALL: &str = r#"
name = "small"
description = "two backends, one slow for a second"
duration = "3s"
[balancer]
inline = """
[[listener]]
name = "web"
listen = "127.0.0.1:0"
protocol = "http"
cluster = "fleet"
[[cluster]]
name = "fleet"
endpoints = ["127.0.0.1:1"]
"""
[backends]
count = 2
service_time = "1ms"
[load]
rate = 100
timeout = "1s"
[[fault]]
kind = "slow"
at = "1s"
duration = "1s"
backend = 2
latency = "50ms"
[thresholds]
success_rate = 0.9
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_drill_report_renders_in_headless_chromium_with_its_charts() {
    let dir = std::env::temp_dir().join(format!("switchyard-drill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let s = scenario::parse(SMALL, &dir.join("small.toml")).unwrap();
    let report = drill::drill(&s, None, &|_| {}).await.unwrap();
    assert!(report.passed());
    let (html, json) = drill::write_reports(&report, &dir).unwrap();
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(
        raw["runs"][0]["load"]["series"].as_array().unwrap().len(),
        3
    );

    let mut browser = Chromium::launch();
    let mut page = browser.devtools().await;
    page.open(&format!("file://{}", html.display()), &[]).await;
    // Every chart is in the DOM with something drawn in it.
    let drawn = page
        .evaluate(
            "Object.fromEntries([...document.querySelectorAll('svg.chart')].map(s => \
             [s.dataset.chart, s.querySelectorAll('polyline.series, rect.state').length]))",
        )
        .await;
    for chart in ["success", "latency", "attempts", "share", "state"] {
        assert!(
            drawn[chart].as_u64().unwrap_or(0) > 0,
            "chart {chart}: {drawn}"
        );
    }
    let markers = page
        .evaluate("document.querySelectorAll('g.fault[data-fault=\"slow b2\"]').length")
        .await;
    assert_eq!(
        markers.as_u64(),
        Some(5),
        "the fault is marked on every chart"
    );
    let verdicts = page
        .evaluate("document.querySelector('#verdicts').innerText")
        .await;
    assert!(verdicts.as_str().unwrap().contains("PASS"), "{verdicts}");

    // The screenshot shows the latency chart painted: its p99 line's red is on screen.
    let png = page.screenshot().await;
    std::fs::write(screenshot_dir("drill").join("report.png"), &png).unwrap();
    let picture = Picture::decode(&png);
    assert_eq!((picture.width, picture.height), VIEWPORT);
    let rect = page
        .evaluate(
            "(() => { const r = document.querySelector('svg[data-chart=latency]').getBoundingClientRect(); \
             return { left: r.left, top: r.top, right: r.right, bottom: r.bottom }; })()",
        )
        .await;
    let chart = picture.region(&rect);
    assert!(chart.len() > 50_000, "the chart has a size: {rect}");
    assert!(
        pixels_of(&chart, [0xdc, 0x26, 0x26]) > 50,
        "the p99 line is drawn"
    );
    let distinct: std::collections::BTreeSet<[u8; 3]> = chart.iter().copied().collect();
    assert!(
        distinct.len() > 10,
        "{} colours: a blank chart?",
        distinct.len()
    );
    page.assert_no_problems();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_drill_failing_and_flapping_backends_are_seen_unhealthy_and_a_killed_one_down() {
    let scenario = r#"
name = "kinds"
duration = "5s"
[balancer]
inline = """
[[listener]]
name = "web"
listen = "127.0.0.1:0"
protocol = "http"
cluster = "fleet"
[[cluster]]
name = "fleet"
endpoints = ["127.0.0.1:1"]
  [cluster.health]
  kind = "http"
  interval = "250ms"
  unhealthy_threshold = 1
  healthy_threshold = 1
"""
[backends]
count = 4
service_time = "1ms"
[load]
rate = 100
timeout = "1s"
retries = 2
[[fault]]
kind = "failing"
at = "1s"
backend = 1
[[fault]]
kind = "flapping"
at = "1s"
period = "1s"
backend = 2
[[fault]]
kind = "dead"
at = "1s"
backend = 3
[thresholds]
# Three of four backends bad puts the cluster in panic mode (balancing over all of them):
# many requests fail, as they should; this test is about the states.
success_rate = 0.5
"#;
    let dir = std::env::temp_dir();
    let s = scenario::parse(scenario, &dir.join("kinds.toml")).unwrap();
    let report = drill::drill(&s, None, &|_| {}).await.unwrap();
    eprintln!("{}", drill::report::text(&report));
    let run = &report.runs[0];
    let states = |b: usize| -> Vec<&str> {
        run.endpoints
            .seconds
            .iter()
            .map(|s| s.states[b].as_str())
            .collect()
    };
    let (b1, b2, b3, b4) = (states(0), states(1), states(2), states(3));
    assert_eq!(b1[0], "healthy");
    assert!(b1[2..].iter().all(|s| *s == "unhealthy"), "failing: {b1:?}");
    // Flapping: unhealthy while failing; when its checks pass again, outlier detection
    // (which saw its failures) still holds it out, so it does not flap back into rotation.
    assert!(
        b2.contains(&"unhealthy") && b2[2..].iter().any(|s| *s == "ejected" || *s == "healthy"),
        "flapping: {b2:?}"
    );
    assert!(b3[1..].iter().all(|s| *s == "down"), "dead: {b3:?}");
    assert!(b4.iter().all(|s| *s == "healthy"), "untouched: {b4:?}");
    assert!(run.passed, "{:?}", failed(run));
}

#[test]
fn drill_cli_exits_3_on_an_invalid_scenario_and_names_the_field() {
    let dir = std::env::temp_dir().join(format!("switchyard-drill-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        SMALL.replace("latency = \"50ms\"", "latency = \"50 ms\""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["drill", path.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fault[0].latency"), "{stderr}");
    let usage = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["drill", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(
        usage.status.code(),
        Some(3),
        "a usage error is not a failed threshold"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn target(addr: std::net::SocketAddr) -> Target {
    Target {
        tls: false,
        authority: addr.to_string(),
        host: "127.0.0.1".into(),
        addr,
        path: "/".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_bench_open_loop_sends_exactly_rate_times_duration_over_h1_and_h2c() {
    let b = backend(BackendArgs::for_test("b1")).await;
    for protocol in [Protocol::Http1, Protocol::H2] {
        let mut spec = LoadSpec::new(target(b.local_addr()));
        spec.protocol = protocol;
        spec.mode = Mode::Open { rate: 200.0 };
        spec.duration = Duration::from_secs(1);
        spec.connections = 4;
        let report = within(loadgen::start(spec).unwrap().finish())
            .await
            .unwrap();
        let s = &report.summary;
        assert_eq!(
            (s.requests, s.successes, s.attempts),
            (200, 200, 200),
            "{protocol:?}"
        );
        assert_eq!(s.backends.get("b1"), Some(&200));
        assert_eq!(report.series.len(), 1);
        assert_eq!(report.series[0].requests, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_bench_latency_counts_from_the_intended_send_time() {
    // One connection to a backend that takes 100 ms, asked for a request every 50 ms:
    // request i waits for the i before it, so it is answered about 100 + 50 i ms after it
    // was due. A generator that timed from the actual send would report 100 ms throughout.
    let mut args = BackendArgs::for_test("slow");
    args.latency = Some(Latency::parse("100ms").unwrap());
    let b = backend(args).await;
    let mut spec = LoadSpec::new(target(b.local_addr()));
    spec.mode = Mode::Open { rate: 20.0 };
    spec.duration = Duration::from_secs(1);
    spec.connections = 1;
    let report = tokio::time::timeout(
        Duration::from_secs(15),
        loadgen::start(spec).unwrap().finish(),
    )
    .await
    .unwrap()
    .unwrap();
    let l = &report.summary.latency_ms;
    assert_eq!(report.summary.requests, 20);
    assert!(l.max >= 1000.0, "{l:?}");
    assert!(l.p50 >= 500.0, "{l:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_bench_retries_count_attempts_and_errors_by_kind() {
    let mut args = BackendArgs::for_test("bad");
    args.error_rate = 1.0;
    let b = backend(args).await;
    let mut spec = LoadSpec::new(target(b.local_addr()));
    spec.mode = Mode::Open { rate: 50.0 };
    spec.duration = Duration::from_secs(1);
    spec.retries = 2;
    let report = within(loadgen::start(spec).unwrap().finish())
        .await
        .unwrap();
    let s = &report.summary;
    assert_eq!((s.requests, s.successes, s.attempts), (50, 0, 150));
    assert_eq!(s.errors.get("status_503"), Some(&50));
    assert_eq!(b.control().requests(), 150);
}
