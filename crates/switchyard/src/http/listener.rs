//! An HTTP listener as one snapshot compiles it: the router over its routes, each route's
//! action with its clusters resolved, the clusters' connection pools and limits, and every
//! metric handle a request touches, resolved here so the request path never looks a label
//! set up.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use switchyard_algo::resilience::{LatencyWindow, Limits};

use super::error::ShedReason;
use super::forwarding::HeaderEdits;
use super::global_limit::GlobalLimiter;
use super::jwt::{JwksError, JwtVerifier};
use super::rate_limit::RouteLimiter;
use super::retry::{Budget, RetryCounters};
use super::router::{Router, RouterError, Split};
use super::upstream::{EndpointPool, PoolGauges, PoolSettings};
use crate::admin::metrics::{self, Counter, Histogram, Registry};
use crate::cluster::Cluster;
use crate::config::model::{self, Cidr, RouteAction, Target};
use crate::listener::rejections::Rejections;
use crate::listener::relay::ByteCounters;
use crate::tls::acceptor::{TlsListener, TlsSetupError};
use crate::tls::upstream::UpstreamTls;

/// A snapshot could not compile an HTTP listener (validation rules these out).
#[derive(Debug, thiserror::Error)]
pub enum HttpListenerError {
    /// A route names a cluster the snapshot does not hold.
    #[error("listener {listener:?}: route {route:?} names unknown cluster {cluster:?}")]
    UnknownCluster {
        /// The listener.
        listener: String,
        /// The route.
        route: String,
        /// The cluster.
        cluster: String,
    },
    /// The listener's TLS settings could not be loaded.
    #[error("listener {listener:?}: {source}")]
    Tls {
        /// The listener.
        listener: String,
        /// What failed.
        #[source]
        source: TlsSetupError,
    },
    /// A cluster's upstream TLS settings could not be loaded.
    #[error("cluster {cluster:?}: [cluster.tls]: {source}")]
    ClusterTls {
        /// The cluster.
        cluster: String,
        /// What failed.
        #[source]
        source: TlsSetupError,
    },
    /// A route's matcher did not compile.
    #[error("listener {listener:?}: {source}")]
    Router {
        /// The listener.
        listener: String,
        /// What failed.
        #[source]
        source: RouterError,
    },
    /// A route's `auth.jwt` key set could not be loaded.
    #[error("listener {listener:?}: route {route:?}: {source}")]
    Jwks {
        /// The listener.
        listener: String,
        /// The route.
        route: String,
        /// What failed.
        #[source]
        source: JwksError,
    },
}

/// `requests_total` series of one (listener, route, cluster), created on first use per
/// status and origin and then reached without a lookup. The slots are allocated per status
/// class on first use (a class is 100 slots), so a configuration with many routes costs a
/// few hundred bytes per (route, cluster) until traffic arrives, not a slot per status.
#[derive(Debug)]
pub struct RequestCounters {
    labels: [String; 3],
    registry: Arc<Registry>,
    /// Classes 1xx..5xx for `origin="upstream"`, then the same for `origin="proxy"`.
    classes: [OnceLock<Box<[OnceLock<Counter>]>>; CLASSES * 2],
}

/// Status classes 1xx to 5xx.
const CLASSES: usize = 5;

