//! Result files at unguessable, expiring URLs: `GET /media/{token}/{filename}`, with HTTP Range
//! support (tower-http's `ServeFile`). No API key: the token is the capability.
//!
//! [`range_preconditions`] applies the two RFC 9110 rules `ServeFile` does not before it sees the
//! request: a `Range` in a unit other than `bytes` is ignored (the whole file, `200`), and a
//! `Range` under an `If-Range` whose validator does not match the file is ignored too. The range
//! left is then resolved against the file's size (a suffix longer than the file is the whole file,
//! a last position past the end is the end), and one that starts past the end is a `416` in the
//! error envelope.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeFile;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::docs::{ErrorEnvelope, MEDIA};
use super::Path;
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(media_get))
}

/// A result file (stem, MIDI, mastered audio, generated MP3). No key: the token is the
/// capability. Supports `Range` requests.
#[utoipa::path(get, path = "/media/{token}/{filename}", tag = MEDIA,
    params(
        ("token" = String, Path, description = "128-bit random token from a result URL"),
        ("filename" = String, Path, description = "The file's name, as in the result URL"),
    ),
    responses(
        (status = 200, description = "The file", content(("audio/mpeg"), ("audio/wav"), ("audio/x-wav"), ("audio/flac"), ("audio/midi"), ("application/octet-stream"))),
        (status = 206, description = "The requested byte range", content(("audio/mpeg"), ("audio/wav"), ("audio/x-wav"), ("audio/flac"), ("audio/midi"), ("application/octet-stream"))),
        (status = 404, description = "not_found: unknown token or expired link", body = ErrorEnvelope),
        (status = 500, description = "internal_error", body = ErrorEnvelope),
    ))]
