//! Credits admin (Bearer auth): the balance, recent movements and top-ups.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{JobsKey, JsonBody};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::store::credits;

/// Largest single top-up.
const MAX_TOP_UP: i64 = 1_000_000_000;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/credits", get(credits_get).post(credits_add))
}

/// `GET /v1/credits`: `{"balance", "movements": [...]}` (the 50 most recent).
async fn credits_get(State(state): State<AppState>, _key: JobsKey) -> ApiResult<Json<Value>> {
    let (balance, movements) = state
        .store
        .read(|c| Ok((credits::balance(c)?, credits::recent(c, 50)?)))
        .await?;
    Ok(Json(json!({ "balance": balance, "movements": movements })))
}

/// `POST /v1/credits` `{"amount": N}`: adds N credits.
async fn credits_add(
    State(state): State<AppState>,
    _key: JobsKey,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let amount = body
        .get("amount")
        .and_then(Value::as_i64)
        .filter(|a| (1..=MAX_TOP_UP).contains(a))
        .ok_or_else(|| {
            ApiError::invalid(format!("amount must be an integer from 1 to {MAX_TOP_UP}."))
        })?;
    let balance = state
        .store
        .write(move |tx| credits::record(tx, None, "grant", amount))
        .await?;
    Ok(Json(json!({ "balance": balance })))
}
