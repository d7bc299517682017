//! Health and resilience over real sockets: active checks (http, grpc, tcp), passive
//! ejection of gray failures, max ejection percent and panic mode, slow start, operator
//! drain, and the retry policy (idempotency, another endpoint, Retry-After, per-try
//! timeouts, the budget).

#![allow(clippy::unwrap_used)]
use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use switchyard::backend::{BackendArgs, BackendHandle, Latency};
use switchyard::runtime::Server;

use crate::support::*;

/// An HTTP listener `web` forwarding to cluster `app` (round robin over `backends`, named
/// like them), with `route` lines on the listener and `cluster` lines (and tables) on
/// the cluster.
fn web(backends: &[&BackendHandle], route: &str, cluster: &str) -> String {
    let addresses: Vec<_> = backends.iter().map(|b| b.local_addr()).collect();
    let names: Vec<&str> = backends.iter().map(|b| b.name()).collect();
    format!(
        r#"{WEB}
  [[listener.route]]
  match = {{ path_prefix = "/" }}
  cluster = "app"
  {route}
[[cluster]]
name = "app"
balance = "round-robin"
endpoints = {endpoints}
{cluster}
"#,
        endpoints = endpoints(&addresses, &names)
    )
}

/// Sends `n` GETs to `path`; (status, x-backend) counts.
async fn send_many(server: &Server, path: &str, n: usize) -> HashMap<(u16, String), usize> {
    let client = keepalive_client();
    let url = format!("http://{}{path}", address(server, "web"));
    let mut seen = HashMap::new();
    for _ in 0..n {
        let response = within(client.get(&url).send()).await.unwrap();
        let backend = response
            .headers()
            .get("x-backend")
            .map_or("-", |v| v.to_str().unwrap())
            .to_owned();
        *seen
            .entry((response.status().as_u16(), backend))
            .or_default() += 1;
    }
    seen
}

async fn endpoint_json(server: &Server, name: &str) -> Value {
    let (_, body) = admin_get(server, "/api/v1/clusters").await;
    let clusters: Value = serde_json::from_str(&body).unwrap();
    clusters["clusters"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("endpoint {name} missing in {body}"))
}

