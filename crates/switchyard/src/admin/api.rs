//! The admin API's routes (SPEC section 5): one function per view, each reading the
//! snapshot and endpoint state that connections use, so what an operator sees is what
//! traffic sees. Changes (drain, weight, reload) go through the same objects requests
//! read, so they take effect for the next pick.
//!
//! Protection (SPEC 3.1): a `Host` other than the admin address or `localhost` is refused
//! (DNS rebinding); with `token_file`, every request that changes something needs
//! `Authorization: Bearer <token>`, may not come from another browser origin, and sends
//! its body as `application/json`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};

use super::dashboard;
use super::metrics::Format;
use crate::http::router::percent_decode;
use crate::runtime::clock;
use crate::runtime::reload::ReloadTrigger;
use crate::runtime::server::Shared;

/// The largest request body the admin API reads.
const MAX_BODY: usize = 64 * 1024;

/// The token non-GET requests must carry (`[admin] token_file`), if any.
#[derive(Debug, Clone, Default)]
pub struct AdminToken(Option<String>);

impl AdminToken {
    /// Reads `token_file` (surrounding whitespace trimmed; an empty file is an error).
    pub fn load(path: Option<&std::path::Path>) -> std::io::Result<AdminToken> {
        let Some(path) = path else {
            return Ok(AdminToken(None));
        };
        let token = std::fs::read_to_string(path)?.trim().to_owned();
        if token.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is empty", path.display()),
            ));
        }
        Ok(AdminToken(Some(token)))
    }

    /// Whether `headers` carry the token (always, without a token file). Compared in
    /// constant time.
    fn admits(&self, headers: &http::HeaderMap) -> bool {
        let Some(token) = &self.0 else { return true };
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        sent.len() == token.len()
            && sent
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

/// The response body type of every admin route.
pub type Body = Full<Bytes>;

/// One admin view.
type Route<B> = fn(&Shared, &Request<B>) -> Response<Body>;

/// Routes one admin request. `listen` is the admin's TCP address, for the `Host` check.
pub async fn handle<B>(
    shared: &Arc<Shared>,
    listen: Option<SocketAddr>,
    token: &AdminToken,
    request: Request<B>,
) -> Response<Body>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if !host_allowed(request.headers().get(header::HOST), listen) {
        return error(
            StatusCode::FORBIDDEN,
            "the Host header must name the admin address or localhost",
        );
    }
    let changes = request.method() != Method::GET && request.method() != Method::HEAD;
    if changes {
        if let Some(refusal) = refuse_change(token, listen, request.headers()) {
            return refusal;
        }
    }
    let path = request.uri().path().to_owned();
    if let Some(rest) = path.strip_prefix("/api/v1/clusters/") {
        let method = request.method().clone();
        let body = match read_body(request).await {
            Ok(body) => body,
            Err(refusal) => return refusal,
        };
        return endpoint_action(shared, &method, rest, &body);
    }
    if path == "/api/v1/reload" {
        if request.method() != Method::POST {
            return method_not_allowed("POST");
        }
        return reload(shared);
    }
    let route: Option<Route<B>> = match path.as_str() {
        dashboard::PAGE_PATH => Some(|_, _| dashboard::serve(&dashboard::PAGE)),
        dashboard::SCRIPT_PATH => Some(|_, _| dashboard::serve(&dashboard::SCRIPT)),
        dashboard::STYLE_PATH => Some(|_, _| dashboard::serve(&dashboard::STYLE)),
        "/healthz" => Some(|_, _| text(StatusCode::OK, "ok\n")),
        "/ready" => Some(ready),
        "/metrics" => Some(metrics),
        "/api/v1/listeners" => Some(listeners),
        "/api/v1/clusters" => Some(clusters),
        "/api/v1/config" => Some(config),
        "/api/v1/reloads" => Some(reloads),
        _ => None,
    };
    let Some(route) = route else {
        return error(StatusCode::NOT_FOUND, &format!("no admin route {path}"));
    };
    if changes {
        return method_not_allowed("GET, HEAD");
    }
    route(shared, &request)
}

