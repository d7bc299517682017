//! The life of one HTTP request, and the only place that orders its phases (DESIGN 2):
//!
//! 1. **admit**: what the head alone decides (a declared body past `max_request_body`);
//! 2. **route**: the first matching route, its rate limit (429), then the weighted split
//!    (no match: 404);
//! 3. **attempt**: pick an endpoint, take a pooled connection, send under the per-try and
//!    overall deadlines, feed passive health; retry per the route's policy within the
//!    retry budget (a request that never reached an upstream, or an idempotent one whose
//!    body is kept whole), preferring another endpoint;
//! 4. **respond**: an upstream's response passes through with its hop-by-hop headers
//!    stripped; a failure the proxy answers for itself goes through [`ProxyError`];
//! 5. **log**: always, once, when the response body has ended ([`Record`]): metrics, the
//!    upstream connection back to its pool, the access-log line.

use std::cell::OnceCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use rand::Rng;
use switchyard_algo::outlier::Outcome;
use switchyard_algo::resilience::{Limit, backoff};
use tokio::time::Instant;
use tracing::debug;

use super::attempt::{self, Replayable};
use super::body::{
    BodyEnd, BodyPace, BodyProgress, ClientBody, Completion, RequestBody, ResponseBody,
};
use super::error::{ProxyError, ShedReason};
use super::exchange_clock::ExchangeClock;
use super::forwarding::{self, Forwarded, X_REQUEST_ID};
use super::jwt;
use super::listener::{
    Action, Branch, HttpListenerRuntime, RequestCounters, RouteRuntime, UpstreamCluster,
};
use super::raw_fields;
use super::retry::{self, RetryAfter};
use super::router::{ClaimsSource, RequestFacts};
use super::sticky;
use super::upgrade;
use super::upstream::{Lease, SendError, UpstreamBody, UpstreamError, UpstreamRequest};
use crate::admin::access_log::{AccessLog, HttpLine};
use crate::cluster::{Endpoint, InFlight, request_key};
use crate::config::model::{HashKey, RetryOn, RetryPolicy, UpstreamProtocol};
use crate::runtime::{clock, rng};
use crate::tls::acceptor::TlsInfo;
use crate::tls::upstream::TlsFailure;
use switchyard_algo::hash::key_for_bytes;

/// What every request of one client connection shares.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// The listener, as the snapshot in force when the request began compiled it.
    pub listener: Arc<HttpListenerRuntime>,
    /// Where the listener in force is published (`None`: the connection keeps `listener`).
    pub slot: Option<Arc<arc_swap::ArcSwap<HttpListenerRuntime>>>,
    /// The peer (or the address a PROXY header carried) and the address the client
    /// connected to, with their forwarding-header text.
    pub hop: forwarding::Hop,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Where request lines go.
    pub log: AccessLog,
    /// `[access_log] include_query`.
    pub include_query: bool,
    /// What the TLS handshake negotiated (https listeners).
    pub tls: Option<TlsInfo>,
}

impl Downstream {
    /// The connection as the next request sees it: with the listener in force, which a
    /// reload may have replaced since the connection (or its last request) began.
    fn current(self: &Arc<Self>) -> Arc<Downstream> {
        let Some(slot) = &self.slot else {
            return Arc::clone(self);
        };
        let listener = slot.load();
        if Arc::ptr_eq(&listener, &self.listener) {
            return Arc::clone(self);
        }
        Arc::new(Downstream {
            listener: Arc::clone(&listener),
            ..Downstream::clone(self)
        })
    }
}

/// A client's request as the pipeline takes it: boxed, because it passes through several
/// futures (a request held by value is copied into each, and an async fn keeps room for
/// its argument for as long as it runs); its body is the client's under the listener's
/// limits ([`client_body`]), the body the upstream gets.
pub type ClientRequest = UpstreamRequest;

/// The client's `body` under the listener's limits (`max_request_body`, the body's pace).
pub fn client_body(downstream: &Downstream, body: ClientBody) -> RequestBody {
    let config = &downstream.listener.config;
    let pace = BodyPace {
        timeout: config.request_body_timeout,
        min_rate: config.min_request_body_rate,
    };
    RequestBody::new(body, config.max_request_body, Some(pace))
}

/// Serves one request; never fails (every failure is a response).
pub async fn handle(
    downstream: Arc<Downstream>,
    request: ClientRequest,
) -> Result<Response<ResponseBody>, Infallible> {
    let downstream = downstream.current();
    let mut record = Record::new(&downstream, &request);
    let response = match proxy(&downstream, request, &mut record).await {
        Ok(response) => response,
        Err(error) => {
            record.proxy_error = Some(error);
            error.to_response(record.grpc)
        }
    };
    Ok(respond(response, record))
}

