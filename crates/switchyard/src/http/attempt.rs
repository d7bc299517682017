//! The pieces of the attempt loop that are not phase ordering: what sending a request
//! again needs ([`Replayable`]), the budgets every first attempt pays into ([`deposit`])
//! and every retry and hedge draws from ([`withdraw`]), and the hedged race ([`race`]):
//! after `hedge.after` without a response head, up to `max_extra` more copies go to other
//! endpoints, the first head that is not itself retryable wins and the others are dropped
//! at once (hyper then resets the HTTP/2 stream with CANCEL, or closes the HTTP/1.1
//! connection instead of pooling it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::{Request, Response};
use tokio::time::Instant;

use super::added_fields;
use super::body::{BodyProgress, Replay, RequestBody};
use super::listener::{RouteRuntime, UpstreamCluster};
use super::retry;
use super::upstream::{Lease, SendError, UpstreamBody, UpstreamRequest};
use crate::cluster::{Endpoint, InFlight};
use crate::config::model::{HedgeAfter, RetryPolicy};
use crate::runtime::clock;

/// One attempt's outcome: the head (with its lease), a send error, or the per-try deadline.
pub type Sent =
    Result<Result<(Response<UpstreamBody>, Lease), SendError>, tokio::time::error::Elapsed>;

/// A first attempt deposits in the cluster's budget (and the route's, when it has one).
pub fn deposit(upstream: &UpstreamCluster, route: &RouteRuntime, now: u64) {
    upstream.retry_budget.deposit(now);
    if let Some(budget) = &route.retry_budget {
        budget.deposit(now);
    }
}

/// Asks the route's and the cluster's budgets for one retry or hedge; a refusal is counted.
pub fn withdraw(upstream: &UpstreamCluster, route: &RouteRuntime) -> bool {
    let now = clock::now();
    let route_refuses = route
        .retry_budget
        .as_ref()
        .is_some_and(|budget| !budget.try_withdraw(now));
    if route_refuses || !upstream.retry_budget.try_withdraw(now) {
        upstream.budget_exhausted.inc();
        return false;
    }
    true
}

/// What sending a request again needs once the first copy went upstream: its head and a
/// bounded copy of its body. Only idempotent requests under a policy with a word beyond
/// the never-sent ones pay for it (SPEC 4).
pub struct Replayable {
    head: Request<()>,
    body: Arc<std::sync::Mutex<Replay>>,
    progress: Option<Arc<BodyProgress>>,
}

