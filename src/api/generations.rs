//! The generations API (seed 000): `POST /v1/generations`, `GET /v1/generations/:id`, authenticated
//! by `X-API-Key`. Also `GET /v1/generations` (a listing) and `GET /v1/generations/:id/deliveries`
//! (its webhook attempt), soundcheck extensions.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::body::{self, JsonBody, JsonRequest};
use super::docs::{ErrorEnvelope, GENERATIONS};
use super::{fault_header, GenerationsKey, Path};
use crate::app::AppState;
use crate::error::{current_trace_id, ApiError, ApiResult, Code};
use crate::jobs::registry::Registry;
use crate::store::generations::{self as gens, NewGeneration};
use crate::store::webhooks::{self as wh, AttemptFilter};
use crate::views::{GenerationBody, GenerationParameters};
use crate::webhooks::guard;

/// Longest accepted `tags` text.
const MAX_TAGS_LEN: usize = 2_000;

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

/// `POST /v1/generations` body. Unknown fields are ignored and named in
/// `X-Soundcheck-Ignored-Fields`.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
pub struct GenerationRequest {
    /// Genre, mood and instrument words.
    #[serde(deserialize_with = "read_tags")]
    #[schema(min_length = 1, max_length = 2000, pattern = "\\S")]
    pub tags: String,
    /// Seconds.
    #[serde(default, deserialize_with = "read_duration")]
    #[schema(minimum = 1, maximum = 600)]
    pub duration: Option<u32>,
    #[serde(default, deserialize_with = "read_bpm")]
    #[schema(minimum = 30, maximum = 300)]
    pub bpm: Option<u32>,
    /// `"A minor"`, `"F# major"`, `"Bb minor"`.
    #[serde(default, deserialize_with = "read_keyscale")]
    #[schema(pattern = "^[A-G](#|b)? (major|minor)$")]
    pub keyscale: Option<String>,
    /// Beats per bar.
    #[serde(default, deserialize_with = "read_timesignature")]
    #[schema(minimum = 2, maximum = 12)]
    pub timesignature: Option<u32>,
    #[serde(default, deserialize_with = "read_seed")]
    #[schema(minimum = 0, maximum = 4294967295.0)]
    pub seed: Option<u64>,
    /// Fire-once webhook URL (http or https; loopback allowed unless `serve --strict`).
    #[serde(default, deserialize_with = "read_webhook")]
    #[schema(
        max_length = 2048,
        pattern = "^https?://[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,20}){0,3}(/[A-Za-z0-9._~-]{0,20}){0,4}$"
    )]
    pub webhook: Option<String>,
    /// An installed generator (the document lists this server's).
    #[serde(default, deserialize_with = "read_model")]
    pub model: Option<String>,
}

impl JsonRequest for GenerationRequest {}

// The readers of `GenerationRequest`'s fields (see `api::body`): each refusal names its field,
// with the range the schema attribute beside the field documents.

fn read_tags<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::de::Error;
    match body::string(d, "tags")? {
        None => Err(D::Error::custom("tags is required.")),
        Some(s) if s.trim().is_empty() => Err(D::Error::custom("tags must not be empty.")),
        Some(s) if s.chars().count() > MAX_TAGS_LEN => Err(D::Error::custom(format!(
            "tags must be at most {MAX_TAGS_LEN} characters."
        ))),
        Some(s) => Ok(s),
    }
}

fn read_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Ok(body::int(d, "duration", 1, 600)?.map(|v| v as u32))
}

fn read_bpm<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Ok(body::int(d, "bpm", 30, 300)?.map(|v| v as u32))
}

/// A key, returned in its canonical spelling ([`parse_keyscale`]).
fn read_keyscale<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    body::string(d, "keyscale")?
        .map(|k| parse_keyscale(&k).map_err(serde::de::Error::custom))
        .transpose()
}

fn read_timesignature<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Ok(body::int(d, "timesignature", 2, 12)?.map(|v| v as u32))
}

fn read_seed<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    body::int(d, "seed", 0, u32::MAX as u64)
}

fn read_webhook<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    body::string(d, "webhook")
}

fn read_model<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    body::string(d, "model")
}

/// Queues a generation: validates, resolves every default, answers `202` with the body `GET`
/// returns.
#[utoipa::path(post, path = "/v1/generations", tag = GENERATIONS, security(("api_key" = [])),
    request_body = GenerationRequest,
    responses(
        (status = 202, description = "Queued", body = GenerationBody),
        (status = 400, description = "invalid_request: malformed JSON, wrong types, out of range, bad webhook URL, bad fault, a `model` soundcheck does not know (the message lists the known ones)", body = ErrorEnvelope),
        (status = 413, description = "payload_too_large: body over 2 MB", body = ErrorEnvelope),
        (status = 501, description = "engine_unavailable: a known generator that is not installed here (the message has the `soundcheck models pull` command)", body = ErrorEnvelope),
    ))]