/// Everything the log phase needs, carried to the end of the response body.
struct Record {
    downstream: Arc<Downstream>,
    started: Instant,
    method: Method,
    authority: Option<String>,
    path: String,
    client: SocketAddr,
    grpc: bool,
    request_id: Option<HeaderValue>,
    route: Option<Arc<RouteRuntime>>,
    branch: Option<usize>,
    endpoint: Option<Arc<Endpoint>>,
    status: u16,
    proxy_error: Option<ProxyError>,
    attempts: u32,
    upstream_time: Option<Duration>,
    request_body: Option<Arc<BodyProgress>>,
    lease: Option<Lease>,
    in_flight: Option<InFlight>,
    holds_request_slot: Option<Arc<super::listener::UpstreamCluster>>,
}

impl Record {
    /// Boxed from the start: the record ends its life as the response body's completion
    /// (a box), and held by pointer it is neither copied into that box nor carried inline
    /// in the request's future.
    fn new<B>(downstream: &Arc<Downstream>, request: &Request<B>) -> Box<Record> {
        let path = if downstream.include_query {
            request
                .uri()
                .path_and_query()
                .map_or("/", PathAndQuery::as_str)
        } else {
            request.uri().path()
        };
        // Owned copies only when a log line will be written.
        let logging = downstream.log.is_enabled();
        Box::new(Record {
            downstream: Arc::clone(downstream),
            started: Instant::now(),
            method: request.method().clone(),
            authority: logging
                .then(|| authority_of(request).map(str::to_owned))
                .flatten(),
            path: if logging {
                path.to_owned()
            } else {
                String::new()
            },
            client: downstream.hop.peer,
            grpc: is_grpc(request.headers()),
            request_id: None,
            route: None,
            branch: None,
            endpoint: None,
            status: 0,
            proxy_error: None,
            attempts: 0,
            upstream_time: None,
            request_body: None,
            lease: None,
            in_flight: None,
            holds_request_slot: None,
        })
    }

    /// The split branch the request was sent to, if it got that far.
    fn branch(&self) -> Option<&Branch> {
        match (&self.route.as_deref()?.action, self.branch) {
            (Action::Forward(split), Some(index)) => Some(split.branch(index)),
            _ => None,
        }
    }

    fn counters(&self) -> &RequestCounters {
        match (self.branch(), &self.route) {
            (Some(branch), _) => &branch.requests,
            (None, Some(route)) => &route.local_requests,
            (None, None) => &self.downstream.listener.unrouted,
        }
    }

    fn cluster_name(&self) -> Option<&str> {
        self.branch().map(|branch| branch.upstream.name())
    }
}

impl Completion for Record {
    fn finish(mut self: Box<Self>, end: BodyEnd) {
        // The exchange is over: an HTTP/2 stream or an upgrade's connection ends here (an
        // HTTP/1.1 connection went back to its pool with the body's last byte).
        drop(self.lease.take());
        drop(self.in_flight.take());
        if let Some(upstream) = self.holds_request_slot.take() {
            upstream.limits.release(Limit::Requests);
        }
        let elapsed = self.started.elapsed();
        let proxy = self.proxy_error.is_some() || self.upstream_time.is_none();
        self.counters().count(self.status, proxy);
        let listener = &self.downstream.listener;
        let bytes_in = self.request_body.as_ref().map_or(0, |p| p.bytes());
        // Counted here, once, whether the cut came before the response (408) or during it.
        if self.request_body.as_ref().is_some_and(|p| p.too_slow()) {
            listener.rejected.count("slow_body");
        }
        listener.bytes.rx.add(bytes_in);
        listener.bytes.tx.add(end.bytes);
        if let Some(route) = &self.route {
            route.duration.observe(elapsed);
            route
                .added_latency
                .observe(elapsed.saturating_sub(self.upstream_time.unwrap_or_default()));
        }
        let log = &self.downstream.log;
        if !log.is_enabled() {
            return;
        }
        let grpc_status = if self.grpc {
            end.grpc_status
                .or_else(|| self.proxy_error.map(|e| u32::from(e.grpc_status())))
        } else {
            None
        };
        log.log(&HttpLine {
            listener: &listener.name,
            route: self.route.as_deref().map(|r| r.name.as_str()),
            cluster: self.cluster_name(),
            endpoint: self.endpoint.as_deref().map(|e| e.name.as_str()),
            method: self.method.as_str(),
            authority: self.authority.as_deref(),
            path: &self.path,
            status: self.status,
            origin: if proxy { "proxy" } else { "upstream" },
            proxy_status: self.proxy_error.map(|e| e.token()),
            attempts: self.attempts,
            bytes_in,
            bytes_out: end.bytes,
            duration_ms: elapsed.as_secs_f64() * 1e3,
            upstream_duration_ms: self.upstream_time.map(|t| t.as_secs_f64() * 1e3),
            request_id: self.request_id.as_ref().and_then(|v| v.to_str().ok()),
            client: self.client.to_string(),
            tls_version: self.downstream.tls.as_ref().map(|t| t.version),
            tls_cipher: self.downstream.tls.as_ref().map(|t| t.cipher),
            sni: self.downstream.tls.as_ref().and_then(|t| t.sni.as_deref()),
            grpc_status,
        });
    }
}

