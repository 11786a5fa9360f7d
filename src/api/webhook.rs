//! The webhook admin API behind the dashboard the seed describes (Bearer auth): the endpoint URL,
//! enable/disable, secret rotation, the delivery log and resend.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{JobsKey, JsonBody};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult, Code};
use crate::store::{self, webhooks as wh};
use crate::webhooks::dispatch::ResendError;
use crate::webhooks::guard;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhook", get(webhook_get).put(webhook_put))
        .route("/v1/webhook/enable", post(webhook_enable))
        .route("/v1/webhook/disable", post(webhook_disable))
        .route("/v1/webhook/rotate-secret", post(webhook_rotate_secret))
        .route("/v1/webhook/deliveries", get(deliveries_list))
        .route("/v1/webhook/deliveries/{id}", get(deliveries_get))
        .route(
            "/v1/webhook/deliveries/{id}/resend",
            post(deliveries_resend),
        )
}

/// The endpoint as the admin API shows it (the secret included: this is the owner's view).
async fn endpoint_json(state: &AppState) -> ApiResult<Value> {
    let e = state.store.read(wh::endpoint_get).await?;
    Ok(json!({
        "url": e.url,
        "enabled": e.enabled,
        "secret": e.secret,
        "consecutive_failures": e.consecutive_failures,
        "disabled_at": e.disabled_at,
        "disabled_reason": e.disabled_reason,
        "updated_at": e.updated_at,
    }))
}

/// `GET /v1/webhook`.
async fn webhook_get(State(state): State<AppState>, _key: JobsKey) -> ApiResult<Json<Value>> {
    Ok(Json(endpoint_json(&state).await?))
}

/// `PUT /v1/webhook` `{"url": "https://…" | null, "enabled": bool?}`.
async fn webhook_put(
    State(state): State<AppState>,
    _key: JobsKey,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let Value::Object(body) = body else {
        return Err(ApiError::invalid("Request body must be a JSON object."));
    };
    let url = match body.get("url") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) => {
            guard::check_url(s, state.config.strict)
                .await
                .map_err(ApiError::invalid)?;
            Some(Some(s.clone()))
        }
        Some(_) => return Err(ApiError::invalid("url must be a string or null.")),
    };
    let enabled = match body.get("enabled") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(ApiError::invalid("enabled must be a boolean.")),
    };
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
    Ok(Json(endpoint_json(&state).await?))
}

/// `POST /v1/webhook/enable`: re-enable after auto-disable; held events are sent now.
async fn webhook_enable(State(state): State<AppState>, _key: JobsKey) -> ApiResult<Json<Value>> {
    let released = state
        .store
        .write(|tx| wh::endpoint_enable(tx, store::now_ms()))
        .await?;
    state.dispatcher.wake();
    let mut body = endpoint_json(&state).await?;
    body["released_events"] = json!(released);
    Ok(Json(body))
}

/// `POST /v1/webhook/disable`: pause deliveries; events are kept and sent on re-enable.
async fn webhook_disable(State(state): State<AppState>, _key: JobsKey) -> ApiResult<Json<Value>> {
    state
        .store
        .write(|tx| wh::endpoint_disable(tx, "disabled by the owner"))
        .await?;
    Ok(Json(endpoint_json(&state).await?))
}

/// `POST /v1/webhook/rotate-secret`: a new `whsec_…`; the next delivery is signed with it.
async fn webhook_rotate_secret(
    State(state): State<AppState>,
    _key: JobsKey,
) -> ApiResult<Json<Value>> {
    let secret = crate::ids::webhook_secret();
    let s = secret.clone();
    state
        .store
        .write(move |tx| wh::endpoint_set_secret(tx, &s))
        .await?;
    Ok(Json(endpoint_json(&state).await?))
}

#[derive(Debug, Deserialize)]
struct DeliveriesQuery {
    /// `job` (default), `generation` or an id (`job_…`, `gen_…`) to see one item's attempts.
    #[serde(default)]
    of: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /v1/webhook/deliveries`: the 20 most recent attempts, with full request and response.
async fn deliveries_list(
    State(state): State<AppState>,
    _key: JobsKey,
    query: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({ "data": attempts })))
}

/// `GET /v1/webhook/deliveries/{id}`.
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

/// `POST /v1/webhook/deliveries/{id}/resend`: sends the event again now (`id` is a `del_` or
/// `evt_` id) and returns the new attempt.
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