/// Polls until endpoint `name` reports `state`, for at most `limit`.
async fn wait_for_state(server: &Server, name: &str, state: &str, limit: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let endpoint = endpoint_json(server, name).await;
        if endpoint["state"] == state {
            return endpoint;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} not {state} within {limit:?}: {endpoint}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn backend_with(name: &str, change: impl FnOnce(&mut BackendArgs)) -> BackendHandle {
    let mut args = BackendArgs::for_test(name);
    args.seed = Some(7);
    change(&mut args);
    backend(args).await
}

/// Passive detection off, so a test sees the retry policy alone.
const NO_OUTLIER: &str = "  [cluster.outlier]\n  enabled = false";

/// Sends `n` GETs and asserts every one was answered by the endpoint `fast` within `limit`.
async fn all_answered_by_fast(server: &Server, n: usize, limit: Duration) {
    let started = std::time::Instant::now();
    let seen = send_many(server, "/", n).await;
    assert_eq!(seen.get(&(200, "fast".into())), Some(&n), "{seen:?}");
    assert!(started.elapsed() < limit, "{:?}", started.elapsed());
}

const FAST_CHECKS: &str = r#"
  [cluster.health]
  kind = "http"
  path = "/healthz"
  interval = "100ms"
  timeout = "500ms"
  unhealthy_threshold = 2
  healthy_threshold = 2
  jitter = "0%""#;

#[tokio::test]
async fn active_checks_take_a_failing_endpoint_out_within_the_bound_and_readmit_it() {
    let b1 = backend_with("b1", |_| {}).await;
    let b2 = backend_with("b2", |_| {}).await;
    let server = balancer(&web(
        &[&b1, &b2],
        "",
        &format!("slow_start = \"0s\"\n{FAST_CHECKS}"),
    ))
    .await;
    assert_eq!(endpoint_json(&server, "b2").await["health"], "healthy");

    b2.control().set(|f| f.healthz_status = 503);
    // interval x unhealthy_threshold + timeout, plus one interval and 500 ms (DESIGN).
    wait_for_state(
        &server,
        "b2",
        "unhealthy",
        Duration::from_millis(100 * 2 + 500 + 100 + 500),
    )
    .await;
    let seen = send_many(&server, "/", 20).await;
    assert_eq!(seen.get(&(200, "b1".into())), Some(&20), "{seen:?}");

    b2.control().set(|f| f.healthz_status = 200);
    wait_for_state(
        &server,
        "b2",
        "healthy",
        Duration::from_millis(100 * 2 + 500 + 100 + 500),
    )
    .await;
    let seen = send_many(&server, "/", 20).await;
    assert_eq!(seen.get(&(200, "b2".into())), Some(&10), "{seen:?}");
    let passes = metric_of(
        &server,
        r#"switchyard_health_checks_total{cluster="app",result="pass"}"#,
    )
    .await;
    let fails = metric_of(
        &server,
        r#"switchyard_health_checks_total{cluster="app",result="fail"}"#,
    )
    .await;
    assert!(passes >= 4.0 && fails >= 2.0, "pass {passes} fail {fails}");
}

#[tokio::test]
async fn grpc_and_tcp_checks_judge_endpoints_by_their_own_protocol() {
    let serving = backend_with("serving", |_| {}).await;
    let not_serving = backend_with("not-serving", |a| a.grpc_not_serving = true).await;
    let grpc = FAST_CHECKS.replace("kind = \"http\"", "kind = \"grpc\"");
    let server = balancer(&web(
        &[&serving, &not_serving],
        "",
        &format!("protocol = \"h2\"\n{grpc}"),
    ))
    .await;
    assert_eq!(endpoint_json(&server, "serving").await["state"], "healthy");
    assert_eq!(
        endpoint_json(&server, "not-serving").await["state"],
        "unhealthy"
    );
    not_serving.control().set(|f| f.grpc_serving = true);
    wait_for_state(&server, "not-serving", "healthy", Duration::from_secs(2)).await;

    let live = backend_with("live", |_| {}).await;
    let tcp = FAST_CHECKS.replace("kind = \"http\"", "kind = \"tcp\"");
    let dead = dead_address();
    let toml = web(&[&live], "", &tcp).replace(
        "endpoints = [",
        &format!("endpoints = [{{ address = \"{dead}\", name = \"dead\" }}, "),
    );
    let server = balancer(&toml).await;
    assert_eq!(endpoint_json(&server, "live").await["state"], "healthy");
    assert_eq!(endpoint_json(&server, "dead").await["state"], "unhealthy");
    let seen = send_many(&server, "/", 6).await;
    assert_eq!(seen.get(&(200, "live".into())), Some(&6), "{seen:?}");
}

#[tokio::test]
async fn an_endpoint_that_passes_healthz_but_fails_real_requests_is_ejected_and_stays_out() {
    let b1 = backend_with("b1", |_| {}).await;
    let b2 = backend_with("b2", |_| {}).await;
    let gray = backend_with("gray", |a| a.error_rate = 1.0).await;
    let cluster = format!(
        "{FAST_CHECKS}\n  [cluster.outlier]\n  consecutive_5xx = 3\n  base_ejection = \"1s\"\n  max_ejection = \"10s\""
    );
    let server = balancer(&web(&[&b1, &b2, &gray], "", &cluster)).await;
    let seen = send_many(&server, "/", 60).await;
    // Exactly three real failures reach the client before the ejection, never more.
    assert_eq!(seen.get(&(503, "gray".into())), Some(&3), "{seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 60);
    let endpoint = endpoint_json(&server, "gray").await;
    assert_eq!(endpoint["state"], "ejected", "{endpoint}");
    assert_eq!(endpoint["health"], "healthy", "its /healthz still passes");
    assert_eq!(endpoint["ejections"], 1);
    let ejected =
        r#"switchyard_ejections_total{cluster="app",endpoint="gray",reason="consecutive_5xx"}"#;
    assert_eq!(metric_of(&server, ejected).await, 1.0);

    // Back after 1 s, still failing: three more failures, then out for twice as long.
    wait_for_state(&server, "gray", "slow-starting", Duration::from_secs(3)).await;
    let mut failures = 0;
    for _ in 0..400 {
        let seen = send_many(&server, "/", 10).await;
        failures += seen.get(&(503, "gray".into())).copied().unwrap_or(0);
        if endpoint_json(&server, "gray").await["state"] == "ejected" {
            break;
        }
    }
    assert_eq!(failures, 3);
    let endpoint = endpoint_json(&server, "gray").await;
    assert_eq!(endpoint["ejections"], 2, "{endpoint}");
    let until = endpoint["ejected_until"].as_f64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (1.2..=2.1).contains(&(until - now)),
        "second ejection lasts 2 s: {}",
        until - now
    );
    assert_eq!(metric_of(&server, ejected).await, 2.0);
}

#[tokio::test]
async fn at_most_max_ejection_percent_is_ejected_and_panic_mode_spreads_over_all() {
    let mut all = Vec::new();
    for i in 1..=4 {
        all.push(backend_with(&format!("b{i}"), |a| a.error_rate = 1.0).await);
    }
    let refs: Vec<&BackendHandle> = all.iter().collect();
    let outlier = |panic: u32| {
        format!(
            "  [cluster.outlier]\n  consecutive_5xx = 1\n  max_ejection_percent = 50\n  panic_threshold = {panic}"
        )
    };
    let server = balancer(&web(&refs, "", &outlier(0))).await;
    let seen = send_many(&server, "/", 40).await;
    let ejected: usize = {
        let (_, body) = admin_get(&server, "/api/v1/clusters").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        v["clusters"][0]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["state"] == "ejected")
            .count()
    };
    assert_eq!(ejected, 2, "floor(4 x 50 / 100)");
    let served: Vec<_> = seen
        .keys()
        .map(|(_, b)| b.clone())
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        served.len(),
        4,
        "the two ejected first took one request each: {seen:?}"
    );
    let late = send_many(&server, "/", 20).await;
    assert_eq!(
        late.len(),
        2,
        "without panic only the two left are used: {late:?}"
    );

    // panic_threshold 75: 2 of 4 usable is below it, so all four share the traffic.
    let server = balancer(&web(&refs, "", &outlier(75))).await;
    send_many(&server, "/", 10).await;
    let (_, body) = admin_get(&server, "/api/v1/clusters").await;
    assert!(body.contains("\"panic\": true"), "{body}");
    let late = send_many(&server, "/", 20).await;
    assert_eq!(
        late.len(),
        4,
        "panic mode balances across every endpoint: {late:?}"
    );
}

