//! TLS over real sockets: termination (SNI, ALPN, versions, resumption, mTLS, plain HTTP on
//! a TLS port), re-encryption to TLS upstreams (trusted, untrusted, wrong name, mTLS, ALPN),
//! and certificates swapped on disk under traffic. Clients are tokio-rustls + hyper, so a
//! test can see what the handshake negotiated; certificates are generated here with rcgen.

#![allow(clippy::unwrap_used)]
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use switchyard::tls::insecure::AcceptAny;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SignatureAlgorithm,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

// ---------------------------------------------------------------------------------------
// certificates

/// A folder of its own for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-tls-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

struct Leaf {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn leaf_with(
        &self,
        names: &[&str],
        cn: &str,
        alg: &'static SignatureAlgorithm,
        usage: ExtendedKeyUsagePurpose,
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        params.not_after = rcgen::date_time_ymd(2035, 1, 2);
        let key = KeyPair::generate_for(alg).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn server(&self, names: &[&str], cn: &str) -> Leaf {
        self.leaf_with(
            names,
            cn,
            &rcgen::PKCS_ECDSA_P256_SHA256,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self, cn: &str, uri: &str) -> Leaf {
        let mut leaf_names = vec![uri];
        leaf_names.retain(|s| !s.is_empty());
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Clients");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.subject_alt_names = leaf_names
            .iter()
            .map(|u| rcgen::SanType::URI((*u).try_into().unwrap()))
            .collect();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

impl Leaf {
    /// Writes `name.pem` and `name.key` into `dir`; returns the `{ cert, key }` item.
    fn write(&self, dir: &Path, name: &str) -> String {
        let (cert, key) = self.paths(dir, name);
        std::fs::write(&cert, &self.cert).unwrap();
        std::fs::write(&key, &self.key).unwrap();
        format!(
            "{{ cert = \"{}\", key = \"{}\" }}",
            cert.display(),
            key.display()
        )
    }

    fn paths(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        )
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.der.clone()]
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key.as_bytes()).unwrap()
    }
}

fn write_pem(dir: &Path, name: &str, pem: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path.display().to_string()
}

// ---------------------------------------------------------------------------------------
// clients

#[derive(Clone, Copy)]
enum Versions {
    Any,
    Only12,
}

struct ClientSpec<'a> {
    /// PEM trust anchors; `None` accepts any certificate.
    roots: Option<&'a [String]>,
    alpn: &'a [&'a str],
    versions: Versions,
    identity: Option<&'a Leaf>,
}

impl Default for ClientSpec<'_> {
    fn default() -> Self {
        ClientSpec {
            roots: None,
            alpn: &["h2", "http/1.1"],
            versions: Versions::Any,
            identity: None,
        }
    }
}

fn client_config(spec: &ClientSpec<'_>) -> Arc<ClientConfig> {
    let versions: &[&rustls::SupportedProtocolVersion] = match spec.versions {
        Versions::Any => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Versions::Only12 => &[&rustls::version::TLS12],
    };
    let builder = ClientConfig::builder_with_provider(switchyard::tls::provider())
        .with_protocol_versions(versions)
        .unwrap();
    let builder = match spec.roots {
        Some(pems) => {
            let mut roots = RootCertStore::empty();
            for pem in pems {
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    roots.add(cert.unwrap()).unwrap();
                }
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(switchyard::tls::provider()))),
    };
    let mut config = match spec.identity {
        Some(leaf) => builder
            .with_client_auth_cert(leaf.chain(), leaf.private_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = spec.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// What one request over a fresh TLS connection saw.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
    version: http::Version,
    resumed: bool,
    tls_version: Option<rustls::ProtocolVersion>,
    peer: Option<CertificateDer<'static>>,
}

/// GET `path` on a new TLS connection to `address` with `sni` (an IP sends no SNI).
async fn get(
    address: SocketAddr,
    config: &Arc<ClientConfig>,
    sni: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (_, connection) = tls.get_ref();
    let h2 = connection.alpn_protocol() == Some(b"h2");
    let resumed = connection.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let tls_version = connection.protocol_version();
    let peer = connection
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    let host = if sni.parse::<std::net::IpAddr>().is_ok() {
        "localhost"
    } else {
        sni
    };
    let mut request = http::Request::builder();
    if h2 {
        request = request.uri(format!("https://{host}{path}"));
    } else {
        request = request.uri(path).header("host", host);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::<Bytes>::new()).unwrap();
    let io = TokioIo::new(tls);
    let response = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender.send_request(request).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender.send_request(request).await
    }
    .map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    let version = response.version();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        version,
        resumed,
        tls_version,
        peer,
    })
}

async fn get_ok(address: SocketAddr, config: &Arc<ClientConfig>, sni: &str, path: &str) -> Answer {
    let answer = within(get(address, config, sni, path, &[])).await.unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    answer
}

// ---------------------------------------------------------------------------------------
// balancers and upstreams

