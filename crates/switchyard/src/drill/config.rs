//! The operator's configuration, made drillable: the same routes, balancing, health,
//! outlier, retry and limit settings, with the cluster's endpoints replaced by the
//! drill's backends and every address moved to loopback port 0.
//!
//! The rewrite works on the TOML tree, not on the validated model, so what is tested is
//! exactly what the operator wrote; the result then goes through the normal validation
//! (`config::load_str`) with the original file as its origin, so relative certificate
//! paths still resolve.

use std::net::SocketAddr;

use toml::{Table, Value};

/// The rewritten configuration and where the load should go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drillable {
    /// The configuration text.
    pub text: String,
    /// The listener the load goes to.
    pub listener: String,
    /// Whether that listener speaks TLS (`https`).
    pub tls: bool,
    /// The cluster(s) whose endpoints are the drill's backends.
    pub clusters: Vec<String>,
}

fn table<'a>(root: &'a mut Table, key: &str) -> Result<&'a mut Table, String> {
    root.entry(key.to_owned())
        .or_insert_with(|| Value::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| format!("`{key}` is not a table"))
}

fn array<'a>(root: &'a mut Table, key: &str) -> Result<&'a mut Vec<Value>, String> {
    match root.get_mut(key) {
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(format!("`{key}` is not an array of tables")),
        None => Err(format!("the configuration has no [[{key}]]")),
    }
}

fn name_of(t: &Table) -> Option<&str> {
    t.get("name").and_then(Value::as_str)
}

/// Rewrites `text` (see the module docs). `backends` are `(name, address)` pairs.
pub fn rewrite(
    text: &str,
    backends: &[(String, SocketAddr)],
    cluster: Option<&str>,
    listener: Option<&str>,
) -> Result<Drillable, String> {
    let mut root: Table = text.parse().map_err(|e: toml::de::Error| {
        format!(
            "the balancer configuration is not TOML: {}",
            e.to_string().trim_end()
        )
    })?;
    // Things a drill must not touch on the operator's machine.
    root.remove("xdp");
    root.remove("global_rate_limit");
    if let Some(Value::Table(runtime)) = root.get_mut("runtime") {
        runtime.remove("upgrade_socket");
    }
    let admin = table(&mut root, "admin")?;
    admin.insert("listen".into(), Value::String("127.0.0.1:0".into()));
    admin.remove("token_file");
    let log = table(&mut root, "access_log")?;
    log.insert("enabled".into(), Value::Boolean(false));

    let mut chosen: Option<(String, bool)> = None;
    for item in array(&mut root, "listener")? {
        let Some(l) = item.as_table_mut() else {
            return Err("`listener` entries must be tables".into());
        };
        l.insert("listen".into(), Value::String("127.0.0.1:0".into()));
        let name = name_of(l).unwrap_or("").to_owned();
        let protocol = l.get("protocol").and_then(Value::as_str).unwrap_or("");
        let usable = matches!(protocol, "http" | "https" | "tcp");
        let wanted = match listener {
            Some(want) => want == name,
            None => usable && chosen.is_none(),
        };
        if wanted {
            if !usable {
                return Err(format!(
                    "listener {name:?}: a drill loads http, https or tcp listeners, not {protocol:?}"
                ));
            }
            chosen = Some((name, protocol == "https"));
        }
    }
    let Some((listener, tls)) = chosen else {
        return Err(match listener {
            Some(want) => format!("the configuration has no listener {want:?}"),
            None => "the configuration has no http, https or tcp listener to load".into(),
        });
    };

    let endpoints: Vec<Value> = backends
        .iter()
        .map(|(name, addr)| {
            let mut t = Table::new();
            t.insert("address".into(), Value::String(addr.to_string()));
            t.insert("name".into(), Value::String(name.clone()));
            Value::Table(t)
        })
        .collect();
    let mut clusters = Vec::new();
    for item in array(&mut root, "cluster")? {
        let Some(c) = item.as_table_mut() else {
            return Err("`cluster` entries must be tables".into());
        };
        let name = name_of(c).unwrap_or("").to_owned();
        if cluster.is_some_and(|want| want != name) {
            continue;
        }
        c.remove("discovery");
        c.insert("endpoints".into(), Value::Array(endpoints.clone()));
        clusters.push(name);
    }
    if let (Some(want), true) = (cluster, clusters.is_empty()) {
        return Err(format!("the configuration has no cluster {want:?}"));
    }
    let text =
        toml::to_string(&root).map_err(|e| format!("cannot write the drill configuration: {e}"))?;
    Ok(Drillable {
        text,
        listener,
        tls,
        clusters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPERATOR: &str = r#"
[admin]
listen = "0.0.0.0:9901"
token_file = "/etc/switchyard/token"
[[listener]]
name = "web"
listen = "0.0.0.0:443"
protocol = "https"
[[listener]]
name = "plain"
listen = "0.0.0.0:80"
protocol = "http"
cluster = "api"
[[cluster]]
name = "api"
discovery = { dns = "api.internal:8080", refresh = "30s" }
balance = "p2c-ewma"
[[cluster]]
name = "other"
endpoints = ["10.0.0.9:80"]
[[xdp]]
interface = "eth0"
"#;

    fn fleet() -> Vec<(String, SocketAddr)> {
        vec![
            ("b1".into(), "127.0.0.1:4001".parse().expect("addr")),
            ("b2".into(), "127.0.0.1:4002".parse().expect("addr")),
        ]
    }

    #[test]
    fn endpoints_and_addresses_are_replaced() {
        let d = rewrite(OPERATOR, &fleet(), Some("api"), Some("plain")).expect("ok");
        assert_eq!((d.listener.as_str(), d.tls), ("plain", false));
        assert_eq!(d.clusters, ["api"]);
        let t: Table = d.text.parse().expect("toml");
        assert_eq!(t["admin"]["listen"].as_str(), Some("127.0.0.1:0"));
        assert!(t["admin"].get("token_file").is_none());
        assert_eq!(t["access_log"]["enabled"].as_bool(), Some(false));
        assert!(t.get("xdp").is_none());
        let listeners = t["listener"].as_array().expect("array");
        assert!(
            listeners
                .iter()
                .all(|l| l["listen"].as_str() == Some("127.0.0.1:0"))
        );
        let api = &t["cluster"][0];
        assert!(api.get("discovery").is_none());
        assert_eq!(
            api["endpoints"][1]["address"].as_str(),
            Some("127.0.0.1:4002")
        );
        assert_eq!(api["endpoints"][1]["name"].as_str(), Some("b2"));
        assert_eq!(
            t["cluster"][1]["endpoints"][0].as_str(),
            Some("10.0.0.9:80")
        );
    }

    #[test]
    fn defaults_pick_the_first_loadable_listener_and_every_cluster() {
        let d = rewrite(OPERATOR, &fleet(), None, None).expect("ok");
        assert_eq!((d.listener.as_str(), d.tls), ("web", true));
        assert_eq!(d.clusters, ["api", "other"]);
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            rewrite(OPERATOR, &fleet(), Some("nope"), None).expect_err("bad"),
            "the configuration has no cluster \"nope\""
        );
        assert_eq!(
            rewrite(OPERATOR, &fleet(), None, Some("nope")).expect_err("bad"),
            "the configuration has no listener \"nope\""
        );
    }
}
