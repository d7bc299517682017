//! `run --upgrade` with the real binary: the sockets move to the new process under load,
//! no request fails, no connection is refused, the old process exits 0 and the operator's
//! drain carries over.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::*;

/// A `switchyard run` process, killed by PID when dropped.
struct Balancer {
    child: Child,
    events: mpsc::Receiver<serde_json::Value>,
}

impl Balancer {
    fn spawn(args: &[&str], config: &std::path::Path) -> Balancer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .env_remove("RUST_LOG")
            .args(args)
            .arg("-c")
            .arg(config)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(v) if v["event"] == "listening" => {
                        let _ = tx.send(v);
                    }
                    _ => eprintln!("[balancer] {line}"),
                }
            }
        });
        Balancer { child, events }
    }

    /// The addresses of the first `n` listening events, by listener name.
    fn listening(&self, n: usize) -> Vec<(String, SocketAddr)> {
        (0..n)
            .map(|_| {
                let v = self
                    .events
                    .recv_timeout(Duration::from_secs(20))
                    .expect("listening event");
                (
                    v["listener"].as_str().unwrap().to_owned(),
                    v["address"].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Default)]
struct Counts {
    sent: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    max_latency_us: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_under_load_fails_no_request_and_refuses_no_connection() {
    let backends = http_backends(2).await;
    let addresses: Vec<_> = backends.iter().map(|b| b.local_addr()).collect();
    let dir = std::env::temp_dir().join(format!("switchyard-it-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("upgrade.sock");
    let toml = format!(
        r#"[runtime]
upgrade_socket = "{socket}"
[defaults]
drain_timeout = "5s"
{WEB}
cluster = "app"
[[cluster]]
name = "app"
balance = "round-robin"
endpoints = {endpoints}
"#,
        socket = socket.display(),
        endpoints = endpoints(&addresses, &["b1", "b2"]),
    );
    let file = ConfigFile::new("upgrade", &toml);
    let mut old = Balancer::spawn(&["run"], file.path());
    let bound = old.listening(2);
    let (admin, web) = (bound[0].1, bound[1].1);
    let drain = format!("http://{admin}/api/v1/clusters/app/endpoints/b2/drain");
    assert_eq!(
        within(client().post(&drain).send()).await.unwrap().status(),
        200
    );

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8 {
        let client = if w % 2 == 0 {
            keepalive_client()
        } else {
            client()
        };
        let (counts, stop) = (Arc::clone(&counts), Arc::clone(&stop));
        let url = format!("http://{web}/");
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                counts.sent.fetch_add(1, Ordering::Relaxed);
                match client.get(&url).send().await {
                    Ok(r) => {
                        let status = r.status();
                        if status != 200 || r.bytes().await.is_err() {
                            eprintln!("failed: {status}");
                            counts.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        eprintln!("failed: {e:?}");
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                        if e.is_connect() {
                            counts.refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                counts.max_latency_us.fetch_max(us, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = counts.max_latency_us.swap(0, Ordering::Relaxed);

    let new = Balancer::spawn(&["run", "--upgrade"], file.path());
    let (new, taken) = tokio::task::spawn_blocking(move || {
        let events = new.listening(2);
        (new, events)
    })
    .await
    .unwrap();
    assert_eq!(taken[1], ("web".to_owned(), web), "same socket, same port");
    assert_eq!(taken[0].1, admin, "the admin socket moved too");
    let exit = tokio::task::spawn_blocking(move || {
        let code = old.wait_exit(Duration::from_secs(15));
        drop(old);
        code
    })
    .await
    .unwrap();
    assert_eq!(exit, Some(0), "the old process drained and exited 0");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        within(w).await.unwrap();
    }
    let during = counts.max_latency_us.load(Ordering::Relaxed);
    eprintln!(
        "upgrade under load: {} requests, {} failed, {} refused; max latency {} us (before the upgrade {} us)",
        counts.sent.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed),
        during,
        before
    );
    assert_eq!(counts.failed.load(Ordering::Relaxed), 0);
    assert_eq!(counts.refused.load(Ordering::Relaxed), 0);
    assert!(counts.sent.load(Ordering::Relaxed) > 200);

    // The operator's drain survived the upgrade.
    let clusters: serde_json::Value = within(
        client()
            .get(format!("http://{admin}/api/v1/clusters"))
            .send(),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let b2 = &clusters["clusters"][0]["endpoints"][1];
    assert_eq!(b2["name"], "b2");
    assert_eq!(b2["state"], "draining", "{clusters}");

    new.signal("TERM");
    let mut new = new;
    let code = tokio::task::spawn_blocking(move || new.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    assert!(!socket.exists(), "the upgrade socket is removed on exit");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn upgrade_without_a_running_instance_says_so_and_exits_2() {
    let dir = std::env::temp_dir().join(format!("switchyard-it-noupgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = format!(
        "[runtime]\nupgrade_socket = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        dir.join("none.sock").display()
    );
    let file = ConfigFile::new("noupgrade", &toml);
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .env_remove("RUST_LOG")
        .args(["run", "--upgrade", "-c"])
        .arg(file.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach the running instance"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
