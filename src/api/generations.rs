//! The generations API (seed 000): `POST /v1/generations`, `GET /v1/generations/:id`, authenticated
//! by `X-API-Key`. Also `GET /v1/generations` (a listing) and `GET /v1/generations/:id/deliveries`
//! (its webhook attempt), soundcheck extensions.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::docs::{ErrorEnvelope, GenerationRequest, GENERATIONS};
use super::{fault_header, GenerationsKey, JsonBody};
use crate::app::AppState;
use crate::error::{current_trace_id, ApiError, ApiResult, Code};
use crate::store::generations::{self as gens, NewGeneration};
use crate::store::webhooks::{self as wh, AttemptFilter};
use crate::views::{GenerationBody, GenerationParameters};
use crate::webhooks::guard;

/// Longest accepted `tags` text.
const MAX_TAGS_LEN: usize = 2_000;
/// Fields of the request body; anything else is ignored and named in `X-Soundcheck-Ignored-Fields`.
const FIELDS: [&str; 8] = [
    "tags",
    "duration",
    "bpm",
    "keyscale",
    "timesignature",
    "seed",
    "webhook",
    "model",
];

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(generations_list, generations_create))
        .routes(routes!(generations_get))
        .routes(routes!(generations_deliveries))
}

/// The 50 most recent generations, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct GenerationList {
    pub data: Vec<GenerationBody>,
}

/// Queues a generation: validates, resolves every default, answers `202` with the body `GET`
/// returns.
#[utoipa::path(post, path = "/v1/generations", tag = GENERATIONS, security(("api_key" = [])),
    request_body = GenerationRequest,
    responses(
        (status = 202, description = "Queued", body = GenerationBody),
        (status = 400, description = "invalid_request: malformed JSON, wrong types, out of range, bad webhook URL, bad fault", body = ErrorEnvelope),
        (status = 413, description = "payload_too_large: body over 2 MB", body = ErrorEnvelope),
        (status = 501, description = "engine_unavailable: that generator is not installed", body = ErrorEnvelope),
    ))]
async fn generations_create(
    State(state): State<AppState>,
    _key: GenerationsKey,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<impl IntoResponse> {
    let fault = fault_header(&headers)?;
    let Value::Object(body) = body else {
        return Err(ApiError::invalid("Request body must be a JSON object."));
    };
    let req = parse_request(&body)?;
    let webhook = match &req.webhook {
        Some(url) => Some(
            guard::check_url(url, state.config.strict)
                .await
                .map_err(ApiError::invalid)?,
        ),
        None => None,
    };
    let generator = match &req.model {
        Some(name) => state.registry.generator(name).ok_or_else(|| {
            ApiError::new(
                Code::EngineUnavailable,
                format!("Generator {name:?} is not installed."),
            )
        })?,
        None => state.registry.default_generator().ok_or_else(|| {
            ApiError::new(
                Code::EngineUnavailable,
                "No music generator is installed in this server.",
            )
        })?,
    };
    let params = resolve_defaults(&req);
    let new = NewGeneration {
        id: crate::ids::new_id("gen"),
        prompt: req.tags.clone(),
        parameters: serde_json::to_value(&params).map_err(ApiError::internal)?,
        model: generator.name().to_string(),
        // Kept verbatim, query string and all, as the seed promises.
        webhook: webhook.map(|_| req.webhook.clone().unwrap_or_default()),
        fault: fault.map(|f| f.as_string()),
        trace_id: current_trace_id(),
    };
    let row = state.store.write(move |tx| gens::insert(tx, &new)).await?;
    state.work.notify_one();
    let mut resp = (StatusCode::ACCEPTED, Json(GenerationBody::from_row(&row))).into_response();
    let ignored: Vec<&str> = body
        .keys()
        .map(String::as_str)
        .filter(|k| !FIELDS.contains(k))
        .collect();
    if let (false, Ok(v)) = (ignored.is_empty(), ignored.join(", ").parse()) {
        resp.headers_mut().insert("x-soundcheck-ignored-fields", v);
    }
    Ok(resp)
}

/// One generation.
#[utoipa::path(get, path = "/v1/generations/{id}", tag = GENERATIONS, security(("api_key" = [])),
    params(("id" = String, Path, description = "A `gen_…` id")),
    responses(
        (status = 200, description = "The generation", body = GenerationBody),
        (status = 404, description = "not_found", body = ErrorEnvelope),
    ))]
