//! Pooled connections to one endpoint, HTTP/1.1 or HTTP/2.
//!
//! HTTP/1.1: a stack of idle connections (most recently used first, so the others can age
//! out), each taken for one request at a time and given back only after its response body
//! was read to the end. HTTP/2: a few shared connections, each carrying up to
//! `max_concurrent_streams_per_connection` streams. Both honour
//! `max_connections_per_endpoint` (a request that finds every connection busy waits at most
//! `connect_timeout` for one, then is shed), `max_requests_per_connection` (recycling) and
//! `pool_idle_timeout` / `pool_max_idle_per_endpoint` (idle connections beyond it are closed
//! once they have not been needed for a second, never the moment they come back: under a
//! burst that connection is about to be used again).
//!
//! With `[cluster.tls]` every connection is opened through [`UpstreamTls::connect`]; for
//! `protocol = "auto"` the first connection's ALPN answer decides whether the pool runs
//! HTTP/2 or HTTP/1.1 connections, and that choice is kept for the pool's life.
//!
//! A request that could not be written because a pooled connection turned out closed is
//! handed back untouched ([`SendError::request`]) so the caller can send it again on a
//! fresh connection, whatever its method (SPEC 3.1).
//!
//! HTTP/1.1 exchanges run in the request's own task ([`super::h1_client`]): the response
//! body carries the connection and checks it back in when it ends. An upgrade request
//! (WebSocket) instead gets a hyper client connection of its own, never pooled, so hyper
//! can hand both upgraded connections to the tunnel.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::header::UPGRADE;
use http::{Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;

use super::added_fields;
use super::body::RequestBody;
use super::h1_client::{Checkin, Connection, DirectBody, Exchange, HeadFailure};
use crate::admin::metrics::Gauge;
use switchyard_algo::resilience::{Limit, Limits};

use crate::cluster::connect;
use crate::cluster::endpoint::ConnectFailure;
use crate::config::model::{self, UpstreamProtocol};
use crate::tls::upstream::{TlsConnectError, TlsFailure, UpstreamStream, UpstreamTls};

/// [`EndpointPool::learned`]: no connection has answered ALPN yet.
const LEARNED_NOTHING: u8 = 0;
/// [`EndpointPool::learned`]: the upstream chose HTTP/1.1.
const LEARNED_H1: u8 = 1;
/// [`EndpointPool::learned`]: the upstream chose HTTP/2.
const LEARNED_H2: u8 = 2;

/// How one cluster's pools behave.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// HTTP/1.1 or HTTP/2 upstream.
    pub protocol: UpstreamProtocol,
    /// Bounds each connect.
    pub connect_timeout: Duration,
    /// TCP keepalive probes.
    pub tcp_keepalive: Option<Duration>,
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint.
    pub max_idle: usize,
    /// Connections per endpoint (`u32::MAX` = unlimited).
    pub max_connections: u32,
    /// Requests per connection before it is recycled (0 = unlimited).
    pub max_requests_per_connection: u32,
    /// HTTP/2 streams per connection (`u32::MAX` = what the server allows).
    pub max_streams: u32,
    /// The cluster's limits: its `max_connections` gauge counts the connections of every
    /// endpoint's pool; past it a new connection is refused at once.
    pub limits: Arc<Limits>,
    /// Re-encryption (`[cluster.tls]`).
    pub tls: Option<Arc<UpstreamTls>>,
}

impl PoolSettings {
    /// The settings a cluster's configuration asks for.
    pub fn of(
        cluster: &model::Cluster,
        tls: Option<Arc<UpstreamTls>>,
        limits: Arc<Limits>,
    ) -> PoolSettings {
        PoolSettings {
            protocol: cluster.protocol,
            connect_timeout: cluster.connect_timeout,
            tcp_keepalive: cluster.tcp_keepalive,
            idle_timeout: cluster.pool_idle_timeout,
            max_idle: cluster.pool_max_idle_per_endpoint as usize,
            max_connections: cluster
                .limits
                .max_connections_per_endpoint
                .unwrap_or(u32::MAX),
            max_requests_per_connection: cluster.max_requests_per_connection,
            max_streams: cluster
                .limits
                .max_concurrent_streams_per_connection
                .unwrap_or(u32::MAX),
            limits,
            tls,
        }
    }
}

