//! DNS discovery (`discovery = { dns = "name:port", refresh, resolver }`): a cluster's
//! endpoints are the addresses a name resolves to.
//!
//! One task per such cluster resolves the name with hickory's async resolver, again when the
//! answer's TTL runs out (never later than `refresh`, never sooner than a second). A changed
//! set is applied like a reload that only touches that cluster: the snapshot is rebuilt
//! with the new set, addresses that remain keep their live state, new ones start (checked
//! first with active checks, slow-starting after), vanished ones drain. A failed lookup
//! keeps the last good set; it is logged and counted in
//! `dns_resolutions_total{cluster,result="failure"}`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tracing::{info, warn};

use super::server::Shared;
use crate::admin::metrics;
use crate::config::Config;
use crate::config::model::{self, Discovery};

/// The shortest wait between two lookups of one name.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// A first lookup at start-up waits at most this long.
pub const FIRST_LOOKUP: Duration = Duration::from_secs(5);

/// One answer: the addresses, and how long the answer is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The addresses with the configured port, sorted and without duplicates.
    pub addresses: Vec<SocketAddr>,
    /// Until the record's TTL runs out.
    pub valid_for: Duration,
}

/// The resolver for `discovery`: its `resolver` server, else the system's configuration.
pub fn resolver(discovery: &Discovery) -> Result<TokioResolver, String> {
    let builder = match discovery.resolver {
        Some(server) => {
            let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
            for connection in &mut name_server.connections {
                connection.port = server.port();
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![name_server]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(|e| format!("system resolver: {e}"))?,
    };
    builder.build().map_err(|e| format!("resolver: {e}"))
}

/// Splits `name:port`.
fn host_and_port(dns: &str) -> Result<(&str, u16), String> {
    let (host, port) = dns
        .rsplit_once(':')
        .ok_or_else(|| format!("{dns:?} is not host:port"))?;
    let port = port.parse().map_err(|_| format!("bad port in {dns:?}"))?;
    Ok((host.trim_start_matches('[').trim_end_matches(']'), port))
}

/// Resolves `discovery.dns` once.
pub async fn lookup(resolver: &TokioResolver, discovery: &Discovery) -> Result<Answer, String> {
    let (host, port) = host_and_port(&discovery.dns)?;
    let answer = resolver
        .lookup_ip(host)
        .await
        .map_err(|e| format!("{host}: {e}"))?;
    let valid_for = answer
        .valid_until()
        .saturating_duration_since(Instant::now());
    let addresses: BTreeSet<SocketAddr> =
        answer.iter().map(|ip| SocketAddr::new(ip, port)).collect();
    if addresses.is_empty() {
        return Err(format!("{host}: no addresses"));
    }
    Ok(Answer {
        addresses: addresses.into_iter().collect(),
        valid_for,
    })
}

/// The wait before the next lookup: the answer's TTL, bounded by `refresh` and a second.
pub fn next_lookup(refresh: Duration, valid_for: Option<Duration>) -> Duration {
    valid_for.unwrap_or(refresh).min(refresh).max(MIN_REFRESH)
}

/// The endpoints of a resolved set: named by address, weight 1.
pub fn endpoints_of(addresses: &[SocketAddr]) -> Vec<model::Endpoint> {
    addresses
        .iter()
        .map(|&address| model::Endpoint {
            name: address.to_string(),
            address,
            weight: 1,
        })
        .collect()
}

/// `config` with every discovery cluster's endpoints set from `resolved` (name → set).
pub fn overlay(
    mut config: Config,
    resolved: &std::collections::HashMap<String, Vec<SocketAddr>>,
) -> Config {
    for cluster in &mut config.clusters {
        if cluster.discovery.is_some() {
            cluster.endpoints =
                endpoints_of(resolved.get(&cluster.name).map_or(&[], Vec::as_slice));
        }
    }
    config
}

/// Resolves every discovery cluster of `config` once (bounded by [`FIRST_LOOKUP`]); the
/// clusters whose lookup failed start empty and are retried by their task.
pub async fn first_lookups(config: &Config) -> std::collections::HashMap<String, Vec<SocketAddr>> {
    let mut resolved = std::collections::HashMap::new();
    for cluster in &config.clusters {
        let Some(discovery) = &cluster.discovery else {
            continue;
        };
        let answer = match resolver(discovery) {
            Ok(r) => tokio::time::timeout(FIRST_LOOKUP, lookup(&r, discovery))
                .await
                .unwrap_or_else(|_| Err("timed out".into())),
            Err(e) => Err(e),
        };
        match answer {
            Ok(answer) => {
                resolved.insert(cluster.name.clone(), answer.addresses);
            }
            Err(error) => {
                warn!(cluster = %cluster.name, dns = %discovery.dns, %error, "first DNS lookup failed; the cluster starts without endpoints");
            }
        }
    }
    resolved
}

/// Spawns one lookup task per discovery cluster of `config` onto `tasks`.
pub fn spawn(config: &Config, shared: &Arc<Shared>, tasks: &mut tokio::task::JoinSet<()>) {
    for cluster in &config.clusters {
        if let Some(discovery) = &cluster.discovery {
            tasks.spawn(watch(
                Arc::clone(shared),
                cluster.name.clone(),
                discovery.clone(),
            ));
        }
    }
}

async fn watch(shared: Arc<Shared>, cluster: String, discovery: Discovery) {
    let registry = &shared.registry;
    let success = registry.counter(&metrics::DNS_RESOLUTIONS_TOTAL, &[&cluster, "success"]);
    let failure = registry.counter(&metrics::DNS_RESOLUTIONS_TOTAL, &[&cluster, "failure"]);
    let resolver = match resolver(&discovery) {
        Ok(r) => r,
        Err(error) => {
            warn!(%cluster, %error, "DNS discovery cannot start");
            failure.inc();
            return;
        }
    };
    // A set found at start-up is looked at again a second later (its TTL was not kept); a
    // cluster without one is resolved at once.
    let mut wait = if shared.resolved_set(&cluster).is_some() {
        MIN_REFRESH
    } else {
        Duration::ZERO
    };
    loop {
        tokio::time::sleep(wait).await;
        match lookup(&resolver, &discovery).await {
            Ok(answer) => {
                success.inc();
                wait = next_lookup(discovery.refresh, Some(answer.valid_for));
                if shared.resolved_set(&cluster).as_deref() != Some(answer.addresses.as_slice()) {
                    info!(%cluster, dns = %discovery.dns, addresses = ?answer.addresses, "DNS answer changed");
                    if let Err(error) = shared.apply_discovery(&cluster, answer.addresses) {
                        warn!(%cluster, error = %error.message, "DNS answer not applied");
                    }
                }
            }
            Err(error) => {
                failure.inc();
                wait = next_lookup(discovery.refresh, None).min(Duration::from_secs(5));
                warn!(%cluster, dns = %discovery.dns, %error, "DNS lookup failed; keeping the last good set");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_sets_the_next_lookup_within_a_second_and_refresh() {
        let refresh = Duration::from_secs(30);
        assert_eq!(
            next_lookup(refresh, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            next_lookup(refresh, Some(Duration::from_secs(300))),
            refresh
        );
        assert_eq!(next_lookup(refresh, Some(Duration::ZERO)), MIN_REFRESH);
        assert_eq!(next_lookup(refresh, None), refresh);
    }

    #[test]
    fn names_split_into_host_and_port() {
        assert_eq!(
            host_and_port("api.internal:8080"),
            Ok(("api.internal", 8080))
        );
        assert_eq!(host_and_port("[::1]:53"), Ok(("::1", 53)));
        assert!(host_and_port("api.internal").is_err());
    }

    #[test]
    fn resolved_endpoints_are_named_by_address() {
        let e = endpoints_of(&["10.0.0.1:80".parse().expect("addr")]);
        assert_eq!((e[0].name.as_str(), e[0].weight), ("10.0.0.1:80", 1));
    }
}