async fn generations_get(
    State(state): State<AppState>,
    _key: GenerationsKey,
    Path(id): Path<String>,
) -> ApiResult<Json<GenerationBody>> {
    let row = state.store.read(move |c| gens::get(c, &id)).await?;
    let row = row.ok_or_else(|| ApiError::not_found("No generation with that id."))?;
    Ok(Json(GenerationBody::from_row(&row)))
}

/// The 50 most recent generations, newest first (extension).
#[utoipa::path(get, path = "/v1/generations", tag = GENERATIONS, security(("api_key" = [])),
    responses((status = 200, description = "Generations", body = GenerationList)))]
async fn generations_list(
    State(state): State<AppState>,
    _key: GenerationsKey,
) -> ApiResult<Json<GenerationList>> {
    let rows = state.store.read(|c| gens::recent(c, 50)).await?;
    let data: Vec<GenerationBody> = rows.iter().map(GenerationBody::from_row).collect();
    Ok(Json(GenerationList { data }))
}

/// The webhook attempt(s) of one generation, with request and response (extension).
#[utoipa::path(get, path = "/v1/generations/{id}/deliveries", tag = GENERATIONS, security(("api_key" = [])),
    params(("id" = String, Path, description = "A `gen_…` id")),
    responses(
        (status = 200, description = "Attempts, newest first", body = super::webhook::DeliveryList),
        (status = 404, description = "not_found", body = ErrorEnvelope),
    ))]
async fn generations_deliveries(
    State(state): State<AppState>,
    _key: GenerationsKey,
    Path(id): Path<String>,
) -> ApiResult<Json<super::webhook::DeliveryList>> {
    let (exists, attempts) = state
        .store
        .read(move |c| {
            let exists = gens::get(c, &id)?.is_some();
            Ok((
                exists,
                wh::recent_attempts(c, AttemptFilter::Subject(&id), 20)?,
            ))
        })
        .await?;
    if !exists {
        return Err(ApiError::not_found("No generation with that id."));
    }
    Ok(Json(super::webhook::DeliveryList { data: attempts }))
}

/// A validated request, before defaults.
#[derive(Debug, Clone, PartialEq)]
struct CreateRequest {
    tags: String,
    duration: Option<u32>,
    bpm: Option<u32>,
    keyscale: Option<String>,
    timesignature: Option<u32>,
    seed: Option<u64>,
    webhook: Option<String>,
    model: Option<String>,
}

fn parse_request(body: &Map<String, Value>) -> Result<CreateRequest, ApiError> {
    let tags = match body.get("tags") {
        None | Some(Value::Null) => return Err(ApiError::invalid("tags is required.")),
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(ApiError::invalid("tags must not be empty."))
        }
        Some(Value::String(s)) if s.chars().count() > MAX_TAGS_LEN => {
            return Err(ApiError::invalid(format!(
                "tags must be at most {MAX_TAGS_LEN} characters."
            )))
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::invalid("tags must be a string.")),
    };
    let keyscale = match optional_string(body, "keyscale")? {
        Some(k) => Some(parse_keyscale(&k).map_err(ApiError::invalid)?),
        None => None,
    };
    Ok(CreateRequest {
        tags,
        duration: optional_int(body, "duration", 1, 600)?.map(|v| v as u32),
        bpm: optional_int(body, "bpm", 30, 300)?.map(|v| v as u32),
        keyscale,
        timesignature: optional_int(body, "timesignature", 2, 12)?.map(|v| v as u32),
        seed: optional_int(body, "seed", 0, u32::MAX as u64)?,
        webhook: optional_string(body, "webhook")?,
        model: optional_string(body, "model")?,
    })
}