/// The respond and log phases: the status is recorded and the record rides on the body.
fn respond(
    mut response: Response<ResponseBody>,
    mut record: Box<Record>,
) -> Response<ResponseBody> {
    record.status = response.status().as_u16();
    if let Some(id) = &record.request_id {
        match response.body_mut().raw_fields_mut() {
            // Beside the upstream's raw fields, unless it sent its own.
            Some(raw) => {
                if !raw.contains(&X_REQUEST_ID) {
                    raw.set_request_id(id.clone());
                }
            }
            None => {
                if let http::header::Entry::Vacant(slot) =
                    response.headers_mut().entry(X_REQUEST_ID)
                {
                    slot.insert(id.clone());
                }
            }
        }
    }
    response.body_mut().on_finish(record);
    response
}

/// admit → route → attempt, up to the upstream's response head.
async fn proxy(
    downstream: &Arc<Downstream>,
    mut request: ClientRequest,
    record: &mut Record,
) -> Result<Response<ResponseBody>, ProxyError> {
    let listener = &downstream.listener;
    let trusted = listener.trusted_proxies();
    let client_ip = forwarding::resolve_client(downstream.hop.peer, request.headers(), trusted);
    record.client = SocketAddr::new(client_ip, downstream.hop.peer.port());

    // admit
    if let Some(limit) = listener.config.max_request_body {
        if declared_length(request.headers()).is_some_and(|length| length > limit) {
            return Err(ProxyError::Request {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                details: "max_request_body",
            });
        }
    }

    // route (JWT verification, when a route asks for it, is part of matching)
    let (route, claims, host) = {
        let verified = RequestClaims::new(listener, request.headers());
        let addressed = Addressed::of(&request);
        let facts = RequestFacts {
            method: request.method(),
            authority: addressed.as_ref().map(Addressed::as_str),
            path: request.uri().path(),
            query: request.uri().query(),
            headers: request.headers(),
            claims: Some(&verified),
        };
        let Some(index) = listener.router.find_index(&facts) else {
            return Err(match listener.router.jwt_refusal(&facts) {
                Some(index) if verified.claims(index).is_some() => ProxyError::Forbidden,
                Some(_) => unauthorized(request.headers()),
                None => ProxyError::DestinationNotFound,
            });
        };
        let Some(route) = listener.router.get(index).cloned() else {
            return Err(ProxyError::DestinationNotFound);
        };
        let claims = match route.auth {
            Some(_) => match verified.claims(index) {
                Some(claims) => Some(claims.clone()),
                None => return Err(unauthorized(request.headers())),
            },
            None => None,
        };
        // Held apart from the request, which is edited from here on.
        (route, claims, addressed.map(ClientAuthority::of))
    };
    record.route = Some(Arc::clone(&route));
    if let Some(limiter) = &route.rate_limit {
        let key = limiter.key(client_ip, request.headers(), claims.as_ref());
        // Boxed: the fleet-wide limiter's Redis round trip is a large future, and only
        // rate-limited routes should carry it.
        let verdict = Box::pin(limiter.take(&route.name, key, route.global_limit.as_deref())).await;
        if let Err(retry_after_secs) = verdict {
            return Err(ProxyError::RateLimited { retry_after_secs });
        }
    }
    let split = match &route.action {
        Action::Forward(split) => split,
        Action::Redirect(redirect) => return Ok(redirect_response(&request, redirect, downstream)),
        Action::Direct { status, body } => {
            let mut response = Response::new(ResponseBody::full(body.clone()));
            *response.status_mut() = *status;
            return Ok(response);
        }
    };
    let branch_index = split.pick_index(|total| rng::with_rng(|rng| rng.random_range(0..total)));
    record.branch = Some(branch_index);
    let branch = split.branch(branch_index);

    // prepare the upstream request
    // Set by the HTTP/1.1 server on a request that asks to switch protocols.
    let client_upgrade = request.extensions_mut().remove::<upgrade::ClientUpgrade>();
    // Only the hash policies read a key; the others are not charged for hashing one.
    let cluster_config = &branch.upstream.cluster.config;
    let key = match &cluster_config.hash_key {
        _ if !cluster_config.balance.is_hash() => None,
        // A verified claim (SPEC: the raw value bytes); no verified token, no key.
        HashKey::Jwt(claim) => claims
            .as_ref()
            .and_then(|c| jwt::claim_text(c, claim))
            .map(|value| key_for_bytes(value.as_bytes())),
        hash_key => request_key(
            hash_key,
            record.client,
            downstream.hop.local,
            request.headers(),
            request.uri().path(),
        ),
    };
    let host_value = host.as_ref().and_then(ClientAuthority::to_header_value);
    let version = request.version();
    // What the proxy adds goes beside the map where the map lacks the name (module
    // `added_fields`); the request id comes after the strip of what `Connection` names.
    let mut added = forwarding::prepare_request(
        request.headers_mut(),
        &Forwarded {
            hop: &downstream.hop,
            peer_trusted: forwarding::is_trusted(downstream.hop.peer.ip(), trusted),
            scheme: downstream.scheme,
            host: host_value.as_ref(),
            version,
        },
    );
    let request_id = forwarding::ensure_request_id(request.headers_mut(), &mut added, || {
        forwarding::format_request_id(rng::with_rng(|rng| rng.random()))
    });
    record.request_id = Some(request_id);
    if let Some(tls) = &downstream.tls {
        let forward = listener.tls.as_ref().is_some_and(|t| t.forward_client_cert);
        forwarding::set_client_cert(
            request.headers_mut(),
            tls.client.as_ref().filter(|_| forward),
        );
    }
    if let Some(upgrade) = &client_upgrade {
        upgrade::restore_request_headers(request.headers_mut(), upgrade);
    }
    if !route.request_headers.is_empty() {
        // The edits may name any field: all of them in the map.
        std::mem::take(&mut added).append_to(request.headers_mut());
        route.request_headers.apply(request.headers_mut());
    }
    let protocol = cluster_config.protocol;
    let target = upstream_target(&request, &route, host.as_ref(), protocol)?;
    retarget(&mut request, target, protocol);

    request.body_mut().set_added_fields(added);
    record.request_body = request.body().progress();

    let sticky_config = cluster_config.sticky.as_ref();
    let sticky_sent = sticky_config
        .and_then(|config| sticky::requested(config, request.headers()))
        .map(str::to_owned);
    let pinned = sticky_sent
        .as_deref()
        .and_then(|value| sticky::pinned(&branch.upstream.cluster, value, clock::now()));
    let mut response = match attempt(branch, &route, request, key, pinned, record).await {
        Ok(response) => response,
        Err(error) => {
            // One place counts every shed answer, whichever limit made it.
            if let ProxyError::Shed(reason) = error {
                branch.upstream.count_shed(reason);
            }
            return Err(error);
        }
    };
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upstream_upgrade =
        (switching && client_upgrade.is_some()).then(|| hyper::upgrade::on(&mut response));
    if switching || sticky_config.is_some() || !route.response_headers.is_empty() {
        // These read or edit the upstream's fields: all of them in the map.
        raw_fields::into_map(&mut response);
    }
    let (mut parts, incoming) = response.into_parts();
    forwarding::prepare_response(&mut parts.headers, switching);
    if let (Some(config), Some(endpoint)) = (sticky_config, &record.endpoint) {
        sticky::remember(
            config,
            sticky_sent.as_deref(),
            &endpoint.name,
            &mut parts.headers,
        );
    }
    route.response_headers.apply(&mut parts.headers);
    if let (Some(client), Some(upstream)) = (client_upgrade, upstream_upgrade) {
        // The upstream connection now belongs to the tunnel, not to the pool.
        drop(record.lease.take());
        upgrade::tunnel(client, upstream, listener.config.idle_timeout);
    }
    let mut body = ResponseBody::upstream(incoming);
    body.bound_by(ExchangeClock::new(
        listener.config.idle_timeout,
        route.max_duration.map(|max| record.started + max),
        record.request_body.clone(),
        record
            .endpoint
            .as_ref()
            .map(|endpoint| endpoint.drain_cut()),
    ));
    Ok(Response::from_parts(parts, body))
}

