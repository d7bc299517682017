//! `/ws`: a WebSocket echo over the HTTP/1.1 upgrade, to test a balancer's upgrade path.
//!
//! The handshake is answered here (101 with `Sec-WebSocket-Accept`); the upgraded connection is
//! then driven by tokio-tungstenite, which answers pings and close frames itself.

use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::body::{RespBody, full};
use super::http::json_response;
use super::wait_shutdown;

/// The largest message echoed (bounded memory).
const MAX_MESSAGE: usize = 4 << 20;

fn header_has(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Answers the WebSocket handshake and spawns the echo on the upgraded connection.
pub(crate) fn upgrade(
    req: &mut Request<Incoming>,
    shutdown: watch::Receiver<bool>,
) -> Response<RespBody> {
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let version_ok = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let (Some(key), true, true, true) = (
        key,
        version_ok,
        header_has(req, header::UPGRADE, "websocket"),
        header_has(req, header::CONNECTION, "upgrade"),
    ) else {
        let mut resp = json_response(
            StatusCode::UPGRADE_REQUIRED,
            &serde_json::json!({"error": "/ws expects a WebSocket (version 13) upgrade"}),
        );
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return resp;
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        echo(ws, shutdown).await;
    });
    let mut resp = Response::new(full(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

async fn echo<S>(mut ws: WebSocketStream<S>, mut shutdown: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            () = wait_shutdown(&mut shutdown) => {
                let _ = ws.close(None).await;
                return;
            }
        };
        match msg {
            None | Some(Err(_)) => return,
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                if ws.send(m).await.is_err() {
                    return;
                }
            }
            // Pongs to pings and the reply to a close are queued by tungstenite and written on
            // the next read; the stream then ends.
            Some(Ok(_)) => {}
        }
    }
}
