//! Configuration reload (SIGHUP, `POST /api/v1/reload`): all or nothing.
//!
//! Everything that can fail happens before anything changes: the file is parsed and
//! validated in full, the new snapshot is compiled beside the one in force (endpoints that
//! remain are handed over with their live state, see [`Snapshot::build`]), and the sockets
//! of new listener addresses are bound. Only then is the new snapshot swapped in, in one
//! step that cannot fail: kept sockets are re-pointed, new ones start accepting, removed
//! ones drain on their own, endpoints the new configuration dropped drain, and the
//! background tasks of the old configuration (health checks, certificate watchers) are
//! replaced by the new one's. An invalid file, a compile failure or a port in use leaves
//! the running configuration exactly as it was and is answered with every error.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tracing::{info, warn};

use super::listeners::{ListenerGroup, SocketKey, Sockets};
use super::server::{Control, Shared};
use super::snapshot::Snapshot;
use crate::admin::access_log::rfc3339_millis;
use crate::admin::metrics;
use crate::config::{self, Config};

/// How many reloads `GET /api/v1/reloads` remembers.
const HISTORY: usize = 32;

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadTrigger {
    /// SIGHUP.
    Sighup,
    /// `POST /api/v1/reload`.
    Api,
}

/// One reload as `GET /api/v1/reloads` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadRecord {
    /// When it finished (RFC 3339, UTC).
    pub time: String,
    /// What asked for it.
    pub trigger: ReloadTrigger,
    /// `success` or `failure`.
    pub result: &'static str,
    /// One line for people.
    pub summary: String,
    /// Every error of a failed reload (file:line:column: field: message).
    pub errors: Vec<String>,
}

/// Counts of what a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// Listener names added, kept (same socket) and removed.
    pub listeners: Delta,
    /// Cluster names added, kept and removed.
    pub clusters: Delta,
    /// Endpoints (`cluster/endpoint`) added, kept with their state, and removed (draining).
    pub endpoints: Delta,
    /// Settings that changed but only take effect on restart or `run --upgrade`.
    pub not_applied: Vec<&'static str>,
}

/// Added / kept / removed names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Delta {
    /// New.
    pub added: Vec<String>,
    /// In both.
    pub kept: Vec<String>,
    /// Gone.
    pub removed: Vec<String>,
}

impl Delta {
    fn between<'a>(
        old: impl IntoIterator<Item = &'a str>,
        new: impl IntoIterator<Item = &'a str>,
    ) -> Delta {
        let old: Vec<&str> = old.into_iter().collect();
        let new: Vec<&str> = new.into_iter().collect();
        Delta {
            added: new
                .iter()
                .filter(|n| !old.contains(n))
                .map(|s| (*s).to_owned())
                .collect(),
            kept: new
                .iter()
                .filter(|n| old.contains(n))
                .map(|s| (*s).to_owned())
                .collect(),
            removed: old
                .iter()
                .filter(|o| !new.contains(o))
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }
}

impl Changes {
    fn summary(&self) -> String {
        let mut line = format!(
            "listeners +{} ={} -{}; clusters +{} ={} -{}; endpoints +{} ={} -{}",
            self.listeners.added.len(),
            self.listeners.kept.len(),
            self.listeners.removed.len(),
            self.clusters.added.len(),
            self.clusters.kept.len(),
            self.clusters.removed.len(),
            self.endpoints.added.len(),
            self.endpoints.kept.len(),
            self.endpoints.removed.len(),
        );
        if !self.not_applied.is_empty() {
            line.push_str("; not applied until restart: ");
            line.push_str(&self.not_applied.join(", "));
        }
        line
    }
}

/// Why a reload was refused (the configuration in force is unchanged).
#[derive(Debug, Clone, Serialize)]
pub struct ReloadFailure {
    /// One line for people.
    pub message: String,
    /// Every error.
    pub errors: Vec<String>,
}

/// The reload history.
#[derive(Debug, Default)]
pub struct History {
    records: VecDeque<ReloadRecord>,
}

impl History {
    fn push(&mut self, record: ReloadRecord) {
        if self.records.len() == HISTORY {
            self.records.pop_back();
        }
        self.records.push_front(record);
    }

    /// Newest first.
    pub fn records(&self) -> Vec<ReloadRecord> {
        self.records.iter().cloned().collect()
    }
}