/// The attempt loop: pick, send, classify, and perhaps go again (SPEC 3.1, 4). A retry
/// needs a `retry.on` word the outcome meets, attempts left, room in the cluster's (and the
/// route's) retry budget, a jittered backoff (or the upstream's `Retry-After`) that fits
/// the deadline, and a request that can be sent again: one that never reached an upstream,
/// or an idempotent one whose body was kept whole in the replay buffer. A retry prefers an
/// endpoint not tried yet. When a retry is not made the client gets the last outcome.
async fn attempt(
    branch: &Branch,
    route: &RouteRuntime,
    mut request: UpstreamRequest,
    key: Option<u64>,
    mut pinned: Option<usize>,
    record: &mut Record,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let upstream = &branch.upstream;
    if upstream.limits.try_acquire(Limit::Requests).is_err() {
        return Err(ProxyError::Shed(ShedReason::Requests));
    }
    record.holds_request_slot = Some(Arc::clone(upstream));
    // The request's deadline runs from its arrival.
    let started = record.started;
    let mut deadline = started + route.timeout;
    if let Some(max_duration) = route.max_duration {
        deadline = deadline.min(started + max_duration);
    }
    if record.grpc {
        if let Some(grpc_timeout) = grpc_timeout(request.headers()) {
            deadline = deadline.min(started + grpc_timeout);
        }
    }
    let policy = &route.retry;
    let attempts = policy.attempts.max(1);
    let replay = Replayable::prepare(&mut request, policy, route.hedge.is_some());
    let mut unsent = Some(request);
    let mut tried: Vec<usize> = Vec::new();
    let mut last = Last::Error(ProxyError::DestinationUnavailable);
    let mut retry: Option<(RetryOn, Option<Duration>)> = None;
    loop {
        let request = if let Some((word, wait)) = retry.take() {
            // The retry gate: attempts, budget, backoff within the deadline, a request.
            if record.attempts >= attempts {
                break;
            }
            if !attempt::withdraw(upstream, route) {
                break;
            }
            let delay = wait.unwrap_or_else(|| {
                rng::with_rng(|rng| {
                    backoff(
                        record.attempts,
                        policy.backoff_base,
                        policy.backoff_max,
                        rng,
                    )
                })
            });
            if Instant::now() + delay >= deadline {
                break;
            }
            let again = match unsent.take() {
                Some(request) => Some(request),
                None => replay.as_deref().and_then(Replayable::request),
            };
            let Some(again) = again else {
                break;
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            upstream.retries.count(word);
            again
        } else if let Some(request) = unsent.take() {
            attempt::deposit(upstream, route, clock::to_nanos(started.into_std()));
            request
        } else {
            break;
        };
        // One reading of the clock serves the pick and the try's start.
        let sent = Instant::now();
        let now = clock::to_nanos(sent.into_std());
        let sticky = pinned
            .take()
            .and_then(|i| upstream.cluster.endpoints().get(i).map(|e| (i, e)));
        let picked = sticky
            .or_else(|| upstream.cluster.pick_at(key, &tried, now))
            .or_else(|| {
                (!tried.is_empty())
                    .then(|| upstream.cluster.pick_at(key, &[], now))
                    .flatten()
            });
        let Some((index, endpoint)) = picked else {
            break;
        };
        let endpoint = Arc::clone(endpoint);
        if !tried.contains(&index) {
            tried.push(index);
        }
        let first_attempt = record.attempts == 0;
        record.attempts += 1;
        let in_flight = endpoint.begin();
        if upstream.limits.try_acquire(Limit::Pending).is_err() {
            return Err(ProxyError::Shed(ShedReason::Pending));
        }
        let try_deadline = (sent + route.per_try_timeout).min(deadline);
        let hedge_after = if first_attempt {
            attempt::hedge_delay(route, replay.as_deref())
        } else {
            None
        };
        let (index, endpoint, in_flight, outcome) = match (hedge_after, replay.as_deref()) {
            (Some(after), Some(replay)) => {
                let first = (index, endpoint, in_flight);
                let race = attempt::race(
                    upstream,
                    route,
                    first,
                    request,
                    replay,
                    key,
                    &mut tried,
                    after,
                    try_deadline,
                );
                // Boxed: a hedged race holds several sends at once; only hedged routes
                // should pay for its size.
                let winner = Box::pin(race).await;
                record.attempts += winner.hedges;
                (winner.index, winner.endpoint, winner.in_flight, winner.sent)
            }
            _ => {
                let pool = &upstream.pools[index];
                let outcome = tokio::time::timeout_at(try_deadline, pool.send(request)).await;
                (index, endpoint, in_flight, outcome)
            }
        };
        let endpoint = &endpoint;
        record.endpoint = Some(Arc::clone(endpoint));
        upstream.limits.release(Limit::Pending);
        // One reading of the clock serves every record of the outcome.
        let finished = Instant::now();
        let now = clock::to_nanos(finished.into_std());
        let waited = finished.saturating_duration_since(sent);
        record.upstream_time = Some(record.upstream_time.unwrap_or_default() + waited);
        if let (true, Some(window), Ok(Ok(_))) = (first_attempt, &route.time_to_head, &outcome) {
            window
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(waited, now);
        }
        let cluster = &upstream.cluster;
        let tried_at = TriedAt {
            upstream,
            endpoint,
            index,
            now,
        };
        match outcome {
            Ok(Ok((mut response, lease))) => {
                let status = response.status().as_u16();
                if status == 503 || status == 429 {
                    // `Retry-After` is read from the map.
                    raw_fields::into_map(&mut response);
                }
                endpoint.record_success(waited, now);
                cluster.record_outcome(index, Outcome::from_status(status), now);
                upstream.durations[index].observe(waited);
                let word = retry::status_word(&policy.on, status)
                    .filter(|_| replay.as_deref().is_some_and(Replayable::may_replay));
                let wait = match retry::retry_after(status, response.headers()) {
                    RetryAfter::Absent => Some(None),
                    RetryAfter::Wait(delay) => Some(Some(delay)),
                    RetryAfter::Unusable => None,
                };
                match (word, wait) {
                    (Some(word), Some(wait)) if record.attempts < attempts => {
                        last = Last::Response(Box::new((response, lease, in_flight)));
                        retry = Some((word, wait));
                    }
                    _ => {
                        record.lease = Some(lease);
                        record.in_flight = Some(in_flight);
                        return Ok(response);
                    }
                }
            }
            Ok(Err(failed)) => {
                match after_failure(failed, &tried_at, policy, replay.as_deref(), record) {
                    Next::Answer(error) => return Err(error),
                    Next::Retry {
                        word,
                        error,
                        unsent: kept,
                    } => {
                        // Every try takes the request it sends: nothing is unsent here.
                        unsent = kept;
                        last = Last::Error(error);
                        retry = Some((word, None));
                    }
                }
            }
            Err(_elapsed) => {
                let overall = try_deadline >= deadline;
                match after_timeout(&tried_at, overall, policy, replay.as_deref()) {
                    Next::Answer(error) => return Err(error),
                    Next::Retry { word, error, .. } => {
                        last = Last::Error(error);
                        retry = Some((word, None));
                    }
                }
            }
        }
    }
    match last {
        Last::Error(error) => Err(error),
        Last::Response(kept) => {
            let (response, lease, in_flight) = *kept;
            record.lease = Some(lease);
            record.in_flight = Some(in_flight);
            Ok(response)
        }
    }
}

/// Where a try went: what records its outcome.
struct TriedAt<'a> {
    upstream: &'a UpstreamCluster,
    endpoint: &'a Endpoint,
    index: usize,
    now: u64,
}

