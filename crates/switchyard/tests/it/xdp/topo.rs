//! The test network: client → router → bridge → balancers and backends (notes/xdp.md).
//!
//! ```text
//!  c (198.18.1.2) ── r (198.18.1.1 | 198.18.0.1) ── sw: br0 ──┬── l1 (198.18.0.11) XDP
//!                                                           ├── l2 (198.18.0.12) XDP
//!                                                           └── b1..bn (198.18.0.21..) VIP on lo
//! ```
//!
//! The router sends the VIP to a balancer (or ECMP over both); a balancer forwards to a
//! backend over the bridge; the backend answers the client through the router, never
//! through the balancer (DSR). Backends hold the VIP on `lo` with `arp_ignore=1`,
//! `arp_announce=2` and `rp_filter=0`.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::lab::Lab;

pub(crate) const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
pub(crate) const FABRIC_MTU: u32 = 1600;

/// The fabric address of balancer `i` (1-based).
pub(crate) fn lb_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + i as u8)
}

/// The fabric address of backend `j` (1-based).
pub(crate) fn backend_ip(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 20 + j as u8)
}

/// Builds the network with `lbs` balancer namespaces and `backends` backend namespaces.
pub(crate) fn build(lab: &mut Lab, lbs: usize, backends: usize) {
    for ns in ["c", "r", "sw"] {
        lab.ns(ns);
    }
    lab.sh(
        "sw",
        &format!("ip link add br0 type bridge; ip link set br0 mtu {FABRIC_MTU} up"),
    );
    lab.link("c", "eth0", "r", "eth0");
    lab.sh(
        "c",
        "ip addr add 198.18.1.2/24 dev eth0; ip route add default via 198.18.1.1",
    );
    lab.link("r", "eth1", "sw", "pr");
    lab.sh(
        "r",
        &format!(
            "ip addr add 198.18.1.1/24 dev eth0; ip addr add 198.18.0.1/24 dev eth1; \
             ip link set eth1 mtu {FABRIC_MTU}; \
             sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
               net.ipv4.conf.default.rp_filter=0 net.ipv4.fib_multipath_hash_policy=1"
        ),
    );
    port(lab, "pr");
    for i in 1..=lbs {
        let ns = format!("l{i}");
        lab.ns(&ns);
        lab.link(&ns, "eth0", "sw", &format!("pl{i}"));
        port(lab, &format!("pl{i}"));
        lab.sh(
            &ns,
            &format!(
                "ip link set eth0 mtu {FABRIC_MTU}; ip addr add {}/24 dev eth0; \
                 ip route add default via 198.18.0.1; sysctl -qw net.ipv4.conf.eth0.forwarding=1",
                lb_ip(i)
            ),
        );
    }
    for j in 1..=backends {
        let ns = format!("b{j}");
        lab.ns(&ns);
        lab.link(&ns, "eth0", "sw", &format!("pb{j}"));
        port(lab, &format!("pb{j}"));
        lab.sh(
            &ns,
            &format!(
                "ip link set eth0 mtu {FABRIC_MTU}; ip addr add {}/24 dev eth0; \
                 ip addr add {VIP}/32 dev lo; ip route add default via 198.18.0.1; \
                 sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
                   net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2 \
                   net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
                   net.ipv4.conf.eth0.rp_filter=0 net.ipv4.conf.lo.rp_filter=0",
                backend_ip(j)
            ),
        );
    }
}

fn port(lab: &Lab, name: &str) {
    lab.sh(
        "sw",
        &format!("ip link set {name} mtu {FABRIC_MTU} master br0 up"),
    );
}

/// Routes the VIP from the router to balancer `i`, or ECMP over several.
pub(crate) fn route_vip(lab: &Lab, via: &[usize]) {
    let hops: Vec<String> = via
        .iter()
        .map(|i| format!("nexthop via {}", lb_ip(*i)))
        .collect();
    let route = if via.len() == 1 {
        format!("ip route replace {VIP}/32 via {}", lb_ip(via[0]))
    } else {
        format!("ip route replace {VIP}/32 {}", hops.join(" "))
    };
    lab.sh("r", &route);
}