/// Why an attempt on this endpoint failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// The connect failed: the request was never sent.
    Connect(ConnectFailure),
    /// Every connection was busy and none came free in time: never sent.
    PoolFull,
    /// HTTP/2 REFUSED_STREAM (or GOAWAY before processing): never processed.
    RefusedStream,
    /// The request went out and the connection broke before a response head.
    Reset,
    /// The request body failed (client went away, or `max_request_body` passed).
    RequestBody,
    /// The TLS handshake failed, or the upstream refused our certificate.
    Tls(TlsFailure),
}

/// A request on its way upstream. Boxed: it moves from the attempt loop through the send
/// into the exchange, and an async function keeps a slot the size of each argument and
/// each local it moves through for its whole life, so inline it would be copied several
/// times and would make every enclosing future (and its copies) kilobytes larger.
pub type UpstreamRequest = Box<Request<RequestBody>>;

/// A failed send; `request` is the request back when it was never written.
#[derive(Debug)]
pub struct SendError {
    /// What went wrong.
    pub error: UpstreamError,
    /// The request, untouched, when it can be sent again.
    pub request: Option<UpstreamRequest>,
}

impl SendError {
    /// `error` before `request` was written: it can go out again.
    fn unsent(error: UpstreamError, request: UpstreamRequest) -> SendError {
        SendError {
            error,
            request: Some(request),
        }
    }
}

/// The pool's metric handles (per cluster).
#[derive(Debug, Clone)]
pub struct PoolGauges {
    /// `upstream_pool_connections{state="idle"}`.
    pub idle: Gauge,
    /// `upstream_pool_connections{state="active"}`.
    pub active: Gauge,
}

/// Counts an open connection against its endpoint's and its cluster's limits until dropped.
#[derive(Debug)]
struct OpenSlot {
    open: Arc<AtomicU32>,
    limits: Arc<Limits>,
    freed: Arc<Notify>,
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.limits.release(Limit::Connections);
        self.freed.notify_one();
    }
}

/// Why no new connection may be opened now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoSlot {
    /// The endpoint is at `max_connections_per_endpoint`: a slot may come back soon.
    Endpoint,
    /// The cluster is at `max_connections`: refuse at once (a fast 503, never a queue).
    Cluster,
}

#[derive(Debug)]
struct IdleH1 {
    connection: Connection,
    since: Instant,
    served: u32,
    slot: OpenSlot,
}

impl IdleH1 {
    /// Still open and idle for less than `idle_timeout`.
    fn is_usable(&mut self, idle_timeout: Duration) -> bool {
        self.since.elapsed() < idle_timeout && self.connection.is_alive()
    }
}

/// Counts a connection as active until dropped.
#[derive(Debug)]
struct Active(Gauge);

