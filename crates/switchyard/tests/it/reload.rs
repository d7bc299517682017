//! Hot reload over real sockets: atomic swap under load, invalid files kept out, endpoint
//! state carried over, listeners added and drained, operator weight.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard::backend::BackendHandle;
use switchyard::runtime::Server;

use crate::support::*;

/// The `web` listener routing everything to cluster `app` over `backends`, tagging each
/// response with `x-config: {tag}`.
fn config(backends: &[&BackendHandle], tag: &str, cluster_extra: &str) -> String {
    let addresses: Vec<_> = backends.iter().map(|b| b.local_addr()).collect();
    let names: Vec<&str> = backends.iter().map(|b| b.name()).collect();
    format!(
        r#"{WEB}
  [[listener.route]]
  cluster = "app"
  response_headers = {{ set = {{ "x-config" = "{tag}" }} }}
[[cluster]]
name = "app"
balance = "round-robin"
slow_start = "0s"
endpoints = {endpoints}
{cluster_extra}
"#,
        endpoints = endpoints(&addresses, &names)
    )
}

async fn clusters_json(server: &Server) -> Value {
    let (status, body) = admin_get(server, "/api/v1/clusters").await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

async fn endpoint_json(server: &Server, cluster: &str, endpoint: &str) -> Value {
    let clusters = clusters_json(server).await;
    clusters["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == cluster)
        .and_then(|c| {
            c["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == endpoint)
                .cloned()
        })
        .unwrap_or_else(|| panic!("{cluster}/{endpoint} missing: {clusters}"))
}

/// What the closed-loop clients saw.
#[derive(Debug, Default)]
struct LoadReport {
    sent: u64,
    failed: u64,
    tags: HashMap<String, u64>,
    max_latency: Duration,
}

/// Runs `workers` closed-loop clients against `url` until `stop`; half keep connections
/// alive, half open one per request.
async fn closed_loop(url: String, workers: usize, stop: Arc<AtomicBool>) -> LoadReport {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = if w % 2 == 0 {
            keepalive_client()
        } else {
            client()
        };
        let url = url.clone();
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut report = LoadReport::default();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                report.sent += 1;
                match client.get(&url).send().await {
                    Ok(response) if response.status() == 200 => {
                        let tag = response
                            .headers()
                            .get("x-config")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("none")
                            .to_owned();
                        if response.bytes().await.is_err() {
                            report.failed += 1;
                        }
                        *report.tags.entry(tag).or_default() += 1;
                    }
                    Ok(response) => {
                        eprintln!("failed: status {}", response.status());
                        report.failed += 1;
                    }
                    Err(error) => {
                        eprintln!("failed: {error}");
                        report.failed += 1;
                    }
                }
                report.max_latency = report.max_latency.max(started.elapsed());
            }
            report
        }));
    }
    let mut total = LoadReport::default();
    for task in tasks {
        let r = task.await.unwrap();
        total.sent += r.sent;
        total.failed += r.failed;
        total.max_latency = total.max_latency.max(r.max_latency);
        for (tag, n) in r.tags {
            *total.tags.entry(tag).or_default() += n;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_lose_no_request() {
    let backends = http_backends(3).await;
    let [b1, b2, b3] = [&backends[0], &backends[1], &backends[2]];
    let a = config(&[b1, b2], "a", "");
    let b = config(&[b2, b3], "b", "");
    let file = ConfigFile::new("reload-under-load", &a);
    let server = balancer_from_file(&file).await;
    let url = format!("http://{}/", address(&server, "web"));

    // Baseline: the same load without reloads.
    let stop = Arc::new(AtomicBool::new(false));
    let baseline = tokio::spawn(closed_loop(url.clone(), 8, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let baseline = within(baseline).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(closed_loop(url, 8, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..20 {
        file.write(if i % 2 == 0 { &b } else { &a });
        let (status, body) = admin_reload(&server).await;
        assert_eq!(status, 200, "reload {i}: {body}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let report = within(load).await.unwrap();
    eprintln!(
        "reload under load: {} requests, {} failed, max latency {:?} (baseline {:?} over {} requests), tags {:?}",
        report.sent,
        report.failed,
        report.max_latency,
        baseline.max_latency,
        baseline.sent,
        report.tags
    );
    assert_eq!(baseline.failed, 0);
    assert_eq!(report.failed, 0, "{report:?}");
    assert!(report.sent > 500, "{report:?}");
    assert!(
        report.tags.get("a").is_some_and(|n| *n > 50)
            && report.tags.get("b").is_some_and(|n| *n > 50),
        "both configurations served: {report:?}"
    );
    assert_eq!(
        metric_of(
            &server,
            r#"switchyard_config_reloads_total{result="success"}"#
        )
        .await,
        20.0
    );
    // The last reload (back to a) dropped b3: its series are gone, b1's are back.
    let (_, metrics) = admin_get(&server, "/metrics").await;
    assert!(!metrics.contains(r#"endpoint="b3""#), "b3's series pruned");
    assert!(metrics.contains(r#"endpoint="b1""#));
    let (_, reloads) = admin_get(&server, "/api/v1/reloads").await;
    let reloads: Value = serde_json::from_str(&reloads).unwrap();
    let list = reloads["reloads"].as_array().unwrap();
    assert_eq!(list.len(), 20);
    assert_eq!(list[0]["result"], "success");
    assert_eq!(list[0]["trigger"], "api");
}

#[tokio::test]
async fn an_invalid_file_is_refused_with_every_error_and_changes_nothing() {
    let backends = http_backends(1).await;
    let good = config(&[&backends[0]], "good", "");
    let file = ConfigFile::new("reload-invalid", &good);
    let server = balancer_from_file(&file).await;
    let bad = good
        .replace("balance = \"round-robin\"", "balance = \"fastest\"")
        .replace("slow_start = \"0s\"", "slow_start = \"soon\"");
    file.write(&bad);
    let (status, body) = admin_reload(&server).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["result"], "failure");
    let errors: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("cluster[0].balance")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("cluster[0].slow_start")),
        "{errors:?}"
    );
    assert!(
        errors.iter().all(|e| e.contains("reload-invalid.toml:")),
        "{errors:?}"
    );
    assert_eq!(
        metric_of(
            &server,
            r#"switchyard_config_reloads_total{result="failure"}"#
        )
        .await,
        1.0
    );
    let response = within(
        keepalive_client()
            .get(format!("http://{}/", address(&server, "web")))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-config"], "good");
    let (_, reloads) = admin_get(&server, "/api/v1/reloads").await;
    assert!(reloads.contains("cluster[0].balance"), "{reloads}");
}

#[tokio::test]
async fn an_ejected_endpoint_stays_ejected_with_its_backoff_after_a_reload() {
    let mut failing_args = switchyard::backend::BackendArgs::for_test("failing");
    failing_args.error_rate = 1.0;
    let failing = backend(failing_args).await;
    let good = backend(switchyard::backend::BackendArgs::for_test("good")).await;
    let outlier = "[cluster.outlier]\nconsecutive_5xx = 3\nmax_ejection_percent = 50";
    let file = ConfigFile::new("reload-ejected", &config(&[&failing, &good], "a", outlier));
    let server = balancer_from_file(&file).await;
    let client = keepalive_client();
    let url = format!("http://{}/", address(&server, "web"));
    for _ in 0..8 {
        within(client.get(&url).send()).await.unwrap();
    }
    let before = endpoint_json(&server, "app", "failing").await;
    assert_eq!(before["state"], "ejected", "{before}");
    assert_eq!(before["ejections"], 1);

    // A reload that changes the route and adds an endpoint keeps the ejection as it was.
    let extra = backend(switchyard::backend::BackendArgs::for_test("extra")).await;
    file.write(&config(&[&failing, &good, &extra], "b", outlier));
    let (status, body) = admin_reload(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["changes"]["endpoints"]["added"],
        serde_json::json!(["app/extra"])
    );
    let after = endpoint_json(&server, "app", "failing").await;
    assert_eq!(after["state"], "ejected", "{after}");
    assert_eq!(after["ejections"], 1);
    assert_eq!(after["ejected_until"], before["ejected_until"]);
    // Requests after the reload never reach it.
    failing.control().reset_counters();
    for _ in 0..12 {
        let response = within(client.get(&url).send()).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-config"], "b");
    }
    assert_eq!(failing.control().requests(), 0);
}

#[tokio::test]
async fn a_reload_binds_new_listeners_and_drains_removed_ones() {
    let backends = http_backends(1).await;
    let one = config(&[&backends[0]], "a", "");
    let two = format!(
        "{one}\n[[listener]]\nname = \"web2\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\ncluster = \"app\"\n"
    );
    let file = ConfigFile::new("reload-listeners", &two);
    let server = balancer_from_file(&file).await;
    let web = address(&server, "web");
    let web2 = address(&server, "web2");
    let client = keepalive_client();
    let response = within(client.get(format!("http://{web2}/")).send())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // web2 goes away: a keep-alive connection gets `Connection: close` on its next
    // response, and new connections are refused once it has drained.
    let mut open = within(tokio::net::TcpStream::connect(web2)).await.unwrap();
    file.write(&one);
    let (status, body) = admin_reload(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["changes"]["listeners"]["removed"],
        serde_json::json!(["web2"])
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    within(open.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n"))
        .await
        .unwrap();
    let mut answer = Vec::new();
    within(open.read_to_end(&mut answer)).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    let refused = async {
        loop {
            if tokio::net::TcpStream::connect(web2).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    within(refused).await;
    let (_, listeners) = admin_get(&server, "/api/v1/listeners").await;
    assert!(!listeners.contains("web2"), "{listeners}");
    // The kept listener kept its port.
    assert_eq!(address(&server, "web"), web);

    // And it comes back on a new socket.
    file.write(&two);
    assert_eq!(admin_reload(&server).await.0, 200);
    let web2 = address(&server, "web2");
    let response = within(client.get(format!("http://{web2}/")).send())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_port_in_use_refuses_the_whole_reload() {
    let backends = http_backends(1).await;
    let one = config(&[&backends[0]], "a", "");
    let file = ConfigFile::new("reload-port", &one);
    let server = balancer_from_file(&file).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap();
    let with_taken = format!(
        "{}\n[[listener]]\nname = \"web2\"\nlisten = \"{port}\"\nprotocol = \"http\"\ncluster = \"app\"\n",
        one.replace("x-config\" = \"a\"", "x-config\" = \"b\"")
    );
    file.write(&with_taken);
    let (status, body) = admin_reload(&server).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("web2"), "{body}");
    let response = within(
        keepalive_client()
            .get(format!("http://{}/", address(&server, "web")))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.headers()["x-config"], "a", "the old routes stay");
}

#[tokio::test]
async fn operator_weight_steers_traffic_is_validated_and_survives_a_reload() {
    let backends = http_backends(2).await;
    let [b1, b2] = [&backends[0], &backends[1]];
    let file = ConfigFile::new("reload-weight", &config(&[b1, b2], "a", ""));
    let server = balancer_from_file(&file).await;
    let admin = server.admin_address().unwrap();
    let put = |endpoint: &str, body: &'static str| {
        let url = format!("http://{admin}/api/v1/clusters/app/endpoints/{endpoint}/weight");
        async move {
            let response = within(
                client()
                    .put(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send(),
            )
            .await
            .unwrap();
            let status = response.status().as_u16();
            (status, within(response.json::<Value>()).await.unwrap())
        }
    };
    assert_eq!(put("b2", r#"{"weight": 10001}"#).await.0, 400);
    assert_eq!(put("b2", r#"{"weight": "x"}"#).await.0, 400);
    assert_eq!(put("b2", "not json").await.0, 400);
    assert_eq!(put("nope", r#"{"weight": 1}"#).await.0, 404);
    let url = format!("http://{admin}/api/v1/clusters/nope/endpoints/b1/weight");
    let response = within(client().put(url).body(r#"{"weight": 1}"#).send())
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let (status, body) = put("b2", r#"{"weight": 0}"#).await;
    assert_eq!((status, body["weight"].as_u64()), (200, Some(0)), "{body}");
    let client = keepalive_client();
    let url = format!("http://{}/", address(&server, "web"));
    let count_b2 = || async {
        b2.control().reset_counters();
        for _ in 0..10 {
            within(client.get(&url).send()).await.unwrap();
        }
        b2.control().requests()
    };
    assert_eq!(count_b2().await, 0, "weight 0: no new requests");
    assert_eq!(
        endpoint_json(&server, "app", "b2").await["state"],
        "healthy"
    );

    // The operator's weight survives a reload...
    file.write(&config(&[b1, b2], "b", ""));
    assert_eq!(admin_reload(&server).await.0, 200);
    assert_eq!(count_b2().await, 0, "still weight 0 after the reload");
    // ...and setting the configured weight again clears it.
    let (status, body) = put("b2", r#"{"weight": 1}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        endpoint_json(&server, "app", "b2").await["operator_weight"],
        Value::Null
    );
    assert_eq!(count_b2().await, 5, "round robin over both again");
}

static NEXT: AtomicU64 = AtomicU64::new(0);

#[tokio::test]
async fn admin_token_guards_changes_but_not_reads() {
    let backends = http_backends(1).await;
    let token_path = std::env::temp_dir().join(format!(
        "switchyard-it-token-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&token_path, "s3cret-token\n").unwrap();
    let toml = config(&[&backends[0]], "a", "").replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"",
            token_path.display()
        ),
    );
    let file = ConfigFile::new("reload-token", &toml);
    let server = balancer_from_file(&file).await;
    let admin = server.admin_address().unwrap();
    let reload = format!("http://{admin}/api/v1/reload");
    let anonymous = within(client().post(&reload).send()).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = within(client().post(&reload).bearer_auth("nope").send())
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let cross_site = within(
        client()
            .post(&reload)
            .bearer_auth("s3cret-token")
            .header("origin", "https://evil.example")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(cross_site.status(), 403);
    let drain = format!("http://{admin}/api/v1/clusters/app/endpoints/b1/drain");
    let form = within(
        client()
            .post(&drain)
            .bearer_auth("s3cret-token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("x=1")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(form.status(), 415);
    let ok = within(client().post(&reload).bearer_auth("s3cret-token").send())
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(admin_get(&server, "/api/v1/clusters").await.0, 200);
    let _ = std::fs::remove_file(token_path);
}
