//! TLS for the L7 tier: termination on `https` listeners ([`acceptor`]), re-encryption to
//! upstreams ([`upstream`]), certificate files ([`certs`]) and the few certificate fields
//! Switchyard reads itself ([`x509`]).
//!
//! One crypto provider serves the whole process (aws-lc-rs, [`provider`]): every rustls
//! config is built with `builder_with_provider`, so nothing depends on a process-wide
//! default and no binary can panic over two installed providers.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub mod acceptor;
pub mod certs;
pub mod insecure;
pub mod upstream;
pub mod x509;

/// The process's one TLS crypto provider (aws-lc-rs, its default suites: TLS 1.3 AES-GCM
/// and ChaCha20-Poly1305, TLS 1.2 ECDHE with AEAD only; no legacy protocol or cipher).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}

/// The protocol versions from `min` up.
pub fn versions(
    min: crate::config::model::TlsVersion,
) -> &'static [&'static rustls::SupportedProtocolVersion] {
    use crate::config::model::TlsVersion;
    static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    static TLS12_UP: &[&rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    match min {
        TlsVersion::Tls13 => TLS13_ONLY,
        TlsVersion::Tls12 => TLS12_UP,
    }
}

/// The access-log spelling of a protocol version.
pub fn version_name(version: rustls::ProtocolVersion) -> &'static str {
    match version {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "unknown",
    }
}
