//! Credits admin (Bearer auth): the balance, recent movements and top-ups.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::docs::{ErrorEnvelope, CREDITS};
use super::{JobsKey, JsonBody};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::store::credits;

/// Largest single top-up.
const MAX_TOP_UP: i64 = 1_000_000_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(credits_get, credits_add))
}

/// The balance and the 50 most recent ledger movements.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditsBody {
    pub balance: i64,
    pub movements: Vec<credits::Movement>,
}

/// The balance after a top-up.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceBody {
    pub balance: i64,
}

/// `POST /v1/credits` body.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct TopUp {
    #[schema(minimum = 1, maximum = 1000000000)]
    pub amount: i64,
}

/// The balance and recent movements (grants, reservations, charges, refunds).
#[utoipa::path(get, path = "/v1/credits", tag = CREDITS, security(("bearer" = [])),
    responses((status = 200, description = "Balance and ledger", body = CreditsBody)))]
async fn credits_get(State(state): State<AppState>, _key: JobsKey) -> ApiResult<Json<CreditsBody>> {
    let (balance, movements) = state
        .store
        .read(|c| Ok((credits::balance(c)?, credits::recent(c, 50)?)))
        .await?;
    Ok(Json(CreditsBody { balance, movements }))
}

/// Adds credits.
#[utoipa::path(post, path = "/v1/credits", tag = CREDITS, security(("bearer" = [])),
    request_body = TopUp,
    responses(
        (status = 200, description = "The new balance", body = BalanceBody),
        (status = 400, description = "invalid_request: amount out of range", body = ErrorEnvelope),
        (status = 413, description = "payload_too_large", body = ErrorEnvelope),
    ))]
async fn credits_add(
    State(state): State<AppState>,
    _key: JobsKey,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<BalanceBody>> {
    // JSON has one number type: 25.0 is the integer 25.
    let amount = body
        .get("amount")
        .and_then(|v| {
            v.as_i64().or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                    .map(|f| f as i64)
            })
        })
        .filter(|a| (1..=MAX_TOP_UP).contains(a))
        .ok_or_else(|| {
            ApiError::invalid(format!("amount must be an integer from 1 to {MAX_TOP_UP}."))
        })?;
    let balance = state
        .store
        .write(move |tx| credits::record(tx, None, crate::store::states::LedgerKind::Grant, amount))
        .await?;
    Ok(Json(BalanceBody { balance }))
}