/// How the listeners of a new configuration map onto the groups serving now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListenerPlan {
    /// (new listener index, group index): the group's socket is kept.
    pub kept: Vec<(usize, usize)>,
    /// New listener indexes that need sockets.
    pub added: Vec<usize>,
    /// Group indexes no listener keeps: drained.
    pub removed: Vec<usize>,
}

/// Matches the `new` listeners (key, name) onto the `current` groups: a key present in
/// both keeps its socket, the same-named group first (so two port-0 listeners keep their
/// own ports), else any group with that key (a rename keeps the socket). Pure.
pub fn plan_listeners(current: &[(SocketKey, &str)], new: &[(SocketKey, &str)]) -> ListenerPlan {
    let mut claimed = vec![false; current.len()];
    let mut matched: Vec<Option<usize>> = vec![None; new.len()];
    for same_name in [true, false] {
        for (i, (key, name)) in new.iter().enumerate() {
            if matched[i].is_some() {
                continue;
            }
            let found = (0..current.len()).find(|&g| {
                !claimed[g] && current[g].0 == *key && (!same_name || current[g].1 == *name)
            });
            if let Some(g) = found {
                claimed[g] = true;
                matched[i] = Some(g);
            }
        }
    }
    let mut plan = ListenerPlan::default();
    for (i, m) in matched.into_iter().enumerate() {
        match m {
            Some(g) => plan.kept.push((i, g)),
            None => plan.added.push(i),
        }
    }
    plan.removed = (0..current.len()).filter(|&g| !claimed[g]).collect();
    plan
}

/// Settings a running process cannot change: they differ, so the operator is told.
fn not_applied(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut list = Vec::new();
    if old.runtime.workers != new.runtime.workers {
        list.push("runtime.workers");
    }
    if old.admin != new.admin {
        list.push("admin");
    }
    if old.access_log != new.access_log {
        list.push("access_log");
    }
    list
}

fn endpoint_names(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .clusters
        .iter()
        .flat_map(|c| {
            c.endpoints()
                .iter()
                .map(move |e| format!("{}/{}", c.name(), e.name))
        })
        .collect()
}

/// Reloads the configuration file; see the module docs. Serialised by the control lock.
pub fn reload(shared: &Arc<Shared>, trigger: ReloadTrigger) -> Result<Changes, ReloadFailure> {
    let mut control = shared.lock_control();
    let result = reload_locked(shared, &mut control);
    let registry = &shared.registry;
    let record = match &result {
        Ok(changes) => {
            registry
                .counter(&metrics::CONFIG_RELOADS_TOTAL, &["success"])
                .inc();
            info!(?trigger, summary = %changes.summary(), "configuration reloaded");
            ReloadRecord {
                time: rfc3339_millis(SystemTime::now()),
                trigger,
                result: "success",
                summary: changes.summary(),
                errors: Vec::new(),
            }
        }
        Err(failure) => {
            registry
                .counter(&metrics::CONFIG_RELOADS_TOTAL, &["failure"])
                .inc();
            warn!(?trigger, error = %failure.message, errors = ?failure.errors, "reload refused; the configuration in force is unchanged");
            ReloadRecord {
                time: rfc3339_millis(SystemTime::now()),
                trigger,
                result: "failure",
                summary: failure.message.clone(),
                errors: failure.errors.clone(),
            }
        }
    };
    control.history.push(record);
    // Certificate files are re-read either way: rotating a certificate must not depend on
    // the rest of the file being valid (a SIGHUP always meant that).
    crate::tls::acceptor::reload_all();
    result
}

fn refuse(message: impl Into<String>, errors: Vec<String>) -> ReloadFailure {
    ReloadFailure {
        message: message.into(),
        errors,
    }
}

fn reload_locked(shared: &Arc<Shared>, control: &mut Control) -> Result<Changes, ReloadFailure> {
    if control.stopping {
        return Err(refuse("shutting down", Vec::new()));
    }
    let Some(path) = control.config_path.clone() else {
        return Err(refuse(
            "this server was started without a configuration file",
            Vec::new(),
        ));
    };
    let config = config::load_file(&path).map_err(|errors| {
        let list: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
        refuse(format!("{}: {} error(s)", path.display(), list.len()), list)
    })?;
    // Resolved sets stay for clusters that still resolve the same name.
    let old = shared.snapshot.load_full();
    let dns_of = |config: &Config, name: &str| {
        config
            .clusters
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.discovery.as_ref())
            .map(|d| d.dns.clone())
    };
    let mut resolved = control.resolved.clone();
    resolved.retain(|name, _| {
        let new = dns_of(&config, name);
        new.is_some() && new == dns_of(&old.config, name)
    });
    let config = super::discovery::overlay(config, &resolved);
    let changes = apply(shared, control, config)?;
    control.resolved = resolved;
    control.discovery = tokio::task::JoinSet::new();
    let snapshot = shared.snapshot.load_full();
    super::discovery::spawn(&snapshot.config, shared, &mut control.discovery);
    Ok(changes)
}

