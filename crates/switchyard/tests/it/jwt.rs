//! JWT over real sockets: ES256 and HS256 tokens checked against a JWKS file, 401 for a
//! missing or invalid token, 403 for a valid token whose claims fail the route, verified
//! claims routing and keying rate limits.

#![allow(clippy::unwrap_used)]
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use switchyard::backend::BackendArgs;

use crate::support::*;

const SECRET: &[u8] = b"an-hs256-secret-for-the-test-suite";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

struct Keys {
    ec: EncodingKey,
    jwks: Value,
}

fn keys() -> Keys {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let point = pair.public_key().as_ref().to_vec();
    let pkcs8 = pair.to_pkcs8v1().unwrap();
    Keys {
        ec: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwks: json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "ec1", "alg": "ES256",
             "x": b64(&point[1..33]), "y": b64(&point[33..65])},
            {"kty": "oct", "kid": "h1", "alg": "HS256", "k": b64(SECRET)},
        ]}),
    }
}

fn claims(extra: &Value) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = json!({"iss": "https://issuer.test", "aud": "api", "exp": now + 300});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

fn es256(keys: &Keys, extra: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec1".into());
    encode(&header, &claims(extra), &keys.ec).unwrap()
}

fn hs256(secret: &[u8], extra: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("h1".into());
    encode(&header, &claims(extra), &EncodingKey::from_secret(secret)).unwrap()
}

#[tokio::test]
async fn tokens_are_verified_401_without_one_403_when_claims_fail() {
    let keys = keys();
    let dir = std::env::temp_dir().join(format!("sy-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, keys.jwks.to_string()).unwrap();
    let b1 = backend(BackendArgs::for_test("b1")).await;
    let auth = format!(
        r#"auth = {{ jwt = {{ issuer = "https://issuer.test", audiences = ["api"], jwks_file = "{}" }} }}"#,
        jwks.display()
    );
    let toml = format!(
        r#"{WEB}
  [[listener.route]]
  name = "gold"
  match = {{ path_prefix = "/gold", jwt_claims = {{ tier = "gold" }} }}
  cluster = "app"
  {auth}
  [[listener.route]]
  name = "api"
  match = {{ path_prefix = "/api" }}
  cluster = "app"
  rate_limit = {{ key = "jwt:sub", rate = 1, per = "1m", burst = 1 }}
  {auth}
  [[listener.route]]
  name = "public"
  match = {{ path = "/public" }}
  cluster = "app"
[[cluster]]
name = "app"
endpoints = {endpoints}
"#,
        endpoints = endpoints(&[b1.local_addr()], &["b1"])
    );
    let server = balancer(&toml).await;
    let web = address(&server, "web");
    let client = client();
    let get = |path: &str, token: Option<String>| {
        let mut request = client.get(format!("http://{web}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { within(request.send()).await.unwrap() }
    };

    let none = get("/api", None).await;
    assert_eq!(none.status(), 401);
    assert_eq!(
        none.headers()["www-authenticate"],
        "Bearer realm=\"switchyard\""
    );
    assert_eq!(
        none.headers()["proxy-status"],
        "switchyard; error=http_request_denied; details=\"jwt\""
    );
    let forged = get(
        "/api",
        Some(hs256(
            b"not-the-secret-at-all-not-at-all",
            &json!({"sub": "a"}),
        )),
    )
    .await;
    assert_eq!(forged.status(), 401);
    assert_eq!(
        forged.headers()["www-authenticate"],
        "Bearer realm=\"switchyard\", error=\"invalid_token\""
    );
    assert_eq!(
        get("/api", Some(es256(&keys, &json!({"sub": "alice"}))))
            .await
            .status(),
        200
    );
    assert_eq!(
        get("/api", Some(hs256(SECRET, &json!({"sub": "bob"}))))
            .await
            .status(),
        200
    );
    // The rate limit is keyed by the verified `sub`: alice's second request is refused, carol's is not.
    assert_eq!(
        get("/api", Some(es256(&keys, &json!({"sub": "alice"}))))
            .await
            .status(),
        429
    );
    assert_eq!(
        get("/api", Some(es256(&keys, &json!({"sub": "carol"}))))
            .await
            .status(),
        200
    );
    let mut wrong_issuer = claims(&json!({}));
    wrong_issuer["iss"] = json!("https://elsewhere.test");
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec1".into());
    let token = encode(&header, &wrong_issuer, &keys.ec).unwrap();
    assert_eq!(get("/api", Some(token)).await.status(), 401);

    assert_eq!(
        get("/gold", Some(es256(&keys, &json!({"tier": "gold"}))))
            .await
            .status(),
        200
    );
    assert_eq!(
        get("/gold", Some(es256(&keys, &json!({"tier": "silver"}))))
            .await
            .status(),
        403
    );
    assert_eq!(get("/gold", None).await.status(), 401);
    assert_eq!(get("/public", None).await.status(), 200);
    assert_eq!(get("/nowhere", None).await.status(), 404);
    assert_eq!(
        b1.control().requests(),
        5,
        "refused requests never reach the backend"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