impl Active {
    fn new(gauge: &Gauge) -> Active {
        gauge.inc();
        Active(gauge.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Where an HTTP/1.1 connection goes back when its exchange ended cleanly; dropped
/// instead, the connection closes and its slot is freed.
#[derive(Debug)]
struct PoolReturn {
    pool: Arc<EndpointPool>,
    /// Requests served on the connection, this one included.
    served: u32,
    slot: OpenSlot,
    _active: Active,
}

impl Checkin for PoolReturn {
    fn put_back(self: Box<Self>, connection: Connection) {
        let PoolReturn {
            pool, served, slot, ..
        } = *self;
        pool.put_back(IdleH1 {
            connection,
            since: Instant::now(),
            served,
            slot,
        });
    }
}

/// An upstream response body: read by the request's task from an HTTP/1.1 connection
/// (`Left`), or from a hyper connection (`Right`: HTTP/2, upgrades).
pub type UpstreamBody = Either<DirectBody, Incoming>;

#[derive(Debug)]
struct H2Connection {
    sender: http2::SendRequest<RequestBody>,
    streams: AtomicU32,
    served: AtomicU32,
    _slot: OpenSlot,
}

/// What a response holds of its upstream connection until the exchange is over; dropped
/// when the response body has ended (or was abandoned).
#[derive(Debug)]
pub enum Lease {
    /// HTTP/1.1: the response body itself carries the connection back to the pool.
    H1,
    /// An upgrade request's own hyper connection (never pooled): its place under the
    /// endpoint's connection limit, held until the exchange or the tunnel is over.
    Upgrade(UpgradeConnection),
    /// A stream on a shared HTTP/2 connection.
    H2(H2Stream),
}

/// An upgrade request's connection, counted against the limits while it lives.
#[derive(Debug)]
pub struct UpgradeConnection {
    _sender: http1::SendRequest<RequestBody>,
    _slot: OpenSlot,
    _active: Active,
}

/// One stream's share of an HTTP/2 connection.
#[derive(Debug)]
pub struct H2Stream {
    connection: Arc<H2Connection>,
    _active: Active,
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        self.connection.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for EndpointPool {
    fn drop(&mut self) {
        let idle = self.lock_idle().len();
        self.gauges.idle.add(-(idle as i64));
    }
}

/// Pooled connections to one endpoint.
#[derive(Debug)]
pub struct EndpointPool {
    address: SocketAddr,
    settings: Arc<PoolSettings>,
    idle: Mutex<Vec<IdleH1>>,
    h2: Mutex<Vec<Arc<H2Connection>>>,
    open: Arc<AtomicU32>,
    freed: Arc<Notify>,
    gauges: PoolGauges,
    /// `protocol = "auto"`: what ALPN chose (`LEARNED_*`).
    learned: AtomicU8,
}

impl EndpointPool {
    /// An empty pool for `address`.
    pub fn new(address: SocketAddr, settings: Arc<PoolSettings>, gauges: PoolGauges) -> Self {
        EndpointPool {
            address,
            settings,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(Vec::new()),
            open: Arc::new(AtomicU32::new(0)),
            freed: Arc::new(Notify::new()),
            gauges,
            learned: AtomicU8::new(LEARNED_NOTHING),
        }
    }

    /// Sends `request` and waits for the response head.
    pub async fn send(
        self: &Arc<Self>,
        request: UpstreamRequest,
    ) -> Result<(Response<UpstreamBody>, Lease), SendError> {
        if request.headers().contains_key(UPGRADE) {
            return Box::pin(self.send_upgrade(request)).await;
        }
        match self.settings.protocol {
            UpstreamProtocol::H2 => self.send_h2(request).await,
            UpstreamProtocol::Http1 => self.send_h1(request).await,
            UpstreamProtocol::Auto => match self.learned.load(Ordering::Acquire) {
                LEARNED_H2 => self.send_h2(request).await,
                LEARNED_H1 => self.send_h1(request).await,
                // Boxed, like every connect path below: a connect (TCP, maybe TLS) is
                // rare next to a pooled send and its future is large; kept inline it
                // would grow every request's future, which hyper's HTTP/2 server copies
                // when it spawns each stream.
                _ => match Box::pin(self.learn()).await {
                    Ok(true) => self.send_h2(request).await,
                    Ok(false) => self.send_h1(request).await,
                    Err(error) => Err(SendError {
                        error,
                        request: Some(request),
                    }),
                },
            },
        }
    }

    /// `protocol = "auto"` before any connection: opens one, keeps what ALPN chose, and
    /// pools the connection (as idle HTTP/1.1 or as a shared HTTP/2 connection). Says
    /// whether HTTP/2 was chosen.
    async fn learn(&self) -> Result<bool, UpstreamError> {
        let slot = self.reserve_slot().map_err(|_| UpstreamError::PoolFull)?;
        let (io, h2) = self.connect_io().await?;
        let learned = if h2 { LEARNED_H2 } else { LEARNED_H1 };
        self.learned.store(learned, Ordering::Release);
        if h2 {
            let sender = Self::handshake_h2(io).await?;
            self.lock_h2().push(Arc::new(H2Connection {
                sender,
                streams: AtomicU32::new(0),
                served: AtomicU32::new(0),
                _slot: slot,
            }));
        } else {
            self.put_back(IdleH1 {
                connection: Connection::new(io.into_inner()),
                since: Instant::now(),
                served: 0,
                slot,
            });
        }
        Ok(h2)
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut request: UpstreamRequest,
    ) -> Result<(Response<UpstreamBody>, Lease), SendError> {
        // A pooled connection may have been closed by the upstream while idle; a request
        // that could not be written on one goes out again, once, on a fresh connection.
        let mut fresh_only = false;
        loop {
            let (connection, served, slot, reused) = match self.checkout_h1(fresh_only).await {
                Ok(found) => found,
                Err(error) => {
                    return Err(SendError::unsent(error, request));
                }
            };
            let checkin = Box::new(PoolReturn {
                pool: Arc::clone(self),
                served: served + 1,
                slot,
                _active: Active::new(&self.gauges.active),
            });
            let exchange = match Exchange::start(connection, request, checkin) {
                Ok(exchange) => exchange,
                Err(unsendable) => {
                    return Err(SendError {
                        error: UpstreamError::RequestBody,
                        request: Some(unsendable),
                    });
                }
            };
            match exchange.head().await {
                Ok(response) => {
                    let response = response.map(Either::Left);
                    return Ok((response, Lease::H1));
                }
                Err(HeadFailure::Unsent(unsent)) if reused && !fresh_only => {
                    debug!(endpoint = %self.address, "pooled connection was closed; sending on a fresh one");
                    request = unsent;
                    fresh_only = true;
                }
                Err(HeadFailure::Unsent(unsent)) => {
                    return Err(SendError {
                        error: UpstreamError::Connect(ConnectFailure::Other),
                        request: Some(unsent),
                    });
                }
                Err(HeadFailure::RequestBody) => {
                    return Err(SendError {
                        error: UpstreamError::RequestBody,
                        request: None,
                    });
                }
                Err(HeadFailure::Upstream) => {
                    return Err(SendError {
                        error: UpstreamError::Reset,
                        request: None,
                    });
                }
                Err(HeadFailure::Tls(failure)) => {
                    return Err(SendError {
                        error: UpstreamError::Tls(failure),
                        request: None,
                    });
                }
            }
        }
    }

    /// An upgrade request (WebSocket) on a hyper connection of its own, so hyper can hand
    /// the upgraded connection to the tunnel; it never returns to the pool.
    async fn send_upgrade(
        self: &Arc<Self>,
        mut request: UpstreamRequest,
    ) -> Result<(Response<UpstreamBody>, Lease), SendError> {
        // hyper writes the map: the added fields go into it.
        added_fields::into_map(&mut request);
        let slot = match self.wait_for(|| self.try_slot()).await {
            Ok(slot) => slot,
            Err(error) => return Err(SendError::unsent(error, request)),
        };
        let sender = match self.connect_io().await {
            Ok((io, _)) => Self::handshake_h1(io).await,
            Err(error) => Err(error),
        };
        let mut sender = match sender {
            Ok(sender) => sender,
            Err(error) => {
                return Err(SendError::unsent(error, request));
            }
        };
        let active = Active::new(&self.gauges.active);
        match sender.try_send_request(*request).await {
            Ok(response) => {
                let lease = Lease::Upgrade(UpgradeConnection {
                    _sender: sender,
                    _slot: slot,
                    _active: active,
                });
                Ok((response.map(Either::Right), lease))
            }
            Err(mut failed) => {
                let unsent = failed.take_message().map(Box::new);
                let error = if unsent.is_some() {
                    UpstreamError::Connect(ConnectFailure::Other)
                } else {
                    classify(failed.error())
                };
                Err(SendError {
                    error,
                    request: unsent,
                })
            }
        }
    }

    /// An idle connection that is still usable, else a new one (waiting for a free slot
    /// when the endpoint is at `max_connections_per_endpoint`).
    async fn checkout_h1(
        &self,
        fresh_only: bool,
    ) -> Result<(Connection, u32, OpenSlot, bool), UpstreamError> {
        let found = self
            .wait_for(|| {
                if !fresh_only {
                    if let Some(idle) = self.take_idle() {
                        return Ok(Some(Ok(idle)));
                    }
                }
                Ok(self.try_slot()?.map(Err))
            })
            .await?;
        match found {
            Ok(idle) => Ok((idle.connection, idle.served, idle.slot, true)),
            Err(slot) => {
                let connection = Box::pin(self.connect_h1()).await?;
                Ok((connection, 0, slot, false))
            }
        }
    }

    /// A slot for a new connection: `None` while the endpoint is at
    /// `max_connections_per_endpoint` (one may come back soon), an error at the cluster's
    /// `max_connections` (a fast 503, never a queue).
    fn try_slot(&self) -> Result<Option<OpenSlot>, UpstreamError> {
        match self.reserve_slot() {
            Ok(slot) => Ok(Some(slot)),
            Err(NoSlot::Cluster) => Err(UpstreamError::PoolFull),
            Err(NoSlot::Endpoint) => Ok(None),
        }
    }

    /// Asks `attempt` again each time a connection comes back or closes, until it finds
    /// something, fails, or `connect_timeout` has passed (then the pool is full).
    async fn wait_for<T>(
        &self,
        mut attempt: impl FnMut() -> Result<Option<T>, UpstreamError>,
    ) -> Result<T, UpstreamError> {
        let deadline = Instant::now() + self.settings.connect_timeout;
        loop {
            if let Some(found) = attempt()? {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, self.freed.notified())
                .await
                .is_err()
            {
                return Err(UpstreamError::PoolFull);
            }
        }
    }

    fn take_idle(&self) -> Option<IdleH1> {
        let mut idle = self.lock_idle();
        while let Some(mut candidate) = idle.pop() {
            self.gauges.idle.dec();
            if candidate.is_usable(self.settings.idle_timeout) {
                return Some(candidate);
            }
        }
        None
    }

    fn put_back(&self, connection: IdleH1) {
        let limit = self.settings.max_requests_per_connection;
        if limit > 0 && connection.served >= limit {
            return;
        }
        let mut idle = self.lock_idle();
        // Drop the stalest first: the stack's bottom (the clock read when the connection
        // came back serves as now).
        let now = connection.since;
        let expired = idle
            .iter()
            .take_while(|c| now.saturating_duration_since(c.since) >= self.settings.idle_timeout)
            .count();
        idle.drain(..expired);
        self.gauges.idle.add(-(expired as i64));
        // Kept even past `pool_max_idle_per_endpoint`: during a burst a connection coming
        // back is about to be needed again, and closing it here only to open another a
        // moment later is the most expensive thing a pool can do. The sweep closes what
        // stays surplus ([`surplus`]).
        idle.push(connection);
        self.gauges.idle.inc();
        drop(idle);
        self.freed.notify_one();
    }

    /// Closes idle connections older than `pool_idle_timeout` and those beyond
    /// `pool_max_idle_per_endpoint` that sat idle for a whole [`SURPLUS_GRACE`] (run once a
    /// second), or every idle connection when `all` (the endpoint is draining). Shared
    /// HTTP/2 connections are let go too when `all`: streams still open on them finish,
    /// new ones go elsewhere.
    pub fn evict_expired(&self, all: bool) {
        let mut idle = self.lock_idle();
        let before = idle.len();
        idle.retain_mut(|c| !all && c.is_usable(self.settings.idle_timeout));
        let surplus = surplus(
            idle.iter().map(|c| c.since.elapsed()),
            idle.len(),
            self.settings.max_idle,
        );
        idle.drain(..surplus);
        self.gauges.idle.add(-((before - idle.len()) as i64));
        drop(idle);
        self.lock_h2().retain(|c| !all && !c.sender.is_closed());
    }

    fn reserve_slot(&self) -> Result<OpenSlot, NoSlot> {
        let settings = &self.settings;
        if settings.limits.try_acquire(Limit::Connections).is_err() {
            return Err(NoSlot::Cluster);
        }
        let max = settings.max_connections;
        let endpoint_full = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err();
        if endpoint_full {
            settings.limits.release(Limit::Connections);
            return Err(NoSlot::Endpoint);
        }
        Ok(OpenSlot {
            open: Arc::clone(&self.open),
            limits: Arc::clone(&settings.limits),
            freed: Arc::clone(&self.freed),
        })
    }

    /// A new connection (TLS with `[cluster.tls]`), and whether ALPN chose HTTP/2.
    async fn connect_io(&self) -> Result<(TokioIo<UpstreamStream>, bool), UpstreamError> {
        let settings = &self.settings;
        if let Some(tls) = &settings.tls {
            return match tls
                .connect(
                    self.address,
                    settings.connect_timeout,
                    settings.tcp_keepalive,
                )
                .await
            {
                Ok((stream, h2)) => Ok((TokioIo::new(UpstreamStream::Tls(Box::new(stream))), h2)),
                Err(error) => {
                    debug!(endpoint = %self.address, %error, "upstream TLS connect failed");
                    Err(match error {
                        TlsConnectError::Connect(failure, _) => UpstreamError::Connect(failure),
                        TlsConnectError::Tls(failure, _) => UpstreamError::Tls(failure),
                    })
                }
            };
        }
        match connect::tcp(
            self.address,
            settings.connect_timeout,
            settings.tcp_keepalive,
        )
        .await
        {
            Ok(stream) => Ok((TokioIo::new(UpstreamStream::Plain(stream)), false)),
            Err((failure, error)) => {
                debug!(endpoint = %self.address, %error, "upstream connect failed");
                Err(UpstreamError::Connect(failure))
            }
        }
    }

    async fn connect_h1(&self) -> Result<Connection, UpstreamError> {
        let (io, _) = self.connect_io().await?;
        Ok(Connection::new(io.into_inner()))
    }

    async fn handshake_h1(
        io: TokioIo<UpstreamStream>,
    ) -> Result<http1::SendRequest<RequestBody>, UpstreamError> {
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|_| UpstreamError::Connect(ConnectFailure::Other))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                debug!(%error, "upstream HTTP/1.1 connection ended with an error");
            }
        });
        Ok(sender)
    }