/// A backend's TCP server on 0.0.0.0:`port` (the VIP and its own address): answers every
/// read with its name and a newline. Stops when `stop` is raised (or the lab is dropped).
pub(crate) fn serve_tcp(lab: &Lab, backend: &str, name: &str, port: u16, stop: Arc<AtomicBool>) {
    let listener = lab.within(backend, || {
        let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind backend");
        l.set_nonblocking(true).expect("nonblocking");
        l
    });
    let name = format!("{name}\n");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Acquire) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let name = name.clone();
                    let stop = Arc::clone(&stop);
                    std::thread::spawn(move || answer(stream, &name, &stop));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
}

fn answer(mut stream: TcpStream, name: &str, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Acquire) {
        match std::io::Read::read(&mut stream, &mut buf) {
            Ok(0) => return,
            Ok(_) => {
                if stream.write_all(name.as_bytes()).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// A backend's UDP server on VIP:`port`: answers every datagram with its name.
pub(crate) fn serve_udp(lab: &Lab, backend: &str, name: &str, port: u16, stop: Arc<AtomicBool>) {
    let socket = lab.within(backend, || UdpSocket::bind((VIP, port)).expect("bind udp"));
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let name = name.to_owned();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Acquire) {
            if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(name.as_bytes(), peer);
            }
        }
    });
}

/// One client TCP connection to the VIP and the backend that answered it.
pub(crate) struct Flow {
    pub(crate) stream: TcpStream,
    pub(crate) local: SocketAddrV4,
    pub(crate) backend: String,
}

/// Sends one byte and reads the answering backend's name.
pub(crate) fn ask(stream: &mut TcpStream) -> std::io::Result<String> {
    stream.write_all(b"?")?;
    let mut line = String::new();
    BufReader::new(&mut *stream).read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::other("closed"));
    }
    Ok(line.trim().to_owned())
}

/// Opens `n` TCP connections from the client to VIP:`port` and asks each for its backend.
/// Connections that fail are counted, not returned.
pub(crate) fn open_flows(lab: &Lab, n: usize, port: u16) -> (Vec<Flow>, usize) {
    lab.within("c", || {
        let target = SocketAddr::V4(SocketAddrV4::new(VIP, port));
        let mut flows = Vec::new();
        let mut failed = 0;
        for _ in 0..n {
            let opened = TcpStream::connect_timeout(&target, Duration::from_secs(2)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                let backend = ask(&mut s)?;
                let SocketAddr::V4(local) = s.local_addr()? else {
                    return Err(std::io::Error::other("not v4"));
                };
                Ok(Flow {
                    stream: s,
                    local,
                    backend,
                })
            });
            match opened {
                Ok(flow) => flows.push(flow),
                Err(e) => {
                    failed += 1;
                    if flows.is_empty() && failed >= 3 {
                        panic!("the first {failed} connections to the VIP failed ({e}): nothing is forwarded");
                    }
                }
            }
        }
        (flows, failed)
    })
}

/// Sends `n` UDP datagrams from distinct client sockets to VIP:`port`: (local, backend).
pub(crate) fn udp_flows(lab: &Lab, n: usize, port: u16) -> (Vec<(SocketAddrV4, String)>, usize) {
    lab.within("c", || {
        let mut out = Vec::new();
        let mut failed = 0;
        for _ in 0..n {
            let result = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).and_then(|s| {
                s.connect((VIP, port))?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut buf = [0u8; 64];
                for _ in 0..3 {
                    s.send(b"?")?;
                    if let Ok(len) = s.recv(&mut buf) {
                        let SocketAddr::V4(local) = s.local_addr()? else {
                            break;
                        };
                        return Ok((local, String::from_utf8_lossy(&buf[..len]).into_owned()));
                    }
                }
                Err(std::io::Error::other("no answer"))
            });
            match result {
                Ok(flow) => out.push(flow),
                Err(e) => {
                    failed += 1;
                    if out.is_empty() && failed >= 3 {
                        panic!("the first {failed} datagrams to the VIP got no answer ({e})");
                    }
                }
            }
        }
        (out, failed)
    })
}