/// A balancer with one https listener `web` (`tls` is the `[listener.tls]` body) in front
/// of one cluster `app`.
fn https_config(tls: &str, endpoints: &str, access_log: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[access_log]
{access_log}
[[listener]]
name = "web"
listen = "127.0.0.1:0"
protocol = "https"
cluster = "app"
  [listener.tls]
  {tls}
[[cluster]]
name = "app"
endpoints = {endpoints}
"#
    )
}

fn one_endpoint(address: SocketAddr) -> String {
    endpoints(&[address], &["b1"])
}

/// An https listener `web` serving one certificate for `host` (named `name`, signed by a
/// fresh CA `ca_name`) in front of one backend; the scratch folder of `test` holds the files.
struct OneCert {
    server: switchyard::runtime::Server,
    ca: Ca,
    dir: PathBuf,
    backends: Vec<switchyard::backend::BackendHandle>,
}

async fn one_cert_https(test: &str, ca_name: &str, host: &str, name: &str) -> OneCert {
    let dir = scratch(test);
    let ca = Ca::new(ca_name);
    let leaf = ca.server(&[host], name);
    let backends = http_backends(1).await;
    let tls = format!("certificates = [{}]", leaf.write(&dir, name));
    let server = balancer(&https_config(
        &tls,
        &one_endpoint(backends[0].local_addr()),
        "enabled = false",
    ))
    .await;
    OneCert {
        server,
        ca,
        dir,
        backends,
    }
}

/// A TLS server in front of `backend`: terminates with `leaf` (offering `alpn`, asking for
/// client certificates from `client_ca` when given) and relays the bytes.
async fn tls_upstream(
    backend: SocketAddr,
    leaf: &Leaf,
    alpn: &[&str],
    client_ca: Option<&Ca>,
) -> SocketAddr {
    let provider = switchyard::tls::provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.issuer.der().clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(leaf.chain(), leaf.private_key())
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    address
}

/// A TLS upstream named `api.internal` (HTTP/1.1 by ALPN) in front of one backend, and
/// the PEM paths of the CA that signed it and of one that did not. The backend handle is
/// returned so it lives as long as the test.
async fn api_internal_upstream(
    dir: &Path,
) -> (
    SocketAddr,
    String,
    String,
    Vec<switchyard::backend::BackendHandle>,
) {
    let internal = Ca::new("internal ca");
    let other = Ca::new("other ca");
    let backends = http_backends(1).await;
    let upstream = tls_upstream(
        backends[0].local_addr(),
        &internal.server(&["api.internal"], "api"),
        &["http/1.1"],
        None,
    )
    .await;
    let internal_ca = write_pem(dir, "internal.pem", &internal.pem());
    let other_ca = write_pem(dir, "other.pem", &other.pem());
    (upstream, internal_ca, other_ca, backends)
}

/// A cleartext listener `web` in front of cluster `app` re-encrypting to `upstream`.
fn reencrypt_config(upstream: SocketAddr, protocol: &str, tls: &str) -> String {
    format!(
        r#"{WEB}
cluster = "app"
[[cluster]]
name = "app"
protocol = "{protocol}"
endpoints = {endpoints}
  [cluster.tls]
  {tls}
"#,
        endpoints = one_endpoint(upstream)
    )
}