#[tokio::test]
async fn a_latency_outlier_is_ejected_by_the_cluster_median() {
    let mut all = Vec::new();
    for i in 1..=3 {
        all.push(backend_with(&format!("b{i}"), |_| {}).await);
    }
    all.push(
        backend_with("slow", |a| {
            a.latency = Some(Latency::parse("150ms").unwrap())
        })
        .await,
    );
    let refs: Vec<&BackendHandle> = all.iter().collect();
    let server = balancer(&web(&refs, "", "  [cluster.outlier]\n  latency_factor = 5")).await;
    send_many(&server, "/", 24).await;
    wait_for_state(&server, "slow", "ejected", Duration::from_millis(2500)).await;
    let series = r#"switchyard_ejections_total{cluster="app",endpoint="slow",reason="latency"}"#;
    assert_eq!(metric_of(&server, series).await, 1.0);
}

#[tokio::test]
async fn an_endpoint_back_from_ejection_ramps_up_over_slow_start() {
    let b1 = backend_with("b1", |_| {}).await;
    let b2 = backend_with("b2", |a| a.error_rate = 1.0).await;
    let cluster = "slow_start = \"20s\"\n  [cluster.outlier]\n  consecutive_5xx = 1\n  base_ejection = \"1s\"";
    let server = balancer(&web(&[&b1, &b2], "", cluster)).await;
    send_many(&server, "/", 4).await;
    assert_eq!(endpoint_json(&server, "b2").await["state"], "ejected");
    b2.control().set(|f| f.error_rate = 0.0);
    let endpoint = wait_for_state(&server, "b2", "slow-starting", Duration::from_secs(3)).await;
    let effective = endpoint["effective_weight"].as_f64().unwrap();
    assert!(effective < 1.0, "weight 1 ramps from 0.1: {endpoint}");
    // Round robin keeps a slow-starting endpoint's turn with probability = its factor
    // (0.1 rising to about 0.15 over this loop): about 25 of its even share of 100.
    let seen = send_many(&server, "/", 200).await;
    let b2_share = seen.get(&(200, "b2".into())).copied().unwrap_or(0);
    assert!(
        (1..=50).contains(&b2_share),
        "b2 got {b2_share} of 200: {seen:?}"
    );
}

