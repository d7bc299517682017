//! The admin API's routes (SPEC section 5): one function per view, each reading the
//! snapshot and endpoint state that connections use, so what an operator sees is what
//! traffic sees.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

use super::dashboard;
use super::metrics::Format;
use crate::http::router::percent_decode;
use crate::runtime::clock;
use crate::runtime::server::Shared;

/// The response body type of every admin route.
pub type Body = Full<Bytes>;

/// One admin view.
type Route<B> = fn(&Shared, &Request<B>) -> Response<Body>;

/// Routes one admin request. `listen` is the admin's TCP address, for the `Host` check.
pub fn handle<B>(
    shared: &Shared,
    listen: Option<SocketAddr>,
    request: &Request<B>,
) -> Response<Body> {
    if !host_allowed(request.headers().get(header::HOST), listen) {
        return error(
            StatusCode::FORBIDDEN,
            "the Host header must name the admin address or localhost",
        );
    }
    let path = request.uri().path();
    if let Some(rest) = path.strip_prefix("/api/v1/clusters/") {
        return endpoint_action(shared, request.method(), rest);
    }
    let route: Option<Route<B>> = match path {
        dashboard::PAGE_PATH => Some(|_, _| dashboard::serve(&dashboard::PAGE)),
        dashboard::SCRIPT_PATH => Some(|_, _| dashboard::serve(&dashboard::SCRIPT)),
        dashboard::STYLE_PATH => Some(|_, _| dashboard::serve(&dashboard::STYLE)),
        "/healthz" => Some(|_, _| text(StatusCode::OK, "ok\n")),
        "/ready" => Some(ready),
        "/metrics" => Some(metrics),
        "/api/v1/listeners" => Some(listeners),
        "/api/v1/clusters" => Some(clusters),
        "/api/v1/config" => Some(config),
        _ => None,
    };
    let Some(route) = route else {
        return error(StatusCode::NOT_FOUND, &format!("no admin route {path}"));
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    route(shared, request)
}

/// DNS-rebinding defence (SPEC 5): a browser tricked into talking to the admin API sends
/// the attacker's host name. IP literals and `localhost` are accepted; when the admin
/// listens on one specific address, an IP literal must be that address.
fn host_allowed(host: Option<&header::HeaderValue>, listen: Option<SocketAddr>) -> bool {
    let Some(host) = host else { return true };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let Ok(ip) = name.parse::<IpAddr>() else {
        return false;
    };
    match listen {
        Some(listen) if !listen.ip().is_unspecified() => ip == listen.ip() || ip.is_loopback(),
        _ => true,
    }
}

fn ready<B>(shared: &Shared, _: &Request<B>) -> Response<Body> {
    if shared.ready.load(Ordering::Acquire) {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

fn metrics<B>(shared: &Shared, request: &Request<B>) -> Response<Body> {
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    let mut response = Response::new(Body::from(shared.registry.render(format)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(format.content_type()),
    );
    response
}

fn listeners<B>(shared: &Shared, _: &Request<B>) -> Response<Body> {
    let listeners: Vec<Value> = shared
        .listeners
        .iter()
        .filter(|l| l.name != "admin")
        .map(|l| json!({ "name": l.name, "protocol": l.protocol, "address": l.address }))
        .collect();
    json_response(&json!({ "listeners": listeners }))
}

fn clusters<B>(shared: &Shared, _: &Request<B>) -> Response<Body> {
    let snapshot = shared.snapshot.load();
    let now = clock::now();
    let clusters: Vec<Value> = snapshot
        .clusters
        .iter()
        .map(|cluster| {
            let endpoints: Vec<Value> = cluster
                .endpoints()
                .iter()
                .map(|e| {
                    let health = cluster.config.health.as_ref().map(|_| {
                        if e.is_checked_healthy() {
                            "healthy"
                        } else {
                            "unhealthy"
                        }
                    });
                    let ejected_until = e.ejected_until(now).map(|until| {
                        let left = std::time::Duration::from_nanos(until - now);
                        unix_seconds(std::time::SystemTime::now() + left)
                    });
                    json!({
                        "name": e.name,
                        "address": e.address.to_string(),
                        "state": e.state_at(now).as_str(),
                        "weight": e.weight,
                        "effective_weight": (f64::from(e.weight) * e.weight_factor(now)).round(),
                        "in_flight": e.in_flight(),
                        "ewma_ms": e.latency_estimate_ns(now) / 1e6,
                        "success_rate": e.success_rate(),
                        "ejections": e.ejections(),
                        "ejected_until": ejected_until,
                        "operator_drained": e.is_draining(),
                        "health": health,
                    })
                })
                .collect();
            json!({
                "name": cluster.name(),
                "balance": cluster.config.balance.as_str(),
                "panic": cluster.in_panic(),
                "endpoints": endpoints,
            })
        })
        .collect();
    json_response(&json!({ "clusters": clusters }))
}

/// Seconds since the Unix epoch (the admin API's timestamps).
fn unix_seconds(at: std::time::SystemTime) -> f64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_secs_f64() * 1e3).round() / 1e3)
}

/// `POST /api/v1/clusters/{cluster}/endpoints/{endpoint}/drain` and `.../undrain`
/// (`{endpoint}`: the endpoint's name or address, percent-encoded).
fn endpoint_action(shared: &Shared, method: &Method, rest: &str) -> Response<Body> {
    let parts: Vec<&str> = rest.split('/').collect();
    let [cluster, "endpoints", endpoint, action] = parts[..] else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no admin route /api/v1/clusters/{rest}"),
        );
    };
    let draining = match action {
        "drain" => true,
        "undrain" => false,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("no endpoint action {action:?}"),
            );
        }
    };
    if method != Method::POST {
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return response;
    }
    let cluster_name = percent_decode(cluster).into_owned();
    let endpoint_name = percent_decode(endpoint).into_owned();
    let snapshot = shared.snapshot.load();
    let Some(cluster) = snapshot.cluster(&cluster_name) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no cluster {cluster_name:?}"),
        );
    };
    let Some(found) = cluster
        .endpoints()
        .iter()
        .find(|e| e.name == endpoint_name || e.address.to_string() == endpoint_name)
    else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no endpoint {endpoint_name:?} in cluster {cluster_name:?}"),
        );
    };
    let now = clock::now();
    found.set_draining(draining, now);
    cluster.refresh(now);
    tracing::info!(cluster = %cluster_name, endpoint = %found.name, draining, "operator drain changed");
    json_response(&json!({
        "cluster": cluster_name,
        "endpoint": found.name,
        "state": found.state_at(now).as_str(),
        "operator_drained": draining,
    }))
}

fn config<B>(shared: &Shared, _: &Request<B>) -> Response<Body> {
    let snapshot = shared.snapshot.load();
    match serde_json::to_value(&*snapshot.config) {
        Ok(value) => json_response(&value),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn json_response(value: &Value) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = json_response(&json!({ "error": message }));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(host: &str, listen: &str) -> bool {
        let value = header::HeaderValue::from_str(host).expect("header");
        host_allowed(Some(&value), Some(listen.parse().expect("addr")))
    }

    #[test]
    fn host_check_refuses_names_other_than_localhost() {
        assert!(allowed("localhost:9901", "127.0.0.1:9901"));
        assert!(allowed("127.0.0.1:9901", "127.0.0.1:9901"));
        assert!(allowed("[::1]:9901", "127.0.0.1:9901"));
        assert!(allowed("10.1.2.3:9901", "0.0.0.0:9901"));
        assert!(!allowed("10.1.2.3:9901", "127.0.0.1:9901"));
        assert!(!allowed("evil.example:9901", "127.0.0.1:9901"));
        assert!(!allowed("evil.example", "0.0.0.0:9901"));
    }
}