impl Replayable {
    /// Starts keeping what a retry or hedge of `request` needs, when one may happen:
    /// the request is idempotent and the policy retries after a send, or the route hedges.
    /// Boxed: the request's future holds a pointer, not the copy of the head.
    pub fn prepare(
        request: &mut Request<RequestBody>,
        policy: &RetryPolicy,
        hedges: bool,
    ) -> Option<Box<Replayable>> {
        let retries_after_send =
            policy.attempts > 1 && policy.on.iter().any(|word| !word.never_sent());
        let worth_it = (retries_after_send || hedges)
            && retry::is_idempotent(request.method(), request.headers());
        if !worth_it {
            return None;
        }
        // The copy is of the whole head: the added fields go into the map first.
        added_fields::into_map(request);
        let head = with_head_of(request, ());
        let progress = request.body().progress();
        let body = request.body_mut().record(policy.buffer);
        Some(Box::new(Replayable {
            head,
            body,
            progress,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Replay> {
        self.body.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the body may still be sent again (it has not outgrown the buffer).
    pub fn may_replay(&self) -> bool {
        !self.lock().is_lost()
    }

    /// The request again, when its whole body was kept.
    pub fn request(&self) -> Option<UpstreamRequest> {
        let body = self.lock().body(self.progress.as_ref())?;
        Some(Box::new(with_head_of(&self.head, body)))
    }
}

/// A request with `body` and a copy of `from`'s method, URI, version and headers
/// (extensions are not copied: nothing downstream of the pipeline reads them).
fn with_head_of<A, B>(from: &Request<A>, body: B) -> Request<B> {
    let mut request = Request::new(body);
    *request.method_mut() = from.method().clone();
    *request.uri_mut() = from.uri().clone();
    *request.version_mut() = from.version();
    *request.headers_mut() = from.headers().clone();
    request
}

/// When the first attempt of a request on `route` is hedged: a fixed delay, or the route's
/// recent percentile once it has enough samples (SPEC 3.1); never without a replayable copy.
pub fn hedge_delay(route: &RouteRuntime, replay: Option<&Replayable>) -> Option<Duration> {
    let hedge = route.hedge.as_ref()?;
    replay?;
    match hedge.after {
        HedgeAfter::Delay(delay) => Some(delay),
        HedgeAfter::Percentile(p) => route
            .time_to_head
            .as_ref()?
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .percentile(f64::from(p), clock::now()),
    }
}

/// The attempt that won a race.
pub struct Winner {
    /// The endpoint's index in its cluster.
    pub index: usize,
    /// The endpoint.
    pub endpoint: Arc<Endpoint>,
    /// Its in-flight count, held for the exchange.
    pub in_flight: InFlight,
    /// What it answered.
    pub sent: Sent,
    /// Extra copies sent.
    pub hedges: u32,
}

type Running<'a> = Pin<Box<dyn Future<Output = (usize, Sent)> + Send + 'a>>;

/// Sends `request` to endpoint `first`, and after each `after` without a winning head
/// one more copy to an endpoint not in `tried`, up to `max_extra`, each within the
/// budget. Losers are dropped (cancelled) when a winner arrives; when no copy wins, the
/// first one to finish is returned.
#[allow(clippy::too_many_arguments)]
pub async fn race(
    upstream: &UpstreamCluster,
    route: &RouteRuntime,
    first: (usize, Arc<Endpoint>, InFlight),
    request: UpstreamRequest,
    replay: &Replayable,
    key: Option<u64>,
    tried: &mut Vec<usize>,
    after: Duration,
    try_deadline: Instant,
) -> Winner {
    let max_extra = route.hedge.as_ref().map_or(0, |h| h.max_extra);
    let retryable = |sent: &Sent| match sent {
        Ok(Ok((response, _))) => {
            retry::status_word(&route.retry.on, response.status().as_u16()).is_some()
        }
        _ => true,
    };
    let send = |index: usize, request: UpstreamRequest| -> Running<'_> {
        let pool = Arc::clone(&upstream.pools[index]);
        Box::pin(async move {
            let sent = tokio::time::timeout_at(try_deadline, pool.send(request)).await;
            (index, sent)
        })
    };
    let mut running = FuturesUnordered::new();
    running.push(send(first.0, request));
    let mut endpoints = vec![(first.0, first.1, first.2)];
    let mut extra = 0;
    let mut fallback: Option<(usize, Sent)> = None;
    let mut next_hedge = Instant::now() + after;
    let outcome = loop {
        let may_hedge = extra < max_extra;
        tokio::select! {
            Some((index, sent)) = running.next() => {
                if !retryable(&sent) {
                    break (index, sent);
                }
                // The first copy to finish is kept in case none wins.
                let kept = fallback.take().unwrap_or((index, sent));
                if running.is_empty() {
                    break kept;
                }
                fallback = Some(kept);
            }
            () = tokio::time::sleep_until(next_hedge), if may_hedge => {
                next_hedge = Instant::now() + after;
                extra += 1;
                let Some((index, endpoint)) = upstream.cluster.pick(key, tried) else {
                    extra = max_extra;
                    continue;
                };
                let Some(copy) = replay.request() else {
                    extra = max_extra;
                    continue;
                };
                if !withdraw(upstream, route) {
                    extra = max_extra;
                    continue;
                }
                upstream.hedges.inc();
                tried.push(index);
                endpoints.push((index, Arc::clone(endpoint), endpoint.begin()));
                running.push(send(index, copy));
            }
        }
    };
    drop(running);
    let (index, sent) = outcome;
    let hedges = u32::try_from(endpoints.len() - 1).unwrap_or(u32::MAX);
    let position = endpoints
        .iter()
        .position(|(i, _, _)| *i == index)
        .unwrap_or(0);
    let (index, endpoint, in_flight) = endpoints.swap_remove(position);
    Winner {
        index,
        endpoint,
        in_flight,
        sent,
        hedges,
    }
}
