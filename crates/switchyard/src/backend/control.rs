//! `GET /control` and `PUT /control`: change faults over HTTP while traffic flows.
//!
//! Drills run backends as separate processes, so the fault state must be reachable over the
//! wire. A `PUT` is a partial update: only the fields present change, and a body with any bad
//! field changes nothing and answers 400 naming that field.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;

use super::body::RespBody;
use super::faults::{Control, FaultState, Latency};
use super::http::json_response;
use super::units::parse_duration;

/// The largest `PUT /control` body accepted.
const MAX_CONTROL_BODY: usize = 64 * 1024;

/// Serves `/control`.
pub(crate) async fn serve(
    control: &Control,
    method: &Method,
    body: Incoming,
) -> Response<RespBody> {
    match *method {
        Method::GET | Method::HEAD => json_response(StatusCode::OK, &control.snapshot().to_json()),
        Method::PUT | Method::POST | Method::PATCH => {
            let bytes = match read_bounded(body, MAX_CONTROL_BODY).await {
                Ok(b) => b,
                Err(msg) => return bad_request(None, &msg),
            };
            // Parsed under the write lock, so concurrent updates are never lost.
            match control.try_set(|current| parse_update(&bytes, current)) {
                Ok(_) => json_response(StatusCode::OK, &control.snapshot().to_json()),
                Err(e) => bad_request(e.field.as_deref(), &e.message),
            }
        }
        _ => {
            let mut r = json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &serde_json::json!({"error": "use GET or PUT on /control"}),
            );
            r.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, PUT"),
            );
            r
        }
    }
}

fn bad_request(field: Option<&str>, message: &str) -> Response<RespBody> {
    json_response(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({ "error": message, "field": field }),
    )
}

/// Reads a whole body of at most `limit` bytes.
pub(crate) async fn read_bounded(mut body: Incoming, limit: usize) -> Result<Bytes, String> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the body: {e}"))?;
        if let Some(data) = frame.data_ref() {
            if buf.len() + data.len() > limit {
                return Err(format!("body larger than {limit} bytes"));
            }
            buf.extend_from_slice(data);
        }
    }
    Ok(Bytes::from(buf))
}

/// A rejected update: which field and why.
#[derive(Debug, PartialEq)]
pub(crate) struct UpdateError {
    pub(crate) field: Option<String>,
    pub(crate) message: String,
}

fn field_err(field: &str, message: impl Into<String>) -> UpdateError {
    UpdateError {
        field: Some(field.to_owned()),
        message: format!("{field}: {}", message.into()),
    }
}

/// Applies a JSON partial update to `current`; nothing changes unless every field is valid.
pub(crate) fn parse_update(body: &[u8], current: FaultState) -> Result<FaultState, UpdateError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| UpdateError {
        field: None,
        message: format!("body is not JSON: {e}"),
    })?;
    let Value::Object(map) = value else {
        return Err(UpdateError {
            field: None,
            message: "body must be a JSON object".into(),
        });
    };
    let mut next = current;
    for (key, v) in &map {
        let k = key.as_str();
        match k {
            "latency" => next.latency = latency(k, v)?,
            "error_rate" => next.error_rate = rate(k, v)?,
            "reset_rate" => next.reset_rate = rate(k, v)?,
            "error_status" => next.error_status = status(k, v)?,
            "healthz_status" => next.healthz_status = status(k, v)?,
            "grpc_serving" => next.grpc_serving = boolean(k, v)?,
            "apply_to_healthz" => next.apply_to_healthz = boolean(k, v)?,
            "body_delay" => next.body_delay = duration(k, v)?,
            "grpc_services" => next.grpc_services = services(k, v)?,
            "name" | "requests" | "healthz_requests" | "errors_injected" | "resets_injected"
            | "connections" => return Err(field_err(k, "is read-only")),
            _ => return Err(field_err(k, "unknown field")),
        }
    }
    Ok(next)
}

fn rate(k: &str, v: &Value) -> Result<f64, UpdateError> {
    match v.as_f64() {
        Some(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(field_err(
            k,
            format!("expected a number from 0 to 1, got {v}"),
        )),
    }
}

fn status(k: &str, v: &Value) -> Result<u16, UpdateError> {
    match v.as_u64() {
        Some(s @ 200..=599) => Ok(u16::try_from(s).unwrap_or(500)),
        _ => Err(field_err(k, format!("expected a status 200-599, got {v}"))),
    }
}

fn boolean(k: &str, v: &Value) -> Result<bool, UpdateError> {
    v.as_bool()
        .ok_or_else(|| field_err(k, format!("expected true or false, got {v}")))
}

fn duration(k: &str, v: &Value) -> Result<Duration, UpdateError> {
    let s = v.as_str().ok_or_else(|| {
        field_err(
            k,
            format!("expected a duration string like \"5ms\", got {v}"),
        )
    })?;
    parse_duration(s).map_err(|e| field_err(k, e.to_string()))
}

fn latency(k: &str, v: &Value) -> Result<Latency, UpdateError> {
    match v {
        Value::String(s) => Latency::parse(s).map_err(|e| field_err(k, e)),
        Value::Object(m) => {
            for key in m.keys() {
                if key != "min" && key != "max" {
                    return Err(field_err(k, format!("unknown key {key:?} (use min, max)")));
                }
            }
            let get = |name: &str| -> Result<Duration, UpdateError> {
                let v = m
                    .get(name)
                    .ok_or_else(|| field_err(k, format!("missing {name:?}")))?;
                duration(&format!("{k}.{name}"), v)
            };
            Latency::range(get("min")?, get("max")?).map_err(|e| field_err(k, e))
        }
        _ => Err(field_err(
            k,
            format!("expected \"5ms\" or {{\"min\":\"5ms\",\"max\":\"50ms\"}}, got {v}"),
        )),
    }
}

fn services(k: &str, v: &Value) -> Result<BTreeMap<String, bool>, UpdateError> {
    let Value::Object(m) = v else {
        return Err(field_err(k, "expected an object of service name to bool"));
    };
    m.iter()
        .map(|(name, serving)| {
            serving
                .as_bool()
                .map(|b| (name.clone(), b))
                .ok_or_else(|| field_err(k, format!("service {name:?}: expected true or false")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_update_changes_only_the_fields_present() {
        let next = parse_update(
            br#"{"error_rate":0.25,"latency":{"min":"1ms","max":"2ms"}}"#,
            FaultState::default(),
        )
        .expect("valid");
        assert!((next.error_rate - 0.25).abs() < f64::EPSILON);
        assert_eq!(
            next.latency,
            Latency::Uniform {
                min: Duration::from_millis(1),
                max: Duration::from_millis(2)
            }
        );
        assert_eq!(next.error_status, 503);
    }

    #[test]
    fn a_bad_field_is_named() {
        let err = parse_update(br#"{"error_rate":2}"#, FaultState::default()).expect_err("bad");
        assert_eq!(err.field.as_deref(), Some("error_rate"));
        let err = parse_update(br#"{"eror_rate":1}"#, FaultState::default()).expect_err("bad");
        assert_eq!(err.field.as_deref(), Some("eror_rate"));
        let err =
            parse_update(br#"{"body_delay":"5 ms"}"#, FaultState::default()).expect_err("bad");
        assert_eq!(err.field.as_deref(), Some("body_delay"));
        assert!(parse_update(b"[1]", FaultState::default()).is_err());
    }
}
