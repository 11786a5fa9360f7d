//! JSON request bodies. Each is one Rust type that derives `Deserialize` (the handler's parsing)
//! and `ToSchema` (the OpenAPI document), read by the [`JsonBody`] extractor.
//!
//! Every refusal is the contract's `400 invalid_request` envelope with the contract's own wording,
//! never serde's ("invalid type: integer `5`, expected a string at line 1 column 9") nor axum's
//! plain-text rejection. Wrong types and ranges are worded by the readers below, which the body
//! types name in `#[serde(deserialize_with = …)]`: each reader is given the field's name and says
//! what the field must be ("duration must be an integer from 1 to 600."). A missing required
//! field, a body that is not an object and a field a closed body does not take are worded here,
//! with per-type overrides in [`JsonRequest`]. Which fields a type declares is read from its
//! schema, so the document, the parser and the `X-Soundcheck-Ignored-Fields` header agree.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use utoipa::openapi::schema::{AdditionalProperties, Schema};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use crate::error::{ApiError, Code};

/// Largest JSON request body on any route (every JSON body of both APIs is a few hundred bytes).
pub const MAX_JSON_BODY: usize = 2 * 1024 * 1024;

/// A JSON request body type, with the messages of the refusals that are not about one field's
/// value. The defaults are the generations API's wording.
pub trait JsonRequest: DeserializeOwned + ToSchema {
    /// The message for valid JSON that is not an object.
    fn not_an_object() -> String {
        "Request body must be a JSON object.".into()
    }

    /// The message for an object without the required `field`.
    fn missing(field: &str) -> String {
        format!("{field} is required.")
    }
}

/// A JSON request body read into `T`. Fields `T` does not declare are ignored and listed in
/// `ignored` (a handler may name them to the client), unless `T` is closed
/// (`#[serde(deny_unknown_fields)]`, `additionalProperties: false` in the document): then the
/// first one is refused.
pub struct JsonBody<T> {
    pub body: T,
    pub ignored: Vec<String>,
}

impl<S: Send + Sync, T: JsonRequest> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        JsonBody::from_value(read_json(req).await?)
    }
}

impl<T: JsonRequest> JsonBody<T> {
    /// Reads an already parsed body.
    pub fn from_value(value: Value) -> Result<Self, ApiError> {
        let Value::Object(map) = &value else {
            return Err(ApiError::invalid(T::not_an_object()));
        };
        let (fields, closed) = declared::<T>();
        let ignored: Vec<String> = map
            .keys()
            .filter(|k| !fields.contains(k))
            .cloned()
            .collect();
        if let (true, Some(unknown)) = (closed, ignored.first()) {
            let takes: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
            return Err(ApiError::invalid(format!(
                "Unknown field `{}`: the JSON body takes only {}.",
                crate::error::shown_name(unknown),
                takes.join(", ")
            )));
        }
        // The readers' messages are final; serde's own wording is left only for a missing field
        // (a field without a reader would also show serde's, which still names the problem).
        let body = serde_json::from_value(value).map_err(|e| {
            let message = e.to_string();
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.strip_suffix('`'));
            ApiError::invalid(match missing {
                Some(field) => T::missing(field),
                None => message,
            })
        })?;
        Ok(JsonBody { body, ignored })
    }
}

/// The property names `T`'s schema declares, and whether it refuses others.
fn declared<T: ToSchema>() -> (Vec<String>, bool) {
    match T::schema() {
        RefOr::T(Schema::Object(o)) => (
            o.properties.keys().cloned().collect(),
            matches!(
                o.additional_properties.as_deref(),
                Some(AdditionalProperties::FreeForm(false))
            ),
        ),
        _ => (Vec::new(), false),
    }
}

/// Reads a request's JSON body, refusing in the envelope what axum would answer in plain text
/// (bad syntax, wrong content type, too large). Capped at [`MAX_JSON_BODY`] whatever the
/// route's own body limit (upload routes lift theirs): a declared length over the cap is refused
/// before a byte is read, an undeclared one as soon as it passes the cap.
pub async fn read_json(req: Request) -> Result<Value, ApiError> {
    let too_large = || {
        ApiError::new(
            Code::PayloadTooLarge,
            format!(
                "JSON bodies are limited to {} MB.",
                MAX_JSON_BODY / (1024 * 1024)
            ),
        )
    };
    let headers = req.headers();
    let json_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        });
    if !json_type {
        return Err(ApiError::invalid("Content-Type must be application/json."));
    }
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_JSON_BODY as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(req.into_body(), MAX_JSON_BODY)
        .await
        .map_err(|e| {
            let length_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if length_limit || e.to_string().contains("length limit") {
                too_large()
            } else {
                ApiError::invalid(format!("Could not read the request body: {e}"))
            }
        })?;
    match axum::Json::<Value>::from_bytes(&bytes) {
        Ok(axum::Json(v)) => Ok(v),
        Err(rejection) => Err(json_rejection(rejection)),
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::invalid("Content-Type must be application/json.")
        }
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::invalid(format!("Malformed JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => {
            ApiError::invalid(format!("Invalid JSON: {}", e.body_text()))
        }
        JsonRejection::BytesRejection(e)
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
        {
            ApiError::new(Code::PayloadTooLarge, "Request body is too large.")
        }
        other => ApiError::invalid(other.body_text()),
    }
}

/// A field's JSON value as sent, for a reader to judge.
fn raw<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    Value::deserialize(d)
}

/// An optional whole number within `min..=max`; `null` is none. JSON has one number type, so
/// `25.0` is 25; a fraction, a negative number or one out of range is refused with the range.
pub fn int<'de, D: Deserializer<'de>>(
    d: D,
    name: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, D::Error> {
    let range = || D::Error::custom(format!("{name} must be an integer from {min} to {max}."));
    match raw(d)? {
        Value::Null => Ok(None),
        Value::Number(n) => {
            let v = n
                .as_u64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                        .map(|f| f as u64)
                })
                .ok_or_else(range)?;
            if (min..=max).contains(&v) {
                Ok(Some(v))
            } else {
                Err(range())
            }
        }
        _ => Err(D::Error::custom(format!("{name} must be a number."))),
    }
}

/// An optional string; `null` is none.
pub fn string<'de, D: Deserializer<'de>>(d: D, name: &str) -> Result<Option<String>, D::Error> {
    match raw(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(D::Error::custom(format!("{name} must be a string."))),
    }
}

/// An optional boolean; `null` is none.
pub fn boolean<'de, D: Deserializer<'de>>(d: D, name: &str) -> Result<Option<bool>, D::Error> {
    match raw(d)? {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(b)),
        _ => Err(D::Error::custom(format!("{name} must be a boolean."))),
    }
}

/// A field where `null` means something (clear it) and absence means "leave it": `Some(None)` for
/// `null`, `Some(Some(s))` for a string. Absence is the field's `#[serde(default)]`, `None`.
pub fn nullable_string<'de, D: Deserializer<'de>>(
    d: D,
    name: &str,
) -> Result<Option<Option<String>>, D::Error> {
    match raw(d)? {
        Value::Null => Ok(Some(None)),
        Value::String(s) => Ok(Some(Some(s))),
        _ => Err(D::Error::custom(format!(
            "{name} must be a string or null."
        ))),
    }
}

/// Any JSON value, for a reader whose type words all its refusals itself (`amount`).
pub fn any<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    raw(d)
}