/// The checks on a request that changes something (module docs); `None` admits it.
fn refuse_change(
    token: &AdminToken,
    listen: Option<SocketAddr>,
    headers: &http::HeaderMap,
) -> Option<Response<Body>> {
    if !token.is_set() {
        return None;
    }
    if !token.admits(headers) {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "this admin API needs Authorization: Bearer <token> ([admin] token_file)",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"switchyard-admin\""),
        );
        return Some(response);
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, host)| host);
        let same = host.is_some_and(|h| {
            let value = header::HeaderValue::from_str(h).ok();
            value.is_some_and(|v| host_allowed(Some(&v), listen))
        });
        if !same {
            return Some(error(
                StatusCode::FORBIDDEN,
                "cross-origin requests may not change the admin state",
            ));
        }
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.starts_with("application/json"));
    let has_body = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || headers.contains_key(header::TRANSFER_ENCODING);
    if has_body && !json {
        return Some(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the request body as Content-Type: application/json",
        ));
    }
    None
}

/// Reads a request body of at most [`MAX_BODY`] bytes.
async fn read_body<B>(request: Request<B>) -> Result<Bytes, Response<Body>>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("cannot read the request body (at most {MAX_BODY} bytes): {e}"),
        )),
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, &format!("use {allow}"));
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    response
}

/// `POST /api/v1/reload`: 200 with what changed, or 400 with every error (the
/// configuration in force stays).
fn reload(shared: &Arc<Shared>) -> Response<Body> {
    match shared.reload(ReloadTrigger::Api) {
        Ok(changes) => json_response(&json!({ "result": "success", "changes": changes })),
        Err(failure) => {
            let mut response = json_response(&json!({
                "result": "failure",
                "error": failure.message,
                "errors": failure.errors,
            }));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            response
        }
    }
}

fn reloads<B>(shared: &Shared, _: &Request<B>) -> Response<Body> {
    json_response(&json!({ "reloads": shared.reload_history() }))
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
        .load()
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
                        "weight": e.weight(),
                        "configured_weight": e.configured_weight(),
                        "operator_weight": e.has_operator_weight().then(|| e.weight()),
                        "effective_weight": (f64::from(e.weight()) * e.weight_factor(now)).round(),
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

/// What an endpoint route asks for.
enum EndpointAction {
    Drain(bool),
    Weight,
}

/// The largest weight (SPEC 3.1).
const MAX_WEIGHT: u64 = 10_000;

/// `{"weight": N}` with N an integer 0-10000.
fn parse_weight(body: &[u8]) -> Result<u32, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let weight = value
        .get("weight")
        .ok_or("the body must be {\"weight\": N}")?;
    weight
        .as_u64()
        .filter(|w| *w <= MAX_WEIGHT)
        .and_then(|w| u32::try_from(w).ok())
        .ok_or_else(|| format!("weight must be an integer from 0 to {MAX_WEIGHT}, not {weight}"))
}

/// `POST /api/v1/clusters/{cluster}/endpoints/{endpoint}/drain` and `.../undrain`, and
/// `PUT .../weight` with `{"weight": N}` (`{endpoint}`: the endpoint's name or address,
/// percent-encoded).
fn endpoint_action(shared: &Shared, method: &Method, rest: &str, body: &[u8]) -> Response<Body> {
    let parts: Vec<&str> = rest.split('/').collect();
    let [cluster, "endpoints", endpoint, action] = parts[..] else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no admin route /api/v1/clusters/{rest}"),
        );
    };
    let (action, allowed) = match action {
        "drain" => (EndpointAction::Drain(true), Method::POST),
        "undrain" => (EndpointAction::Drain(false), Method::POST),
        "weight" => (EndpointAction::Weight, Method::PUT),
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("no endpoint action {action:?}"),
            );
        }
    };
    if *method != allowed {
        return method_not_allowed(if allowed == Method::PUT {
            "PUT"
        } else {
            "POST"
        });
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
    let Some((index, found)) = cluster
        .endpoints()
        .iter()
        .enumerate()
        .find(|(_, e)| e.name == endpoint_name || e.address.to_string() == endpoint_name)
    else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no endpoint {endpoint_name:?} in cluster {cluster_name:?}"),
        );
    };
    let now = clock::now();
    match action {
        EndpointAction::Drain(draining) => {
            found.set_draining(draining, now);
            cluster.refresh(now);
            tracing::info!(cluster = %cluster_name, endpoint = %found.name, draining, "operator drain changed");
        }
        EndpointAction::Weight => {
            let weight = match parse_weight(body) {
                Ok(weight) => weight,
                Err(message) => return error(StatusCode::BAD_REQUEST, &message),
            };
            if let Err(e) = cluster.set_operator_weight(index, weight) {
                return error(StatusCode::BAD_REQUEST, &e.to_string());
            }
            tracing::info!(cluster = %cluster_name, endpoint = %found.name, weight, "operator weight changed");
        }
    }
    json_response(&json!({
        "cluster": cluster_name,
        "endpoint": found.name,
        "state": found.state_at(now).as_str(),
        "operator_drained": found.is_draining(),
        "weight": found.weight(),
        "configured_weight": found.configured_weight(),
    }))
}