/// An optional integer field within `min..=max` (JSON numbers with no fractional part).
fn optional_int(
    body: &Map<String, Value>,
    name: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ApiError> {
    let range_msg = || format!("{name} must be an integer from {min} to {max}.");
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let v = n
                .as_u64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                        .map(|f| f as u64)
                })
                .ok_or_else(|| ApiError::invalid(range_msg()))?;
            if (min..=max).contains(&v) {
                Ok(Some(v))
            } else {
                Err(ApiError::invalid(range_msg()))
            }
        }
        Some(_) => Err(ApiError::invalid(format!("{name} must be a number."))),
    }
}

fn optional_string(body: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(format!("{name} must be a string."))),
    }
}

/// Parses a key as the contract writes it — a letter A–G, an optional `#` or `b`, then `major` or
/// `minor` — and returns its canonical spelling (`"f# Minor"` → `"F# minor"`).
pub fn parse_keyscale(s: &str) -> Result<String, String> {
    let err = || {
        format!(
            "keyscale {s:?} is not a key: expected e.g. \"A minor\", \"F# major\", \"Bb minor\"."
        )
    };
    let mut words = s.split_whitespace();
    let (Some(tonic), Some(mode), None) = (words.next(), words.next(), words.next()) else {
        return Err(err());
    };
    let mut chars = tonic.chars();
    let letter = chars
        .next()
        .map(|c| c.to_ascii_uppercase())
        .filter(|c| ('A'..='G').contains(c));
    let accidental = match chars.as_str() {
        "" => "",
        "#" | "♯" => "#",
        "b" | "♭" => "b",
        _ => return Err(err()),
    };
    let mode = match mode.to_ascii_lowercase().as_str() {
        "major" => "major",
        "minor" => "minor",
        _ => return Err(err()),
    };
    let letter = letter.ok_or_else(err)?;
    Ok(format!("{letter}{accidental} {mode}"))
}

/// Fills every omitted parameter of a request.
fn resolve_defaults(req: &CreateRequest) -> GenerationParameters {
    resolve_parameters(
        &req.tags,
        req.duration,
        req.bpm,
        req.keyscale.clone(),
        req.timesignature,
        req.seed,
    )
}

/// Fills every omitted parameter (the API and `soundcheck generate` share it). The seed is drawn
/// first; the key is then derived from it, so a request that fixes only the seed is reproducible.
/// `keyscale`, when given, must already be validated by [`parse_keyscale`].
pub fn resolve_parameters(
    tags: &str,
    duration: Option<u32>,
    bpm: Option<u32>,
    keyscale: Option<String>,
    timesignature: Option<u32>,
    seed: Option<u64>,
) -> GenerationParameters {
    let seed = seed.unwrap_or_else(|| rand::thread_rng().gen_range(0..=u32::MAX as u64));
    let keyscale = keyscale.unwrap_or_else(|| {
        const TONICS: [&str; 12] = [
            "C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let tonic = TONICS[rng.gen_range(0..12)];
        let mode = if rng.gen_bool(0.5) { "major" } else { "minor" };
        format!("{tonic} {mode}")
    });
    GenerationParameters {
        bpm: bpm.unwrap_or_else(|| crate::engines::compose::default_bpm_for_tags(tags)),
        duration: duration.unwrap_or(30),
        keyscale,
        timesignature: timesignature.unwrap_or(4),
        seed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyscale_parses_the_contract_spelling() {
        assert_eq!(parse_keyscale("A minor").unwrap(), "A minor");
        assert_eq!(parse_keyscale("f#  Major").unwrap(), "F# major");
        assert_eq!(parse_keyscale("Bb minor").unwrap(), "Bb minor");
        for bad in [
            "H minor",
            "A",
            "A dorian",
            "A# minor extra",
            "Abb major",
            "",
        ] {
            assert!(parse_keyscale(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_are_reproducible_from_the_seed() {
        let req = CreateRequest {
            tags: "lofi chill".into(),
            duration: None,
            bpm: None,
            keyscale: None,
            timesignature: None,
            seed: Some(42),
            webhook: None,
            model: None,
        };
        let a = resolve_defaults(&req);
        assert_eq!(a, resolve_defaults(&req));
        assert_eq!((a.duration, a.timesignature, a.seed), (30, 4, 42));
        assert_eq!(
            a.bpm,
            crate::engines::compose::default_bpm_for_tags("lofi chill")
        );
        assert!(parse_keyscale(&a.keyscale).is_ok());
    }
}