    async fn send_h2(
        self: &Arc<Self>,
        mut request: UpstreamRequest,
    ) -> Result<(Response<UpstreamBody>, Lease), SendError> {
        // hyper writes the map: the added fields go into it.
        added_fields::into_map(&mut request);
        let connection = match self.checkout_h2().await {
            Ok(connection) => connection,
            Err(error) => {
                return Err(SendError::unsent(error, request));
            }
        };
        let stream = H2Stream {
            connection: Arc::clone(&connection),
            _active: Active::new(&self.gauges.active),
        };
        let mut sender = connection.sender.clone();
        match sender.try_send_request(*request).await {
            Ok(response) => Ok((response.map(Either::Right), Lease::H2(stream))),
            Err(mut failed) => {
                let unsent = failed.take_message().map(Box::new);
                let error = if unsent.is_some() {
                    UpstreamError::RefusedStream
                } else {
                    classify(failed.error())
                };
                Err(SendError {
                    error,
                    request: unsent,
                })
            }
        }
    }

    /// A shared connection with a free stream, else a new connection; at the endpoint's
    /// connection limit the least busy one (the server queues or refuses the stream).
    async fn checkout_h2(&self) -> Result<Arc<H2Connection>, UpstreamError> {
        let max_streams = self.settings.max_streams;
        let recycle = self.settings.max_requests_per_connection;
        {
            let mut connections = self.lock_h2();
            connections.retain(|c| {
                !c.sender.is_closed()
                    && (recycle == 0 || c.served.load(Ordering::Acquire) < recycle)
            });
            if let Some(found) = connections
                .iter()
                .find(|c| c.streams.load(Ordering::Acquire) < max_streams)
            {
                return Ok(Self::take_stream(found));
            }
        }
        match self.reserve_slot() {
            Ok(slot) => {
                let sender = Box::pin(self.connect_h2()).await?;
                let connection = Arc::new(H2Connection {
                    sender,
                    streams: AtomicU32::new(0),
                    served: AtomicU32::new(0),
                    _slot: slot,
                });
                self.lock_h2().push(Arc::clone(&connection));
                Ok(Self::take_stream(&connection))
            }
            Err(_) => {
                let connections = self.lock_h2();
                connections
                    .iter()
                    .min_by_key(|c| c.streams.load(Ordering::Acquire))
                    .map(Self::take_stream)
                    .ok_or(UpstreamError::PoolFull)
            }
        }
    }

