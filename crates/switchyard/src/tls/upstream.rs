//! Re-encryption: TLS from Switchyard to a cluster's endpoints (`[cluster.tls]`).
//!
//! [`UpstreamTls::connect`] is the one way to open a TLS connection to an endpoint: the
//! HTTP pools use it, and so will `kind = "tls"` active health checks, so a check proves
//! exactly what a request would need (same roots, name, client certificate and ALPN).
//!
//! The upstream is verified against `ca` (else the system's CA bundle) with `sni` as the
//! verified name (else the endpoint's IP address, which must then be in the certificate's
//! IP SANs). A client certificate is presented when `client_cert` / `client_key` are set.
//! ALPN offers `h2` for `protocol = "h2"`, `http/1.1` for `http1`, and the `alpn` list for
//! `auto`, where the upstream's choice decides the protocol of that connection. Sessions
//! are resumed from rustls's client cache, so a pool refilling after a burst pays for few
//! full handshakes.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::client::WebPkiServerVerifier;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::acceptor::TlsSetupError;
use super::certs;
use crate::cluster::connect;
use crate::cluster::endpoint::ConnectFailure;
use crate::config::model::{ClusterTls, UpstreamProtocol};

/// A TLS stream to an endpoint.
pub type UpstreamTlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// How an upstream TLS failure is reported (SPEC 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The upstream's certificate was refused (untrusted, wrong name, expired), or the
    /// upstream refused ours: `tls_certificate_error`.
    Certificate,
    /// Any other handshake failure: `tls_protocol_error`.
    Protocol,
}

/// Why a TLS connection to an endpoint could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TlsConnectError {
    /// The TCP connect failed (or the handshake did not finish within `connect_timeout`).
    #[error("{1}")]
    Connect(ConnectFailure, String),
    /// The handshake failed.
    #[error("TLS handshake with the upstream failed: {1}")]
    Tls(TlsFailure, String),
}

/// One cluster's client side of TLS.
#[derive(Debug)]
pub struct UpstreamTls {
    config: Arc<ClientConfig>,
    name: Option<ServerName<'static>>,
}

impl UpstreamTls {
    /// Loads the trust anchors and client certificate and builds the client config.
    pub fn build(
        config: &ClusterTls,
        protocol: UpstreamProtocol,
    ) -> Result<UpstreamTls, TlsSetupError> {
        let roots = match &config.ca {
            Some(ca) => certs::load_roots(ca)?,
            None => certs::system_roots()?,
        };
        let provider = super::provider();
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(super::versions(crate::config::model::TlsVersion::Tls12))?
            .with_webpki_verifier(verifier);
        let mut client = match (&config.client_cert, &config.client_key) {
            (Some(cert), Some(key)) => {
                let loaded = certs::load_pair(cert, key)?;
                let chain = loaded.certified.cert.clone();
                builder.with_client_auth_cert(chain, certs::load_key(key)?)?
            }
            _ => builder.with_no_client_auth(),
        };
        client.alpn_protocols = match protocol {
            UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
            UpstreamProtocol::H2 => vec![b"h2".to_vec()],
            UpstreamProtocol::Auto => config.alpn.iter().map(|p| p.as_bytes().to_vec()).collect(),
        };
        let name = match &config.sni {
            Some(sni) => Some(
                ServerName::try_from(sni.clone())
                    .map_err(|e| TlsSetupError::Rustls(format!("sni {sni:?}: {e}")))?,
            ),
            None => None,
        };
        Ok(UpstreamTls {
            config: Arc::new(client),
            name,
        })
    }

    /// Connects to `address` and completes the handshake, all within `timeout`; returns
    /// the stream and whether ALPN chose HTTP/2.
    pub async fn connect(
        &self,
        address: SocketAddr,
        timeout: Duration,
        keepalive: Option<Duration>,
    ) -> Result<(UpstreamTlsStream, bool), TlsConnectError> {
        let deadline = Instant::now() + timeout;
        let tcp = connect::tcp(address, timeout, keepalive)
            .await
            .map_err(|(failure, message)| TlsConnectError::Connect(failure, message))?;
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(address.ip().into()));
        let stream = match tokio::time::timeout_at(
            deadline,
            TlsConnector::from(Arc::clone(&self.config)).connect(name, tcp),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                let failure = failure_of(&error).unwrap_or(TlsFailure::Protocol);
                return Err(TlsConnectError::Tls(failure, error.to_string()));
            }
            Err(_) => {
                return Err(TlsConnectError::Connect(
                    ConnectFailure::Timeout,
                    "TLS handshake timed out".into(),
                ));
            }
        };
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok((stream, h2))
    }
}

/// The TLS failure class of an error, if a rustls error is in its chain (handshake errors,
/// and a TLS 1.3 server refusing our client certificate after the handshake).
pub fn failure_of(error: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
    let mut source = Some(error);
    while let Some(current) = source {
        let found = current.downcast_ref::<rustls::Error>().or_else(|| {
            current
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(error) = found {
            return Some(classify(error));
        }
        source = current.source();
    }
    None
}

fn classify(error: &rustls::Error) -> TlsFailure {
    use rustls::AlertDescription as A;
    match error {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            TlsFailure::Certificate
        }
        rustls::Error::AlertReceived(
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::CertificateRequired
            | A::AccessDenied,
        ) => TlsFailure::Certificate,
        _ => TlsFailure::Protocol,
    }
}

/// A connection to an endpoint, cleartext or TLS, as the HTTP pools drive it.
#[derive(Debug)]
pub enum UpstreamStream {
    /// Cleartext TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<UpstreamTlsStream>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
