//! What an operator sees when the packet tier cannot start: the cause, not a BPF errno.

use std::process::Command;

use super::lab::{Lab, root_or_skip};

const CONFIG: &str = r#"[admin]
listen = "127.0.0.1:0"
[[cluster]]
name = "d"
endpoints = ["198.18.0.21:80"]
[[xdp]]
interface = "IF"
mode = "generic"
  [[xdp.vip]]
  address = "198.19.0.10:80"
  cluster = "d"
"#;

/// Runs `switchyard args` in namespace `ns` (as `user` when given): (exit code, stderr).
fn switchyard(lab: &Lab, ns: &str, user: Option<&str>, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.name(ns)]);
    if let Some(uid) = user {
        cmd.args([
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ]);
    }
    let out = cmd
        .arg(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run switchyard");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn xdp_netns_start_errors_name_the_cause() {
    if !root_or_skip("xdp_netns_start_errors_name_the_cause") {
        return;
    }
    let mut lab = Lab::new("err");
    lab.ns("x");
    lab.sh(
        "x",
        "ip link add eth0 type veth peer name eth1; ip link set eth0 up; ip link set eth1 up; \
         ip addr add 198.18.0.11/24 dev eth0; sysctl -qw net.ipv4.conf.eth0.forwarding=1",
    );
    let config = |interface: &str| {
        let path = lab.path(&format!("{interface}.toml"));
        std::fs::write(&path, CONFIG.replace("IF", interface)).expect("config");
        // readable by the unprivileged user below
        let _ = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(lab.path(""))
            .status();
        path.to_string_lossy().into_owned()
    };
    let eth0 = config("eth0");
    let (code, err) = switchyard(&lab, "x", Some("65534"), &["run", "-c", &eth0]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("the XDP tier needs root"), "{err}");
    let (code, err) = switchyard(&lab, "x", None, &["run", "-c", &config("eth9")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("interface \"eth9\" does not exist"), "{err}");
    let (code, err) = switchyard(&lab, "x", None, &["run", "-c", &config("eth1")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("sysctl -w net.ipv4.conf.eth1.forwarding=1"),
        "{err}"
    );
    let (code, err) = switchyard(&lab, "x", None, &["xdp-decap", "--interface", "eth9"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("does not exist"), "{err}");
}
