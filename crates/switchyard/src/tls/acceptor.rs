//! TLS termination for one `https` listener: the certificate chosen by SNI, ALPN, client
//! certificates (mTLS), session resumption, handshake metrics, and certificates re-read
//! from disk when their files change.
//!
//! **Certificate choice.** Each certificate answers for the DNS names of its own subject
//! alternative names (exact, or `*.example.com` for one label), so the operator lists
//! files, not names that could drift from the files. An exact name beats a wildcard; where
//! an ECDSA and an RSA certificate share a name the first one whose key can sign with a
//! scheme the client offered wins; a client without SNI, or with a name no certificate
//! covers, gets the first certificate listed.
//!
//! **Resumption.** TLS 1.3 tickets come from rustls's rotating ticketer (keys rotated every
//! 6 hours, so a stolen key opens at most a few hours of sessions); TLS 1.2 clients without
//! tickets use a bounded in-memory session cache. 0-RTT is off (replayable requests).
//!
//! **Reload.** The resolver reads its certificates through an [`ArcSwap`], so a new set is
//! swapped in whole while handshakes go on; connections already established keep their
//! session. [`TlsListener::watch`] polls the files' modification times every second (and
//! re-reads at once on SIGHUP, [`reload_all`]); a file that fails to load keeps the old
//! certificates in service, logs why and counts `tls_certificate_reloads_total{result="failure"}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerSessionMemoryCache, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{HandshakeKind, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{info, warn};

use super::certs::{self, CertError, Loaded};
use crate::admin::metrics::{self, Counter, Gauge, Registry};
use crate::config::model::{CertificatePair, ListenerTls};

/// TLS 1.2 sessions remembered for resumption by session id.
const SESSION_CACHE: usize = 32 * 1024;

/// How often the certificate files are checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Every `reason` of `tls_handshake_errors_total`, created at zero.
pub const ERROR_REASONS: [&str; 8] = [
    "timeout",
    "not_tls",
    "incompatible",
    "alpn",
    "client_certificate",
    "alert",
    "protocol",
    "eof",
];

/// Wakes every certificate watcher to re-read its files now (SIGHUP).
static RELOAD_NOW: Notify = Notify::const_new();

/// Asks every https listener to re-read its certificate files at once.
pub fn reload_all() {
    RELOAD_NOW.notify_waiters();
}

/// An https listener's TLS settings could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A certificate, key or CA file.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// rustls refused the combination.
    #[error("TLS setup: {0}")]
    Rustls(String),
}

impl From<rustls::Error> for TlsSetupError {
    fn from(error: rustls::Error) -> Self {
        TlsSetupError::Rustls(error.to_string())
    }
}

/// What a completed handshake negotiated, as requests and the access log see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
    /// The IANA name of the cipher suite.
    pub cipher: &'static str,
    /// The server name the client sent.
    pub sni: Option<String>,
    /// HTTP/2 chosen by ALPN.
    pub h2: bool,
    /// An abbreviated (resumed) handshake.
    pub resumed: bool,
    /// The verified client certificate (mTLS listeners).
    pub client: Option<ClientIdentity>,
}

/// Who a verified client certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject, `CN=...,O=...`.
    pub subject: String,
    /// Subject alternative names, `DNS:a,URI:b`.
    pub san: String,
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Not done before the deadline (`header_read_timeout`).
    #[error("TLS handshake timed out")]
    Timeout,
    /// The handshake failed.
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
}

impl HandshakeError {
    /// The `reason` label of `tls_handshake_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::Timeout => "timeout",
            HandshakeError::Failed(io) => {
                match io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                    Some(rustls::Error::PeerIncompatible(_)) => "incompatible",
                    Some(rustls::Error::NoApplicationProtocol) => "alpn",
                    Some(
                        rustls::Error::InvalidCertificate(_)
                        | rustls::Error::NoCertificatesPresented,
                    ) => "client_certificate",
                    Some(rustls::Error::AlertReceived(_)) => "alert",
                    Some(_) => "protocol",
                    None => "eof",
                }
            }
        }
    }
}

/// The certificates in service and the names they answer for.
#[derive(Debug, Default)]
struct CertStore {
    certs: Vec<Arc<CertifiedKey>>,
    exact: HashMap<String, Vec<usize>>,
    /// Keyed by what follows `*.`.
    wildcard: HashMap<String, Vec<usize>>,
}

