//! Connections to the target: HTTP/1.1 or HTTP/2, cleartext (h2c by prior knowledge) or
//! TLS (rustls, ALPN), pooled the way a real client pools them.
//!
//! HTTP/1.1 holds one request per connection, so the pool caps open connections and a
//! request waits for one (that wait is part of its latency). HTTP/2 multiplexes every
//! request over a fixed, small set of long-lived connections, which is exactly the shape
//! that exposes connection-level imbalance behind an L4 balancer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsConnector;

use super::stats::ErrorKind;

/// The HTTP version spoken to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive.
    Http1,
    /// HTTP/2: h2c by prior knowledge on `http://`, ALPN h2 on `https://`.
    H2,
}

impl Protocol {
    /// Parses `1.1` / `http1` / `h1` or `2` / `h2` / `h2c`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "1.1" | "1" | "http1" | "h1" | "http/1.1" => Ok(Self::Http1),
            "2" | "h2" | "h2c" | "http2" => Ok(Self::H2),
            _ => Err(format!("unknown HTTP version {s:?} (use 1.1 or 2)")),
        }
    }
}

/// How the server's certificate is checked on `https://`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Trust {
    /// The system's CA bundle.
    #[default]
    System,
    /// The CA certificates of this PEM file.
    Ca(std::path::PathBuf),
    /// No check at all (test servers with self-signed certificates).
    Insecure,
}

/// Where requests go, parsed from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http` or `https`.
    pub tls: bool,
    /// The `Host` / `:authority`.
    pub authority: String,
    /// The host name, for SNI and certificate checks.
    pub host: String,
    /// The resolved address.
    pub addr: SocketAddr,
    /// The URL's path and query (the default request path).
    pub path: String,
}

impl Target {
    /// Parses and resolves `http://host:port/path` or `https://...`.
    pub async fn resolve(url: &str) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("URL {url:?}: use http:// or https://")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("URL {url:?} has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Ok(Self {
            tls,
            authority: authority.as_str().to_owned(),
            host: host.to_owned(),
            addr,
            path,
        })
    }
}

/// An open connection.
enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// Opens connections: TCP, then TLS, then the HTTP handshake.
struct Connector {
    target: Target,
    protocol: Protocol,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    source: Option<std::net::IpAddr>,
}

/// Builds the rustls client for `trust`, offering ALPN for `protocol`.
fn client_tls(trust: &Trust, protocol: Protocol) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut config = match trust {
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::insecure::AcceptAny(
                crate::tls::provider(),
            )))
            .with_no_client_auth(),
        Trust::System => builder
            .with_root_certificates(crate::tls::certs::system_roots().map_err(|e| e.to_string())?)
            .with_no_client_auth(),
        Trust::Ca(path) => builder
            .with_root_certificates(crate::tls::certs::load_roots(path).map_err(|e| e.to_string())?)
            .with_no_client_auth(),
    };
    config.alpn_protocols = match protocol {
        Protocol::Http1 => vec![b"http/1.1".to_vec()],
        Protocol::H2 => vec![b"h2".to_vec()],
    };
    Ok(config)
}

impl Connector {
    fn new(
        target: Target,
        protocol: Protocol,
        trust: &Trust,
        source: Option<std::net::IpAddr>,
    ) -> Result<Self, String> {
        let tls = if target.tls {
            let config = client_tls(trust, protocol)?;
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| format!("bad TLS server name {:?}: {e}", target.host))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Self {
            target,
            protocol,
            tls,
            source,
        })
    }

    async fn tcp(&self) -> Result<TcpStream, ErrorKind> {
        let stream = match self.source {
            None => TcpStream::connect(self.target.addr).await,
            Some(ip) => {
                let socket = if ip.is_ipv4() {
                    TcpSocket::new_v4()
                } else {
                    TcpSocket::new_v6()
                }
                .map_err(|_| ErrorKind::Connect)?;
                socket
                    .bind(SocketAddr::new(ip, 0))
                    .map_err(|_| ErrorKind::Connect)?;
                socket.connect(self.target.addr).await
            }
        }
        .map_err(|_| ErrorKind::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect(&self) -> Result<Sender, ErrorKind> {
        let tcp = self.tcp().await?;
        match &self.tls {
            None => self.handshake(TokioIo::new(tcp)).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|_| ErrorKind::Tls)?;
                if self.protocol == Protocol::H2 && tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(ErrorKind::Tls);
                }
                self.handshake(TokioIo::new(tls)).await
            }
        }
    }

    async fn handshake<T>(&self, io: TokioIo<T>) -> Result<Sender, ErrorKind>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        match self.protocol {
            Protocol::Http1 => {
                let (sender, conn) = http1::handshake(io).await.map_err(|_| ErrorKind::Reset)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(Sender::H1(sender))
            }
            Protocol::H2 => {
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .handshake(io)
                    .await
                    .map_err(|_| ErrorKind::Reset)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(Sender::H2(sender))
            }
        }
    }
}

/// The answer to one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The response status.
    pub(crate) status: u16,
    /// Its `x-backend` header.
    pub(crate) backend: Option<String>,
}

/// The client side of a run: a connection pool and the request builder.
pub(crate) struct Pool {
    connector: Connector,
    /// HTTP/1.1: one permit per open connection.
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<http1::SendRequest<Full<Bytes>>>>,
    /// HTTP/2: a fixed set of shared connections.
    shared: Vec<tokio::sync::Mutex<Option<http2::SendRequest<Full<Bytes>>>>>,
    next: AtomicUsize,
    /// HTTP/1.1: reuse connections (else one connection per attempt, like clients that
    /// churn connections).
    keepalive: bool,
}

