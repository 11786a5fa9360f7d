//! The HTTP API, one file per resource. Handlers are free `async fn`s named `resource_verb` that
//! destructure extractors, validate, and call the store or a service; they hold no SQL and no DSP.
//! The extractors here and in [`body`] turn every bad request into the contract's error envelope.

pub mod admin;
pub mod analysis;
pub mod body;
pub mod docs;
pub mod generations;
pub mod jobs;
pub mod lifecycle;
pub mod media;
pub mod webhook;

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use body::{JsonBody, JsonRequest, MAX_JSON_BODY};

use crate::app::AppState;
use crate::error::{ApiError, Code};

/// Every route of both APIs, the admin API and media, each with its OpenAPI operation
/// (`split_for_parts` yields the axum router and the document).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .merge(generations::router())
        .merge(jobs::router())
        .merge(lifecycle::router())
        .merge(analysis::router())
        .merge(webhook::router())
        .merge(admin::router())
        .merge(media::router())
}

/// Path parameters, as axum's `Path` reads them, but refused in the error envelope: an id that is
/// not UTF-8 (`/v1/jobs/%ff`) is `400 invalid_request`, not axum's plain-text rejection.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> ApiError {
        ApiError::invalid(format!("Invalid path: {}", r.body_text()))
    }
}

/// Proof that the request carried the generations API key (`X-API-Key`).
pub struct GenerationsKey;

impl<S> FromRequestParts<S> for GenerationsKey
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        // A header that is there but not visible ASCII is a wrong key, not a missing one.
        let key = parts
            .headers
            .get("x-api-key")
            .map(|v| v.to_str().unwrap_or_default());
        match key {
            Some(k) if constant_time_eq(k, &state.secrets.current().ft_key) => Ok(GenerationsKey),
            Some(_) => Err(ApiError::new(
                Code::Unauthorized,
                "Invalid API key: send the generations key (ft_test_…) that `soundcheck serve` \
                 printed, or that `soundcheck keys` prints.",
            )),
            None => Err(ApiError::new(
                Code::Unauthorized,
                "Missing X-API-Key header.",
            )),
        }
    }
}

/// Proof that the request carried the jobs API key (`Authorization: Bearer`).
pub struct JobsKey;

impl<S> FromRequestParts<S> for JobsKey
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let header = parts
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap_or_default());
        let token = header.and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        });
        match (header, token) {
            (_, Some(t)) if constant_time_eq(t.trim(), &state.secrets.current().tl_key) => {
                Ok(JobsKey)
            }
            (None, _) => Err(ApiError::new(
                Code::Unauthorized,
                "Missing Authorization: Bearer header.",
            )),
            // `Bearer $UNSET_VARIABLE`: HTTP trims the trailing space, leaving `Bearer`.
            (Some(h), _) if h.trim().eq_ignore_ascii_case("bearer") => Err(ApiError::new(
                Code::Unauthorized,
                "The Bearer token is empty: send the jobs key (tl_test_…) that `soundcheck serve` \
                 printed, or that `soundcheck keys` prints.",
            )),
            _ => Err(ApiError::new(
                Code::Unauthorized,
                "Invalid API key: send the jobs key (tl_test_…) that `soundcheck serve` printed, \
                 or that `soundcheck keys` prints.",
            )),
        }
    }
}

/// Compares secrets without leaking where they differ.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `X-Soundcheck-Fault` header, validated.
pub fn fault_header(
    headers: &axum::http::HeaderMap,
) -> Result<Option<crate::faults::Faults>, ApiError> {
    // Several header lines mean the same as one comma-separated line (RFC 9110 §5.3), so a
    // second line is read, and checked, like a second item.
    let mut lines = Vec::new();
    for v in headers.get_all(crate::faults::HEADER) {
        lines.push(
            v.to_str()
                .map_err(|_| ApiError::invalid("X-Soundcheck-Fault is not text."))?,
        );
    }
    if lines.is_empty() {
        return Ok(None);
    }
    crate::faults::Faults::parse(&lines.join(","))
        .map(Some)
        .map_err(ApiError::invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{DeliveryFault, Fault};
    use axum::http::{HeaderMap, HeaderValue};

    fn lines(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(crate::faults::HEADER, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// Repeated `X-Soundcheck-Fault` lines are one list: each is read and checked (only the
    /// first once was, so a second run fault or a typo passed silently).
    #[test]
    fn every_fault_header_line_is_read() {
        assert!(fault_header(&lines(&[])).unwrap().is_none());
        let both = fault_header(&lines(&["internal_error", "webhook_fail"]))
            .unwrap()
            .unwrap();
        assert_eq!(both.run, Some(Fault::InternalError));
        assert_eq!(both.delivery, Some(DeliveryFault::Fail));
        for bad in [
            &["internal_error", "service_unavailable"][..],
            &["internal_error", "bogus_value"][..],
        ] {
            assert!(fault_header(&lines(bad)).is_err(), "{bad:?}");
        }
    }
}
