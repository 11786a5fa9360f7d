//! The webhook admin API behind the dashboard the seed describes (Bearer auth): the endpoint URL,
//! enable/disable, secret rotation, the delivery log and resend.

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::body::{self, JsonBody, JsonRequest};
use super::docs::{ErrorEnvelope, WEBHOOK};
use super::{JobsKey, Path};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult, Code};
use crate::store::{self, webhooks as wh};
use crate::webhooks::dispatch::ResendError;
use crate::webhooks::guard;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(webhook_get, webhook_put))
        .routes(routes!(webhook_enable))
        .routes(routes!(webhook_disable))
        .routes(routes!(webhook_rotate_secret))
        .routes(routes!(deliveries_list))
        .routes(routes!(deliveries_get))
        .routes(routes!(deliveries_resend))
}

/// The endpoint as the admin API shows it (the secret included: this is the owner's view).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EndpointBody {
    /// Where job events go; null: none configured (events are recorded as `skipped`).
    pub url: Option<String>,
    pub enabled: bool,
    /// The `whsec_…` signing secret.
    pub secret: String,
    /// Events in a row that failed every attempt (5 disable the endpoint).
    pub consecutive_failures: i64,
    pub disabled_at: Option<String>,
    pub disabled_reason: Option<String>,
    pub updated_at: String,
    /// Only from `POST /v1/webhook/enable`: held events released for delivery now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_events: Option<u64>,
}

async fn endpoint_body(state: &AppState) -> ApiResult<EndpointBody> {
    let e = state.store.read(wh::endpoint_get).await?;
    Ok(EndpointBody {
        url: e.url,
        enabled: e.enabled,
        secret: e.secret,
        consecutive_failures: e.consecutive_failures,
        disabled_at: e.disabled_at,
        disabled_reason: e.disabled_reason,
        updated_at: e.updated_at,
        released_events: None,
    })
}

/// `PUT /v1/webhook` body; either field may be left out, and no other is taken (`{"URL": …}`
/// would otherwise change nothing and answer 200).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointUpdate {
    /// http or https URL (public https only under `serve --strict`), or null to clear it.
    // Left out: `None` (unchanged); null: `Some(None)` (cleared).
    #[serde(default, deserialize_with = "read_url")]
    #[schema(
        value_type = Option<String>,
        max_length = 2048,
        pattern = "^https?://[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,20}){0,3}(/[A-Za-z0-9._~-]{0,20}){0,4}$"
    )]
    pub url: Option<Option<String>>,
    #[serde(default, deserialize_with = "read_enabled")]
    pub enabled: Option<bool>,
}

impl JsonRequest for EndpointUpdate {}

fn read_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    body::nullable_string(d, "url")
}

fn read_enabled<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    body::boolean(d, "enabled")
}

/// The 20 (or `limit`) most recent delivery attempts.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<wh::Attempt>,
}

/// The jobs webhook endpoint.
#[utoipa::path(get, path = "/v1/webhook", tag = WEBHOOK, security(("bearer" = [])),
    responses((status = 200, description = "The endpoint", body = EndpointBody)))]
async fn webhook_get(
    State(state): State<AppState>,
    _key: JobsKey,
) -> ApiResult<Json<EndpointBody>> {
    Ok(Json(endpoint_body(&state).await?))
}

/// Sets the URL and/or enables or disables the endpoint.
#[utoipa::path(put, path = "/v1/webhook", tag = WEBHOOK, security(("bearer" = [])),
    request_body = EndpointUpdate,
    responses(
        (status = 200, description = "The endpoint after the change", body = EndpointBody),
        (status = 400, description = "invalid_request: not an object, bad URL or types", body = ErrorEnvelope),
        (status = 413, description = "payload_too_large", body = ErrorEnvelope),
    ))]
async fn webhook_put(
    State(state): State<AppState>,
    _key: JobsKey,
    JsonBody { body, .. }: JsonBody<EndpointUpdate>,
) -> ApiResult<Json<EndpointBody>> {
    let EndpointUpdate { url, enabled } = body;
    if let Some(Some(url)) = &url {
        guard::check_url(url, state.config.strict)
            .await
            .map_err(ApiError::invalid)?;
    }
    state
        .store
        .write(move |tx| {
            if let Some(url) = &url {
                wh::endpoint_set_url(tx, url.as_deref())?;
            }
            match enabled {
                Some(true) => {
                    wh::endpoint_enable(tx, store::now_ms())?;
                }
                Some(false) => wh::endpoint_disable(tx, "disabled by the owner")?,
                None => {}
            }
            Ok(())
        })
        .await?;
    state.dispatcher.wake();
    Ok(Json(endpoint_body(&state).await?))
}

/// Re-enables the endpoint (after auto-disable); held events are sent now.
#[utoipa::path(post, path = "/v1/webhook/enable", tag = WEBHOOK, security(("bearer" = [])),
    responses((status = 200, description = "The endpoint, with `released_events`", body = EndpointBody)))]
async fn webhook_enable(
    State(state): State<AppState>,
    _key: JobsKey,
) -> ApiResult<Json<EndpointBody>> {
    let released = state
        .store
        .write(|tx| wh::endpoint_enable(tx, store::now_ms()))
        .await?;
    state.dispatcher.wake();
    let mut body = endpoint_body(&state).await?;
    body.released_events = Some(released as u64);
    Ok(Json(body))
}

