//! HTTP/2 client connections, served by the proxy's own HTTP/2 server.
//!
//! The h2 crate's server did more than a proxy needs per request (a stream store shared
//! behind a lock, prioritisation, a frame buffer per stream, a task-to-connection handoff
//! for every frame) and answered several of its own errors its own way. Here one task
//! owns the connection: it reads and checks frames ([`conn`]), decodes header blocks with
//! our HPACK decoder into request heads ([`request`]), runs each stream through the
//! pipeline as a future polled only when woken ([`tasks`]), feeds request bodies through
//! bounded channels ([`body`]), and writes response heads and bodies within the client's
//! windows, all frames of a turn in one write.
//!
//! Kept from before: the listener's stream, window and header-list limits; a `Date` and a
//! `Content-Length` (when the body's length is known) on every response; request bodies
//! whose window reopens only as they are read (a slow upstream pushes back on the client);
//! responses within the client's windows; trailers both ways; a client's RST_STREAM
//! cancelling the request; `100 Continue` sent at once for a request that expects it.
//! Shutdown sends GOAWAY(2^31-1) and a PING, then GOAWAY(last stream id) when the PING
//! comes back (or after [`PING_WAIT`]), lets open streams finish, and drops what is left
//! when the drain time ends. A connection without open streams for `idle_timeout` is sent
//! GOAWAY and closed; one whose client takes no byte for `idle_timeout` while frames wait
//! for its socket or streams for its window is closed at once (it reads nothing more).
//! Every close that follows a GOAWAY lingers (reads and drops for a
//! bounded time, as HTTP/1.1's does), so the client receives the GOAWAY rather than a
//! reset.

pub mod body;
pub mod conn;
pub mod request;
pub mod scripted;
pub mod tasks;

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;
use tracing::debug;

pub use self::body::ClientH2Body;
use self::conn::{Connection, Ended, Limits};
use super::body::{ClientBody, ResponseBody};
use super::pipeline::{self, ClientRequest, Downstream};
use super::read_buf::{CLOSE_WAIT, LINGER_BUDGET};
use crate::runtime::shutdown::{Phase, Shutdown};

/// The HTTP/2 client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long the first GOAWAY's PING may take to come back before the second GOAWAY.
pub const PING_WAIT: Duration = Duration::from_secs(1);

