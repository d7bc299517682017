//! HTTP/1.1 Upgrade (WebSocket): the request keeps its `Connection: upgrade` and `Upgrade`
//! headers on the way up; when the upstream answers 101, both connections are taken over
//! over (the client's from [`super::h1_server`], the upstream's from hyper) and bytes are relayed between them until either side closes or nothing moves
//! for the listener's `idle_timeout` (SPEC 3.1: upgraded connections are bounded by
//! `idle_timeout` after the 101).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::debug;

/// A client connection's byte stream, whatever carries it (TCP, a PROXY-headed or TLS
/// stream).
pub trait ClientIo: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> ClientIo for T {}

/// A client connection, type-erased.
pub type BoxedIo = Box<dyn ClientIo>;

/// An upgrade the HTTP/1.1 server found in a request head (`Upgrade` with a `Connection`
/// that lists `upgrade`, on HTTP/1.1, not CONNECT): the protocol asked for, and where the
/// server hands over the client's connection once it has written a `101 Switching
/// Protocols` (a request extension; dropped unused when the upstream did not switch).
#[derive(Clone)]
pub struct ClientUpgrade {
    protocol: HeaderValue,
    connection: Arc<Mutex<Option<oneshot::Receiver<BoxedIo>>>>,
}

impl std::fmt::Debug for ClientUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientUpgrade")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl ClientUpgrade {
    /// The extension for a request asking for `protocol`, and the sender the server hands
    /// the connection to.
    pub fn pair(protocol: HeaderValue) -> (ClientUpgrade, oneshot::Sender<BoxedIo>) {
        let (tx, rx) = oneshot::channel();
        let upgrade = ClientUpgrade {
            protocol,
            connection: Arc::new(Mutex::new(Some(rx))),
        };
        (upgrade, tx)
    }

    /// Resolves to the client's connection once the `101` was written to it.
    async fn upgraded(self) -> Result<BoxedIo, &'static str> {
        let receiver = self
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match receiver {
            Some(receiver) => receiver
                .await
                .map_err(|_| "the client connection ended before the switch"),
            None => Err("the client connection was already taken"),
        }
    }
}

/// Puts back the two headers hop-by-hop stripping removed.
pub fn restore_request_headers(headers: &mut HeaderMap, upgrade: &ClientUpgrade) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, upgrade.protocol.clone());
}

/// Relays between the two upgraded connections in a task of its own.
pub fn tunnel(client: ClientUpgrade, upstream: OnUpgrade, idle_timeout: Duration) {
    tokio::spawn(async move {
        let (client, upstream) = tokio::join!(client.upgraded(), upstream);
        let (client, upstream) = match (client, upstream) {
            (Ok(client), Ok(upstream)) => (client, upstream),
            (Err(error), _) => {
                debug!(error, "upgrade did not complete on the client side");
                return;
            }
            (_, Err(error)) => {
                debug!(%error, "upgrade did not complete on the upstream side");
                return;
            }
        };
        let activity = Arc::new(Activity::new());
        let mut client = Watched::new(client, Arc::clone(&activity));
        let mut upstream = Watched::new(TokioIo::new(upstream), Arc::clone(&activity));
        let relay = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::pin!(relay);
        loop {
            let idle_until = activity.last() + idle_timeout;
            tokio::select! {
                result = &mut relay => {
                    if let Err(error) = result {
                        debug!(%error, "upgraded connection ended with an error");
                    }
                    return;
                }
                () = tokio::time::sleep_until(idle_until) => {
                    if activity.last() + idle_timeout <= Instant::now() {
                        debug!("upgraded connection idle; closed");
                        return;
                    }
                }
            }
        }
    });
}

/// When either direction last moved a byte.
#[derive(Debug)]
struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream that records activity on every read and write.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    fn new(inner: T, activity: Arc<Activity>) -> Watched<T> {
        Watched { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_ready() {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if polled.is_ready() {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
