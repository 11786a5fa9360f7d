//! Credits admin (Bearer auth): the balance, recent movements and top-ups.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::body::{self, JsonBody, JsonRequest};
use super::docs::{ErrorEnvelope, CREDITS};
use super::JobsKey;
use crate::app::AppState;
use crate::error::ApiResult;
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
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BalanceBody {
    pub balance: i64,
}

/// `POST /v1/credits` body. Other fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TopUp {
    #[serde(deserialize_with = "read_amount")]
    #[schema(minimum = 1, maximum = 1000000000)]
    pub amount: i64,
}

/// Every refusal of a top-up says what `amount` must be, whatever was wrong.
impl JsonRequest for TopUp {
    fn not_an_object() -> String {
        amount_message()
    }

    fn missing(_field: &str) -> String {
        amount_message()
    }
}

fn amount_message() -> String {
    format!("amount must be an integer from 1 to {MAX_TOP_UP}.")
}

/// An integer in `1..=MAX_TOP_UP`; JSON has one number type, so 25.0 is the integer 25.
fn read_amount<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = body::any(d)?;
    v.as_i64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                .map(|f| f as i64)
        })
        .filter(|a| (1..=MAX_TOP_UP).contains(a))
        .ok_or_else(|| serde::de::Error::custom(amount_message()))
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
    JsonBody { body, .. }: JsonBody<TopUp>,
) -> ApiResult<Json<BalanceBody>> {
    let amount = body.amount;
    let balance = state
        .store
        .write(move |tx| credits::record(tx, None, crate::store::states::LedgerKind::Grant, amount))
        .await?;
    Ok(Json(BalanceBody { balance }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_top_up_is_a_whole_number_in_range_and_every_refusal_says_so() {
        let read = |v| JsonBody::<TopUp>::from_value(v).map(|b| b.body.amount);
        assert_eq!(read(json!({"amount": 25})).unwrap(), 25);
        assert_eq!(read(json!({"amount": 25.0, "note": "x"})).unwrap(), 25);
        for body in [
            json!({"amount": 0}),
            json!({"amount": 1_000_000_001}),
            json!({"amount": 2.5}),
            json!({"amount": "25"}),
            json!({}),
            json!([25]),
        ] {
            let err = read(body.clone()).unwrap_err();
            assert_eq!(
                err.message, "amount must be an integer from 1 to 1000000000.",
                "{body}"
            );
        }
    }
}