/// A DNS answer changed `cluster`'s set: the snapshot is rebuilt with it (module docs of
/// [`super::discovery`]); not a reload, so neither counted nor listed as one.
pub fn apply_discovery(
    shared: &Arc<Shared>,
    cluster: &str,
    addresses: Vec<std::net::SocketAddr>,
) -> Result<Changes, ReloadFailure> {
    let mut control = shared.lock_control();
    if control.stopping {
        return Err(refuse("shutting down", Vec::new()));
    }
    let mut resolved = control.resolved.clone();
    resolved.insert(cluster.to_owned(), addresses);
    let current = Config::clone(&shared.snapshot.load().config);
    let config = super::discovery::overlay(current, &resolved);
    let changes = apply(shared, &mut control, config)?;
    control.resolved = resolved;
    info!(cluster, endpoints = ?changes.endpoints, "DNS discovery applied");
    Ok(changes)
}

/// Compiles `config` beside the snapshot in force and, if everything needed succeeded,
/// swaps it in (module docs).
fn apply(
    shared: &Arc<Shared>,
    control: &mut Control,
    config: Config,
) -> Result<Changes, ReloadFailure> {
    let old = shared.snapshot.load_full();
    let mut changes = Changes {
        not_applied: not_applied(&old.config, &config),
        ..Changes::default()
    };
    let new = Snapshot::build(config, &shared.registry, Some(&old))
        .map_err(|e| refuse(e.to_string(), vec![e.to_string()]))?;

    // Bind what is new before anything changes: a port in use refuses the reload.
    let current: Vec<(SocketKey, &str)> = control
        .groups
        .iter()
        .map(|g| (g.key, g.bound.name.as_str()))
        .collect();
    let wanted: Vec<(SocketKey, &str)> = new
        .config
        .listeners
        .iter()
        .map(|l| (SocketKey::of(l), l.name.as_str()))
        .collect();
    let plan = plan_listeners(&current, &wanted);
    let mut bound = Vec::with_capacity(plan.added.len());
    for &i in &plan.added {
        let listener = &new.config.listeners[i];
        let sockets = Sockets::bind(listener, control.accept_loops)
            .map_err(|e| refuse(e.to_string(), vec![e.to_string()]))?;
        bound.push((i, sockets));
    }

    changes.listeners = Delta::between(
        control.groups.iter().map(|g| g.bound.name.as_str()),
        new.config.listeners.iter().map(|l| l.name.as_str()),
    );
    changes.clusters = Delta::between(
        old.clusters.iter().map(|c| c.name()),
        new.clusters.iter().map(|c| c.name()),
    );
    let (old_endpoints, new_endpoints) = (endpoint_names(&old), endpoint_names(&new));
    changes.endpoints = Delta::between(
        old_endpoints.iter().map(String::as_str),
        new_endpoints.iter().map(String::as_str),
    );

    // Commit: nothing below can fail for a snapshot that compiled.
    let new = Arc::new(new);
    new.adopt_endpoints();
    shared.snapshot.store(Arc::clone(&new));
    let mut serving = Vec::with_capacity(new.config.listeners.len());
    let mut groups: Vec<Option<ListenerGroup>> = control.groups.drain(..).map(Some).collect();
    for &(i, g) in &plan.kept {
        if let Some(mut group) = groups[g].take() {
            if let Err(error) = group.repoint(&new.config.listeners[i], &new) {
                warn!(%error, "listener kept its previous routes");
            }
            serving.push((i, group));
        }
    }
    for (i, sockets) in bound {
        match ListenerGroup::serve(&new.config.listeners[i], sockets, &new, &control.logging) {
            Ok(group) => serving.push((i, group)),
            Err(error) => warn!(%error, "new listener could not start"),
        }
    }
    let drain_timeout = new.config.defaults.drain_timeout;
    for group in groups.into_iter().flatten() {
        info!(listener = %group.bound.name, "listener removed; draining");
        tokio::spawn(group.drain(drain_timeout));
    }
    serving.sort_by_key(|(i, _)| *i);
    control.groups = serving.into_iter().map(|(_, g)| g).collect();
    for endpoint in old.retire(&new) {
        // The endpoint left the configuration: its exchanges still running get the
        // cluster's drain_timeout, then are cut.
        tokio::spawn(async move {
            tokio::time::sleep(endpoint.drain_timeout()).await;
            endpoint.cut_if_due(super::clock::now());
        });
    }
    control.generation = super::server::spawn_generation(&new, &shared.registry).tasks;
    shared.publish_listeners(control);
    prune_series(shared, &new);
    Ok(changes)
}