    fn take_stream(connection: &Arc<H2Connection>) -> Arc<H2Connection> {
        connection.streams.fetch_add(1, Ordering::AcqRel);
        connection.served.fetch_add(1, Ordering::AcqRel);
        Arc::clone(connection)
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<RequestBody>, UpstreamError> {
        let (io, _) = self.connect_io().await?;
        Self::handshake_h2(io).await
    }

    async fn handshake_h2(
        io: TokioIo<UpstreamStream>,
    ) -> Result<http2::SendRequest<RequestBody>, UpstreamError> {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(None)
            .handshake(io)
            .await
            .map_err(|_| UpstreamError::Connect(ConnectFailure::Other))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "upstream HTTP/2 connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn lock_idle(&self) -> MutexGuard<'_, Vec<IdleH1>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_h2(&self) -> MutexGuard<'_, Vec<Arc<H2Connection>>> {
        self.h2.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How long an idle HTTP/1.1 connection beyond `pool_max_idle_per_endpoint` is kept: one
/// that has not been needed for this long is surplus.
pub const SURPLUS_GRACE: Duration = Duration::from_secs(1);

/// How many idle connections to close from the bottom of the stack (the longest idle
/// first): those beyond `max_idle` that have been idle for at least [`SURPLUS_GRACE`].
/// `ages`: how long each has been idle, bottom first. Pure.
pub fn surplus(ages: impl Iterator<Item = Duration>, len: usize, max_idle: usize) -> usize {
    let excess = len.saturating_sub(max_idle);
    ages.take(excess)
        .take_while(|age| *age >= SURPLUS_GRACE)
        .count()
}

/// The class of a failed exchange, from hyper's error and the h2 reason under it.
fn classify(error: &hyper::Error) -> UpstreamError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(h2) = current.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return UpstreamError::RefusedStream;
            }
        }
        if current
            .downcast_ref::<super::body::BodyTooLarge>()
            .is_some()
        {
            return UpstreamError::RequestBody;
        }
        source = current.source();
    }
    if let Some(failure) = crate::tls::upstream::failure_of(error) {
        return UpstreamError::Tls(failure);
    }
    if error.is_user() || error.is_body_write_aborted() {
        return UpstreamError::RequestBody;
    }
    UpstreamError::Reset
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ages(secs: &[f64]) -> Vec<Duration> {
        secs.iter().map(|s| Duration::from_secs_f64(*s)).collect()
    }

    #[test]
    fn only_connections_beyond_the_limit_that_sat_idle_a_second_are_surplus() {
        // Within the limit: nothing, however old.
        assert_eq!(surplus(ages(&[9.0, 9.0]).into_iter(), 2, 2), 0);
        // Two beyond the limit, both idle for over a second: both.
        assert_eq!(surplus(ages(&[3.0, 2.0, 0.1, 0.0]).into_iter(), 4, 2), 2);
        // Beyond the limit but just returned (a burst): kept.
        assert_eq!(surplus(ages(&[0.5, 0.2, 0.1, 0.0]).into_iter(), 4, 2), 0);
        // The oldest goes, the one returned half a second ago stays.
        assert_eq!(surplus(ages(&[1.5, 0.5, 0.1, 0.0]).into_iter(), 4, 2), 1);
        // A limit of zero: every connection idle for a second.
        assert_eq!(surplus(ages(&[1.0, 1.0, 0.3]).into_iter(), 3, 0), 2);
    }
}