impl CertStore {
    fn build(loaded: &[Loaded]) -> CertStore {
        let mut store = CertStore::default();
        for (index, cert) in loaded.iter().enumerate() {
            store.certs.push(Arc::clone(&cert.certified));
            for name in &cert.info.dns_names {
                let name = name.trim_end_matches('.');
                let table = match name.strip_prefix("*.") {
                    Some(parent) => store.wildcard.entry(parent.to_owned()),
                    None => store.exact.entry(name.to_owned()),
                };
                let list = table.or_default();
                if !list.contains(&index) {
                    list.push(index);
                }
            }
        }
        store
    }

    /// The certificate for `sni` that can sign with one of `schemes`.
    fn find(&self, sni: Option<&str>, schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let name = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase());
        let candidates = name.as_deref().and_then(|name| {
            self.exact.get(name).or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        let signs = |cert: &Arc<CertifiedKey>| cert.key.choose_scheme(schemes).is_some();
        if let Some(indexes) = candidates {
            let certs: Vec<&Arc<CertifiedKey>> =
                indexes.iter().filter_map(|&i| self.certs.get(i)).collect();
            if let Some(found) = certs.iter().find(|c| signs(c)).or(certs.first()) {
                return Some(Arc::clone(found));
            }
        }
        let default = self.certs.first()?;
        if signs(default) {
            return Some(Arc::clone(default));
        }
        Some(Arc::clone(
            self.certs.iter().find(|c| signs(c)).unwrap_or(default),
        ))
    }
}

/// Chooses the certificate by SNI from the set in service.
#[derive(Debug)]
pub struct SniResolver {
    store: ArcSwap<CertStore>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.store
            .load()
            .find(hello.server_name(), hello.signature_schemes())
    }
}

/// `tls_handshakes_total` and `tls_handshake_errors_total` of one listener.
#[derive(Debug)]
struct HandshakeCounters {
    full: Counter,
    resumed: Counter,
    errors: [Counter; ERROR_REASONS.len()],
}

impl HandshakeCounters {
    fn error(&self, reason: &str) {
        if let Some(i) = ERROR_REASONS.iter().position(|r| *r == reason) {
            self.errors[i].inc();
        }
    }
}

/// Modification time and length of a watched file (`None`: unreadable).
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &std::path::Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// One https listener's TLS side.
#[derive(Debug)]
pub struct TlsListener {
    name: String,
    config: Arc<ServerConfig>,
    resolver: Arc<SniResolver>,
    files: Vec<CertificatePair>,
    /// Set `x-client-cert-subject` / `-san` from a verified client certificate.
    pub forward_client_cert: bool,
    counters: HandshakeCounters,
    reloads: [Counter; 2],
    registry: Arc<Registry>,
    expiry: Mutex<Vec<(String, Gauge)>>,
    stamps: Mutex<Vec<(Stamp, Stamp)>>,
}