/// Drops the metric series of clusters, endpoints and listeners the new configuration no
/// longer has (SPEC 6: series from the configuration exist "after each reload").
fn prune_series(shared: &Shared, snapshot: &Snapshot) {
    let clusters: Vec<(&str, Vec<&str>)> = snapshot
        .clusters
        .iter()
        .map(|c| {
            (
                c.name(),
                c.endpoints().iter().map(|e| e.name.as_str()).collect(),
            )
        })
        .collect();
    let listeners: Vec<&str> = snapshot
        .config
        .listeners
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    for family in metrics::ALL {
        let labels = family.labels;
        let cluster_at = labels.iter().position(|l| *l == "cluster");
        let endpoint_at = labels.iter().position(|l| *l == "endpoint");
        let listener_at = labels.iter().position(|l| *l == "listener");
        if cluster_at.is_none() && listener_at.is_none() {
            continue;
        }
        shared.registry.retain(family, |values| {
            let cluster_ok = cluster_at.is_none_or(|c| {
                clusters.iter().any(|(name, endpoints)| {
                    values.get(c).is_some_and(|v| v == name)
                        && endpoint_at.is_none_or(|e| {
                            values
                                .get(e)
                                .is_some_and(|v| endpoints.contains(&v.as_str()))
                        })
                })
            });
            let listener_ok = listener_at.is_none_or(|l| {
                values
                    .get(l)
                    .is_some_and(|v| listeners.contains(&v.as_str()))
            });
            cluster_ok && listener_ok
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::listeners::Family;

    fn key(family: Family, listen: &str) -> SocketKey {
        SocketKey {
            family,
            listen: listen.parse().expect("address"),
        }
    }

    #[test]
    fn listeners_keep_sockets_by_address_and_family() {
        let web = key(Family::Http, "127.0.0.1:8080");
        let db = key(Family::L4, "127.0.0.1:5432");
        let dns = key(Family::Udp, "127.0.0.1:53");
        let any = key(Family::Http, "127.0.0.1:0");
        let current = [(web, "web"), (db, "db"), (any, "any")];
        // db moves to UDP on the same port: a new socket; web (renamed) and the port-0 one
        // are kept.
        let new = [
            (any, "any"),
            (key(Family::Udp, "127.0.0.1:5432"), "db"),
            (web, "www"),
            (dns, "dns"),
        ];
        let plan = plan_listeners(&current, &new);
        assert_eq!(plan.kept, vec![(0, 2), (2, 0)]);
        assert_eq!(plan.added, vec![1, 3]);
        assert_eq!(plan.removed, vec![1]);
    }

    #[test]
    fn port_zero_listeners_keep_their_own_socket_by_name() {
        let any = key(Family::Http, "127.0.0.1:0");
        let plan = plan_listeners(&[(any, "a"), (any, "b")], &[(any, "new"), (any, "b")]);
        assert_eq!(plan.kept, vec![(0, 0), (1, 1)]);
        let plan = plan_listeners(&[(any, "a"), (any, "b")], &[(any, "b")]);
        assert_eq!(plan.kept, vec![(0, 1)]);
        assert_eq!(plan.removed, vec![0]);
    }

    #[test]
    fn deltas_list_added_kept_and_removed_names() {
        let d = Delta::between(["a", "b", "c"], ["c", "d", "a"]);
        assert_eq!(d.added, vec!["d"]);
        assert_eq!(d.kept, vec!["c", "a"]);
        assert_eq!(d.removed, vec!["b"]);
    }

    #[test]
    fn history_keeps_the_newest_first_and_is_bounded() {
        let mut h = History::default();
        for i in 0..(HISTORY + 3) {
            h.push(ReloadRecord {
                time: i.to_string(),
                trigger: ReloadTrigger::Api,
                result: "success",
                summary: String::new(),
                errors: Vec::new(),
            });
        }
        let records = h.records();
        assert_eq!(records.len(), HISTORY);
        assert_eq!(records[0].time, (HISTORY + 2).to_string());
    }
}
