//! The real binary: exit codes, `check` output, the `listening` events, signals.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn switchyard() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command.env_remove("RUST_LOG");
    command
}

fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn output(command: &mut Command) -> Output {
    command.output().expect("binary runs")
}

const VALID: &str = r#"
[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "pg"
listen = "127.0.0.1:0"
protocol = "tcp"
cluster = "db"

[[cluster]]
name = "db"
endpoints = ["127.0.0.1:1", { address = "127.0.0.1:2", weight = 2, name = "db-2" }]
"#;

#[test]
fn check_prints_the_resolved_model_as_toml_and_json() {
    let path = scratch("valid.toml", VALID);
    let toml_out = output(switchyard().args(["check", "-c"]).arg(&path));
    assert_eq!(toml_out.status.code(), Some(0), "{toml_out:?}");
    let text = String::from_utf8(toml_out.stdout).unwrap();
    let parsed: toml::Table = toml::from_str(&text).unwrap();
    assert!(parsed.contains_key("clusters"), "{text}");

    let json_out = output(
        switchyard()
            .args(["check", "--format", "json", "-c"])
            .arg(&path),
    );
    assert_eq!(json_out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(
        json["clusters"][0]["balance"], "p2c-ewma",
        "default balance applied"
    );
    assert_eq!(json["clusters"][0]["endpoints"][0]["name"], "127.0.0.1:1");
}

#[test]
fn check_reports_three_mistakes_with_their_lines_and_exits_1() {
    let path = scratch(
        "three-mistakes.toml",
        r#"[[listener]]
name = "pg"
listen = "127.0.0.1:5432"
protocol = "tcp"
cluster = "postgress"

[[cluster]]
name = "postgres"
conect_timeout = "1s"
endpoints = ["127.0.0.1:5433"]

[[cluster]]
name = "other"
connect_timeout = "5 s"
endpoints = ["127.0.0.1:5434"]
"#,
    );
    let out = output(switchyard().args(["check", "-c"]).arg(&path));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let file = path.display().to_string();
    assert!(
        stderr.contains(&format!("{file}:5:")),
        "unknown cluster on line 5:\n{stderr}"
    );
    assert!(stderr.contains("did you mean \"postgres\""), "{stderr}");
    assert!(
        stderr.contains(&format!("{file}:9:")),
        "typo on line 9:\n{stderr}"
    );
    assert!(
        stderr.contains("did you mean \"connect_timeout\""),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:14:")),
        "bad duration on line 14:\n{stderr}"
    );
    let located = stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{file}:")))
        .count();
    assert_eq!(located, 3, "exactly three errors:\n{stderr}");
}

#[test]
fn run_with_an_invalid_config_exits_1_with_the_errors() {
    let path = scratch("invalid.toml", "[[listener]]\nname = 3\n");
    let out = output(switchyard().args(["run", "-c"]).arg(&path));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid.toml:2:"));
}

#[test]
fn a_missing_config_file_is_named() {
    let out = output(switchyard().args(["check", "-c", "/nonexistent/switchyard.toml"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/switchyard.toml"));
}

#[test]
fn usage_errors_exit_1_and_help_and_version_exit_0() {
    assert_eq!(output(switchyard().arg("--bogus")).status.code(), Some(1));
    assert_eq!(
        output(switchyard().arg("frobnicate")).status.code(),
        Some(1)
    );
    let version = output(switchyard().arg("--version"));
    assert_eq!(version.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("switchyard "));
    let help = output(switchyard().args(["run", "--help"]));
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("Examples:"));
}

#[test]
fn run_with_a_port_in_use_exits_2_naming_listener_and_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let path = scratch(
        "taken.toml",
        &VALID.replacen(
            "listen = \"127.0.0.1:0\"\nprotocol",
            &format!("listen = \"{address}\"\nprotocol"),
            1,
        ),
    );
    let out = output(switchyard().args(["run", "-c"]).arg(&path));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"pg\"") && stderr.contains(&address.to_string()),
        "{stderr}"
    );
}

/// A child process killed by PID when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Reads stderr lines until `n` `listening` events arrived; returns them.
fn listening_events(child: &mut Child, n: usize) -> Vec<serde_json::Value> {
    let stderr = child.stderr.take().unwrap();
    let mut events = Vec::new();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    while events.len() < n && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
            if value["event"] == "listening" {
                events.push(value);
            }
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    events
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn run_announces_every_socket_and_exits_0_on_sigterm() {
    let path = scratch("run.toml", VALID);
    let mut child = Running(
        switchyard()
            .args(["run", "-c"])
            .arg(&path)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let events = listening_events(&mut child.0, 2);
    let names: Vec<_> = events
        .iter()
        .map(|e| e["listener"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["admin", "pg"]);
    let admin: std::net::SocketAddr = events[0]["address"].as_str().unwrap().parse().unwrap();
    assert_ne!(admin.port(), 0, "the real port is reported");
    std::net::TcpStream::connect(admin).expect("admin answers");
    signal(&child.0, "TERM");
    assert_eq!(wait_exit(&mut child.0, Duration::from_secs(10)), Some(0));
}

#[test]
fn demo_starts_and_stops_cleanly_on_ctrl_c() {
    let mut child = Running(
        switchyard()
            .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let events = listening_events(&mut child.0, 2);
    assert_eq!(events.len(), 2, "admin and demo listeners announced");
    let demo: std::net::SocketAddr = events[1]["address"].as_str().unwrap().parse().unwrap();
    let mut stream = std::net::TcpStream::connect(demo).unwrap();
    use std::io::{Read, Write};
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: demo\r\nconnection: close\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.to_lowercase().contains("x-backend: demo-"),
        "{response}"
    );
    // The backend closed its side; close ours too, or the half-open relay would rightly
    // wait for us during the drain.
    drop(stream);
    signal(&child.0, "INT");
    assert_eq!(wait_exit(&mut child.0, Duration::from_secs(10)), Some(0));
    let mut stdout = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(stdout.contains("curl"), "prints what to try:\n{stdout}");
}

/// A blocking `GET path` on `address`; the whole answer.
fn http_get(address: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn sighup_reloads_the_file_and_a_bad_file_keeps_the_old_config() {
    let path = scratch("reload.toml", VALID);
    let mut child = Running(
        switchyard()
            .args(["run", "-c"])
            .arg(&path)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let events = listening_events(&mut child.0, 2);
    let admin: std::net::SocketAddr = events[0]["address"].as_str().unwrap().parse().unwrap();
    let with_extra = format!(
        "{VALID}\n[[listener]]\nname = \"extra\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ncluster = \"db\"\n"
    );
    std::fs::write(&path, &with_extra).unwrap();
    signal(&child.0, "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !http_get(admin, "/api/v1/listeners").contains("\"extra\"") {
        assert!(Instant::now() < deadline, "the new listener never appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(&path, "[[cluster]]\nname = 3\n").unwrap();
    signal(&child.0, "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reloads = http_get(admin, "/api/v1/reloads");
        if reloads.contains("\"failure\"") {
            assert!(reloads.contains("\"sighup\""), "{reloads}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the failed reload was not recorded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(http_get(admin, "/api/v1/listeners").contains("\"extra\""));
    signal(&child.0, "TERM");
    assert_eq!(wait_exit(&mut child.0, Duration::from_secs(10)), Some(0));
}
