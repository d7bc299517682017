//! Serving HTTP clients: one cleartext port speaks HTTP/1.1 and h2c (prior knowledge),
//! told apart by the HTTP/2 connection preface. A PROXY header, when configured, is read
//! first. HTTP/1.1 connections go to [`super::h1_server`] (request hygiene,
//! `max_header_bytes`, `header_read_timeout`, `idle_timeout`); HTTP/2 connections go to
//! [`super::h2_server`] (the listener's stream and window limits, the rapid-reset bound,
//! every stream in the connection's task).
//!
//! An https listener reads the ClientHello first (with the L4 tier's parser, under the
//! same `header_read_timeout` as the whole handshake), so a client speaking plain HTTP to
//! it gets a short 400 and a log line instead of a hang, then hands the TLS handshake to
//! [`crate::tls::acceptor`] and the decrypted stream, HTTP/1.1 or h2 as ALPN chose, to
//! the same connection code as cleartext.

use std::sync::Arc;

use arc_swap::ArcSwap;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tracing::{debug, info};

use super::error::ProxyError;
use super::forwarding::Hop;
use super::h1_server;
use super::h2_server;
use super::listener::HttpListenerRuntime;
use super::pipeline::Downstream;
use super::rewind::Rewind;
use crate::admin::access_log::AccessLog;
use crate::listener::accept::{self, Admission, Admits, Admitted};
use crate::listener::per_ip::PerIpCounts;
use crate::listener::prelude::{self, Expect, PreludeError};
use crate::runtime::shutdown::{ConnectionTracker, Shutdown};

impl Admits for HttpListenerRuntime {
    fn admission(&self) -> Admission<'_> {
        Admission {
            name: &self.name,
            accepted: &self.accepted,
            active: &self.active,
            max_connections: self.config.max_connections,
            max_connections_per_ip: self.config.max_connections_per_ip,
            proxy_protocol: self.config.proxy_protocol,
            rejected: &self.rejected,
        }
    }
}

/// Where a connection's requests log, and whether paths keep their query.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// The access log.
    pub log: AccessLog,
    /// `[access_log] include_query`.
    pub include_query: bool,
}

/// Accepts HTTP clients on `socket` until shutdown stops accepting. `slot` holds the
/// listener in force: read for each connection, and again for each request.
pub async fn serve(
    socket: TcpListener,
    slot: Arc<ArcSwap<HttpListenerRuntime>>,
    per_ip: Arc<PerIpCounts>,
    log: LogSettings,
    shutdown: Shutdown,
    tracker: Arc<ConnectionTracker>,
) {
    let handler_shutdown = shutdown.clone();
    let current = {
        let slot = Arc::clone(&slot);
        move || Some(slot.load_full())
    };
    accept::run(
        socket,
        current,
        per_ip,
        shutdown,
        tracker,
        move |runtime, admitted| {
            serve_tcp(
                runtime,
                Arc::clone(&slot),
                admitted,
                log.clone(),
                handler_shutdown.clone(),
            )
        },
    )
    .await;
}