/// What a try that got no response leads to.
enum Next {
    /// The client's answer: no retry.
    Answer(ProxyError),
    /// A retry for `word`, `error` the answer if it is not made; `unsent`, the request
    /// back untouched when it never reached the upstream.
    Retry {
        word: RetryOn,
        error: ProxyError,
        unsent: Option<UpstreamRequest>,
    },
}

/// Records a try that failed before a response head and decides whether a retry may
/// follow. Cold and out of line: the attempt loop's usual path is a response, and this
/// keeps the rare one out of its way.
#[cold]
#[inline(never)]
fn after_failure(
    failed: SendError,
    at: &TriedAt<'_>,
    policy: &RetryPolicy,
    replay: Option<&Replayable>,
    record: &Record,
) -> Next {
    let TriedAt {
        upstream,
        endpoint,
        index,
        now,
    } = *at;
    let cluster = &upstream.cluster;
    let error = failed.error;
    debug!(cluster = upstream.name(), endpoint = %endpoint.name, ?error, "upstream attempt failed");
    match error {
        UpstreamError::Connect(failure) => {
            endpoint.record_connect_failure(failure, now);
            cluster.record_outcome(index, Outcome::GatewayFailure, now);
        }
        UpstreamError::Reset | UpstreamError::Tls(_) => {
            endpoint.record_failure(now);
            cluster.record_outcome(index, Outcome::GatewayFailure, now);
        }
        UpstreamError::RefusedStream => endpoint.record_failure(now),
        UpstreamError::PoolFull | UpstreamError::RequestBody => {}
    }
    let error_now = proxy_error_of(error, record);
    let word = match error {
        UpstreamError::Connect(_) | UpstreamError::PoolFull => RetryOn::ConnectFailure,
        UpstreamError::RefusedStream => RetryOn::RefusedStream,
        UpstreamError::Reset => RetryOn::Reset,
        // A TLS failure is the upstream's configuration, not a passing fault.
        UpstreamError::RequestBody | UpstreamError::Tls(_) => return Next::Answer(error_now),
    };
    if !policy.on.contains(&word) {
        return Next::Answer(error_now);
    }
    let unsent = match failed.request {
        Some(request) if word.never_sent() => Some(request),
        _ if replay.is_some_and(Replayable::may_replay) => None,
        _ => return Next::Answer(error_now),
    };
    Next::Retry {
        word,
        error: error_now,
        unsent,
    }
}

