//! Certificate and key files: PEM chains, private keys (ECDSA, RSA, Ed25519 in PKCS#8,
//! SEC1 or PKCS#1), trust anchors, and the check that a key belongs to its certificate.
//!
//! The same loader serves `switchyard check` (so a bad file is reported at the config's
//! line before anything starts), the listener at start, and the certificate watcher at
//! every change, so all three agree on what a valid file is.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::x509::{self, CertInfo, X509Error};

/// Files larger than this are refused (no certificate bundle is near it).
const MAX_FILE: u64 = 16 << 20;

/// Bundles of the system's trust anchors, the first readable one is used (Debian/Ubuntu,
/// RHEL/Fedora, Alpine/BSD, openSUSE). `SSL_CERT_FILE` overrides them.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// A certificate or key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A PEM block is broken.
    #[error("{}: not a valid PEM certificate: {message}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// No certificate in the file.
    #[error("{}: no PEM certificate found", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// No usable private key in the file.
    #[error("{}: no valid PEM private key: {message}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// The key is not the certificate's.
    #[error("{} does not match the certificate in {}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The leaf certificate could not be read.
    #[error("{}: {source}", path.display())]
    X509 {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: X509Error,
    },
    /// No trust anchor could be taken from the file.
    #[error("{}: no usable CA certificate: {message}", path.display())]
    Roots {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// No system trust store was found.
    #[error(
        "no system CA bundle found (looked at SSL_CERT_FILE and {}); set [cluster.tls] ca",
        SYSTEM_BUNDLES.join(", ")
    )]
    NoSystemRoots,
}

/// A certificate chain with its signing key, and what was read from its leaf.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// What rustls serves.
    pub certified: Arc<CertifiedKey>,
    /// The leaf's expiry, subject and names.
    pub info: CertInfo,
}

impl Loaded {
    /// The name the expiry metric is labelled with: the first DNS name, else the CN, else
    /// the certificate file's path.
    pub fn label(&self, path: &Path) -> String {
        self.info
            .dns_names
            .first()
            .cloned()
            .or_else(|| self.info.common_name.clone())
            .unwrap_or_else(|| path.display().to_string())
    }
}

/// Reads a referenced file, capped at 16 MiB.
pub fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::File::open(path)
        .and_then(|f| {
            let mut buf = Vec::new();
            f.take(MAX_FILE).read_to_end(&mut buf)?;
            Ok(buf)
        })
        .map_err(|source| CertError::Read {
            path: path.to_owned(),
            source,
        })
}

/// Every certificate of the PEM file `path`, leaf first.
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let bytes = read(path)?;
    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        chain.push(item.map_err(|e| CertError::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        })?);
    }
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// The first private key of the PEM file `path`.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| CertError::Key {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Loads a certificate chain and its key, checking that the key is the leaf's.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Loaded, CertError> {
    let chain = load_chain(cert)?;
    let info = x509::parse(&chain[0]).map_err(|source| CertError::X509 {
        path: cert.to_owned(),
        source,
    })?;
    let der = load_key(key)?;
    let provider = super::provider();
    let signer = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| CertError::Key {
            path: key.to_owned(),
            message: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(CertError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            });
        }
    }
    Ok(Loaded {
        certified: Arc::new(certified),
        info,
    })
}

/// The trust anchors of the PEM file `path` (at least one).
pub fn load_roots(path: &Path) -> Result<RootCertStore, CertError> {
    let chain = load_chain(path)?;
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(chain);
    if added == 0 {
        return Err(CertError::Roots {
            path: path.to_owned(),
            message: format!("{ignored} certificate(s), none usable as a trust anchor"),
        });
    }
    Ok(roots)
}

/// The system's trust anchors, read from its CA bundle (no extra dependency: the bundle
/// the distribution maintains is the one trusted).
pub fn system_roots() -> Result<RootCertStore, CertError> {
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        return load_roots(Path::new(&file));
    }
    for bundle in SYSTEM_BUNDLES {
        let path = Path::new(bundle);
        if path.is_file() {
            return load_roots(path);
        }
    }
    Err(CertError::NoSystemRoots)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn temp(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("switchyard-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn self_signed(names: &[&str], alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test, Inc. leaf");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Switchyard");
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_generated_certificate_reads_back_its_names_subject_and_expiry() {
        let (cert, _) = self_signed(
            &["Example.COM", "*.api.example.com", "10.1.2.3"],
            &rcgen::PKCS_ECDSA_P256_SHA256,
        );
        let path = temp("info.pem", &cert);
        let chain = load_chain(&path).unwrap();
        let info = x509::parse(&chain[0]).unwrap();
        assert_eq!(info.dns_names, ["example.com", "*.api.example.com"]);
        assert_eq!(
            info.san,
            ["DNS:example.com", "DNS:*.api.example.com", "IP:10.1.2.3"]
        );
        assert_eq!(info.subject, "CN=Test\\, Inc. leaf,O=Switchyard");
        assert_eq!(info.common_name.as_deref(), Some("Test, Inc. leaf"));
        // 2031-05-17T00:00:00Z
        assert_eq!(info.not_after, 1_936_742_400);
    }

    #[test]
    fn ecdsa_and_rsa_pairs_load_and_a_foreign_key_is_refused() {
        let (ec_cert, ec_key) = self_signed(&["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, other_key) = self_signed(&["b.test"], &rcgen::PKCS_ECDSA_P384_SHA384);
        let cert = temp("ec.pem", &ec_cert);
        let key = temp("ec.key", &ec_key);
        let other = temp("other.key", &other_key);
        assert!(load_pair(&cert, &key).is_ok());
        let err = load_pair(&cert, &other).unwrap_err();
        assert!(matches!(err, CertError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains("does not match"), "{err}");
        let missing = load_pair(&cert, Path::new("/nonexistent/key.pem")).unwrap_err();
        assert!(matches!(missing, CertError::Read { .. }), "{missing}");
        let garbage = temp("garbage.pem", "-----BEGIN CERTIFICATE-----\n!!!\n");
        assert!(load_chain(&garbage).is_err());
    }
}