/// A request to send: method, path and body.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) method: http::Method,
    pub(crate) path: String,
    pub(crate) body: Bytes,
}

impl Pool {
    /// A pool of at most `connections` connections to `target`.
    pub(crate) fn new(
        target: Target,
        protocol: Protocol,
        trust: &Trust,
        connections: usize,
        source: Option<std::net::IpAddr>,
        keepalive: bool,
    ) -> Result<Self, String> {
        let connections = connections.max(1);
        let shared = match protocol {
            Protocol::Http1 => Vec::new(),
            Protocol::H2 => (0..connections)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
        };
        Ok(Self {
            connector: Connector::new(target, protocol, trust, source)?,
            permits: Arc::new(Semaphore::new(connections)),
            idle: Mutex::new(Vec::new()),
            shared,
            next: AtomicUsize::new(0),
            keepalive,
        })
    }

    fn request(&self, prepared: &Prepared) -> Result<Request<Full<Bytes>>, ErrorKind> {
        let target = &self.connector.target;
        let builder = match self.connector.protocol {
            Protocol::Http1 if !self.keepalive => Request::builder()
                .uri(prepared.path.as_str())
                .header(http::header::HOST, target.authority.as_str())
                .header(http::header::CONNECTION, "close"),
            Protocol::Http1 => Request::builder()
                .uri(prepared.path.as_str())
                .header(http::header::HOST, target.authority.as_str()),
            Protocol::H2 => {
                let scheme = if target.tls { "https" } else { "http" };
                Request::builder()
                    .uri(format!("{scheme}://{}{}", target.authority, prepared.path))
                    .version(http::Version::HTTP_2)
            }
        };
        builder
            .method(prepared.method.clone())
            .body(Full::new(prepared.body.clone()))
            .map_err(|_| ErrorKind::Reset)
    }

    /// One attempt, bounded by `timeout` (connect, head and the whole body).
    pub(crate) async fn attempt(
        &self,
        prepared: &Prepared,
        timeout: Duration,
    ) -> Result<Answer, ErrorKind> {
        match tokio::time::timeout(timeout, self.attempt_unbounded(prepared)).await {
            Ok(result) => result,
            Err(_) => Err(ErrorKind::Timeout),
        }
    }

    async fn attempt_unbounded(&self, prepared: &Prepared) -> Result<Answer, ErrorKind> {
        match self.connector.protocol {
            Protocol::Http1 => self.attempt_h1(prepared).await,
            Protocol::H2 => self.attempt_h2(prepared).await,
        }
    }

    fn take_idle(&self) -> Option<http1::SendRequest<Full<Bytes>>> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    async fn attempt_h1(&self, prepared: &Prepared) -> Result<Answer, ErrorKind> {
        let permit: OwnedSemaphorePermit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| ErrorKind::Overload)?;
        // A pooled connection the server closed while idle fails before the request is
        // sent; real clients then retry once on a fresh connection, uncounted.
        for reused in [true, false] {
            let mut sender = match reused.then(|| self.take_idle()).flatten() {
                Some(sender) => sender,
                None if reused => continue,
                None => match self.connector.connect().await? {
                    Sender::H1(s) => s,
                    Sender::H2(_) => return Err(ErrorKind::Reset),
                },
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(ErrorKind::Reset);
            }
            let response = match sender.send_request(self.request(prepared)?).await {
                Ok(r) => r,
                Err(e) if reused && (e.is_canceled() || e.is_closed()) => continue,
                Err(_) => return Err(ErrorKind::Reset),
            };
            let answer = read(response).await?;
            let keep = self.keepalive && !sender.is_closed();
            if keep {
                self.idle
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(sender);
            }
            drop(permit);
            return Ok(answer);
        }
        Err(ErrorKind::Reset)
    }

    async fn h2_sender(&self) -> Result<http2::SendRequest<Full<Bytes>>, ErrorKind> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.shared.len().max(1);
        let Some(slot) = self.shared.get(slot) else {
            return Err(ErrorKind::Connect);
        };
        let mut guard = slot.lock().await;
        if let Some(sender) = guard.as_ref() {
            if !sender.is_closed() {
                return Ok(sender.clone());
            }
        }
        match self.connector.connect().await? {
            Sender::H2(sender) => {
                *guard = Some(sender.clone());
                Ok(sender)
            }
            Sender::H1(_) => Err(ErrorKind::Reset),
        }
    }

    async fn attempt_h2(&self, prepared: &Prepared) -> Result<Answer, ErrorKind> {
        let mut sender = self.h2_sender().await?;
        sender.ready().await.map_err(|_| ErrorKind::Reset)?;
        let response = sender
            .send_request(self.request(prepared)?)
            .await
            .map_err(|_| ErrorKind::Reset)?;
        read(response).await
    }
}

/// Reads the whole body (discarding it) and reports the status and `x-backend`.
async fn read(response: http::Response<hyper::body::Incoming>) -> Result<Answer, ErrorKind> {
    let status = response.status().as_u16();
    let backend = response
        .headers()
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(64).collect());
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(|_| ErrorKind::Reset)?;
    }
    Ok(Answer { status, backend })
}