async fn generations_create(
    State(state): State<AppState>,
    _key: GenerationsKey,
    headers: HeaderMap,
    JsonBody { body: req, ignored }: JsonBody<GenerationRequest>,
) -> ApiResult<impl IntoResponse> {
    let fault = fault_header(&headers)?;
    let webhook = match &req.webhook {
        Some(url) => Some(
            guard::check_url(url, state.config.strict)
                .await
                .map_err(ApiError::invalid)?,
        ),
        None => None,
    };
    let generator = match &req.model {
        Some(name) => state
            .registry
            .generator(name)
            .ok_or_else(|| model_refusal(&state.registry, name))?,
        None => state.registry.default_generator().ok_or_else(|| {
            ApiError::new(
                Code::EngineUnavailable,
                "No music generator is installed in this server.",
            )
        })?,
    };
    let params = req.resolve();
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
    if let Some(v) = ignored_fields_header(&ignored) {
        resp.headers_mut().insert("x-soundcheck-ignored-fields", v);
    }
    Ok(resp)
}

/// Most names `X-Soundcheck-Ignored-Fields` lists: a body with thousands of unknown keys must
/// not make a header that clients refuse to read (Python's `http.client` stops at 64 KB a line,
/// curl at 100 KB).
const IGNORED_FIELDS_SHOWN: usize = 20;

/// The ignored fields' names, comma-separated: the first [`IGNORED_FIELDS_SHOWN`], each as
/// [`crate::error::shown_name`] shows it (cut to 64 characters, printable ASCII), then
/// `... (N more)`. `None` when nothing was ignored.
fn ignored_fields_header(ignored: &[String]) -> Option<HeaderValue> {
    if ignored.is_empty() {
        return None;
    }
    let mut names: Vec<String> = ignored
        .iter()
        .take(IGNORED_FIELDS_SHOWN)
        .map(|name| crate::error::shown_name(name))
        .collect();
    if ignored.len() > IGNORED_FIELDS_SHOWN {
        names.push(format!(
            "... ({} more)",
            ignored.len() - IGNORED_FIELDS_SHOWN
        ));
    }
    HeaderValue::from_str(&names.join(", ")).ok()
}