async fn media_get(
    State(state): State<AppState>,
    Path((token, filename)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let media = state
        .store
        .read(move |c| crate::store::media::get(c, &token))
        .await?
        .filter(|m| m.filename == filename)
        .ok_or_else(|| ApiError::not_found("No such file."))?;
    if media.expires_at < crate::store::now_ms() {
        return Err(ApiError::not_found("This link has expired."));
    }
    state.media.serve(&media.path, req).await
}

/// Serves a file with `ServeFile` after [`range_preconditions`].
pub(crate) async fn serve_file(path: &str, mut req: Request) -> ApiResult<Response> {
    let meta = tokio::fs::metadata(path).await.ok();
    let modified = meta.as_ref().and_then(|m| m.modified().ok());
    range_preconditions(req.headers_mut(), modified);
    // The one range left, resolved against the file's size by the same RFC 9110 rules as objects
    // in a bucket (`ServeFile` refuses a suffix longer than the file, which §14.1.3 says means
    // the whole file), and handed on as explicit first and last positions.
    if let (Some(size), Some(value)) = (
        meta.map(|m| m.len()),
        req.headers().get(header::RANGE).cloned(),
    ) {
        match value
            .to_str()
            .ok()
            .and_then(|v| crate::media::byte_range(v, size))
        {
            Some(span) => {
                let explicit = format!("bytes={}-{}", span.start, span.end - 1);
                let explicit = HeaderValue::from_str(&explicit).map_err(ApiError::internal)?;
                req.headers_mut().insert(header::RANGE, explicit);
            }
            None => return Ok(not_satisfiable(size)),
        }
    }
    let resp = ServeFile::new(path)
        .oneshot(req)
        .await
        .map_err(ApiError::internal)?;
    Ok(resp.into_response())
}

/// `416` for a byte range that starts past the end of a `size`-byte file (or is malformed), with
/// the error envelope and the `Content-Range: bytes */size` that RFC 9110 §15.5.17 asks for.
pub(crate) fn not_satisfiable(size: u64) -> Response {
    let mut resp = ApiError::invalid(format!(
        "Range not satisfiable: the file is {size} bytes; ask for a range that starts inside it."
    ))
    .into_response();
    *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
        resp.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    resp
}

/// Drops a `Range` header that RFC 9110 says to ignore, and the `If-Range` that decided it:
/// - a range unit other than `bytes` (§14.2: "ignore a Range header field … with a range unit it
///   does not understand"), and a set of several ranges (served whole, as §14.2 allows);
/// - an `If-Range` whose validator is not the file's `Last-Modified` to the second (§13.1.5). The
///   files carry no ETag, so an entity-tag never matches; nor does a weak or unparseable value.
///
/// What is left is either no `Range` (the whole file) or a `bytes` range for `ServeFile` to parse.
pub fn range_preconditions(headers: &mut HeaderMap, modified: Option<SystemTime>) {
    let ranges: Vec<_> = headers.get_all(header::RANGE).iter().collect();
    // One `bytes` range, written the way `ServeFile`'s parser reads it: the unit is
    // case-insensitive and spaces may follow it (§14.1). Several ranges are served as the whole
    // file, which §14.2 allows (no multipart/byteranges here).
    let normalized = match ranges.as_slice() {
        [] => None,
        [one] => one.to_str().ok().and_then(|v| {
            let v = v.trim();
            let (unit, set) = v.split_once('=')?;
            let set = set.trim();
            (unit.trim().eq_ignore_ascii_case("bytes") && !set.is_empty() && !set.contains(','))
                .then(|| format!("bytes={set}"))
        }),
        _ => None,
    };
    let keep_range = ranges.is_empty() || normalized.is_some();
    let if_range: Vec<_> = headers.get_all(header::IF_RANGE).iter().collect();
    let validator_matches = match if_range.as_slice() {
        [] => true,
        [one] => {
            let date = one
                .to_str()
                .ok()
                .filter(|v| !v.trim_start().starts_with(['"', 'W']))
                .and_then(|v| httpdate::parse_http_date(v.trim()).ok());
            match (date, modified) {
                (Some(date), Some(modified)) => whole_seconds(date) == whole_seconds(modified),
                _ => false,
            }
        }
        _ => false,
    };
    headers.remove(header::RANGE);
    if keep_range && validator_matches {
        if let Some(value) = normalized.and_then(|v| axum::http::HeaderValue::from_str(&v).ok()) {
            headers.insert(header::RANGE, value);
        }
    }
    headers.remove(header::IF_RANGE);
}

fn whole_seconds(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::time::Duration;

    fn apply(range: Option<&str>, if_range: Option<&str>, modified: Option<SystemTime>) -> bool {
        let mut h = HeaderMap::new();
        if let Some(r) = range {
            h.insert(header::RANGE, HeaderValue::from_str(r).unwrap());
        }
        if let Some(v) = if_range {
            h.insert(header::IF_RANGE, HeaderValue::from_str(v).unwrap());
        }
        range_preconditions(&mut h, modified);
        assert!(h.get(header::IF_RANGE).is_none());
        h.get(header::RANGE).is_some()
    }

    #[test]
    fn ranges_in_other_units_or_under_a_mismatched_if_range_are_ignored() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = httpdate::fmt_http_date(t);
        assert!(apply(Some("bytes=0-99"), None, Some(t)));
        assert!(apply(Some("BYTES=0-99"), None, Some(t)));
        assert!(apply(Some("bytes= 0-99"), None, Some(t)));
        // Several ranges: the whole file.
        assert!(!apply(Some("bytes=0-1,2-3"), None, Some(t)));
        // Unknown units: ignored, not 416.
        assert!(!apply(Some("items=0-5"), None, Some(t)));
        assert!(!apply(Some("bytes"), None, Some(t)));
        assert!(!apply(Some("0-99"), None, Some(t)));
        // If-Range: only the exact Last-Modified keeps the range.
        assert!(apply(Some("bytes=0-99"), Some(&date), Some(t)));
        assert!(apply(
            Some("bytes=0-99"),
            Some(&date),
            Some(t + Duration::from_millis(400))
        ));
        let later = httpdate::fmt_http_date(t + Duration::from_secs(1));
        assert!(!apply(Some("bytes=0-99"), Some(&later), Some(t)));
        assert!(!apply(Some("bytes=0-99"), Some("junk"), Some(t)));
        assert!(!apply(Some("bytes=0-99"), Some("\"abc\""), Some(t)));
        assert!(!apply(Some("bytes=0-99"), Some("W/\"abc\""), Some(t)));
        assert!(!apply(Some("bytes=0-99"), Some(&date), None));
        // No Range: nothing to do; a stray If-Range is dropped.
        assert!(!apply(None, Some("junk"), Some(t)));
    }
}
