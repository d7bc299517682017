//! Zero-downtime binary upgrade (`run --upgrade`): the listening sockets move from the
//! running process to the new one over a Unix socket with `SCM_RIGHTS`, so no port is ever
//! closed and no connection is refused.
//!
//! The hand-over, on the `upgrade_socket` every `run` listens on:
//!
//! 1. new → old: `{"hello":"switchyard-upgrade/1"}` and a newline;
//! 2. old → new: a 4-byte big-endian length, then a JSON [`Manifest`] (which sockets, in
//!    which order; the operator's drains and weights), with every descriptor attached to
//!    the first bytes as one `SCM_RIGHTS` message;
//! 3. the new process starts serving on those sockets (binding only addresses the old one
//!    did not have), applies the operator state, then sends `{"ready":true}`;
//! 4. the old process stops listening for upgrades, answers `{"draining":true}` and runs
//!    its shutdown sequence: it stops accepting (the sockets stay open in the new process,
//!    so waiting connections are accepted there), drains within `drain_timeout`, exits 0.
//!
//! If the new process fails before step 3, the old one never hears `ready` and serves on.

use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::listeners::{Family, SocketKey};
use super::server::Shared;
use crate::config::Config;
use crate::runtime::clock;

/// The greeting's protocol word.
const HELLO: &str = "switchyard-upgrade/1";
/// At most this many descriptors move (the kernel's per-message limit is 253).
const MAX_FDS: usize = 250;
/// The largest manifest accepted.
const MAX_MANIFEST: usize = 1 << 20;
/// How long the old process waits for the new one to say it serves.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Why an upgrade could not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// No running instance listens on the upgrade socket.
    #[error(
        "cannot reach the running instance on {path}: {source} (is it running with the same configuration file?)"
    )]
    Connect {
        /// The upgrade socket.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The hand-over broke off.
    #[error("upgrade hand-over on {path} failed: {message}")]
    Protocol {
        /// The upgrade socket.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Where `run` listens for upgrades: `[runtime] upgrade_socket`, else a path derived from
/// the configuration file's absolute path (so the same file finds the same socket).
pub fn socket_path(config: &Config, config_path: &Path) -> PathBuf {
    if let Some(path) = &config.runtime.upgrade_socket {
        return path.clone();
    }
    let absolute = std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let hash = xxhash_rust::xxh64::xxh64(absolute.as_os_str().as_encoded_bytes(), 0);
    std::env::temp_dir().join(format!("switchyard-upgrade-{hash:016x}.sock"))
}

/// One group of sockets in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestGroup {
    /// `l4`, `http` or `udp`.
    pub family: String,
    /// The configured address.
    pub listen: String,
    /// How many descriptors of the message belong to it.
    pub fds: usize,
}

/// The operator's changes to one endpoint (SPEC 3.1: they survive `run --upgrade`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OperatorState {
    /// The cluster's name.
    pub cluster: String,
    /// The endpoint's name.
    pub endpoint: String,
    /// Its address.
    pub address: String,
    /// Operator drain.
    pub drained: bool,
    /// Operator weight, if set.
    pub weight: Option<u32>,
}

/// What the old process hands over.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Listener sockets, in descriptor order.
    pub groups: Vec<ManifestGroup>,
    /// The admin socket's configured address (its descriptor comes last), if handed over.
    pub admin: Option<String>,
    /// Operator drains and weights.
    pub operator: Vec<OperatorState>,
}

/// Sockets received from an older process, by the key the new configuration looks for.
#[derive(Debug, Default)]
pub struct Inherited {
    /// Listener sockets.
    pub groups: Vec<(SocketKey, Vec<OwnedFd>)>,
    /// The admin socket, with its configured address as the old process wrote it.
    pub admin: Option<(String, OwnedFd)>,
}