#[tokio::test]
async fn a_drained_endpoint_gets_no_new_requests_and_undrain_brings_it_back() {
    let b1 = backend_with("b1", |_| {}).await;
    let b2 = backend_with("b2", |_| {}).await;
    let server = balancer(&web(&[&b1, &b2], "", "slow_start = \"0s\"")).await;
    let admin = server.admin_address().unwrap();
    let post = |action: &str| {
        let url = format!("http://{admin}/api/v1/clusters/app/endpoints/b2/{action}");
        async move { within(client().post(url).send()).await.unwrap() }
    };
    assert_eq!(post("drain").await.status(), 200);
    assert_eq!(endpoint_json(&server, "b2").await["state"], "draining");
    let seen = send_many(&server, "/", 10).await;
    assert_eq!(seen.get(&(200, "b1".into())), Some(&10), "{seen:?}");
    let idle = r#"switchyard_upstream_pool_connections{cluster="app",state="idle"}"#;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        metric_of(&server, idle).await,
        1.0,
        "b2's idle connection closed"
    );
    assert_eq!(post("undrain").await.status(), 200);
    let seen = send_many(&server, "/", 10).await;
    assert_eq!(seen.get(&(200, "b2".into())), Some(&5), "{seen:?}");
    let url = format!("http://{admin}/api/v1/clusters/app/endpoints/nope/drain");
    assert_eq!(
        within(client().post(url).send()).await.unwrap().status(),
        404
    );
}

const RETRY_GATEWAY: &str = r#"retry = { attempts = 3, on = ["gateway-error", "reset"], backoff_base = "1ms", backoff_max = "5ms" }"#;