/// Why `model` names no installed generator: a name soundcheck does not know is the client's
/// mistake (`400`, listing the names it knows); a catalog model that is not installed here is
/// `501`, with the command that installs it.
fn model_refusal(registry: &Registry, name: &str) -> ApiError {
    let catalog = crate::models::CATALOG
        .iter()
        .filter(|e| e.family == crate::models::Family::MusicGen)
        .map(|e| e.id.to_string());
    if catalog.clone().any(|id| id == name) {
        return ApiError::new(
            Code::EngineUnavailable,
            format!(
                "Generator {name:?} is not installed in this server; install it with \
                 `soundcheck models pull {name}` and restart the server."
            ),
        );
    }
    let installed: Vec<String> = registry
        .describe()
        .into_iter()
        .filter(|(endpoint, _)| endpoint == "/v1/generations")
        .map(|(_, generator)| generator)
        .collect();
    let installable: Vec<String> = catalog.filter(|id| !installed.contains(id)).collect();
    let mut message = format!(
        "model {name:?} is not a generator soundcheck knows; installed here: {}",
        installed.join(", ")
    );
    if !installable.is_empty() {
        message.push_str(&format!(
            "; installable with `soundcheck models pull`: {}",
            installable.join(", ")
        ));
    }
    message.push('.');
    ApiError::invalid(message)
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

impl GenerationRequest {
    /// Fills every omitted parameter (the API and `soundcheck generate` share it). The seed is
    /// drawn first; the key is then derived from it, so a request that fixes only the seed is
    /// reproducible.
    pub fn resolve(&self) -> GenerationParameters {
        let seed = self
            .seed
            .unwrap_or_else(|| rand::thread_rng().gen_range(0..=u32::MAX as u64));
        let keyscale = self.keyscale.clone().unwrap_or_else(|| {
            const TONICS: [&str; 12] = [
                "C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B",
            ];
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let tonic = TONICS[rng.gen_range(0..12)];
            let mode = if rng.gen_bool(0.5) { "major" } else { "minor" };
            format!("{tonic} {mode}")
        });
        GenerationParameters {
            bpm: self
                .bpm
                .unwrap_or_else(|| crate::engines::compose::default_bpm_for_tags(&self.tags)),
            duration: self.duration.unwrap_or(30),
            keyscale,
            timesignature: self.timesignature.unwrap_or(4),
            seed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use utoipa::PartialSchema;

    fn read(body: Value) -> Result<JsonBody<GenerationRequest>, String> {
        JsonBody::<GenerationRequest>::from_value(body).map_err(|e| e.message)
    }

    /// 20,000 unknown keys once made a 360 KB header line that Python and curl refuse to read.
    #[test]
    fn the_ignored_fields_header_stays_short() {
        assert!(ignored_fields_header(&[]).is_none());
        let few = ignored_fields_header(&["mood".into(), "bpm ".into()]).unwrap();
        assert_eq!(few, "mood, bpm ");
        let many: Vec<String> = (0..20_000).map(|i| format!("field_{i:05}")).collect();
        let v = ignored_fields_header(&many).unwrap();
        let v = v.to_str().unwrap();
        assert!(v.starts_with("field_00000, field_00001, "), "{v}");
        assert!(v.ends_with(", field_00019, ... (19980 more)"), "{v}");
        let odd = ignored_fields_header(&["é\n".into(), "k".repeat(5000)]).unwrap();
        let odd = odd.to_str().unwrap();
        assert!(odd.starts_with("??, kkkk"), "{odd}");
        assert!(odd.len() < 100, "{odd}");
    }

    #[test]
    fn requests_are_refused_in_the_contracts_words() {
        for (body, message) in [
            (json!({}), "tags is required."),
            (json!({"tags": null}), "tags is required."),
            (json!({"tags": " "}), "tags must not be empty."),
            (json!({"tags": 5}), "tags must be a string."),
            (
                json!({"tags": "x".repeat(2001)}),
                "tags must be at most 2000 characters.",
            ),
            (
                json!({"tags": "lofi", "duration": 12.5}),
                "duration must be an integer from 1 to 600.",
            ),
            (
                json!({"tags": "lofi", "duration": "90"}),
                "duration must be a number.",
            ),
            (
                json!({"tags": "lofi", "seed": -1}),
                "seed must be an integer from 0 to 4294967295.",
            ),
            (
                json!({"tags": "lofi", "keyscale": 3}),
                "keyscale must be a string.",
            ),
            (
                json!({"tags": "lofi", "model": []}),
                "model must be a string.",
            ),
            (json!(["tags"]), "Request body must be a JSON object."),
        ] {
            assert_eq!(read(body.clone()).err().as_deref(), Some(message), "{body}");
        }
        let err = read(json!({"tags": "lofi", "keyscale": "H minor"}))
            .err()
            .unwrap();
        assert!(
            err.starts_with("keyscale \"H minor\" is not a key"),
            "{err}"
        );
        // Whole numbers may be written as floats; keys come back canonical; nulls are absent.
        let ok = read(
            json!({"tags": "lofi", "duration": 25.0, "keyscale": "f# Minor",
                             "bpm": null, "colour": "blue", "mood": 1}),
        )
        .unwrap();
        assert_eq!(ok.body.duration, Some(25));
        assert_eq!(ok.body.keyscale.as_deref(), Some("F# minor"));
        assert_eq!(ok.body.bpm, None);
        assert_eq!(ok.ignored, ["colour", "mood"]);
    }

    /// The ranges the document gives are the ones the readers enforce, field by field.
    #[test]
    fn the_documented_ranges_are_the_ones_enforced() {
        let schema = serde_json::to_value(GenerationRequest::schema()).unwrap();
        let mut checked = Vec::new();
        for (name, field) in schema["properties"].as_object().unwrap() {
            let bound = |b: &str| field[b].as_f64().map(|v| v as i64);
            let (Some(min), Some(max)) = (bound("minimum"), bound("maximum")) else {
                continue;
            };
            let with = |v: i64| json!({"tags": "lofi", name.as_str(): v});
            assert!(read(with(min)).is_ok(), "{name} = {min}");
            assert!(read(with(max)).is_ok(), "{name} = {max}");
            assert!(read(with(min - 1)).is_err(), "{name} = {}", min - 1);
            assert!(read(with(max + 1)).is_err(), "{name} = {}", max + 1);
            checked.push(name.clone());
        }
        assert_eq!(checked, ["duration", "bpm", "timesignature", "seed"]);
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(required, ["tags"]);
    }

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
        let req = GenerationRequest {
            tags: "lofi chill".into(),
            duration: None,
            bpm: None,
            keyscale: None,
            timesignature: None,
            seed: Some(42),
            webhook: None,
            model: None,
        };
        let a = req.resolve();
        assert_eq!(a, req.resolve());
        assert_eq!((a.duration, a.timesignature, a.seed), (30, 4, 42));
        assert_eq!(
            a.bpm,
            crate::engines::compose::default_bpm_for_tags("lofi chill")
        );
        assert!(parse_keyscale(&a.keyscale).is_ok());
    }
}
