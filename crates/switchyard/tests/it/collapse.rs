//! The outage the resilience machinery exists to prevent (issue 7): twelve backends, one
//! turns slow (900 ms) while its `/healthz` keeps passing, and a closed-loop client with a
//! 1 s timeout retries twice. Each backend has a fixed worker pool (`--concurrency`), so
//! requests sent to the slow one queue there like on a real server.
//!
//! The same run is made twice: with Switchyard's defaults (p2c-ewma, outlier detection
//! on, the default retry policy and budget) the client barely notices; with the defenses
//! switched off (round robin, no outlier detection, unbudgeted retries on timeouts and
//! 5xx) the slow backend keeps its twelfth of the traffic, the tail latency goes to the
//! timeout and the work done per request climbs. The figures are printed for the issue
//! note; the assertions are the issue's thresholds. The client is `switchyard bench`'s
//! generator in closed-loop mode; `drills/gray-failure.toml` is the same outage as an
//! open-loop drill (tests/it/drill.rs).

#![allow(clippy::unwrap_used)]
use std::time::Duration;

use switchyard::backend::{BackendArgs, BackendHandle, Latency};
use switchyard::loadgen::{self, LoadSpec, Mode, Target};

use crate::support::*;

const BACKENDS: usize = 12;
const WORKERS: usize = 24;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
const CLIENT_TRIES: usize = 3;
/// Healthy traffic before the fault.
const WARM_UP: Duration = Duration::from_secs(1);
/// The fault's duration; the share is judged over its second half.
const FAULT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Figures {
    success_rate: f64,
    amplification: f64,
    slow_share_late: f64,
    /// Client p99 over the fault, milliseconds (from the `switchyard bench` generator).
    p99_ms: f64,
    requests: u64,
}

fn config(backends: &[BackendHandle], defended: bool) -> String {
    let addresses: Vec<_> = backends.iter().map(|b| b.local_addr()).collect();
    let names: Vec<String> = backends.iter().map(|b| b.name().to_owned()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (route, cluster) = if defended {
        // Switchyard's defaults, plus the active check the scenario says still passes.
        (String::new(), String::new())
    } else {
        (
            r#"per_try_timeout = "1s"
  retry = { attempts = 3, on = ["timeout", "5xx", "reset"], backoff_base = "1ms", backoff_max = "2ms" }"#
                .to_owned(),
            "balance = \"round-robin\"\nretry_budget = { ratio = \"unlimited\" }\n  [cluster.outlier]\n  enabled = false"
                .to_owned(),
        )
    };
    format!(
        r#"{WEB}
  [[listener.route]]
  match = {{ path_prefix = "/" }}
  cluster = "fleet"
  {route}
[[cluster]]
name = "fleet"
endpoints = {endpoints}
{cluster}
  [cluster.health]
  kind = "http"
  interval = "1s"
"#,
        endpoints = endpoints(&addresses, &names)
    )
}

async fn fleet() -> Vec<BackendHandle> {
    let mut all = Vec::new();
    for i in 1..=BACKENDS {
        let mut args = BackendArgs::for_test(&format!("b{i}"));
        args.seed = Some(i as u64);
        args.concurrency = 8;
        args.latency = Some(Latency::parse("1ms").unwrap());
        all.push(backend(args).await);
    }
    all
}

fn total_requests(backends: &[BackendHandle]) -> u64 {
    backends.iter().map(|b| b.control().requests()).sum()
}

/// The closed-loop client: `switchyard bench`'s generator with [`WORKERS`] workers, each
/// logical request tried up to [`CLIENT_TRIES`] times, each try bounded by
/// [`CLIENT_TIMEOUT`].
fn load(server: &switchyard::runtime::Server) -> LoadSpec {
    let addr = address(server, "web");
    let mut spec = LoadSpec::new(Target {
        tls: false,
        authority: addr.to_string(),
        host: "127.0.0.1".into(),
        addr,
        path: "/".into(),
    });
    spec.mode = Mode::Closed {
        concurrency: WORKERS,
    };
    spec.connections = WORKERS;
    spec.timeout = CLIENT_TIMEOUT;
    spec.retries = CLIENT_TRIES as u32 - 1;
    spec.duration = WARM_UP + FAULT;
    spec
}

async fn run(defended: bool) -> Figures {
    let backends = fleet().await;
    let server = balancer(&config(&backends, defended)).await;
    let running = loadgen::start(load(&server)).unwrap();

    tokio::time::sleep(WARM_UP).await;
    let slow = &backends[BACKENDS - 1];
    slow.control()
        .set(|f| f.latency = Latency::parse("900ms").unwrap());
    let attempts_before = total_requests(&backends);

    tokio::time::sleep(FAULT / 2).await;
    let (attempts_mid, slow_mid) = (total_requests(&backends), slow.control().requests());
    let report = tokio::time::timeout(FAULT + LIMIT, running.finish())
        .await
        .unwrap()
        .unwrap();
    // The fault's seconds of the client's series (filed by intended send time).
    let fault = &report.series[WARM_UP.as_secs() as usize..];
    let requests: u64 = fault.iter().map(|s| s.requests).sum();
    let succeeded: u64 = fault.iter().map(|s| s.successes).sum();
    let attempts = total_requests(&backends) - attempts_before;
    let late_attempts = total_requests(&backends) - attempts_mid;
    let late_slow = slow.control().requests() - slow_mid;
    let figures = Figures {
        success_rate: succeeded as f64 / requests.max(1) as f64,
        amplification: attempts as f64 / requests.max(1) as f64,
        slow_share_late: late_slow as f64 / late_attempts.max(1) as f64,
        p99_ms: report.summary.latency_ms.p99,
        requests,
    };
    eprintln!(
        "{}: {figures:?}",
        if defended { "defended" } else { "naive" }
    );
    figures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_one_slow_backend_of_twelve_cannot_collapse_the_fleet() {
    let defended = run(true).await;
    assert!(defended.success_rate >= 0.995, "{defended:?}");
    assert!(defended.amplification <= 1.2, "{defended:?}");
    assert!(defended.slow_share_late < 0.02, "{defended:?}");

    // The same fault with the defenses off shows the damage they prevent.
    let naive = run(false).await;
    assert!(
        naive.slow_share_late > 0.05,
        "round robin keeps feeding it: {naive:?}"
    );
    assert!(
        naive.p99_ms > 800.0 && defended.p99_ms < 800.0,
        "one request in a hundred waits on the slow backend: {naive:?} vs {defended:?}"
    );
    assert!(
        naive.amplification > defended.amplification,
        "{naive:?} vs {defended:?}"
    );
    assert!(
        naive.requests * 2 < defended.requests,
        "a closed loop stuck on one slow backend does less than half the work: {naive:?} vs {defended:?}"
    );
}
