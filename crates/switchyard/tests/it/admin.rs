//! The admin API over a real socket: readiness, metrics from startup, JSON views.
#![allow(clippy::unwrap_used)]

use serde_json::Value;

use crate::support::*;

async fn one_cluster_balancer() -> (
    switchyard::runtime::Server,
    Vec<switchyard::backend::BackendHandle>,
) {
    let backends = echo_backends(2).await;
    let addresses: Vec<_> = backends.iter().map(|b| b.local_addr()).collect();
    let server = balancer(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "pg"
listen = "127.0.0.1:0"
protocol = "tcp"
cluster = "db"
[[cluster]]
name = "db"
balance = "least-request"
endpoints = {}
"#,
        endpoints(&addresses, &["db-1", "db-2"])
    ))
    .await;
    (server, backends)
}

#[tokio::test]
async fn healthz_and_ready_answer_once_listeners_are_bound() {
    let (server, _backends) = one_cluster_balancer().await;
    assert_eq!(admin_get(&server, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(admin_get(&server, "/ready").await, (200, "ready\n".into()));
}

#[tokio::test]
async fn every_spec_family_and_config_series_is_exposed_from_startup() {
    let (server, _backends) = one_cluster_balancer().await;
    let (status, text) = admin_get(&server, "/metrics").await;
    assert_eq!(status, 200);
    for family in [
        "requests_total",
        "request_duration_seconds",
        "upstream_request_duration_seconds",
        "added_latency_seconds",
        "endpoint_state",
        "endpoint_in_flight",
        "ejections_total",
        "retries_total",
        "retry_budget_exhausted_total",
        "hedges_total",
        "shed_total",
        "rate_limited_total",
        "connections_active",
        "connections_rejected_total",
        "tls_handshakes_total",
        "tls_handshake_errors_total",
        "tls_certificate_expiry_timestamp_seconds",
        "health_checks_total",
        "upstream_pool_connections",
        "l4_flows_active",
        "bytes_total",
        "config_reloads_total",
        "rate_limit_backend_errors_total",
        "xdp_packets_total",
        "xdp_bytes_total",
        "xdp_flow_table_entries",
        "access_log_dropped_total",
    ] {
        assert!(
            text.contains(&format!("# HELP switchyard_{family} ")),
            "HELP {family}"
        );
        assert!(
            text.contains(&format!("# TYPE switchyard_{family} ")),
            "TYPE {family}"
        );
    }
    for series in [
        "switchyard_endpoint_state{cluster=\"db\",endpoint=\"db-1\",state=\"healthy\"} 1",
        "switchyard_endpoint_state{cluster=\"db\",endpoint=\"db-1\",state=\"ejected\"} 0",
        "switchyard_endpoint_in_flight{cluster=\"db\",endpoint=\"db-2\"} 0",
        "switchyard_connections_active{listener=\"pg\"} 0",
        "switchyard_connections_rejected_total{listener=\"pg\",reason=\"max_connections\"} 0",
        "switchyard_bytes_total{listener=\"pg\",direction=\"rx\"} 0",
        "switchyard_shed_total{cluster=\"db\",reason=\"pending\"} 0",
        "switchyard_retry_budget_exhausted_total{cluster=\"db\"} 0",
        "switchyard_ejections_total{cluster=\"db\",endpoint=\"db-1\",reason=\"latency\"} 0",
        "switchyard_config_reloads_total{result=\"success\"} 0",
        "switchyard_rate_limit_backend_errors_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == series),
            "missing series line: {series}"
        );
    }
}

#[tokio::test]
async fn metrics_speak_openmetrics_when_asked() {
    let (server, _backends) = one_cluster_balancer().await;
    let url = format!("http://{}/metrics", server.admin_address().unwrap());
    let response = within(
        client()
            .get(url)
            .header("accept", "application/openmetrics-text; version=1.0.0")
            .send(),
    )
    .await
    .unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = within(response.text()).await.unwrap();
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test]
async fn clusters_view_has_the_spec_shape() {
    let (server, backends) = one_cluster_balancer().await;
    let (status, body) = admin_get(&server, "/api/v1/clusters").await;
    assert_eq!(status, 200);
    let json: Value = serde_json::from_str(&body).unwrap();
    let cluster = &json["clusters"][0];
    assert_eq!(cluster["name"], "db");
    assert_eq!(cluster["balance"], "least-request");
    let endpoint = &cluster["endpoints"][0];
    assert_eq!(endpoint["name"], "db-1");
    assert_eq!(endpoint["address"], backends[0].local_addr().to_string());
    assert_eq!(endpoint["state"], "healthy");
    assert_eq!(endpoint["weight"], 1);
    assert_eq!(endpoint["in_flight"], 0);
    for key in [
        "effective_weight",
        "ewma_ms",
        "success_rate",
        "ejections",
        "ejected_until",
        "operator_drained",
        "health",
    ] {
        assert!(endpoint.get(key).is_some(), "endpoint has {key}");
    }
}

#[tokio::test]
async fn listeners_view_reports_the_bound_port() {
    let (server, _backends) = one_cluster_balancer().await;
    let (_, body) = admin_get(&server, "/api/v1/listeners").await;
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["listeners"][0]["name"], "pg");
    assert_eq!(json["listeners"][0]["protocol"], "tcp");
    assert_eq!(
        json["listeners"][0]["address"],
        address(&server, "pg").to_string()
    );
}

#[tokio::test]
async fn config_view_is_the_resolved_model() {
    let (server, _backends) = one_cluster_balancer().await;
    let (status, body) = admin_get(&server, "/api/v1/config").await;
    assert_eq!(status, 200);
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["clusters"][0]["connect_timeout"], "1s");
    assert_eq!(json["clusters"][0]["balance"], "least-request");
    assert_eq!(json["listeners"][0]["max_connections"], 100000);
}

#[tokio::test]
async fn unknown_paths_are_404_and_writes_are_405() {
    let (server, _backends) = one_cluster_balancer().await;
    assert_eq!(admin_get(&server, "/nope").await.0, 404);
    let url = format!("http://{}/api/v1/clusters", server.admin_address().unwrap());
    let response = within(client().post(url).send()).await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
}

#[tokio::test]
async fn a_foreign_host_header_is_refused() {
    let (server, _backends) = one_cluster_balancer().await;
    let url = format!("http://{}/api/v1/clusters", server.admin_address().unwrap());
    let response = within(client().get(url).header("host", "attacker.example").send())
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
}