#[tokio::test]
async fn idempotent_requests_are_retried_on_another_endpoint_and_a_post_never_is() {
    let failing = backend_with("failing", |a| a.error_rate = 1.0).await;
    let good = backend_with("good", |_| {}).await;
    let server = balancer(&web(&[&failing, &good], RETRY_GATEWAY, NO_OUTLIER)).await;
    let seen = send_many(&server, "/", 20).await;
    assert_eq!(seen.get(&(200, "good".into())), Some(&20), "{seen:?}");
    let retries = metric_of(
        &server,
        r#"switchyard_retries_total{cluster="app",reason="gateway-error"}"#,
    )
    .await;
    let failed_attempts = failing.control().requests() as f64;
    assert_eq!(
        retries, failed_attempts,
        "each failure retried once, on the good endpoint"
    );
    assert!(retries >= 1.0);

    failing.control().reset_counters();
    let client = keepalive_client();
    let url = format!("http://{}/", address(&server, "web"));
    let mut answered_503 = 0;
    for _ in 0..20 {
        let response = within(client.post(&url).body("x").send()).await.unwrap();
        answered_503 += usize::from(response.status() == 503);
    }
    assert_eq!(
        failing.control().requests() as usize,
        answered_503,
        "a POST that reached an upstream is never sent again"
    );
    assert!(answered_503 >= 1);
    assert_eq!(
        metric_of(
            &server,
            r#"switchyard_retries_total{cluster="app",reason="gateway-error"}"#
        )
        .await,
        retries
    );
    // With an idempotency key the POST is retried like a GET.
    let response = within(
        client
            .post(&url)
            .header("idempotency-key", "k1")
            .body("x")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn retry_after_is_honoured_when_it_fits_and_the_retry_abandoned_when_not() {
    let b1 = backend_with("b1", |_| {}).await;
    let b2 = backend_with("b2", |_| {}).await;
    let route = format!("timeout = \"2s\"\n{RETRY_GATEWAY}");
    let server = balancer(&web(&[&b1, &b2], &route, NO_OUTLIER)).await;
    let client = keepalive_client();
    let web = address(&server, "web");
    let attempts = || b1.control().requests() + b2.control().requests();

    let started = std::time::Instant::now();
    let response = within(
        client
            .get(format!("http://{web}/status/503?retry_after=1"))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        attempts(),
        2,
        "1 s fits the 2 s deadline once; the third would not"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    let before = attempts();
    let response = within(
        client
            .get(format!("http://{web}/status/503?retry_after=30"))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "30");
    assert_eq!(
        attempts() - before,
        1,
        "a wait past the deadline abandons the retry"
    );
}

#[tokio::test]
async fn a_per_try_timeout_moves_an_idempotent_request_to_another_endpoint() {
    let slow = backend_with("slow", |a| a.latency = Some(Latency::parse("3s").unwrap())).await;
    let fast = backend_with("fast", |_| {}).await;
    let route = r#"per_try_timeout = "200ms"
retry = { attempts = 2, on = ["timeout"], backoff_base = "1ms", backoff_max = "2ms" }"#;
    let server = balancer(&web(&[&slow, &fast], route, NO_OUTLIER)).await;
    all_answered_by_fast(&server, 4, Duration::from_secs(2)).await;
    let retries = metric_of(
        &server,
        r#"switchyard_retries_total{cluster="app",reason="timeout"}"#,
    )
    .await;
    assert_eq!(retries, slow.control().requests() as f64);
}

#[tokio::test]
async fn load_the_retry_budget_caps_retries_when_half_the_requests_fail() {
    let a = backend_with("a", |a| a.error_rate = 0.5).await;
    let b = backend_with("b", |a| a.error_rate = 0.5).await;
    let route =
        r#"retry = { attempts = 2, on = ["5xx"], backoff_base = "1ms", backoff_max = "1ms" }"#;
    let cluster = "retry_budget = { ratio = 0.2, min_retries_per_second = 0 }\n  [cluster.outlier]\n  enabled = false";
    let server = balancer(&web(&[&a, &b], route, cluster)).await;
    send_many(&server, "/", 400).await;
    let retries = metric_of(
        &server,
        r#"switchyard_retries_total{cluster="app",reason="5xx"}"#,
    )
    .await;
    let exhausted = metric_of(
        &server,
        r#"switchyard_retry_budget_exhausted_total{cluster="app"}"#,
    )
    .await;
    // About 200 first attempts fail; the budget allows 0.2 x 400 = 80 retries at most.
    assert!(retries <= 80.0, "retries {retries}");
    assert!(
        retries >= 60.0,
        "the budget is used, not refused outright: {retries}"
    );
    assert!(exhausted >= 60.0, "refusals are counted: {exhausted}");
    let upstream = (a.control().requests() + b.control().requests()) as f64;
    assert_eq!(upstream, 400.0 + retries, "attempts = requests + retries");
}

#[tokio::test]
async fn past_the_clusters_max_connections_a_request_is_shed_at_once() {
    let b1 = backend_with("b1", |_| {}).await;
    let b2 = backend_with("b2", |_| {}).await;
    let server = balancer(&web(
        &[&b1, &b2],
        "",
        "  [cluster.limits]\n  max_connections = 1",
    ))
    .await;
    let url = format!("http://{}/delay/1s", address(&server, "web"));
    let busy =
        tokio::spawn(async move { within(client().get(url).send()).await.unwrap().status() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let url = format!("http://{}/", address(&server, "web"));
    let response = within(client().get(&url).send()).await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        response.headers()["proxy-status"],
        "switchyard; error=connection_limit_reached; details=\"shed\""
    );
    assert_eq!(busy.await.unwrap(), 200);
    let shed = r#"switchyard_shed_total{cluster="app",reason="connections"}"#;
    assert_eq!(metric_of(&server, shed).await, 1.0);
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_per_key_independently() {
    let b1 = backend_with("b1", |_| {}).await;
    let route = r#"rate_limit = { key = "header:x-api-key", rate = 2, per = "10s", burst = 2 }"#;
    let server = balancer(&web(&[&b1], route, "")).await;
    let client = keepalive_client();
    let url = format!("http://{}/", address(&server, "web"));
    let send = |key: &'static str| {
        let request = client.get(&url).header("x-api-key", key);
        async move { within(request.send()).await.unwrap() }
    };
    assert_eq!(send("alice").await.status(), 200);
    assert_eq!(send("alice").await.status(), 200);
    let refused = send("alice").await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "5", "one token per 5 s");
    assert_eq!(
        refused.headers()["proxy-status"],
        "switchyard; error=http_request_denied; details=\"rate_limit\""
    );
    assert_eq!(send("bob").await.status(), 200, "bob's bucket is his own");
    assert_eq!(
        b1.control().requests(),
        3,
        "a refused request never reaches an upstream"
    );
    let series = r#"switchyard_rate_limited_total{route="web#0"}"#;
    assert_eq!(metric_of(&server, series).await, 1.0);
}

#[tokio::test]
async fn a_hedge_to_another_endpoint_wins_over_a_slow_first_attempt() {
    let slow = backend_with("slow", |a| a.latency = Some(Latency::parse("2s").unwrap())).await;
    let fast = backend_with("fast", |_| {}).await;
    let route = r#"hedge = { after = "100ms", max_extra = 1 }"#;
    let server = balancer(&web(&[&slow, &fast], route, NO_OUTLIER)).await;
    all_answered_by_fast(&server, 4, Duration::from_millis(1500)).await;
    let hedges = metric_of(&server, r#"switchyard_hedges_total{cluster="app"}"#).await;
    // Every first try that went to the slow endpoint was hedged, and only those.
    assert!(hedges >= 2.0, "{hedges}");
    assert_eq!(hedges, slow.control().requests() as f64);

    // A POST is never hedged: it waits for the slow endpoint.
    let client = keepalive_client();
    let url = format!("http://{}/", address(&server, "web"));
    let mut names = Vec::new();
    for _ in 0..2 {
        let response = within(client.post(&url).body("x").send()).await.unwrap();
        names.push(response.headers()["x-backend"].to_str().unwrap().to_owned());
    }
    names.sort();
    assert_eq!(names, ["fast", "slow"]);
    assert_eq!(
        metric_of(&server, r#"switchyard_hedges_total{cluster="app"}"#).await,
        hedges
    );
}

#[tokio::test]
async fn a_sticky_cookie_pins_the_client_and_falls_back_when_its_endpoint_is_gone() {
    let b1 = backend_with("b1", |_| {}).await;
    let b2 = backend_with("b2", |_| {}).await;
    let cluster = "sticky = { cookie = \"sy\", ttl = \"1h\" }\nslow_start = \"0s\"";
    let server = balancer(&web(&[&b1, &b2], "", cluster)).await;
    let client = keepalive_client();
    let url = format!("http://{}/", address(&server, "web"));
    let first = within(client.get(&url).send()).await.unwrap();
    let pinned_to = first.headers()["x-backend"].to_str().unwrap().to_owned();
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("sy=") && cookie.contains("Max-Age=3600"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    for _ in 0..10 {
        let response = within(client.get(&url).header("cookie", &pair).send())
            .await
            .unwrap();
        assert_eq!(response.headers()["x-backend"], pinned_to.as_str());
        assert!(
            response.headers().get("set-cookie").is_none(),
            "already pinned"
        );
    }
    // Drain the pinned endpoint: the policy picks another and the cookie moves with it.
    let admin = server.admin_address().unwrap();
    let drain = format!("http://{admin}/api/v1/clusters/app/endpoints/{pinned_to}/drain");
    assert_eq!(
        within(client.post(drain).send()).await.unwrap().status(),
        200
    );
    let response = within(client.get(&url).header("cookie", &pair).send())
        .await
        .unwrap();
    assert_ne!(response.headers()["x-backend"], pinned_to.as_str());
    let moved = response.headers()["set-cookie"].to_str().unwrap();
    assert_ne!(moved.split(';').next().unwrap(), pair);
}

#[tokio::test]
async fn a_redis_backed_limit_is_shared_by_two_instances_and_falls_back_when_redis_dies() {
    let mut redis = RedisServer::start().await;
    let b1 = backend_with("b1", |_| {}).await;
    let route = r#"rate_limit = { key = "route", rate = 3, per = "1m", burst = 3 }"#;
    let toml = format!(
        "{}\n[global_rate_limit]\nredis = \"{}\"\n",
        web(&[&b1], route, ""),
        redis.url
    );
    let a = balancer(&toml).await;
    let b = balancer(&toml).await;
    // Both connect in the background at start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = keepalive_client();
    let status = |server: &Server| {
        let url = format!("http://{}/", address(server, "web"));
        let request = client.get(url);
        async move { within(request.send()).await.unwrap().status().as_u16() }
    };
    assert_eq!(status(&a).await, 200);
    assert_eq!(status(&a).await, 200);
    assert_eq!(status(&b).await, 200);
    assert_eq!(
        status(&b).await,
        429,
        "the fleet's bucket of 3 is spent (local buckets would allow 6)"
    );
    let errors = "switchyard_rate_limit_backend_errors_total";
    assert_eq!(metric_of(&a, errors).await, 0.0);

    redis.stop();
    let started = std::time::Instant::now();
    assert_eq!(
        status(&a).await,
        200,
        "the local bucket decides while redis is down"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(metric_of(&a, errors).await >= 1.0);
}

#[tokio::test]
async fn an_error_rate_over_the_window_ejects_once_the_volume_is_there() {
    let b1 = backend_with("b1", |_| {}).await;
    let b2 = backend_with("b2", |_| {}).await;
    // Every other answer fails: never five in a row, but 50% over the window.
    let flaky = backend_with("flaky", |a| a.error_rate = 0.5).await;
    let outlier = "  [cluster.outlier]\n  consecutive_5xx = 0\n  consecutive_gateway_failures = 0\n  error_rate = 0.3\n  min_requests = 10\n  window = \"30s\"";
    let server = balancer(&web(&[&b1, &b2, &flaky], "", outlier)).await;
    let seen = send_many(&server, "/", 90).await;
    let flaky_answers: usize = seen
        .iter()
        .filter(|((_, backend), _)| backend == "flaky")
        .map(|(_, n)| n)
        .sum();
    assert!(
        (10..30).contains(&flaky_answers),
        "ejected once min_requests was reached: {seen:?}"
    );
    assert_eq!(endpoint_json(&server, "flaky").await["state"], "ejected");
    let series =
        r#"switchyard_ejections_total{cluster="app",endpoint="flaky",reason="error_rate"}"#;
    assert_eq!(metric_of(&server, series).await, 1.0);
}