async fn echo_json(server: &switchyard::runtime::Server) -> (u16, String, serde_json::Value) {
    let url = format!("http://{}/seen", address(server, "web"));
    let response = within(client().get(url).send()).await.unwrap();
    let status = response.status().as_u16();
    let proxy_status = response
        .headers()
        .get("proxy-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = within(response.text()).await.unwrap();
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    (status, proxy_status, json)
}

fn series(name: &str, labels: &str) -> String {
    format!("switchyard_{name}{{{labels}}}")
}

// ---------------------------------------------------------------------------------------
// termination

#[tokio::test]
async fn tls_sni_chooses_each_certificates_own_names_and_the_first_is_the_default() {
    let dir = scratch("sni");
    let ca = Ca::new("sni ca");
    let first = ca.server(&["a.test", "*.wild.test"], "first");
    let second = ca.server(&["b.test", "exact.wild.test"], "second");
    let rsa = ca.leaf_with(
        &["rsa.test"],
        "rsa",
        &rcgen::PKCS_RSA_SHA256,
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let backends = http_backends(1).await;
    let tls = format!(
        "certificates = [{}, {}, {}]",
        first.write(&dir, "first"),
        second.write(&dir, "second"),
        rsa.write(&dir, "rsa")
    );
    let server = balancer(&https_config(
        &tls,
        &one_endpoint(backends[0].local_addr()),
        "enabled = false",
    ))
    .await;
    let web = address(&server, "web");
    let roots = [ca.pem()];
    let verified = client_config(&ClientSpec {
        roots: Some(&roots),
        ..ClientSpec::default()
    });
    for (sni, expected) in [
        ("a.test", &first),
        ("b.test", &second),
        ("x.wild.test", &first),
        ("exact.wild.test", &second),
        ("rsa.test", &rsa),
    ] {
        let answer = get_ok(web, &verified, sni, "/").await;
        assert_eq!(answer.peer.as_ref(), Some(&expected.der), "{sni}");
    }
    // No SNI (an IP address) and an unknown name get the first certificate.
    let any = client_config(&ClientSpec::default());
    for sni in ["127.0.0.1", "unknown.test", "deep.x.wild.test"] {
        let answer = get_ok(web, &any, sni, "/").await;
        assert_eq!(answer.peer.as_ref(), Some(&first.der), "{sni}");
    }
    // Every served certificate's expiry is exported, labelled by its first name.
    let rsa_expiry = metric_of(
        &server,
        &series(
            "tls_certificate_expiry_timestamp_seconds",
            "listener=\"web\",name=\"rsa.test\"",
        ),
    )
    .await;
    assert_eq!(rsa_expiry, 2_051_308_800.0); // 2035-01-02T00:00:00Z
}

#[tokio::test]
async fn tls_alpn_gives_h2_or_http1_and_no_alpn_means_http1() {
    let OneCert {
        server,
        ca,
        dir: _dir,
        backends: _backends,
    } = one_cert_https("alpn", "alpn ca", "web.test", "web").await;
    let web = address(&server, "web");
    let roots = [ca.pem()];
    for (alpn, version) in [
        (&["h2", "http/1.1"][..], http::Version::HTTP_2),
        (&["http/1.1"][..], http::Version::HTTP_11),
        (&[][..], http::Version::HTTP_11),
    ] {
        let config = client_config(&ClientSpec {
            roots: Some(&roots),
            alpn,
            ..ClientSpec::default()
        });
        let answer = get_ok(web, &config, "web.test", "/seen").await;
        assert_eq!(answer.version, version, "{alpn:?}");
        let echo: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    }
    // A client offering only protocols the listener does not speak is refused.
    let config = client_config(&ClientSpec {
        roots: Some(&roots),
        alpn: &["spdy/3"],
        ..ClientSpec::default()
    });
    assert!(
        within(get(web, &config, "web.test", "/", &[]))
            .await
            .is_err()
    );
    let refused = metric_of(
        &server,
        &series(
            "tls_handshake_errors_total",
            "listener=\"web\",reason=\"alpn\"",
        ),
    )
    .await;
    assert_eq!(refused, 1.0);
}

#[tokio::test]
async fn tls_min_version_13_refuses_a_tls12_client_and_12_accepts_it() {
    let dir = scratch("versions");
    let ca = Ca::new("versions ca");
    let leaf = ca.server(&["v.test"], "v");
    let backends = http_backends(1).await;
    let item = leaf.write(&dir, "v");
    let roots = [ca.pem()];
    let tls12 = client_config(&ClientSpec {
        roots: Some(&roots),
        versions: Versions::Only12,
        ..ClientSpec::default()
    });
    let any = client_config(&ClientSpec {
        roots: Some(&roots),
        ..ClientSpec::default()
    });
    for (min, tls12_ok) in [("1.3", false), ("1.2", true)] {
        let tls = format!("certificates = [{item}]\n  min_version = \"{min}\"");
        let server = balancer(&https_config(
            &tls,
            &one_endpoint(backends[0].local_addr()),
            "enabled = false",
        ))
        .await;
        let web = address(&server, "web");
        let old = within(get(web, &tls12, "v.test", "/", &[])).await;
        assert_eq!(old.is_ok(), tls12_ok, "min {min}: {old:?}");
        if let Ok(answer) = old {
            assert_eq!(answer.tls_version, Some(rustls::ProtocolVersion::TLSv1_2));
        }
        let new = get_ok(web, &any, "v.test", "/").await;
        assert_eq!(new.tls_version, Some(rustls::ProtocolVersion::TLSv1_3));
        let refused = metric_of(
            &server,
            &series(
                "tls_handshake_errors_total",
                "listener=\"web\",reason=\"incompatible\"",
            ),
        )
        .await;
        assert_eq!(refused, if tls12_ok { 0.0 } else { 1.0 }, "min {min}");
    }
}

#[tokio::test]
async fn tls_second_connection_resumes_and_is_counted() {
    let OneCert {
        server,
        ca,
        dir: _dir,
        backends: _backends,
    } = one_cert_https("resume", "resume ca", "r.test", "r").await;
    let web = address(&server, "web");
    let roots = [ca.pem()];
    for versions in [Versions::Any, Versions::Only12] {
        // One config per version: its session store carries the ticket / session id.
        let config = client_config(&ClientSpec {
            roots: Some(&roots),
            versions,
            ..ClientSpec::default()
        });
        let first = get_ok(web, &config, "r.test", "/").await;
        assert!(!first.resumed);
        let second = get_ok(web, &config, "r.test", "/").await;
        assert!(second.resumed, "the second connection resumes");
    }
    let full = series("tls_handshakes_total", "listener=\"web\",resumed=\"false\"");
    let resumed = series("tls_handshakes_total", "listener=\"web\",resumed=\"true\"");
    assert_eq!(metric_of(&server, &full).await, 2.0);
    assert_eq!(metric_of(&server, &resumed).await, 2.0);
}

#[tokio::test]
async fn tls_port_answers_plain_http_with_400_and_counts_it() {
    let dir = scratch("plain");
    let ca = Ca::new("plain ca");
    let leaf = ca.server(&["p.test"], "p");
    let backends = http_backends(1).await;
    let tls = format!("certificates = [{}]", leaf.write(&dir, "p"));
    let server = balancer(&https_config(
        &tls,
        &one_endpoint(backends[0].local_addr()),
        "enabled = false",
    ))
    .await;
    let mut stream = TcpStream::connect(address(&server, "web")).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: p.test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    within(stream.read_to_end(&mut answer)).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("plain HTTP"), "{answer}");
    let rejected = series(
        "connections_rejected_total",
        "listener=\"web\",reason=\"tls\"",
    );
    assert_eq!(metric_of(&server, &rejected).await, 1.0);
    let not_tls = series(
        "tls_handshake_errors_total",
        "listener=\"web\",reason=\"not_tls\"",
    );
    assert_eq!(metric_of(&server, &not_tls).await, 1.0);
}

#[tokio::test]
async fn tls_mtls_accepts_a_client_of_client_ca_forwards_its_identity_and_refuses_others() {
    let dir = scratch("mtls");
    let ca = Ca::new("server ca");
    let clients = Ca::new("clients ca");
    let strangers = Ca::new("strangers ca");
    let leaf = ca.server(&["m.test"], "m");
    let backends = http_backends(1).await;
    let log = dir.join("access.log");
    let tls = format!(
        "certificates = [{}]\n  client_ca = \"{}\"\n  forward_client_cert = true",
        leaf.write(&dir, "m"),
        write_pem(&dir, "clients.pem", &clients.pem())
    );
    let server = balancer(&https_config(
        &tls,
        &one_endpoint(backends[0].local_addr()),
        &format!("path = \"{}\"", log.display()),
    ))
    .await;
    let web = address(&server, "web");
    let roots = [ca.pem()];
    let alice = clients.client("alice", "spiffe://test/alice");
    let with_cert = client_config(&ClientSpec {
        roots: Some(&roots),
        identity: Some(&alice),
        alpn: &["http/1.1"],
        ..ClientSpec::default()
    });
    let answer = within(get(
        web,
        &with_cert,
        "m.test",
        "/seen",
        &[("x-client-cert-subject", "CN=forged")],
    ))
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
    let echo: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(
        echo["headers"]["x-client-cert-subject"],
        "CN=alice,O=Clients"
    );
    assert_eq!(
        echo["headers"]["x-client-cert-san"],
        "URI:spiffe://test/alice"
    );
    let line = read_when_written(&log).await;
    let line: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(line["tls_version"], "TLSv1.3");
    assert_eq!(line["sni"], "m.test");
    assert!(
        line["tls_cipher"].as_str().unwrap().starts_with("TLS13_"),
        "{line}"
    );

    for identity in [None, Some(strangers.client("mallory", ""))] {
        let config = client_config(&ClientSpec {
            roots: Some(&roots),
            identity: identity.as_ref(),
            ..ClientSpec::default()
        });
        // TLS 1.3: the client's handshake ends before the server has judged its
        // certificate, so the refusal (an alert) arrives at the first read.
        let refused = within(get(web, &config, "m.test", "/", &[])).await;
        assert!(refused.is_err(), "{refused:?}");
    }
    let errors = series(
        "tls_handshake_errors_total",
        "listener=\"web\",reason=\"client_certificate\"",
    );
    assert_eq!(metric_of(&server, &errors).await, 2.0);
}

#[tokio::test]
async fn tls_client_cert_headers_are_stripped_without_forward_client_cert() {
    let OneCert {
        server,
        ca,
        dir: _dir,
        backends: _backends,
    } = one_cert_https("strip", "strip ca", "s.test", "s").await;
    let roots = [ca.pem()];
    let config = client_config(&ClientSpec {
        roots: Some(&roots),
        ..ClientSpec::default()
    });
    let answer = within(get(
        address(&server, "web"),
        &config,
        "s.test",
        "/seen",
        &[
            ("x-client-cert-subject", "CN=forged"),
            ("x-client-cert-san", "DNS:forged"),
        ],
    ))
    .await
    .unwrap();
    let echo: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert!(
        echo["headers"].get("x-client-cert-subject").is_none(),
        "{echo}"
    );
    assert!(echo["headers"].get("x-client-cert-san").is_none(), "{echo}");
}

// ---------------------------------------------------------------------------------------
// re-encryption

#[tokio::test]
async fn tls_reencrypts_to_a_trusted_upstream_and_refuses_untrusted_and_wrong_name_ones() {
    let dir = scratch("reencrypt");
    let (upstream, internal_ca, other_ca, _backends) = api_internal_upstream(&dir).await;
    let trusted = balancer(&reencrypt_config(
        upstream,
        "http1",
        &format!("sni = \"api.internal\"\n  ca = \"{internal_ca}\""),
    ))
    .await;
    let (status, _, echo) = echo_json(&trusted).await;
    assert_eq!(status, 200);
    assert_eq!(echo["name"], "b1");
    for tls in [
        format!("sni = \"api.internal\"\n  ca = \"{other_ca}\""),
        format!("sni = \"wrong.internal\"\n  ca = \"{internal_ca}\""),
    ] {
        let server = balancer(&reencrypt_config(upstream, "http1", &tls)).await;
        let (status, proxy_status, _) = echo_json(&server).await;
        assert_eq!(status, 502, "{tls}");
        assert!(
            proxy_status.contains("error=tls_certificate_error"),
            "{tls}: {proxy_status}"
        );
    }
}

#[tokio::test]
async fn tls_reencrypts_with_a_client_certificate_to_an_mtls_upstream() {
    let dir = scratch("upstream-mtls");
    let internal = Ca::new("internal ca");
    let lbs = Ca::new("lb ca");
    let backends = http_backends(1).await;
    let upstream = tls_upstream(
        backends[0].local_addr(),
        &internal.server(&["api.internal"], "api"),
        &["http/1.1"],
        Some(&lbs),
    )
    .await;
    let ca = write_pem(&dir, "internal.pem", &internal.pem());
    let lb = lbs.client("lb", "");
    lb.write(&dir, "lb");
    let (cert, key) = lb.paths(&dir, "lb");
    let with_cert = balancer(&reencrypt_config(
        upstream,
        "http1",
        &format!(
            "sni = \"api.internal\"\n  ca = \"{ca}\"\n  client_cert = \"{}\"\n  client_key = \"{}\"",
            cert.display(),
            key.display()
        ),
    ))
    .await;
    let (status, _, echo) = echo_json(&with_cert).await;
    assert_eq!(status, 200, "{echo}");
    let without = balancer(&reencrypt_config(
        upstream,
        "http1",
        &format!("sni = \"api.internal\"\n  ca = \"{ca}\""),
    ))
    .await;
    let (status, proxy_status, _) = echo_json(&without).await;
    assert_eq!(status, 502);
    assert!(
        proxy_status.contains("error=tls_certificate_error"),
        "{proxy_status}"
    );
}

#[tokio::test]
async fn tls_cluster_protocol_auto_follows_the_upstreams_alpn_choice() {
    let dir = scratch("auto");
    let internal = Ca::new("internal ca");
    let backends = http_backends(1).await;
    let leaf = internal.server(&["api.internal"], "api");
    let ca = write_pem(&dir, "internal.pem", &internal.pem());
    for (alpn, version) in [(&["h2"][..], "HTTP/2.0"), (&["http/1.1"][..], "HTTP/1.1")] {
        let upstream = tls_upstream(backends[0].local_addr(), &leaf, alpn, None).await;
        let server = balancer(&reencrypt_config(
            upstream,
            "auto",
            &format!("sni = \"api.internal\"\n  ca = \"{ca}\""),
        ))
        .await;
        for _ in 0..3 {
            let (status, _, echo) = echo_json(&server).await;
            assert_eq!(status, 200);
            assert_eq!(echo["version"], version, "{alpn:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// certificate reload

#[tokio::test]
async fn tls_certificate_files_swapped_under_traffic_fail_no_request_and_a_broken_file_keeps_the_old()
 {
    let dir = scratch("swap");
    let ca = Ca::new("swap ca");
    let old = ca.server(&["swap.test"], "old");
    let new = ca.server(&["swap.test", "new.swap.test"], "new");
    let backends = http_backends(1).await;
    let tls = format!("certificates = [{}]", old.write(&dir, "live"));
    let server = balancer(&https_config(
        &tls,
        &one_endpoint(backends[0].local_addr()),
        "enabled = false",
    ))
    .await;
    let web = address(&server, "web");
    let roots = [ca.pem()];
    let mut spec_config = (*client_config(&ClientSpec {
        roots: Some(&roots),
        ..ClientSpec::default()
    }))
    .clone();
    // Every request a full handshake, so each one shows the certificate in service.
    spec_config.resumption = rustls::client::Resumption::disabled();
    let config = Arc::new(spec_config);

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served_new = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (stop, failures, served_new, total) = (
            Arc::clone(&stop),
            Arc::clone(&failures),
            Arc::clone(&served_new),
            Arc::clone(&total),
        );
        let config = Arc::clone(&config);
        let new_der = new.der.clone();
        tokio::spawn(async move {
            // Bounded: at most 2,000 requests.
            for _ in 0..2000 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                match tokio::time::timeout(LIMIT, get(web, &config, "swap.test", "/", &[])).await {
                    Ok(Ok(answer)) if answer.status == 200 => {
                        if answer.peer.as_ref() == Some(&new_der) {
                            served_new.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::AcqRel);
                    }
                }
                total.fetch_add(1, Ordering::AcqRel);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Replace each file by a rename, the way deployment tools do.
    let (cert, key) = old.paths(&dir, "live");
    std::fs::write(dir.join("next.key"), &new.key).unwrap();
    std::fs::write(dir.join("next.pem"), &new.cert).unwrap();
    std::fs::rename(dir.join("next.key"), &key).unwrap();
    std::fs::rename(dir.join("next.pem"), &cert).unwrap();
    for _ in 0..60 {
        if served_new.load(Ordering::Acquire) >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Release);
    within(traffic).await.unwrap();
    assert!(
        served_new.load(Ordering::Acquire) >= 10,
        "the new certificate is served"
    );
    assert_eq!(
        failures.load(Ordering::Acquire),
        0,
        "of {} requests",
        total.load(Ordering::Acquire)
    );
    let reloads_ok = series(
        "tls_certificate_reloads_total",
        "listener=\"web\",result=\"success\"",
    );
    assert!(metric_of(&server, &reloads_ok).await >= 1.0);

    // A broken file: the failure is counted, the certificate in service stays.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let reloads_failed = series(
        "tls_certificate_reloads_total",
        "listener=\"web\",result=\"failure\"",
    );
    let mut failed = 0.0;
    for _ in 0..40 {
        failed = metric_of(&server, &reloads_failed).await;
        if failed >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed >= 1.0, "the broken file is counted");
    let answer = get_ok(web, &config, "swap.test", "/").await;
    assert_eq!(answer.peer.as_ref(), Some(&new.der));
}

// ---------------------------------------------------------------------------------------
// configuration

#[test]
fn tls_check_reports_a_key_that_is_not_the_certificates_with_its_field() {
    let dir = scratch("check");
    let ca = Ca::new("check ca");
    let one = ca.server(&["one.test"], "one");
    let two = ca.server(&["two.test"], "two");
    let (cert, _) = one.paths(&dir, "one");
    one.write(&dir, "one");
    let (_, key) = two.paths(&dir, "two");
    two.write(&dir, "two");
    let text = format!(
        r#"[[listener]]
name = "web"
listen = "127.0.0.1:0"
protocol = "https"
cluster = "app"
  [listener.tls]
  certificates = [{{ cert = "{}", key = "{}" }}, {{ cert = "{}/missing.pem", key = "{}" }}]
[[cluster]]
name = "app"
endpoints = ["127.0.0.1:1"]
"#,
        cert.display(),
        key.display(),
        dir.display(),
        key.display()
    );
    let errors = switchyard::config::load_str(&text, Path::new("tls.toml")).unwrap_err();
    let listed: Vec<(usize, String, String)> = errors
        .errors()
        .iter()
        .map(|e| (e.line, e.path.clone(), e.message.clone()))
        .collect();
    assert_eq!(listed.len(), 2, "{errors}");
    assert_eq!(listed[0].0, 7);
    assert_eq!(listed[0].1, "listener[0].tls.certificates[0].key");
    assert!(listed[0].2.contains("does not match"), "{errors}");
    assert_eq!(listed[1].1, "listener[0].tls.certificates[1].cert");
    assert!(listed[1].2.contains("cannot read"), "{errors}");
}

#[test]
fn tls_check_refuses_a_reencrypting_cluster_behind_an_l4_listener() {
    let dir = scratch("check-l4");
    let ca = write_pem(&dir, "ca.pem", &Ca::new("l4 ca").pem());
    let text = format!(
        r#"[[listener]]
name = "raw"
listen = "127.0.0.1:0"
protocol = "tcp"
cluster = "app"
[[cluster]]
name = "app"
endpoints = ["127.0.0.1:1"]
  [cluster.tls]
  ca = "{ca}"
"#
    );
    let errors = switchyard::config::load_str(&text, Path::new("l4.toml")).unwrap_err();
    assert_eq!(errors.errors().len(), 1, "{errors}");
    assert!(errors.to_string().contains("re-encrypts"), "{errors}");
}

#[tokio::test]
async fn tls_a_client_that_never_says_hello_is_closed_after_header_read_timeout() {
    let dir = scratch("silent");
    let ca = Ca::new("silent ca");
    let leaf = ca.server(&["q.test"], "q");
    let backends = http_backends(1).await;
    let tls = format!("certificates = [{}]", leaf.write(&dir, "q"));
    let config = https_config(
        &tls,
        &one_endpoint(backends[0].local_addr()),
        "enabled = false",
    )
    .replace(
        "protocol = \"https\"",
        "protocol = \"https\"\nheader_read_timeout = \"300ms\"",
    );
    let server = balancer(&config).await;
    let mut stream = TcpStream::connect(address(&server, "web")).await.unwrap();
    let started = std::time::Instant::now();
    assert_closed(&mut stream, "silent TLS client").await;
    assert!(started.elapsed() < Duration::from_secs(3));
    let timeouts = series(
        "tls_handshake_errors_total",
        "listener=\"web\",reason=\"timeout\"",
    );
    assert_eq!(metric_of(&server, &timeouts).await, 1.0);
}

#[tokio::test]
async fn tls_health_checks_use_the_clusters_connector_tls_and_http_kinds() {
    let dir = scratch("health");
    let (upstream, internal_ca, other_ca, _backends) = api_internal_upstream(&dir).await;
    let state = |server: &switchyard::runtime::Server| {
        let server_json = server.shared().snapshot.load();
        let cluster = server_json.cluster("app").unwrap();
        let endpoint = &cluster.endpoints()[0];
        (endpoint.state().as_str(), endpoint.is_checked_healthy())
    };
    for kind in ["tls", "http"] {
        let checks = format!(
            "sni = \"api.internal\"\n  ca = \"{internal_ca}\"\n  [cluster.health]\n  kind = \"{kind}\"\n  interval = \"100ms\"\n  timeout = \"1s\""
        );
        let server = balancer(&reencrypt_config(upstream, "http1", &checks)).await;
        assert_eq!(
            state(&server),
            ("healthy", true),
            "kind {kind}: the first round admits it"
        );
        let passes = metric_of(
            &server,
            &series("health_checks_total", "cluster=\"app\",result=\"pass\""),
        )
        .await;
        assert!(passes >= 1.0, "{kind}: {passes}");
    }
    // An upstream whose certificate the cluster does not trust fails its TLS check.
    let checks = format!(
        "sni = \"api.internal\"\n  ca = \"{other_ca}\"\n  [cluster.health]\n  kind = \"tls\"\n  interval = \"100ms\"\n  timeout = \"1s\""
    );
    let server = balancer(&reencrypt_config(upstream, "http1", &checks)).await;
    assert_eq!(state(&server), ("unhealthy", false));
}

#[tokio::test]
async fn tls_a_handshake_on_a_cleartext_http_port_is_closed_at_once_and_counted() {
    let backends = http_backends(1).await;
    let text = format!(
        r#"{WEB}
cluster = "app"
[[cluster]]
name = "app"
endpoints = {}
"#,
        one_endpoint(backends[0].local_addr())
    );
    let server = balancer(&text).await;
    let config = client_config(&ClientSpec::default());
    let started = std::time::Instant::now();
    let refused = within(get(address(&server, "web"), &config, "web.test", "/", &[])).await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not left to time out"
    );
    let rejected = series(
        "connections_rejected_total",
        "listener=\"web\",reason=\"tls\"",
    );
    assert_eq!(metric_of(&server, &rejected).await, 1.0);
}

/// Runs `program args` (bounded by its own timeout flags), or `None` when not installed.
async fn run_tool(
    program: &'static str,
    args: Vec<String>,
    stdin: &'static [u8],
) -> Option<(bool, String)> {
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = std::process::Command::new(program)
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        if let Some(mut input) = child.stdin.take() {
            let _ = input.write_all(stdin);
        }
        let output = child.wait_with_output().ok()?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Some((output.status.success(), text))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn tls_openssl_and_curl_clients_get_modern_tls_only() {
    let OneCert {
        server,
        ca,
        dir,
        backends: _backends,
    } = one_cert_https("openssl", "openssl ca", "o.test", "o").await;
    let web = address(&server, "web").to_string();
    let ca_file = write_pem(&dir, "ca.pem", &ca.pem());
    let url = format!("https://o.test:{}/", address(&server, "web").port());
    let resolve = format!("o.test:{}:127.0.0.1", address(&server, "web").port());
    for (version, expected) in [("--http1.1", "200 1.1"), ("--http2", "200 2")] {
        let args = [
            "-s",
            "--max-time",
            "5",
            "--cacert",
            &ca_file,
            "--resolve",
            &resolve,
            version,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            &url,
        ];
        let Some((_, out)) = run_tool("curl", args.map(String::from).to_vec(), b"").await else {
            eprintln!("curl not installed: skipped");
            break;
        };
        assert_eq!(out.trim(), expected, "curl {version}");
    }
    // openssl s_client: TLS 1.2 with an AEAD suite is served; CBC suites and TLS 1.1 are not.
    for (flags, served) in [
        (
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"][..],
            true,
        ),
        (
            &[
                "-tls1_2",
                "-cipher",
                "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384",
            ][..],
            false,
        ),
        (&["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"][..], false),
    ] {
        let mut args: Vec<String> = ["s_client", "-connect", &web, "-servername", "o.test"]
            .map(String::from)
            .to_vec();
        args.extend(flags.iter().map(|s| s.to_string()));
        let Some((_, out)) = run_tool(
            "timeout",
            [vec!["5".into(), "openssl".into()], args].concat(),
            b"Q\n",
        )
        .await
        else {
            eprintln!("timeout/openssl not installed: skipped");
            return;
        };
        if out.contains("No such file") || out.contains("not found") {
            eprintln!("openssl not installed: skipped");
            return;
        }
        let negotiated = out.contains("Cipher is ECDHE") || out.contains("Cipher    : ECDHE");
        assert_eq!(negotiated, served, "openssl {flags:?}:\n{out}");
    }
}

#[tokio::test]
async fn tls_sighup_rereads_certificates_the_file_watch_could_not_see() {
    let dir = scratch("sighup");
    let ca = Ca::new("sighup ca");
    let old = ca.server(&["h.test"], "old");
    // A replacement of exactly the same sizes, written back with the old modification
    // time: invisible to the watcher, so only the explicit re-read (SIGHUP) can find it.
    let mut new = ca.server(&["h.test"], "new");
    for _ in 0..200 {
        if new.cert.len() == old.cert.len() && new.key.len() == old.key.len() {
            break;
        }
        new = ca.server(&["h.test"], "new");
    }
    assert_eq!(
        (new.cert.len(), new.key.len()),
        (old.cert.len(), old.key.len())
    );
    let backends = http_backends(1).await;
    let tls = format!("certificates = [{}]", old.write(&dir, "h"));
    let server = balancer(&https_config(
        &tls,
        &one_endpoint(backends[0].local_addr()),
        "enabled = false",
    ))
    .await;
    let web = address(&server, "web");
    let mut config = (*client_config(&ClientSpec::default())).clone();
    config.resumption = rustls::client::Resumption::disabled();
    let config = Arc::new(config);
    let (cert, key) = old.paths(&dir, "h");
    let mtimes: Vec<std::time::SystemTime> = [&cert, &key]
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    for (path, text, mtime) in [(&key, &new.key, mtimes[1]), (&cert, &new.cert, mtimes[0])] {
        std::fs::write(path, text).unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let unseen = get_ok(web, &config, "h.test", "/").await;
    assert_eq!(
        unseen.peer.as_ref(),
        Some(&old.der),
        "the watcher cannot see it"
    );
    // What SIGHUP does in `switchyard run`.
    switchyard::tls::acceptor::reload_all();
    let mut served = None;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        served = get_ok(web, &config, "h.test", "/").await.peer;
        if served.as_ref() == Some(&new.der) {
            break;
        }
    }
    assert_eq!(served.as_ref(), Some(&new.der), "re-read on SIGHUP");
}

#[tokio::test]
async fn sessions_resume_across_a_reload_that_keeps_the_tls_settings() {
    let dir = scratch("resume-reload");
    let ca = Ca::new("reload ca");
    let leaf = ca.server(&["rr.test"], "rr");
    let backends = http_backends(1).await;
    let tls = format!("certificates = [{}]", leaf.write(&dir, "rr"));
    let toml = https_config(
        &tls,
        &one_endpoint(backends[0].local_addr()),
        "enabled = false",
    );
    let file = ConfigFile::new("tls-resume-reload", &toml);
    let server = balancer_from_file(&file).await;
    let web = address(&server, "web");
    let roots = [ca.pem()];
    let config = client_config(&ClientSpec {
        roots: Some(&roots),
        ..ClientSpec::default()
    });
    assert!(!get_ok(web, &config, "rr.test", "/").await.resumed);
    // A reload that changes something else (the cluster's timeout) keeps the session keys.
    file.write(&toml.replace("[[cluster]]", "[[cluster]]\nconnect_timeout = \"2s\""));
    let (status, body) = admin_reload(&server).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        get_ok(web, &config, "rr.test", "/").await.resumed,
        "the session survives the reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_bench_loads_an_https_listener_over_h2_and_http1_trusting_a_ca_file_or_nothing() {
    use switchyard::loadgen::{self, LoadSpec, Mode, Protocol, Target, Trust};
    let OneCert {
        server,
        ca,
        dir,
        backends: _backends,
    } = one_cert_https("bench", "bench ca", "web.test", "web").await;
    let web = address(&server, "web");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    for (protocol, trust) in [
        (Protocol::H2, Trust::Ca(ca_file.clone())),
        (Protocol::Http1, Trust::Ca(ca_file.clone())),
        (Protocol::H2, Trust::Insecure),
    ] {
        let mut spec = LoadSpec::new(Target {
            tls: true,
            authority: format!("web.test:{}", web.port()),
            host: "web.test".into(),
            addr: web,
            path: "/".into(),
        });
        spec.protocol = protocol;
        spec.trust = trust.clone();
        spec.mode = Mode::Open { rate: 100.0 };
        spec.duration = std::time::Duration::from_millis(500);
        spec.connections = 2;
        let report = within(loadgen::start(spec).unwrap().finish())
            .await
            .unwrap();
        let s = &report.summary;
        assert_eq!(
            (s.requests, s.successes),
            (50, 50),
            "{protocol:?} {trust:?}: {s:?}"
        );
    }
    // A CA that did not sign the certificate fails every request at the handshake.
    let other = dir.join("other.pem");
    std::fs::write(&other, Ca::new("other ca").pem()).unwrap();
    let mut spec = LoadSpec::new(Target {
        tls: true,
        authority: format!("web.test:{}", web.port()),
        host: "web.test".into(),
        addr: web,
        path: "/".into(),
    });
    spec.trust = Trust::Ca(other);
    spec.mode = Mode::Open { rate: 20.0 };
    spec.duration = std::time::Duration::from_millis(500);
    let report = within(loadgen::start(spec).unwrap().finish())
        .await
        .unwrap();
    assert_eq!(report.summary.errors.get("tls"), Some(&10));
}