/// Records a try that timed out (`overall`: the request's own deadline passed with it)
/// and decides whether a retry may follow. Cold, as [`after_failure`].
#[cold]
#[inline(never)]
fn after_timeout(
    at: &TriedAt<'_>,
    overall: bool,
    policy: &RetryPolicy,
    replay: Option<&Replayable>,
) -> Next {
    at.endpoint.record_failure(at.now);
    at.upstream
        .cluster
        .record_outcome(at.index, Outcome::GatewayFailure, at.now);
    let may = policy.on.contains(&RetryOn::Timeout) && replay.is_some_and(Replayable::may_replay);
    if overall || !may {
        return Next::Answer(ProxyError::ResponseTimeout);
    }
    Next::Retry {
        word: RetryOn::Timeout,
        error: ProxyError::ResponseTimeout,
        unsent: None,
    }
}

/// The outcome a retry that is not made leaves the client with.
enum Last {
    Error(ProxyError),
    /// Boxed: kept only while a retry is tried, so the request's future holds a pointer.
    Response(Box<(Response<UpstreamBody>, Lease, InFlight)>),
}

fn proxy_error_of(error: UpstreamError, record: &Record) -> ProxyError {
    use crate::cluster::endpoint::ConnectFailure;
    match error {
        UpstreamError::Connect(ConnectFailure::Timeout) => ProxyError::ConnectionTimeout,
        UpstreamError::Connect(_) => ProxyError::ConnectionRefused,
        UpstreamError::PoolFull => ProxyError::Shed(ShedReason::Connections),
        UpstreamError::RefusedStream | UpstreamError::Reset => ProxyError::ConnectionTerminated,
        UpstreamError::Tls(TlsFailure::Certificate) => ProxyError::TlsCertificateError,
        UpstreamError::Tls(TlsFailure::Protocol) => ProxyError::TlsProtocolError,
        UpstreamError::RequestBody => {
            let progress = record.request_body.as_ref();
            if progress.is_some_and(|p| p.over_limit()) {
                ProxyError::Request {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    details: "max_request_body",
                }
            } else if progress.is_some_and(|p| p.too_slow()) {
                ProxyError::Request {
                    status: StatusCode::REQUEST_TIMEOUT,
                    details: "min_request_body_rate",
                }
            } else {
                ProxyError::bad_request("request body incomplete")
            }
        }
    }
}