/// Pauses deliveries; events are kept (`held`) and sent on re-enable.
#[utoipa::path(post, path = "/v1/webhook/disable", tag = WEBHOOK, security(("bearer" = [])),
    responses((status = 200, description = "The endpoint", body = EndpointBody)))]
async fn webhook_disable(
    State(state): State<AppState>,
    _key: JobsKey,
) -> ApiResult<Json<EndpointBody>> {
    state
        .store
        .write(|tx| wh::endpoint_disable(tx, "disabled by the owner"))
        .await?;
    Ok(Json(endpoint_body(&state).await?))
}

/// A new `whsec_…` secret; the next delivery is signed with it.
#[utoipa::path(post, path = "/v1/webhook/rotate-secret", tag = WEBHOOK, security(("bearer" = [])),
    responses((status = 200, description = "The endpoint with its new secret", body = EndpointBody)))]
async fn webhook_rotate_secret(
    State(state): State<AppState>,
    _key: JobsKey,
) -> ApiResult<Json<EndpointBody>> {
    let secret = crate::ids::webhook_secret();
    let s = secret.clone();
    state
        .store
        .write(move |tx| wh::endpoint_set_secret(tx, &s))
        .await?;
    Ok(Json(endpoint_body(&state).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeliveriesQuery {
    /// `job` (default), `generation` or an id (`job_…`, `gen_…`) to see one item's attempts.
    #[serde(default)]
    of: Option<String>,
    /// How many attempts, newest first (default 20).
    #[serde(default)]
    #[param(minimum = 1, maximum = 100)]
    limit: Option<usize>,
}

/// The most recent delivery attempts, with full request and response.
#[utoipa::path(get, path = "/v1/webhook/deliveries", tag = WEBHOOK, security(("bearer" = [])),
    params(DeliveriesQuery),
    responses(
        (status = 200, description = "Attempts, newest first", body = DeliveryList),
        (status = 400, description = "invalid_request: bad limit", body = ErrorEnvelope),
    ))]
async fn deliveries_list(
    State(state): State<AppState>,
    _key: JobsKey,
    query: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<DeliveryList>> {
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit must be from 1 to 100."));
    }
    let of = q.of.unwrap_or_else(|| "job".into());
    let attempts = state
        .store
        .read(move |c| {
            let filter = match of.as_str() {
                "job" => wh::AttemptFilter::JobEvents,
                "generation" => wh::AttemptFilter::GenerationEvents,
                id => wh::AttemptFilter::Subject(id),
            };
            wh::recent_attempts(c, filter, limit)
        })
        .await?;
    Ok(Json(DeliveryList { data: attempts }))
}

/// One delivery attempt.
#[utoipa::path(get, path = "/v1/webhook/deliveries/{id}", tag = WEBHOOK, security(("bearer" = [])),
    params(("id" = String, Path, description = "A `del_…` id")),
    responses(
        (status = 200, description = "The attempt", body = wh::Attempt),
        (status = 404, description = "not_found", body = ErrorEnvelope),
    ))]
async fn deliveries_get(
    State(state): State<AppState>,
    _key: JobsKey,
    Path(id): Path<String>,
) -> ApiResult<Json<wh::Attempt>> {
    let a = state.store.read(move |c| wh::attempt_get(c, &id)).await?;
    Ok(Json(a.ok_or_else(|| {
        ApiError::not_found("No delivery with that id.")
    })?))
}

/// Sends the event again now, to the current endpoint with the current secret (`id` is a `del_`
/// or `evt_` id); returns the new attempt.
#[utoipa::path(post, path = "/v1/webhook/deliveries/{id}/resend", tag = WEBHOOK, security(("bearer" = [])),
    params(("id" = String, Path, description = "A `del_…` or `evt_…` id")),
    responses(
        (status = 200, description = "The new attempt (`manual: true`)", body = wh::Attempt),
        (status = 400, description = "invalid_request: no endpoint URL configured", body = ErrorEnvelope),
        (status = 404, description = "not_found", body = ErrorEnvelope),
    ))]
async fn deliveries_resend(
    State(state): State<AppState>,
    _key: JobsKey,
    Path(id): Path<String>,
) -> ApiResult<Json<wh::Attempt>> {
    match state.dispatcher.resend(&id).await {
        Ok(a) => Ok(Json(a)),
        Err(ResendError::NotFound) => {
            Err(ApiError::not_found("No delivery or event with that id."))
        }
        Err(ResendError::NoEndpoint) => Err(ApiError::new(
            Code::InvalidRequest,
            "No webhook endpoint URL is configured; set one with PUT /v1/webhook.",
        )),
        Err(ResendError::Store(e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_update_tells_a_cleared_url_from_a_left_out_one() {
        let read = |v| JsonBody::<EndpointUpdate>::from_value(v).map(|b| b.body);
        let u = read(json!({"url": null})).unwrap();
        assert_eq!((u.url, u.enabled), (Some(None), None));
        let u = read(json!({"enabled": false})).unwrap();
        assert_eq!((u.url, u.enabled), (None, Some(false)));
        let u = read(json!({"url": "http://h/x", "enabled": null})).unwrap();
        assert_eq!((u.url, u.enabled), (Some(Some("http://h/x".into())), None));
        for (body, message) in [
            (json!({"url": 5}), "url must be a string or null."),
            (json!({"enabled": "yes"}), "enabled must be a boolean."),
            (json!("x"), "Request body must be a JSON object."),
        ] {
            assert_eq!(read(body.clone()).unwrap_err().message, message, "{body}");
        }
    }
}