/// The balancer configuration: one cluster `direct` of `backends` hosts (names b1..bn)
/// with fast TCP checks on :80, a TCP VIP on :80 and a UDP VIP on :53 (cluster
/// `direct-udp`, the same names, no checks), forwarded by `forward`, attached `mode`.
pub(crate) fn lb_config(backends: usize, forward: &str, mode: &str) -> String {
    let eps = |port: u16| {
        (1..=backends)
            .map(|j| {
                format!(
                    "{{ address = \"{}:{port}\", name = \"b{j}\" }}",
                    backend_ip(j)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"[admin]
listen = "127.0.0.1:9901"

[access_log]
enabled = false

[defaults]
drain_timeout = "1s"

[[cluster]]
name = "direct"
endpoints = [{tcp}]
  [cluster.health]
  kind = "tcp"
  interval = "200ms"
  timeout = "200ms"
  unhealthy_threshold = 2
  healthy_threshold = 1
  jitter = "0%"

[[cluster]]
name = "direct-udp"
endpoints = [{udp}]

[[xdp]]
interface = "eth0"
mode = "{mode}"
flow_table_size = 65536
  [[xdp.vip]]
  address = "{VIP}:80"
  protocol = "tcp"
  cluster = "direct"
  forward = "{forward}"
  [[xdp.vip]]
  address = "{VIP}:53"
  protocol = "udp"
  cluster = "direct-udp"
  forward = "{forward}"
"#,
        tcp = eps(80),
        udp = eps(53),
    )
}

/// Starts `switchyard run` in balancer namespace `l{i}` and waits until its TCP VIP's
/// table has all `backends` eligible.
pub(crate) fn start_lb(lab: &mut Lab, i: usize, config: &str, backends: usize) {
    let path = lab.path(&format!("l{i}.toml"));
    std::fs::write(&path, config).expect("config");
    let path = path.to_string_lossy().into_owned();
    lab.spawn(
        &format!("l{i}"),
        &format!("l{i}"),
        env!("CARGO_BIN_EXE_switchyard"),
        &["run", "-c", &path],
    );
    lab.wait_log(&format!("l{i}"), &["xdp attached"], Duration::from_secs(15));
    lab.wait_log(
        &format!("l{i}"),
        &[
            "xdp table written",
            &format!("{VIP}:80/tcp"),
            &format!("eligible={backends}"),
        ],
        Duration::from_secs(15),
    );
}

/// Starts `switchyard xdp-decap` on every backend's eth0 (IPIP mode).
pub(crate) fn start_decap(lab: &mut Lab, backends: usize, mode: &str) {
    for j in 1..=backends {
        let ns = format!("b{j}");
        lab.spawn(
            &ns,
            &format!("decap{j}"),
            env!("CARGO_BIN_EXE_switchyard"),
            &["xdp-decap", "--interface", "eth0", "--mode", mode],
        );
    }
    for j in 1..=backends {
        lab.wait_log(
            &format!("decap{j}"),
            &["\"event\":\"xdp-decap\""],
            Duration::from_secs(10),
        );
    }
}

/// Starts the TCP (:80) and UDP (:53) servers of backends b1..bn.
pub(crate) fn start_backends(lab: &mut Lab, backends: usize) -> Vec<Arc<AtomicBool>> {
    let mut stops = Vec::new();
    for j in 1..=backends {
        let stop = lab.stop_flag();
        let ns = format!("b{j}");
        serve_tcp(lab, &ns, &format!("b{j}"), 80, Arc::clone(&stop));
        serve_udp(lab, &ns, &format!("b{j}"), 53, Arc::clone(&stop));
        stops.push(stop);
    }
    stops
}