impl Inherited {
    /// Takes the sockets for `key`, if they were handed over.
    pub fn take(&mut self, key: SocketKey) -> Option<Vec<OwnedFd>> {
        let at = self.groups.iter().position(|(k, _)| *k == key)?;
        Some(self.groups.swap_remove(at).1)
    }

    /// Takes the admin socket if it was listening on `listen` (as configured).
    pub fn take_admin(&mut self, listen: &str) -> Option<OwnedFd> {
        match &self.admin {
            Some((configured, _)) if configured == listen => self.admin.take().map(|(_, fd)| fd),
            _ => None,
        }
    }
}

/// The new process's side, between receiving the sockets and telling the old one to go.
#[derive(Debug)]
pub struct Handover {
    stream: UnixStream,
    path: PathBuf,
    /// The operator state to apply once serving.
    pub operator: Vec<OperatorState>,
}

/// The configured admin address as the manifest spells it.
pub fn admin_word(config: &Config) -> String {
    match &config.admin.listen {
        crate::config::model::AdminListen::Tcp(address) => address.to_string(),
        crate::config::model::AdminListen::Unix(path) => format!("unix:{}", path.display()),
    }
}

/// `run --upgrade`: connects to the running instance and receives its sockets. Blocking.
pub fn receive(path: &Path) -> Result<(Inherited, Handover), UpgradeError> {
    let protocol = |message: String| UpgradeError::Protocol {
        path: path.to_path_buf(),
        message,
    };
    let mut stream = UnixStream::connect(path).map_err(|source| UpgradeError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    stream
        .set_read_timeout(Some(READY_TIMEOUT))
        .map_err(|e| protocol(e.to_string()))?;
    writeln!(stream, "{}", serde_json::json!({ "hello": HELLO }))
        .map_err(|e| protocol(format!("cannot greet: {e}")))?;
    let (manifest, fds) = receive_manifest(&stream).map_err(protocol)?;
    let wanted: usize = manifest.groups.iter().map(|g| g.fds).sum::<usize>()
        + usize::from(manifest.admin.is_some());
    if wanted != fds.len() {
        return Err(protocol(format!(
            "the manifest names {wanted} sockets but {} arrived",
            fds.len()
        )));
    }
    let mut fds = fds.into_iter();
    let mut inherited = Inherited::default();
    for group in &manifest.groups {
        let family = Family::parse(&group.family)
            .ok_or_else(|| protocol(format!("unknown socket family {:?}", group.family)))?;
        let listen = group
            .listen
            .parse()
            .map_err(|_| protocol(format!("bad address {:?}", group.listen)))?;
        let key = SocketKey { family, listen };
        inherited
            .groups
            .push((key, fds.by_ref().take(group.fds).collect()));
    }
    if let Some(admin) = &manifest.admin {
        if let Some(fd) = fds.next() {
            inherited.admin = Some((admin.clone(), fd));
        }
    }
    info!(
        sockets = wanted,
        groups = manifest.groups.len(),
        "received the running instance's sockets"
    );
    Ok((
        inherited,
        Handover {
            stream,
            path: path.to_path_buf(),
            operator: manifest.operator,
        },
    ))
}

fn receive_manifest(stream: &UnixStream) -> Result<(Manifest, Vec<OwnedFd>), String> {
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut first = vec![0u8; 64 * 1024];
    let received = rustix::net::recvmsg(
        stream.as_fd(),
        &mut [IoSliceMut::new(&mut first)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| format!("cannot receive the sockets: {e}"))?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    let mut data = first[..received.bytes].to_vec();
    if data.len() < 4 {
        let mut rest = [0u8; 4];
        let missing = 4 - data.len();
        (&*stream)
            .read_exact(&mut rest[..missing])
            .map_err(|e| format!("short manifest header: {e}"))?;
        data.extend_from_slice(&rest[..missing]);
    }
    let length = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    if length > MAX_MANIFEST {
        return Err(format!("manifest of {length} bytes is too large"));
    }
    if data.len() < 4 + length {
        let mut rest = vec![0u8; 4 + length - data.len()];
        (&*stream)
            .read_exact(&mut rest)
            .map_err(|e| format!("short manifest: {e}"))?;
        data.extend_from_slice(&rest);
    }
    let manifest =
        serde_json::from_slice(&data[4..4 + length]).map_err(|e| format!("bad manifest: {e}"))?;
    Ok((manifest, fds))
}

impl Handover {
    /// Tells the old process this one serves, and waits for it to start draining.
    pub fn finish(self) -> Result<(), UpgradeError> {
        let protocol = |message: String| UpgradeError::Protocol {
            path: self.path.clone(),
            message,
        };
        let mut stream = &self.stream;
        writeln!(stream, "{}", serde_json::json!({ "ready": true }))
            .map_err(|e| protocol(format!("cannot send ready: {e}")))?;
        let mut line = String::new();
        BufReader::new(&self.stream)
            .read_line(&mut line)
            .map_err(|e| protocol(format!("no answer to ready: {e}")))?;
        if !line.contains("\"draining\"") {
            return Err(protocol(format!("unexpected answer {line:?}")));
        }
        info!("the previous instance is draining");
        Ok(())
    }
}

/// Applies handed-over operator drains and weights to the endpoints that still exist.
pub fn apply_operator_state(shared: &Shared, states: &[OperatorState]) {
    let snapshot = shared.snapshot.load();
    let now = clock::now();
    for state in states {
        let Some(cluster) = snapshot.cluster(&state.cluster) else {
            continue;
        };
        let found = cluster
            .endpoints()
            .iter()
            .position(|e| e.name == state.endpoint && e.address.to_string() == state.address);
        let Some(index) = found else { continue };
        if state.drained {
            cluster.endpoints()[index].set_draining(true, now);
        }
        if let Some(weight) = state.weight {
            if let Err(error) = cluster.set_operator_weight(index, weight) {
                warn!(%error, "operator weight not carried over");
            }
        }
        cluster.refresh(now);
    }
}

/// The operator state of the snapshot in force.
fn operator_state(shared: &Shared) -> Vec<OperatorState> {
    let snapshot = shared.snapshot.load();
    snapshot
        .clusters
        .iter()
        .flat_map(|c| {
            c.endpoints()
                .iter()
                .filter(|e| e.is_draining() || e.has_operator_weight())
                .map(|e| OperatorState {
                    cluster: c.name().to_owned(),
                    endpoint: e.name.clone(),
                    address: e.address.to_string(),
                    drained: e.is_draining(),
                    weight: e.has_operator_weight().then(|| e.weight()),
                })
        })
        .collect()
}

/// The running process's side: listens on `path` and, when a new process completes the
/// hand-over, wakes `handed_over` (the caller then shuts down). Binding fails when another
/// live process listens there.
pub fn listen(
    path: &Path,
    shared: Arc<Shared>,
    handed_over: Arc<Notify>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    if path.exists() && UnixStream::connect(path).is_err() {
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    let path = path.to_path_buf();
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(stream) = stream.into_std() else {
                continue;
            };
            let shared = Arc::clone(&shared);
            let socket_path = path.clone();
            let done =
                tokio::task::spawn_blocking(move || hand_over(&stream, &shared, &socket_path))
                    .await;
            match done {
                Ok(Ok(())) => {
                    drop(listener);
                    handed_over.notify_one();
                    return;
                }
                Ok(Err(error)) => warn!(%error, "upgrade hand-over abandoned; serving on"),
                Err(error) => warn!(%error, "upgrade hand-over task failed; serving on"),
            }
        }
    }))
}

