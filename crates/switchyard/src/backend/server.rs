//! Accept loops and connection tasks: HTTP/1.1 + h2c on one port, or raw TCP echo.
//!
//! Each connection runs in a task owned by its accept loop (a `JoinSet`), so dropping the
//! backend aborts everything; a graceful shutdown stops accepting, lets hyper finish in-flight
//! requests and waits a bounded time. A handler can ask its connection to be reset: the task
//! then sets SO_LINGER to 0 and drops the socket, which sends a real RST.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::echo;
use super::faults::Control;
use super::http::{ConnCtx, Shared, handle};
use super::wait_shutdown;

/// How long a graceful shutdown waits for open connections.
const GRACE: Duration = Duration::from_secs(5);

/// Makes the next close of `stream` (or of any other descriptor of its socket) send an RST.
pub(crate) fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// What a listener serves.
#[derive(Clone)]
pub(crate) enum Mode {
    /// HTTP/1.1 and prior-knowledge h2c.
    Http(Arc<Shared>),
    /// Raw TCP echo.
    TcpEcho(Control),
}

/// Accepts until shutdown, then drains.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    mode: Mode,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(1024);
    let builder = Arc::new(builder);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = wait_shutdown(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => match &mode {
                    Mode::Http(shared) => {
                        conns.spawn(http_connection(
                            stream,
                            Arc::clone(shared),
                            Arc::clone(&builder),
                            shutdown.clone(),
                        ));
                    }
                    Mode::TcpEcho(control) => {
                        conns.spawn(echo::tcp_connection(stream, control.clone()));
                    }
                },
                Err(e) => {
                    // Out of descriptors or a transient error: back off instead of spinning.
                    tracing::warn!(error = %e, "backend accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(GRACE, async { while conns.join_next().await.is_some() {} }).await;
}

async fn http_connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut shutdown: watch::Receiver<bool>,
) {
    shared.control.count_connection();
    let _ = stream.set_nodelay(true);
    // A second descriptor of the same socket, to set SO_LINGER after hyper owns the stream.
    let dup = socket2::SockRef::from(&stream).try_clone().ok();
    let ctx = Arc::new(ConnCtx::default());
    let svc_ctx = Arc::clone(&ctx);
    let svc = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        let ctx = Arc::clone(&svc_ctx);
        async move { Ok::<_, Infallible>(handle(shared, ctx, req).await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = ctx.reset.notified() => {
                if let Some(s) = &dup {
                    let _ = s.set_linger(Some(Duration::ZERO));
                }
                // Dropping the connection closes the stream's descriptor; `dup` is dropped
                // after it, and the last close sends the RST.
                return;
            }
            () = wait_shutdown(&mut shutdown), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