impl TlsListener {
    /// Loads the listener's certificates and builds its rustls configuration.
    pub fn build(
        listener: &str,
        config: &ListenerTls,
        registry: &Arc<Registry>,
    ) -> Result<TlsListener, TlsSetupError> {
        let stamps = config
            .certificates
            .iter()
            .map(|p| (stamp(&p.cert), stamp(&p.key)))
            .collect();
        let loaded = load_all(&config.certificates)?;
        let resolver = Arc::new(SniResolver {
            store: ArcSwap::from_pointee(CertStore::build(&loaded)),
        });
        let provider = super::provider();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(super::versions(config.min_version))?;
        let builder = match &config.client_ca {
            Some(ca) => {
                let roots = Arc::new(certs::load_roots(ca)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut server = builder.with_cert_resolver(Arc::clone(&resolver) as _);
        server.alpn_protocols = config.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        server.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
        server.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
        let counters = HandshakeCounters {
            full: registry.counter(&metrics::TLS_HANDSHAKES_TOTAL, &[listener, "false"]),
            resumed: registry.counter(&metrics::TLS_HANDSHAKES_TOTAL, &[listener, "true"]),
            errors: ERROR_REASONS.map(|reason| {
                registry.counter(&metrics::TLS_HANDSHAKE_ERRORS_TOTAL, &[listener, reason])
            }),
        };
        let reloads = ["success", "failure"].map(|result| {
            registry.counter(&metrics::TLS_CERTIFICATE_RELOADS_TOTAL, &[listener, result])
        });
        let tls = TlsListener {
            name: listener.to_owned(),
            config: Arc::new(server),
            resolver,
            files: config.certificates.clone(),
            forward_client_cert: config.forward_client_cert,
            counters,
            reloads,
            registry: Arc::clone(registry),
            expiry: Mutex::new(Vec::new()),
            stamps: Mutex::new(stamps),
        };
        tls.export_expiry(&loaded);
        Ok(tls)
    }

    /// Runs the TLS handshake on `stream`, to be done by `deadline`; counts the outcome.
    pub async fn handshake<S>(
        &self,
        stream: S,
        deadline: Instant,
    ) -> Result<(TlsStream<S>, TlsInfo), HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let result = match tokio::time::timeout_at(
            deadline,
            TlsAcceptor::from(Arc::clone(&self.config)).accept(stream),
        )
        .await
        {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => Err(HandshakeError::Failed(error)),
            Err(_) => Err(HandshakeError::Timeout),
        };
        let stream = match result {
            Ok(stream) => stream,
            Err(error) => {
                self.counters.error(error.reason());
                return Err(error);
            }
        };
        let (_, connection) = stream.get_ref();
        let resumed = connection.handshake_kind() == Some(HandshakeKind::Resumed);
        if resumed {
            self.counters.resumed.inc();
        } else {
            self.counters.full.inc();
        }
        let client = connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| super::x509::parse(leaf).ok())
            .map(|info| ClientIdentity {
                subject: info.subject,
                san: info.san.join(","),
            });
        let info = TlsInfo {
            version: connection
                .protocol_version()
                .map_or("unknown", super::version_name),
            cipher: connection
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("unknown"),
            sni: connection.server_name().map(str::to_owned),
            h2: connection.alpn_protocol() == Some(b"h2"),
            resumed,
            client,
        };
        Ok((stream, info))
    }

    /// Counts a connection refused before the handshake began (`not_tls`, `timeout`).
    pub fn count_error(&self, reason: &str) {
        self.counters.error(reason);
    }

    /// Re-reads every certificate file; on success the new set serves the next handshake,
    /// on failure the old one stays.
    pub fn reload(&self) -> Result<(), TlsSetupError> {
        match load_all(&self.files) {
            Ok(loaded) => {
                self.resolver
                    .store
                    .store(Arc::new(CertStore::build(&loaded)));
                self.export_expiry(&loaded);
                self.reloads[0].inc();
                info!(listener = %self.name, certificates = loaded.len(), "TLS certificates reloaded");
                Ok(())
            }
            Err(error) => {
                self.reloads[1].inc();
                warn!(listener = %self.name, %error, "TLS certificate reload failed; the certificates in service are kept");
                Err(error.into())
            }
        }
    }

    /// Watches the certificate and key files and reloads when one changes (or on
    /// SIGHUP). Runs until the task is aborted.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The wake-up registration lives across iterations (and is renewed as soon as it
        // fires), so a SIGHUP that arrives while files are being re-read is kept for the
        // next turn instead of being lost: `notify_waiters` only reaches registered waiters.
        let mut sighup = std::pin::pin!(RELOAD_NOW.notified());
        sighup.as_mut().enable();
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                () = sighup.as_mut() => true,
            };
            if forced {
                sighup.set(RELOAD_NOW.notified());
                sighup.as_mut().enable();
            }
            let now: Vec<(Stamp, Stamp)> = self
                .files
                .iter()
                .map(|p| (stamp(&p.cert), stamp(&p.key)))
                .collect();
            let changed = {
                let mut seen = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
                let changed = *seen != now;
                *seen = now;
                changed
            };
            if changed || forced {
                let _ = self.reload();
            }
        }
    }

    fn export_expiry(&self, loaded: &[Loaded]) {
        let mut expiry = self.expiry.lock().unwrap_or_else(|p| p.into_inner());
        let labels: Vec<String> = loaded
            .iter()
            .zip(&self.files)
            .map(|(cert, pair)| cert.label(&pair.cert))
            .collect();
        let stale: Vec<String> = expiry
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| !labels.contains(name))
            .collect();
        if !stale.is_empty() {
            let listener = self.name.clone();
            self.registry
                .retain(&metrics::TLS_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS, |l| {
                    !(l.first() == Some(&listener) && l.get(1).is_some_and(|n| stale.contains(n)))
                });
        }
        expiry.clear();
        for (cert, label) in loaded.iter().zip(labels) {
            let gauge = self.registry.gauge(
                &metrics::TLS_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS,
                &[&self.name, &label],
            );
            gauge.set(cert.info.not_after);
            expiry.push((label, gauge));
        }
    }
}

fn load_all(pairs: &[CertificatePair]) -> Result<Vec<Loaded>, CertError> {
    pairs
        .iter()
        .map(|p| certs::load_pair(&p.cert, &p.key))
        .collect()
}