/// The 401 for a request without a valid token (`invalid_token` when one was sent).
fn unauthorized(headers: &HeaderMap) -> ProxyError {
    ProxyError::Unauthorized {
        token_sent: jwt::bearer(headers).is_some(),
    }
}

/// The request's token as each of the listener's verifiers sees it, verified at most once
/// per verifier and only when a route asks.
#[derive(Debug)]
struct RequestClaims<'a> {
    listener: &'a HttpListenerRuntime,
    headers: &'a HeaderMap,
    verdicts: Vec<OnceCell<Option<jwt::Claims>>>,
}

impl<'a> RequestClaims<'a> {
    fn new(listener: &'a HttpListenerRuntime, headers: &'a HeaderMap) -> Self {
        RequestClaims {
            listener,
            headers,
            verdicts: (0..listener.verifiers.len())
                .map(|_| OnceCell::new())
                .collect(),
        }
    }
}

impl ClaimsSource for RequestClaims<'_> {
    fn claims(&self, route: usize) -> Option<&jwt::Claims> {
        let verifier = self.listener.router.get(route)?.auth?;
        self.verdicts
            .get(verifier)?
            .get_or_init(|| {
                let verified = self
                    .listener
                    .verifiers
                    .get(verifier)?
                    .verify_request(self.headers);
                match verified {
                    Ok(claims) => Some(claims),
                    Err(error) => {
                        debug!(%error, "jwt refused");
                        None
                    }
                }
            })
            .as_ref()
    }
}

/// Where the client named the authority it addressed: the request target's (absolute
/// form, HTTP/2 `:authority`), else its Host header when that is text. The one rule that
/// routing, the access log, the forwarding headers and the upstream Host follow.
#[derive(Clone, Copy)]
enum Addressed<'a> {
    Target(&'a Authority),
    Host(&'a HeaderValue, &'a str),
}

impl<'a> Addressed<'a> {
    fn of<B>(request: &'a Request<B>) -> Option<Addressed<'a>> {
        if let Some(authority) = request.uri().authority() {
            return Some(Addressed::Target(authority));
        }
        let host = request.headers().get(HOST)?;
        Some(Addressed::Host(host, host.to_str().ok()?))
    }

    fn as_str(&self) -> &'a str {
        match self {
            Addressed::Target(authority) => authority.as_str(),
            Addressed::Host(_, text) => text,
        }
    }
}

/// [`Addressed`], held by sharing the request's bytes (the request is edited after).
enum ClientAuthority {
    Target(Authority),
    HostHeader(HeaderValue),
}

impl ClientAuthority {
    fn of(addressed: Addressed<'_>) -> ClientAuthority {
        match addressed {
            Addressed::Target(authority) => ClientAuthority::Target(authority.clone()),
            Addressed::Host(host, _) => ClientAuthority::HostHeader(host.clone()),
        }
    }

    /// As a field value: the Host header's own (shared, not copied), or the target's
    /// authority.
    fn to_header_value(&self) -> Option<HeaderValue> {
        match self {
            ClientAuthority::Target(authority) => HeaderValue::from_str(authority.as_str()).ok(),
            ClientAuthority::HostHeader(host) => Some(host.clone()),
        }
    }
}

/// Where the upstream request goes: path (rewritten when the route says so) and the Host.
struct Target {
    path_and_query: PathAndQuery,
    host: UpstreamHost,
}

/// The authority the upstream request names.
enum UpstreamHost {
    /// The client's own Host value, sent as the Host header (HTTP/1.1 upstreams; usually
    /// still in place, so nothing is parsed or copied, but a route's header edit that
    /// changed or removed it is undone, as for every other authority).
    ClientHost(HeaderValue),
    /// The client's own Host header, still in place (no header edit ran): nothing to do.
    Kept,
    /// This one, set as the Host header (HTTP/1.1) or `:authority` (HTTP/2).
    Set(Authority),
    /// None (an HTTP/1.0 request without Host to an HTTP/1.1 upstream).
    Absent,
}

fn upstream_target<B>(
    request: &Request<B>,
    route: &RouteRuntime,
    host: Option<&ClientAuthority>,
    protocol: UpstreamProtocol,
) -> Result<Target, ProxyError> {
    let uri = request.uri();
    let mut path_and_query = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut rewritten_host = None;
    if let Some(rewrite) = &route.rewrite {
        if let (Some(replacement), Some(prefix)) = (&rewrite.path_prefix, &route.matched_prefix) {
            if let Some(rest) = uri.path().strip_prefix(prefix.as_str()) {
                let mut rewritten = format!("{replacement}{rest}");
                if let Some(query) = uri.query() {
                    rewritten.push('?');
                    rewritten.push_str(query);
                }
                path_and_query = PathAndQuery::try_from(rewritten)
                    .map_err(|_| ProxyError::bad_request("rewritten path invalid"))?;
            }
        }
        rewritten_host = rewrite.host.as_deref();
    }
    let invalid = |_| ProxyError::bad_request("invalid host");
    let host = match (rewritten_host, host) {
        (Some(replacement), _) => {
            UpstreamHost::Set(Authority::try_from(replacement).map_err(invalid)?)
        }
        (None, Some(ClientAuthority::Target(authority))) => UpstreamHost::Set(authority.clone()),
        // No header edit ran: the client's Host header is still in place, as it should go.
        (None, Some(ClientAuthority::HostHeader(_)))
            if protocol != UpstreamProtocol::H2 && route.request_headers.is_empty() =>
        {
            UpstreamHost::Kept
        }
        (None, Some(ClientAuthority::HostHeader(value))) if protocol != UpstreamProtocol::H2 => {
            UpstreamHost::ClientHost(value.clone())
        }
        (None, Some(ClientAuthority::HostHeader(value))) => {
            UpstreamHost::Set(Authority::try_from(value.as_bytes()).map_err(invalid)?)
        }
        (None, None) if protocol == UpstreamProtocol::H2 => {
            return Err(ProxyError::bad_request("no host"));
        }
        (None, None) => UpstreamHost::Absent,
    };
    Ok(Target {
        path_and_query,
        host,
    })
}

