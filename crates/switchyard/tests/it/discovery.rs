//! DNS discovery against a DNS server the test runs on loopback: the resolved set becomes
//! the cluster, an address that appears slow-starts, one that vanishes drains, and a
//! failing server leaves the last good set in place.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use switchyard::backend::BackendArgs;

use crate::support::*;

/// What the test DNS server answers for A queries: the addresses, or SERVFAIL.
#[derive(Debug, Clone)]
enum Zone {
    Answer(Vec<Ipv4Addr>),
    Fail,
}

/// A DNS server on 127.0.0.1 that answers every A query from `zone` with TTL 1 s and
/// every other query with no records. Stops when dropped.
struct DnsServer {
    address: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    async fn start(zone: Zone) -> DnsServer {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(zone));
        let answers = Arc::clone(&zone);
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let current = answers.lock().unwrap().clone();
                if let Some(reply) = answer(&buf[..n], &current) {
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        DnsServer {
            address,
            zone,
            task,
        }
    }

    fn set(&self, zone: Zone) {
        *self.zone.lock().unwrap() = zone;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The reply to one query (RFC 1035 section 4.1), `None` for garbage.
fn answer(query: &[u8], zone: &Zone) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut at = 12;
    while *query.get(at)? != 0 {
        at += usize::from(query[at]) + 1;
    }
    let question_end = at + 5;
    let qtype = u16::from_be_bytes([*query.get(at + 1)?, *query.get(at + 2)?]);
    let question = query.get(12..question_end)?;
    let (rcode, records): (u8, Vec<Ipv4Addr>) = match (zone, qtype) {
        (Zone::Fail, _) => (2, Vec::new()),
        (Zone::Answer(ips), 1) => (0, ips.clone()),
        (Zone::Answer(_), _) => (0, Vec::new()),
    };
    let mut reply = vec![query[0], query[1], 0x81, 0x80 | rcode, 0, 1];
    reply.extend_from_slice(&u16::try_from(records.len()).ok()?.to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(question);
    for ip in records {
        // Name: a pointer to the question's name; type A, class IN, TTL 1, 4 bytes.
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4]);
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}

async fn endpoints_view(server: &switchyard::runtime::Server) -> Vec<(String, String)> {
    let (_, body) = admin_get(server, "/api/v1/clusters").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    v["clusters"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn dns_answers_become_the_cluster_and_a_failing_server_keeps_the_last_set() {
    // Three backends on one port, at three loopback addresses.
    let mut first = BackendArgs::for_test("b2");
    first.listen = "127.0.0.2:0".parse().unwrap();
    let b2 = backend(first).await;
    let port = b2.local_addr().port();
    let mut backends = vec![b2];
    for i in [3u8, 4] {
        let mut args = BackendArgs::for_test(&format!("b{i}"));
        args.listen = SocketAddr::from(([127, 0, 0, i], port));
        backends.push(backend(args).await);
    }
    let ip = |i: u8| Ipv4Addr::new(127, 0, 0, i);
    let dns = DnsServer::start(Zone::Answer(vec![ip(2), ip(3)])).await;
    let toml = format!(
        r#"{WEB}
cluster = "api"
[[cluster]]
name = "api"
balance = "round-robin"
discovery = {{ dns = "api.test:{port}", refresh = "1s", resolver = "{resolver}" }}
"#,
        resolver = dns.address
    );
    let server = balancer(&toml).await;
    let names: Vec<String> = endpoints_view(&server)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        names,
        [format!("127.0.0.2:{port}"), format!("127.0.0.3:{port}")]
    );
    let client = keepalive_client();
    let url = format!("http://{}/", address(&server, "web"));
    let seen = |client: reqwest::Client| {
        let url = url.clone();
        async move {
            let mut seen = HashSet::new();
            for _ in 0..20 {
                let r = within(client.get(&url).send()).await.unwrap();
                assert_eq!(r.status(), 200);
                seen.insert(r.headers()["x-backend"].to_str().unwrap().to_owned());
            }
            seen
        }
    };
    assert_eq!(
        seen(client.clone()).await,
        HashSet::from(["b2".into(), "b3".into()])
    );

    // .2 leaves, .4 joins: the new one slow-starts, the old one is gone.
    dns.set(Zone::Answer(vec![ip(3), ip(4)]));
    let joined = format!("127.0.0.4:{port}");
    let view = within(async {
        loop {
            let view = endpoints_view(&server).await;
            if view.iter().any(|e| e.0 == joined) {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(view.len(), 2, "{view:?}");
    assert!(
        view.contains(&(joined.clone(), "slow-starting".into())),
        "{view:?}"
    );
    assert!(
        !view.iter().any(|e| e.0.starts_with("127.0.0.2:")),
        "{view:?}"
    );
    let after = seen(client.clone()).await;
    assert!(!after.contains("b2") && after.contains("b3"), "{after:?}");

    // The server fails: lookups are counted as failures and the set stays.
    dns.set(Zone::Fail);
    let failures = r#"switchyard_dns_resolutions_total{cluster="api",result="failure"}"#;
    within(async {
        while metric_of(&server, failures).await < 1.0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let view = endpoints_view(&server).await;
    assert_eq!(view.len(), 2, "the last good set stays: {view:?}");
    // Traffic still flows to the kept set (b4 slow-starts, so it may get few of 20).
    let last = seen(client).await;
    assert!(last.contains("b3") && !last.contains("b2"), "{last:?}");
}