/// Sends the manifest and descriptors, then waits for `ready`.
fn hand_over(stream: &UnixStream, shared: &Shared, path: &Path) -> Result<(), String> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(READY_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut hello = String::new();
    reader
        .read_line(&mut hello)
        .map_err(|e| format!("no greeting: {e}"))?;
    if !hello.contains(HELLO) {
        return Err(format!("unexpected greeting {hello:?}"));
    }
    let (manifest, fds) = {
        let control = shared.lock_control();
        let mut fds: Vec<OwnedFd> = Vec::new();
        let mut manifest = Manifest {
            operator: operator_state(shared),
            ..Manifest::default()
        };
        for group in &control.groups {
            let copies = group
                .fds()
                .iter()
                .map(|fd| fd.try_clone())
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(|e| e.to_string())?;
            manifest.groups.push(ManifestGroup {
                family: group.key.family.as_str().to_owned(),
                listen: group.key.listen.to_string(),
                fds: copies.len(),
            });
            fds.extend(copies);
        }
        if let Some((listen, fd)) = control.admin_fd() {
            manifest.admin = Some(listen.to_owned());
            fds.push(fd.try_clone().map_err(|e| e.to_string())?);
        }
        (manifest, fds)
    };
    if fds.len() > MAX_FDS {
        return Err(format!(
            "{} sockets are more than one message carries",
            fds.len()
        ));
    }
    let body = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    let length = u32::try_from(body.len()).map_err(|e| e.to_string())?;
    let mut frame = length.to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err("the descriptors do not fit one message".into());
    }
    let sent = rustix::net::sendmsg(
        stream.as_fd(),
        &[IoSlice::new(&frame)],
        &mut control,
        SendFlags::empty(),
    )
    .map_err(|e| format!("cannot send the sockets: {e}"))?;
    if sent < frame.len() {
        (&*stream)
            .write_all(&frame[sent..])
            .map_err(|e| format!("cannot send the manifest: {e}"))?;
    }
    info!(
        sockets = fds.len(),
        "sockets handed to the new instance; waiting for it to serve"
    );
    let mut ready = String::new();
    reader
        .read_line(&mut ready)
        .map_err(|e| format!("the new instance did not report ready: {e}"))?;
    if !ready.contains("\"ready\"") {
        return Err(format!("the new instance did not start ({ready:?})"));
    }
    crate::admin::server::keep_socket_path();
    // The path is the new process's from now on: it binds it once it hears `draining`.
    let _ = std::fs::remove_file(path);
    (&*stream)
        .write_all(format!("{}\n", serde_json::json!({ "draining": true })).as_bytes())
        .map_err(|e| e.to_string())?;
    info!("the new instance serves; draining");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherited_sockets_are_found_by_key_and_admin_by_address() {
        let key = |f, l: &str| SocketKey {
            family: f,
            listen: l.parse().expect("address"),
        };
        let devnull = || OwnedFd::from(std::fs::File::open("/dev/null").expect("open"));
        let mut inherited = Inherited {
            groups: vec![
                (key(Family::Http, "127.0.0.1:0"), vec![devnull(), devnull()]),
                (key(Family::Udp, "127.0.0.1:53"), vec![devnull()]),
            ],
            admin: Some(("127.0.0.1:9901".into(), devnull())),
        };
        assert!(inherited.take(key(Family::L4, "127.0.0.1:0")).is_none());
        assert_eq!(
            inherited
                .take(key(Family::Http, "127.0.0.1:0"))
                .map(|v| v.len()),
            Some(2)
        );
        assert!(
            inherited.take(key(Family::Http, "127.0.0.1:0")).is_none(),
            "taken once"
        );
        assert!(inherited.take_admin("127.0.0.1:9902").is_none());
        assert!(inherited.take_admin("127.0.0.1:9901").is_some());
    }

    #[test]
    fn the_same_file_derives_the_same_socket() {
        let config = crate::config::load_str("", Path::new("a.toml")).expect("empty config");
        let a = socket_path(&config, Path::new("/etc/switchyard/a.toml"));
        assert_eq!(a, socket_path(&config, Path::new("/etc/switchyard/a.toml")));
        assert_ne!(a, socket_path(&config, Path::new("/etc/switchyard/b.toml")));
    }
}