/// Sets the URI, version and Host the upstream protocol expects: origin form and a Host
/// header for HTTP/1.1, absolute form (`:authority`, no Host) for HTTP/2.
fn retarget<B>(request: &mut Request<B>, target: Target, protocol: UpstreamProtocol) {
    let Target {
        path_and_query,
        host,
    } = target;
    match protocol {
        UpstreamProtocol::H2 => {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = match host {
                UpstreamHost::Set(authority) => Some(authority),
                UpstreamHost::ClientHost(_) | UpstreamHost::Kept | UpstreamHost::Absent => None,
            };
            parts.path_and_query = Some(path_and_query);
            if let Ok(uri) = Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
            request.headers_mut().remove(HOST);
            *request.version_mut() = Version::HTTP_2;
        }
        UpstreamProtocol::Http1 | UpstreamProtocol::Auto => {
            *request.uri_mut() = Uri::from(path_and_query);
            let wanted = match &host {
                UpstreamHost::ClientHost(value) => Some(value.as_bytes()),
                UpstreamHost::Set(authority) => Some(authority.as_str().as_bytes()),
                UpstreamHost::Kept | UpstreamHost::Absent => None,
            };
            // Usually the Host header already says it: then nothing is made or inserted.
            let unchanged = wanted.is_none_or(|wanted| {
                request
                    .headers()
                    .get(HOST)
                    .is_some_and(|current| current.as_bytes() == wanted)
            });
            if !unchanged {
                let value = match host {
                    UpstreamHost::ClientHost(value) => Some(value),
                    UpstreamHost::Set(authority) => HeaderValue::from_str(authority.as_str()).ok(),
                    UpstreamHost::Kept | UpstreamHost::Absent => None,
                };
                if let Some(value) = value {
                    request.headers_mut().insert(HOST, value);
                }
            }
            *request.version_mut() = Version::HTTP_11;
        }
    }
}

fn redirect_response<B>(
    request: &Request<B>,
    redirect: &crate::config::model::Redirect,
    downstream: &Downstream,
) -> Response<ResponseBody> {
    let scheme = redirect.scheme.as_deref().unwrap_or(downstream.scheme);
    let host = redirect
        .host
        .as_deref()
        .or_else(|| authority_of(request))
        .unwrap_or("localhost");
    let path = match &redirect.path {
        Some(path) => path.clone(),
        None => request
            .uri()
            .path_and_query()
            .map_or("/", PathAndQuery::as_str)
            .to_owned(),
    };
    let mut response = Response::new(ResponseBody::full(Bytes::new()));
    *response.status_mut() =
        StatusCode::from_u16(redirect.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    if let Ok(location) = HeaderValue::from_str(&format!("{scheme}://{host}{path}")) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// The authority the client asked for ([`Addressed`]).
fn authority_of<B>(request: &Request<B>) -> Option<&str> {
    Addressed::of(request).map(|addressed| addressed.as_str())
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Whether the request is gRPC (`content-type: application/grpc*`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The `grpc-timeout` header: digits and a unit (H, M, S, m, u, n).
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn grpc_timeouts_parse_every_unit() {
        let cases = [
            ("2S", Some(Duration::from_secs(2))),
            ("150m", Some(Duration::from_millis(150))),
            ("1H", Some(Duration::from_secs(3600))),
            ("3M", Some(Duration::from_secs(180))),
            ("7u", Some(Duration::from_micros(7))),
            ("9n", Some(Duration::from_nanos(9))),
            ("5", None),
            ("5x", None),
            ("123456789S", None),
        ];
        for (value, expected) in cases {
            assert_eq!(
                grpc_timeout(&headers(&[("grpc-timeout", value)])),
                expected,
                "{value}"
            );
        }
    }

    #[test]
    fn grpc_is_recognised_by_content_type() {
        assert!(is_grpc(&headers(&[(
            "content-type",
            "application/grpc+proto"
        )])));
        assert!(!is_grpc(&headers(&[("content-type", "application/json")])));
        assert!(!is_grpc(&HeaderMap::new()));
    }
}
