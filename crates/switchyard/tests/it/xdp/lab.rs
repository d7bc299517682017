//! A network of namespaces for the packet tier's tests: namespaces and veth links created
//! with iproute2, processes started inside them with `ip netns exec`, sockets created
//! inside them by a thread that joined the namespace (a socket stays in the namespace it
//! was made in). Only 198.18.0.0/15 is used; nothing is created in the host namespace.
//!
//! [`Lab`] owns everything: dropping it (also when a test panics) kills every process it
//! started, by PID, and deletes every namespace it made, which takes their interfaces
//! with them.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Whether root-only tests may run here. Not root: the test fails with the reason, unless
/// `SWITCHYARD_SKIP_ROOT_TESTS=1`, which makes it print the reason and pass.
pub(crate) fn root_or_skip(test: &str) -> bool {
    let why = if !rustix::process::geteuid().is_root() {
        Some("it needs root (network namespaces, veth, XDP)")
    } else if !switchyard::xdp::objects::available() {
        Some("this build has no BPF programs (clang was missing at build time)")
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("iproute2 (`ip`) is not installed")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if std::env::var_os("SWITCHYARD_SKIP_ROOT_TESTS").is_some_and(|v| v == "1") => {
            eprintln!("SKIPPED {test}: {why} (SWITCHYARD_SKIP_ROOT_TESTS=1)");
            false
        }
        Some(why) => panic!(
            "{test} cannot run: {why}. Run the tests as root, or set SWITCHYARD_SKIP_ROOT_TESTS=1 to skip the packet-tier tests"
        ),
    }
}

/// The namespaces, processes and files of one test.
pub(crate) struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
    dir: PathBuf,
    stops: Vec<Arc<AtomicBool>>,
}

impl Lab {
    /// A new, empty lab; `tag` keeps its names apart from other tests' (<= 4 chars).
    pub(crate) fn new(tag: &str) -> Lab {
        sweep_stale_labs();
        let prefix = format!("sy-{}-{tag}", std::process::id());
        let dir = std::env::temp_dir().join(format!("switchyard-lab-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("lab dir");
        Lab {
            prefix,
            namespaces: Vec::new(),
            children: Vec::new(),
            dir,
            stops: Vec::new(),
        }
    }

    /// The full name of namespace `short`.
    pub(crate) fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    /// A file path in the lab's directory.
    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Creates namespace `short` with `lo` up.
    pub(crate) fn ns(&mut self, short: &str) -> String {
        let name = self.name(short);
        run(Command::new("ip").args(["netns", "add", &name]));
        self.namespaces.push(name.clone());
        self.sh(short, "ip link set lo up");
        name
    }

    /// Runs `script` with `sh -c` inside namespace `short`; panics on failure.
    pub(crate) fn sh(&self, short: &str, script: &str) {
        run(Command::new("ip").args(["netns", "exec", &self.name(short), "sh", "-ec", script]));
    }

    /// Like [`Lab::sh`], returning stdout and never panicking.
    pub(crate) fn output(&self, short: &str, script: &str) -> String {
        Command::new("ip")
            .args(["netns", "exec", &self.name(short), "sh", "-c", script])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// A veth pair: `a_if` in namespace `a`, `b_if` in namespace `b`, both up.
    pub(crate) fn link(&self, a: &str, a_if: &str, b: &str, b_if: &str) {
        self.sh(
            a,
            &format!(
                "ip link add {a_if} type veth peer name {b_if} netns {}; ip link set {a_if} up",
                self.name(b)
            ),
        );
        self.sh(b, &format!("ip link set {b_if} up"));
    }

    /// Starts `program args` inside namespace `short`, output to `<label>.log`.
    pub(crate) fn spawn(&mut self, short: &str, label: &str, program: &str, args: &[&str]) {
        let log = File::create(self.path(&format!("{label}.log"))).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name(short), program])
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn");
        self.children.push((label.to_owned(), child));
    }

    /// The PID of the process started as `label` (`ip netns exec` execs the program, so it
    /// is the program's own).
    pub(crate) fn pid(&self, label: &str) -> Option<u32> {
        self.children
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, c)| c.id())
    }

    /// Kills the process started as `label` (SIGKILL, by its PID) and reaps it.
    pub(crate) fn kill(&mut self, label: &str) {
        if let Some(i) = self.children.iter().position(|(l, _)| l == label) {
            let (_, mut child) = self.children.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM to `label` and waits for it to exit; returns its exit status code.
    pub(crate) fn terminate(&mut self, label: &str) -> Option<i32> {
        let i = self.children.iter().position(|(l, _)| l == label)?;
        let (_, mut child) = self.children.remove(i);
        let pid = rustix::process::Pid::from_raw(child.id() as i32)?;
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// The log of `label` so far, without ANSI colour codes.
    pub(crate) fn log(&self, label: &str) -> String {
        let text = std::fs::read_to_string(self.path(&format!("{label}.log"))).unwrap_or_default();
        strip_ansi(&text)
    }

    /// Waits until `label`'s log contains every one of `needles` on one line.
    pub(crate) fn wait_log(&self, label: &str, needles: &[&str], limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log(label);
            if log
                .lines()
                .any(|line| needles.iter().all(|n| line.contains(n)))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{label} never logged {needles:?}; log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `f` on a thread inside namespace `short` (sockets made there stay there).
    pub(crate) fn within<T: Send>(&self, short: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.name(short));
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).expect("netns handle");
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&ns),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .expect("setns");
                f()
            })
            .join()
            .expect("namespace thread")
        })
    }

    /// A stop flag the lab raises when dropped (for server threads of a test).
    pub(crate) fn stop_flag(&mut self) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.stops.push(Arc::clone(&flag));
        flag
    }

    /// GET `path` from the admin API at `address` inside namespace `short`: the body.
    pub(crate) fn admin_get(&self, short: &str, address: SocketAddr, path: &str) -> String {
        let stream = self.within(short, || {
            TcpStream::connect_timeout(&address, Duration::from_secs(2))
        });
        let Ok(mut stream) = stream else {
            return String::new();
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return String::new();
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for flag in &self.stops {
            flag.store(true, Ordering::Release);
        }
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if std::env::var_os("SWITCHYARD_KEEP_LAB_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Namespaces of labs whose test process died without running its `Drop` (a timeout's
/// SIGKILL): their processes are killed by PID and the namespaces deleted.
fn sweep_stale_labs() {
    let Ok(list) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name.strip_prefix("sy-").and_then(|r| r.split('-').next()) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
            for p in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                if let Some(pid) = p.parse().ok().and_then(rustix::process::Pid::from_raw) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        let _ = Command::new("ip").args(["netns", "del", name]).status();
    }
}

fn run(cmd: &mut Command) {
    let output = cmd.output().expect("run command");
    assert!(
        output.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