/// Serves one HTTP/2 connection until the client closes it, it fails, it sits idle, or
/// shutdown ends it. `read` holds bytes already read from `stream` (the preface, or part
/// of it, when the cleartext port told HTTP/2 from HTTP/1.1).
pub async fn serve<S>(
    downstream: Arc<Downstream>,
    mut stream: S,
    mut read: BytesMut,
    shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &downstream.listener.config;
    let limits = Limits {
        max_concurrent_streams: config.http2_max_concurrent_streams,
        stream_window: config.http2_initial_stream_window,
        connection_window: config.http2_initial_connection_window,
        max_header_list: u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX),
    };
    let idle_timeout = config.idle_timeout;
    let mut closed = shutdown.reached(Phase::Closed);
    let preface = tokio::time::timeout(
        config.header_read_timeout,
        read_preface(&mut stream, &mut read),
    );
    tokio::select! {
        outcome = preface => match outcome {
            Ok(Ok(true)) => read.advance(PREFACE.len()),
            Ok(Ok(false)) => {
                debug!(listener = %downstream.listener.name, "not the HTTP/2 preface");
                return;
            }
            Ok(Err(error)) => {
                debug!(listener = %downstream.listener.name, %error, "HTTP/2 preface not received");
                return;
            }
            Err(_) => {
                downstream.listener.rejected.count("slow_head");
                return;
            }
        },
        () = &mut closed => return,
    }
    let listener = downstream.listener.name.clone();
    // Boxed before the stream's future is made, so the future holds a pointer.
    let start = move |request: Request<ClientBody>| {
        let request = Box::new(request.map(|body| pipeline::client_body(&downstream, body)));
        run(Arc::clone(&downstream), request)
    };
    let mut connection = Connection::new(stream, read, limits, start);
    let mut stop_accepting = shutdown.reached(Phase::StopAccepting);
    let mut stage = Stage::Serving;
    let mut timer = pin!(tokio::time::sleep(idle_timeout));
    // Since when the connection has had no open stream, and since when it has waited on a
    // client that takes no byte; each ends it after `idle_timeout` (the first with GOAWAY,
    // the second at once: that client reads nothing more).
    let mut idle_since = Some(Instant::now());
    let mut stalled_since = None;
    let ended = poll_fn(|cx| {
        loop {
            if Pin::new(&mut closed).poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            if stage == Stage::Serving && Pin::new(&mut stop_accepting).poll(cx).is_ready() {
                connection.announce_shutdown();
                stage = Stage::Announced;
                timer.as_mut().reset(Instant::now() + PING_WAIT);
            }
            if stage == Stage::Announced
                && (connection.shutdown_ping_acked() || timer.as_mut().poll(cx).is_ready())
            {
                connection.go_away();
                stage = Stage::GoingAway;
            }
            if let Poll::Ready(ended) = connection.poll_turn(cx) {
                return Poll::Ready(Some(ended));
            }
            if stage != Stage::Serving {
                return Poll::Pending;
            }
            match (connection.open_streams(), idle_since) {
                (0, None) => idle_since = Some(Instant::now()),
                (0, Some(_)) => {}
                (_, _) => idle_since = None,
            }
            // The clock is read only when a wait begins or bytes moved during one.
            let moved = connection.take_moved();
            if !connection.waits_on_client() {
                stalled_since = None;
            } else if stalled_since.is_none() || moved {
                stalled_since = Some(Instant::now());
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if stalled_since.is_some_and(|since| now >= since + idle_timeout) {
                debug!(listener = %listener, "HTTP/2 client took no byte for idle_timeout; closing");
                return Poll::Ready(None);
            }
            match idle_since {
                Some(since) if now >= since + idle_timeout => {
                    debug!(listener = %listener, "HTTP/2 connection idle; GOAWAY");
                    connection.go_away();
                    stage = Stage::GoingAway;
                }
                _ => {
                    let from = [idle_since, stalled_since].into_iter().flatten().min();
                    timer.as_mut().reset(from.unwrap_or(now) + idle_timeout);
                }
            }
        }
    })
    .await;
    let Some(ended) = ended else {
        return;
    };
    match ended {
        Ended::Closed => {}
        Ended::Error(reason, why) => debug!(%reason, why, "HTTP/2 connection closed with an error"),
        Ended::Io(error) => {
            debug!(%error, "HTTP/2 connection failed");
            return;
        }
    }
    // The last frames (a GOAWAY), then a lingering close, so the client's unread bytes
    // do not turn the close into a reset that destroys them; each step bounded.
    let flush = poll_fn(|cx| connection.poll_flush_all(cx));
    if tokio::time::timeout(CLOSE_WAIT, flush).await.is_err() {
        return;
    }
    let shutdown = poll_fn(|cx| connection.poll_shutdown(cx));
    if tokio::time::timeout(CLOSE_WAIT, shutdown).await.is_err() {
        return;
    }
    let mut budget = LINGER_BUDGET;
    let linger = poll_fn(|cx| connection.poll_discard(cx, &mut budget));
    let _ = tokio::time::timeout(CLOSE_WAIT, linger).await;
}

/// Where a connection stands with respect to shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Serving,
    /// GOAWAY(2^31-1) and the PING went out.
    Announced,
    /// GOAWAY(last stream) went out: the open streams finish, no new ones start.
    GoingAway,
}

/// Reads from `stream` into `read` until `read` begins with the client preface (`true`)
/// or with bytes that cannot begin it (`false`); nothing is removed. The cleartext port
/// tells HTTP/2 from HTTP/1.1 with it, and the HTTP/2 server checks its preface with it
/// (at once, when the bytes are already there).
pub async fn read_preface<S: AsyncRead + Unpin>(
    stream: &mut S,
    read: &mut BytesMut,
) -> std::io::Result<bool> {
    loop {
        let n = read.len().min(PREFACE.len());
        if read[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        if stream.read_buf(read).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// One request through the pipeline.
async fn run(downstream: Arc<Downstream>, request: ClientRequest) -> Response<ResponseBody> {
    match pipeline::handle(downstream, request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