fn config<B>(shared: &Shared, _: &Request<B>) -> Response<Body> {
    let snapshot = shared.snapshot.load();
    match serde_json::to_value(&*snapshot.config) {
        Ok(mut value) => {
            redact(&mut value);
            json_response(&value)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// What `/api/v1/config` shows instead of a secret.
const REDACTED: &str = "<redacted>";

/// Hides secrets in the effective configuration: a password in any URL (the Redis one),
/// and inline secret values. File paths stay (they are not the secrets themselves).
fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let secret = ["secret", "password", "token"]
                    .iter()
                    .any(|word| key.contains(word) && !key.ends_with("_file"));
                if secret && !v.is_null() {
                    *v = Value::from(REDACTED);
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(text) => {
            if let Some(hidden) = redact_url_password(text) {
                *text = hidden;
            }
        }
        _ => {}
    }
}

/// `scheme://user:password@host...` with the password replaced; `None` when there is none.
fn redact_url_password(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let (userinfo, host) = rest.split_once('@')?;
    if host.contains('/') && host.find('/') < rest.find('@') {
        return None;
    }
    let (user, _) = userinfo.split_once(':')?;
    Some(format!("{scheme}://{user}:{REDACTED}@{host}"))
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
    fn weights_are_integers_from_0_to_10000() {
        assert_eq!(parse_weight(br#"{"weight": 0}"#), Ok(0));
        assert_eq!(parse_weight(br#"{"weight": 10000}"#), Ok(10_000));
        for bad in [
            &br#"{"weight": 10001}"#[..],
            br#"{"weight": -1}"#,
            br#"{"weight": 1.5}"#,
            br#"{"weight": "3"}"#,
            br#"{"w": 3}"#,
            b"weight=3",
            b"",
        ] {
            assert!(
                parse_weight(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn url_passwords_and_inline_secrets_are_redacted() {
        let mut v = json!({
            "global_rate_limit": {"redis": "redis://:hunter2@10.0.0.5:6379/0"},
            "plain": "redis://10.0.0.5:6379",
            "jwt": {"secret": "s3cr3t", "secret_file": "/etc/k"},
            "listeners": [{"tls": {"key": "/etc/tls/key.pem"}}],
        });
        redact(&mut v);
        assert_eq!(
            v["global_rate_limit"]["redis"],
            "redis://:<redacted>@10.0.0.5:6379/0"
        );
        assert_eq!(v["plain"], "redis://10.0.0.5:6379");
        assert_eq!(v["jwt"]["secret"], "<redacted>");
        assert_eq!(v["jwt"]["secret_file"], "/etc/k");
        assert_eq!(v["listeners"][0]["tls"]["key"], "/etc/tls/key.pem");
    }

    #[test]
    fn the_token_is_compared_whole() {
        let token = AdminToken(Some("abc123".into()));
        let headers = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(
                header::AUTHORIZATION,
                header::HeaderValue::from_str(v).expect("value"),
            );
            h
        };
        assert!(token.admits(&headers("Bearer abc123")));
        assert!(!token.admits(&headers("Bearer abc12")));
        assert!(!token.admits(&headers("Bearer abc1234")));
        assert!(!token.admits(&headers("abc123")));
        assert!(!token.admits(&http::HeaderMap::new()));
        assert!(AdminToken(None).admits(&http::HeaderMap::new()));
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