async fn serve_tcp(
    runtime: Arc<HttpListenerRuntime>,
    in_force: Arc<ArcSwap<HttpListenerRuntime>>,
    admitted: Admitted,
    log: LogSettings,
    shutdown: Shutdown,
) {
    let Admitted {
        mut stream,
        peer,
        local,
        slot,
        per_ip,
    } = admitted;
    let _ = stream.set_nodelay(true);
    let started = Instant::now();
    let tls = runtime.tls.clone();
    let (client, replay) = if runtime.config.proxy_protocol || tls.is_some() {
        let expect = Expect {
            proxy_protocol: runtime.config.proxy_protocol,
            client_hello: tls.is_some(),
        };
        match prelude::read(
            &mut stream,
            peer,
            local,
            expect,
            runtime.config.header_read_timeout,
        )
        .await
        {
            Ok(prelude) => (prelude.client, prelude.replay),
            Err(error) => {
                runtime.rejected.count(error.reason());
                if let Some(tls) = &tls {
                    refuse_before_handshake(&runtime.name, tls, &mut stream, peer, &error).await;
                } else {
                    debug!(listener = %runtime.name, %peer, %error, "connection refused");
                }
                return;
            }
        }
    } else {
        (peer, Vec::new())
    };
    let max_per_ip = runtime.config.max_connections_per_ip;
    let Some(_slot) = accept::client_slot(slot, &per_ip, client.ip(), max_per_ip) else {
        runtime.rejected.count("per_ip");
        return;
    };
    let Some(tls) = tls else {
        let downstream = Arc::new(Downstream {
            listener: runtime,
            slot: Some(Arc::clone(&in_force)),
            hop: Hop::new(client, local),
            scheme: "http",
            log: log.log,
            include_query: log.include_query,
            tls: None,
        });
        serve_cleartext(downstream, stream, replay, shutdown).await;
        return;
    };
    let deadline = started + runtime.config.header_read_timeout;
    let stream = Rewind::new(bytes::Bytes::from(replay), stream);
    let (stream, info) = match tls.handshake(stream, deadline).await {
        Ok(done) => done,
        Err(error) => {
            let reason = if error.reason() == "timeout" {
                "slow_head"
            } else {
                "tls"
            };
            runtime.rejected.count(reason);
            debug!(listener = %runtime.name, %client, %error, reason = error.reason(), "TLS handshake failed");
            return;
        }
    };
    let h2 = info.h2;
    let downstream = Arc::new(Downstream {
        listener: runtime,
        slot: Some(Arc::clone(&in_force)),
        hop: Hop::new(client, local),
        scheme: "https",
        log: log.log,
        include_query: log.include_query,
        tls: Some(info),
    });
    serve_stream(downstream, stream, h2, shutdown).await;
}

/// An https connection that never began a TLS handshake: counted, logged, and a client
/// that spoke plain HTTP is told so in a 400 before the close.
async fn refuse_before_handshake(
    listener: &str,
    tls: &crate::tls::acceptor::TlsListener,
    stream: &mut TcpStream,
    peer: std::net::SocketAddr,
    error: &PreludeError,
) {
    match error {
        PreludeError::NotTls(why) => {
            tls.count_error("not_tls");
            info!(listener, %peer, why, "not a TLS handshake on an https listener (plain HTTP?); answered 400 and closed");
            let answer = ProxyError::bad_request("plain HTTP sent to an HTTPS port").to_h1_bytes();
            let write = async {
                stream.write_all(&answer).await?;
                stream.shutdown().await
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), write).await;
        }
        PreludeError::Timeout(_) => {
            tls.count_error("timeout");
            debug!(listener, %peer, %error, "no ClientHello in time");
        }
        PreludeError::Closed(_) | PreludeError::Io(_) => {
            tls.count_error("eof");
            debug!(listener, %peer, %error, "closed before the TLS handshake");
        }
        PreludeError::ProxyProtocol(_) => {
            debug!(listener, %peer, %error, "connection refused");
        }
    }
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Tells HTTP/1.1 from h2c by the preface and serves the connection. A TLS ClientHello on
/// this cleartext port is refused at its first byte (logged, `reason="tls"`) rather than
/// left to time out as a malformed head.
async fn serve_cleartext<S>(
    downstream: Arc<Downstream>,
    mut stream: S,
    replay: Vec<u8>,
    shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = downstream.listener.config.header_read_timeout;
    let mut seen = BytesMut::from(&replay[..]);
    let detected =
        tokio::time::timeout(timeout, h2_server::read_preface(&mut stream, &mut seen)).await;
    if seen.first() == Some(&TLS_HANDSHAKE_RECORD) {
        downstream.listener.rejected.count("tls");
        info!(listener = %downstream.listener.name, client = %downstream.hop.peer, "TLS handshake on a cleartext http listener; closed");
        return;
    }
    let h2 = match detected {
        Ok(Ok(h2)) => h2,
        Ok(Err::<bool, std::io::Error>(_)) => return,
        Err(_) => {
            downstream.listener.rejected.count("slow_head");
            return;
        }
    };
    if h2 {
        h2_server::serve(downstream, stream, seen, shutdown).await;
    } else {
        h1_server::serve(downstream, Box::new(stream), seen, shutdown).await;
    }
}

/// Serves an already decided HTTP/1.1 or HTTP/2 stream (the TLS listener after ALPN).
pub async fn serve_stream<S>(downstream: Arc<Downstream>, stream: S, h2: bool, shutdown: Shutdown)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        h2_server::serve(downstream, stream, BytesMut::new(), shutdown).await;
    } else {
        h1_server::serve(downstream, Box::new(stream), BytesMut::new(), shutdown).await;
    }
}
