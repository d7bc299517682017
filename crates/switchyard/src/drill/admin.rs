//! The few admin API calls a drill makes (drain, undrain, reload, the cluster view), over
//! a minimal HTTP/1.1 client on loopback, each bounded by a timeout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

const TIMEOUT: Duration = Duration::from_secs(3);
/// The largest admin answer read.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Sends `method path` to the admin API; (status, body).
pub async fn call(
    admin: SocketAddr,
    method: http::Method,
    path: &str,
) -> Result<(u16, String), String> {
    tokio::time::timeout(TIMEOUT, call_unbounded(admin, method, path))
        .await
        .map_err(|_| format!("admin {path}: no answer within {TIMEOUT:?}"))?
}

async fn call_unbounded(
    admin: SocketAddr,
    method: http::Method,
    path: &str,
) -> Result<(u16, String), String> {
    let err = |e: &dyn std::fmt::Display| format!("admin {path}: {e}");
    let stream = tokio::net::TcpStream::connect(admin)
        .await
        .map_err(|e| err(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| err(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, admin.to_string())
        .body(Full::new(Bytes::new()))
        .map_err(|e| err(&e))?;
    let response = sender.send_request(request).await.map_err(|e| err(&e))?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| err(&e))?;
        if let Some(d) = frame.data_ref() {
            if buf.len() + d.len() > MAX_BODY {
                return Err(err(&"answer too large"));
            }
            buf.extend_from_slice(d);
        }
    }
    Ok((status, String::from_utf8_lossy(&buf).into_owned()))
}

/// Percent-encodes a path segment (endpoint and cluster names).
pub fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Each endpoint's state in `cluster`, from `GET /api/v1/clusters`.
pub fn states(body: &str, cluster: &str) -> BTreeMap<String, String> {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(body) else {
        return BTreeMap::new();
    };
    json["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"].as_str() == Some(cluster))
        .flat_map(|c| c["endpoints"].as_array().into_iter().flatten())
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["state"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_read_from_the_cluster_view() {
        let body = r#"{"clusters":[{"name":"x","endpoints":[{"name":"b9","state":"ejected"}]},
            {"name":"fleet","endpoints":[{"name":"b1","state":"healthy"},{"name":"b2","state":"draining"}]}]}"#;
        let s = states(body, "fleet");
        assert_eq!(s.len(), 2);
        assert_eq!(s["b2"], "draining");
        assert!(states("not json", "fleet").is_empty());
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("127.0.0.1:80"), "127.0.0.1%3A80");
        assert_eq!(segment("b1"), "b1");
    }
}
