//! JWT verification for a route's `auth.jwt` (SPEC 3.1): a token from
//! `Authorization: Bearer`, verified against the keys of `jwks_file` (RS256, ES256, HS256),
//! the `iss`, an accepted `aud`, and `exp` / `nbf` with 60 s of leeway. Only verified claims
//! are ever used, for `jwt_claims` route matching, `hash_key = "jwt:claim"` and rate-limit
//! keys.
//!
//! The key set is read when the snapshot is built (a reload reads it again); a file that
//! does not parse, or a key of an unsupported type, fails the build with the file named.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use http::HeaderMap;
use http::header::AUTHORIZATION;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::model::JwtAuth;

/// A token's verified claims.
pub type Claims = Map<String, Value>;

/// The clock skew allowed on `exp` and `nbf` (SPEC 3.1).
pub const LEEWAY_SECS: u64 = 60;

/// A key set that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The file could not be read.
    #[error("jwks_file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a JWK set, or holds a key that cannot verify RS256, ES256 or HS256.
    #[error("jwks_file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Why a token was not accepted (for the log; the client sees 401 either way).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// No `Authorization: Bearer` token.
    #[error("no bearer token")]
    Missing,
    /// The token's algorithm is not RS256, ES256 or HS256, or no key matches its `kid`.
    #[error("no key for this token")]
    NoKey,
    /// Signature, issuer, audience or time checks failed.
    #[error("invalid token: {0}")]
    Invalid(String),
}

struct Key {
    id: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The verifier of one `auth.jwt` block.
pub struct JwtVerifier {
    config: JwtAuth,
    keys: Vec<Key>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.config.issuer)
            .field("keys", &self.keys.len())
            .finish()
    }
}

fn algorithm_of(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, KeyAlgorithm};
    match (&jwk.algorithm, jwk.common.key_algorithm) {
        (_, Some(KeyAlgorithm::RS256)) | (AlgorithmParameters::RSA(_), None) => {
            Some(Algorithm::RS256)
        }
        (_, Some(KeyAlgorithm::ES256)) => Some(Algorithm::ES256),
        (AlgorithmParameters::EllipticCurve(ec), None) if ec.curve == EllipticCurve::P256 => {
            Some(Algorithm::ES256)
        }
        (_, Some(KeyAlgorithm::HS256)) | (AlgorithmParameters::OctetKey(_), None) => {
            Some(Algorithm::HS256)
        }
        _ => None,
    }
}

impl JwtVerifier {
    /// Reads and checks the key set of `config`.
    pub fn load(config: &JwtAuth) -> Result<JwtVerifier, JwksError> {
        let path = config.jwks_file.clone();
        let text = std::fs::read_to_string(&path).map_err(|source| JwksError::Read {
            path: path.clone(),
            source,
        })?;
        JwtVerifier::from_json(config, &text, &path)
    }

    fn from_json(config: &JwtAuth, text: &str, path: &Path) -> Result<JwtVerifier, JwksError> {
        let invalid = |message: String| JwksError::Invalid {
            path: path.to_owned(),
            message,
        };
        let set: JwkSet =
            serde_json::from_str(text).map_err(|e| invalid(format!("not a JWK set: {e}")))?;
        let mut keys = Vec::with_capacity(set.keys.len());
        for (i, jwk) in set.keys.iter().enumerate() {
            let algorithm = algorithm_of(jwk).ok_or_else(|| {
                invalid(format!(
                    "key {i}: only RS256, ES256 and HS256 keys are supported"
                ))
            })?;
            let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(format!("key {i}: {e}")))?;
            keys.push(Key {
                id: jwk.common.key_id.clone(),
                algorithm,
                key,
            });
        }
        if keys.is_empty() {
            return Err(invalid("the set holds no key".into()));
        }
        Ok(JwtVerifier {
            config: config.clone(),
            keys,
        })
    }

    /// Whether two routes' `auth.jwt` blocks are the same (they then share a verifier).
    pub fn serves(&self, config: &JwtAuth) -> bool {
        self.config == *config
    }

    /// Verifies the bearer token of `headers`.
    pub fn verify_request(&self, headers: &HeaderMap) -> Result<Claims, TokenError> {
        self.verify(bearer(headers).ok_or(TokenError::Missing)?)
    }

    /// Verifies `token`: its signature by a key of the set (the one its `kid` names, else
    /// every key of its algorithm), `iss`, `aud`, `exp` and `nbf`.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[self.config.issuer.as_str()]);
        validation.set_audience(&self.config.audiences);
        let mut last = TokenError::NoKey;
        let candidates = self.keys.iter().filter(|k| {
            k.algorithm == header.alg
                && match (&header.kid, &k.id) {
                    (Some(wanted), Some(id)) => wanted == id,
                    _ => true,
                }
        });
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = TokenError::Invalid(e.to_string()),
            }
        }
        Err(last)
    }
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A claim as text for matching and keys: strings as they are, numbers and booleans in
/// their JSON spelling; objects, arrays and null are not matchable.
pub fn claim_text<'c>(claims: &'c Claims, name: &str) -> Option<Cow<'c, str>> {
    match claims.get(name)? {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &[u8] = b"a-test-secret-of-thirty-two-bytes!";

    fn config() -> JwtAuth {
        JwtAuth {
            issuer: "https://issuer.test".into(),
            audiences: vec!["api".into()],
            jwks_file: PathBuf::from("jwks.json"),
        }
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn verifier() -> JwtVerifier {
        let jwks = json!({"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": b64(SECRET)}]});
        JwtVerifier::from_json(&config(), &jwks.to_string(), Path::new("jwks.json")).unwrap()
    }

    fn token(claims: &Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        encode(&header, claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn a_valid_token_gives_its_claims_and_every_check_is_made() {
        let v = verifier();
        let good = json!({"iss": "https://issuer.test", "aud": "api", "exp": now() + 300, "tier": "gold", "n": 7});
        let claims = v.verify(&token(&good)).unwrap();
        assert_eq!(claim_text(&claims, "tier").as_deref(), Some("gold"));
        assert_eq!(claim_text(&claims, "n").as_deref(), Some("7"));
        let mut wrong_iss = good.clone();
        wrong_iss["iss"] = json!("https://evil.test");
        assert!(matches!(
            v.verify(&token(&wrong_iss)),
            Err(TokenError::Invalid(_))
        ));
        let mut wrong_aud = good.clone();
        wrong_aud["aud"] = json!("other");
        assert!(matches!(
            v.verify(&token(&wrong_aud)),
            Err(TokenError::Invalid(_))
        ));
        let mut expired = good.clone();
        expired["exp"] = json!(now() - 120);
        assert!(matches!(
            v.verify(&token(&expired)),
            Err(TokenError::Invalid(_))
        ));
        let mut within_leeway = good.clone();
        within_leeway["exp"] = json!(now() - 30);
        assert!(v.verify(&token(&within_leeway)).is_ok(), "60 s of leeway");
        let mut not_yet = good;
        not_yet["nbf"] = json!(now() + 600);
        assert!(matches!(
            v.verify(&token(&not_yet)),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            v.verify("not.a.token"),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn a_key_set_that_does_not_parse_names_the_file() {
        let e = JwtVerifier::from_json(&config(), "{}", Path::new("/etc/jwks.json")).unwrap_err();
        assert!(
            e.to_string().starts_with("jwks_file /etc/jwks.json: "),
            "{e}"
        );
        let e =
            JwtVerifier::from_json(&config(), r#"{"keys": []}"#, Path::new("j.json")).unwrap_err();
        assert!(e.to_string().contains("no key"), "{e}");
    }
}