impl RequestCounters {
    fn new(registry: &Arc<Registry>, listener: &str, route: &str, cluster: &str) -> Self {
        RequestCounters {
            labels: [listener.to_owned(), route.to_owned(), cluster.to_owned()],
            registry: Arc::clone(registry),
            classes: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Counts one answered request.
    pub fn count(&self, status: u16, proxy: bool) {
        let status = status.clamp(100, 599);
        let class = usize::from(status / 100 - 1) + usize::from(proxy) * CLASSES;
        let Some(table) = self.classes.get(class) else {
            return;
        };
        let table = table.get_or_init(|| (0..100).map(|_| OnceLock::new()).collect());
        let Some(slot) = table.get(usize::from(status % 100)) else {
            return;
        };
        slot.get_or_init(|| {
            let code = status.to_string();
            let origin = if proxy { "proxy" } else { "upstream" };
            let [listener, route, cluster] = &self.labels;
            self.registry.counter(
                &metrics::REQUESTS_TOTAL,
                &[listener, route, cluster, &code, origin],
            )
        })
        .inc();
    }
}

/// A cluster as the HTTP tier uses it: endpoints and picker, plus one connection pool per
/// endpoint (index-aligned with [`Cluster::endpoints`]) and the cluster's limits.
#[derive(Debug)]
pub struct UpstreamCluster {
    /// The cluster (endpoints, picker, configuration).
    pub cluster: Arc<Cluster>,
    /// One pool per endpoint.
    pub pools: Vec<Arc<EndpointPool>>,
    /// `upstream_request_duration_seconds` per endpoint.
    pub durations: Vec<Histogram>,
    /// `max_connections` (counted by the pools) / `max_pending_requests` / `max_requests`.
    pub limits: Arc<Limits>,
    /// The cluster's TLS client (`[cluster.tls]`): what its pools connect with, and what a
    /// `kind = "tls"` health check must connect with too.
    pub tls: Option<Arc<UpstreamTls>>,
    /// `shed_total`, one series per [`ShedReason`] in [`ShedReason::ALL`] order.
    shed: [Counter; 4],
    /// The cluster's retry budget, shared by retries and hedges of every route (and carried
    /// across a reload that leaves the budget's settings alone, so a reload never refills it).
    pub retry_budget: Arc<Budget>,
    /// `retries_total`.
    pub retries: RetryCounters,
    /// `retry_budget_exhausted_total`.
    pub budget_exhausted: Counter,
    /// `hedges_total`.
    pub hedges: Counter,
}

impl UpstreamCluster {
    /// Pools and limits for `cluster` (and its TLS client, with `[cluster.tls]`). `previous`
    /// is the same-named cluster of the snapshot a reload replaces.
    pub fn build(
        cluster: &Arc<Cluster>,
        registry: &Arc<Registry>,
        previous: Option<&UpstreamCluster>,
    ) -> Result<UpstreamCluster, HttpListenerError> {
        let config = &cluster.config;
        let name = config.name.as_str();
        let tls = match &config.tls {
            Some(tls) => Some(Arc::new(UpstreamTls::build(tls, config.protocol).map_err(
                |source| HttpListenerError::ClusterTls {
                    cluster: name.to_owned(),
                    source,
                },
            )?)),
            None => None,
        };
        let limits = &config.limits;
        let limits = Arc::new(Limits::new(
            u64::from(limits.max_connections),
            u64::from(limits.max_pending_requests),
            u64::from(limits.max_requests),
        ));
        let settings = Arc::new(PoolSettings::of(config, tls.clone(), Arc::clone(&limits)));
        let gauges = PoolGauges {
            idle: registry.gauge(&metrics::UPSTREAM_POOL_CONNECTIONS, &[name, "idle"]),
            active: registry.gauge(&metrics::UPSTREAM_POOL_CONNECTIONS, &[name, "active"]),
        };
        let pools = cluster
            .endpoints()
            .iter()
            .map(|e| {
                Arc::new(EndpointPool::new(
                    e.address,
                    Arc::clone(&settings),
                    gauges.clone(),
                ))
            })
            .collect();
        let durations = cluster
            .endpoints()
            .iter()
            .map(|e| {
                registry.histogram(
                    &metrics::UPSTREAM_REQUEST_DURATION_SECONDS,
                    &[name, &e.name],
                )
            })
            .collect();
        Ok(UpstreamCluster {
            cluster: Arc::clone(cluster),
            tls,
            pools,
            durations,
            limits,
            shed: ShedReason::ALL
                .map(|reason| registry.counter(&metrics::SHED_TOTAL, &[name, reason.as_str()])),
            retry_budget: match previous {
                Some(p) if p.cluster.config.retry_budget == config.retry_budget => {
                    Arc::clone(&p.retry_budget)
                }
                _ => Arc::new(Budget::new(
                    config.retry_budget.ratio,
                    config.retry_budget.min_retries_per_second,
                )),
            },
            retries: RetryCounters::new(name, registry),
            budget_exhausted: registry.counter(&metrics::RETRY_BUDGET_EXHAUSTED_TOTAL, &[name]),
            hedges: registry.counter(&metrics::HEDGES_TOTAL, &[name]),
        })
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        self.cluster.name()
    }

    /// Counts one request shed for `reason`.
    pub fn count_shed(&self, reason: ShedReason) {
        if let Some(slot) = ShedReason::ALL.iter().position(|r| *r == reason) {
            self.shed[slot].inc();
        }
    }

    /// Closes idle pooled connections past `pool_idle_timeout`, and all of a draining
    /// endpoint's.
    pub fn evict_expired(&self) {
        for (pool, endpoint) in self.pools.iter().zip(self.cluster.endpoints()) {
            pool.evict_expired(endpoint.is_draining());
        }
    }
}

/// One branch a route forwards to.
#[derive(Debug)]
pub struct Branch {
    /// The cluster.
    pub upstream: Arc<UpstreamCluster>,
    /// `requests_total` for (listener, route, this cluster).
    pub requests: RequestCounters,
}

/// What a route does with a matching request.
#[derive(Debug)]
pub enum Action {
    /// Forward to a cluster chosen per request from a weighted split.
    Forward(Split<Branch>),
    /// Answer with a redirect.
    Redirect(model::Redirect),
    /// Answer with a fixed status and body.
    Direct {
        /// The status.
        status: http::StatusCode,
        /// The body.
        body: Bytes,
    },
}

/// A compiled route.
#[derive(Debug)]
pub struct RouteRuntime {
    /// Its name (metrics and logs).
    pub name: String,
    /// Its action.
    pub action: Action,
    /// Path-prefix and Host rewrite.
    pub rewrite: Option<model::Rewrite>,
    /// The matched `path_prefix`, for the rewrite.
    pub matched_prefix: Option<String>,
    /// From the end of the request to the response head, all attempts.
    pub timeout: Duration,
    /// One attempt.
    pub per_try_timeout: Duration,
    /// `max_duration`: the whole exchange, from the request's arrival to the body's end.
    pub max_duration: Option<Duration>,
    /// The retry policy.
    pub retry: model::RetryPolicy,
    /// The route's own stricter retry budget, when its `retry` writes one.
    pub retry_budget: Option<Budget>,
    /// `rate_limit`, when the route has one.
    pub rate_limit: Option<RouteLimiter>,
    /// The fleet-wide store the route's rate limit uses first, with `[global_rate_limit]`.
    pub global_limit: Option<Arc<GlobalLimiter>>,
    /// Index into the listener's `verifiers` of the route's `auth.jwt`.
    pub auth: Option<usize>,
    /// `hedge`, when the route has one.
    pub hedge: Option<model::Hedge>,
    /// First-attempt time to head over the last 30 s, for `hedge.after = "pNN"`.
    pub time_to_head: Option<Mutex<LatencyWindow>>,
    /// Request header edits.
    pub request_headers: HeaderEdits,
    /// Response header edits.
    pub response_headers: HeaderEdits,
    /// `request_duration_seconds{route}`.
    pub duration: Histogram,
    /// `added_latency_seconds{route}`.
    pub added_latency: Histogram,
    /// `requests_total` for answers that name no cluster (redirect, direct, errors before a cluster was chosen).
    pub local_requests: RequestCounters,
}

/// An HTTP listener's runtime.
#[derive(Debug)]
pub struct HttpListenerRuntime {
    /// The listener's name.
    pub name: String,
    /// The validated configuration.
    pub config: model::Listener,
    /// Routes in file order.
    pub router: Router<Arc<RouteRuntime>>,
    /// The distinct `auth.jwt` verifiers of the routes.
    pub verifiers: Vec<Arc<JwtVerifier>>,
    /// `requests_total` for requests no route matched.
    pub unrouted: RequestCounters,
    /// `connections_active`.
    pub active: metrics::Gauge,
    /// `connections_total`.
    pub accepted: Counter,
    /// `connections_rejected_total`.
    pub rejected: Rejections,
    /// `bytes_total`.
    pub bytes: ByteCounters,
    /// TLS termination (https listeners).
    pub tls: Option<Arc<TlsListener>>,
}

impl HttpListenerRuntime {
    /// Compiles `config` against the snapshot's `upstreams`. `previous` is the same-named
    /// listener of the snapshot a reload replaces: with unchanged `[listener.tls]`, its TLS
    /// side (certificates, session cache, ticket keys) is kept, so clients resume their
    /// sessions across the reload (a reload still re-reads the certificate files).
    pub fn build(
        config: &model::Listener,
        upstreams: &[Arc<UpstreamCluster>],
        global_limit: Option<&Arc<GlobalLimiter>>,
        registry: &Arc<Registry>,
        previous: Option<&HttpListenerRuntime>,
    ) -> Result<HttpListenerRuntime, HttpListenerError> {
        let listener = config.name.as_str();
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut verifiers: Vec<Arc<JwtVerifier>> = Vec::new();
        for route in &config.routes {
            let mut runtime = compile_route(listener, route, upstreams, registry)?;
            if runtime.rate_limit.is_some() {
                runtime.global_limit = global_limit.cloned();
            }
            if let Some(auth) = &route.auth {
                let index = match verifiers.iter().position(|v| v.serves(&auth.jwt)) {
                    Some(index) => index,
                    None => {
                        let verifier = JwtVerifier::load(&auth.jwt).map_err(|source| {
                            HttpListenerError::Jwks {
                                listener: listener.to_owned(),
                                route: route.name.clone(),
                                source,
                            }
                        })?;
                        verifiers.push(Arc::new(verifier));
                        verifiers.len() - 1
                    }
                };
                runtime.auth = Some(index);
            }
            routes.push((&route.matcher, Arc::new(runtime)));
        }
        let router = Router::build(routes).map_err(|source| HttpListenerError::Router {
            listener: listener.to_owned(),
            source,
        })?;
        let kept_tls = previous
            .filter(|p| p.config.tls == config.tls && p.config.protocol == config.protocol)
            .and_then(|p| p.tls.clone());
        let tls = match &config.tls {
            _ if kept_tls.is_some() => kept_tls,
            Some(tls) if config.protocol == model::Protocol::Https => Some(Arc::new(
                TlsListener::build(listener, tls, registry).map_err(|source| {
                    HttpListenerError::Tls {
                        listener: listener.to_owned(),
                        source,
                    }
                })?,
            )),
            _ => None,
        };
        Ok(HttpListenerRuntime {
            tls,
            name: config.name.clone(),
            config: config.clone(),
            router,
            verifiers,
            unrouted: RequestCounters::new(registry, listener, "", ""),
            active: registry.gauge(&metrics::CONNECTIONS_ACTIVE, &[listener]),
            accepted: registry.counter(&metrics::CONNECTIONS_TOTAL, &[listener]),
            rejected: Rejections::new(listener, registry),
            bytes: ByteCounters::new(listener, registry),
        })
    }

    /// Whether forwarding headers from `peer` are believed.
    pub fn trusted_proxies(&self) -> &[Cidr] {
        &self.config.trusted_proxies
    }
}

fn compile_route(
    listener: &str,
    route: &model::Route,
    upstreams: &[Arc<UpstreamCluster>],
    registry: &Arc<Registry>,
) -> Result<RouteRuntime, HttpListenerError> {
    let find = |cluster: &str| {
        upstreams
            .iter()
            .find(|u| u.name() == cluster)
            .cloned()
            .ok_or_else(|| HttpListenerError::UnknownCluster {
                listener: listener.to_owned(),
                route: route.name.clone(),
                cluster: cluster.to_owned(),
            })
    };
    let branch = |cluster: &str| -> Result<Branch, HttpListenerError> {
        Ok(Branch {
            upstream: find(cluster)?,
            requests: RequestCounters::new(registry, listener, &route.name, cluster),
        })
    };
    let action = match &route.action {
        RouteAction::Forward(target) => {
            let branches = match target {
                Target::Cluster(cluster) => vec![(branch(cluster)?, 1)],
                Target::Split(split) => split
                    .iter()
                    .map(|w| Ok((branch(&w.cluster)?, w.weight)))
                    .collect::<Result<Vec<_>, HttpListenerError>>()?,
            };
            let split = Split::new(branches).ok_or_else(|| HttpListenerError::UnknownCluster {
                listener: listener.to_owned(),
                route: route.name.clone(),
                cluster: String::new(),
            })?;
            Action::Forward(split)
        }
        RouteAction::Redirect(redirect) => Action::Redirect(redirect.clone()),
        RouteAction::DirectResponse(direct) => Action::Direct {
            status: http::StatusCode::from_u16(direct.status)
                .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR),
            body: Bytes::from(direct.body.clone()),
        },
    };
    let name = route.name.as_str();
    let matched_prefix = match &route.matcher.path {
        Some(model::PathMatch::Prefix(prefix)) => Some(prefix.clone()),
        _ => None,
    };
    Ok(RouteRuntime {
        name: route.name.clone(),
        action,
        rewrite: route.rewrite.clone(),
        matched_prefix,
        timeout: route.timeout,
        per_try_timeout: route.per_try_timeout,
        max_duration: route.max_duration,
        retry: route.retry.clone(),
        retry_budget: Budget::of_route(&route.retry, 10),
        auth: None,
        global_limit: None,
        hedge: route.hedge.clone(),
        time_to_head: route
            .hedge
            .as_ref()
            .filter(|h| matches!(h.after, model::HedgeAfter::Percentile(_)))
            .map(|_| Mutex::new(LatencyWindow::default())),
        rate_limit: route.rate_limit.as_ref().map(|limit| {
            RouteLimiter::new(
                limit,
                registry.counter(&metrics::RATE_LIMITED_TOTAL, &[name]),
            )
        }),
        request_headers: HeaderEdits::new(&route.request_headers),
        response_headers: HeaderEdits::new(&route.response_headers),
        duration: registry.histogram(&metrics::REQUEST_DURATION_SECONDS, &[name]),
        added_latency: registry.histogram(&metrics::ADDED_LATENCY_SECONDS, &[name]),
        local_requests: RequestCounters::new(registry, listener, name, ""),
    })
}
