//! The caller's balance: read and charge.

use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::idempotency;
use crate::ratelimit::Class;
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use commerce_accounts::Balance;
use commerce_domain::ChargeAmount;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/me/balance", web::get().to(get_balance))
        .route("/api/v1/me/balance/charge", web::post().to(charge));
}

#[derive(Serialize, ToSchema)]
pub struct BalanceBody {
    user_id: i64,
    balance: i64,
}

impl From<&Balance> for BalanceBody {
    fn from(b: &Balance) -> Self {
        Self {
            user_id: b.user_id.get(),
            balance: b.balance,
        }
    }
}

/// The caller's balance.
#[utoipa::path(get, path = "/api/v1/me/balance", tag = "balance", security(("bearer" = [])),
    operation_id = "getBalance", responses((status = 200, body = BalanceBody)))]
pub async fn get_balance(
    user: AuthUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let balance = commerce_accounts::balance(&state.db, user.0).await?;
    Ok(HttpResponse::Ok().json(BalanceBody::from(&balance)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChargeRequest {
    /// Minor units, a positive integer. Kept raw so that a fraction, a string
    /// or an out-of-range number is a 422 `invalid_amount`, not a parse error.
    #[schema(value_type = i64, minimum = 1, maximum = 100_000_000_000_i64)]
    amount: serde_json::Value,
}

/// Add money to the caller's balance. The `Idempotency-Key` is required: a
/// retry with the same key replays the first answer instead of charging again.
#[utoipa::path(post, path = "/api/v1/me/balance/charge", tag = "balance", security(("bearer" = [])),
    request_body = ChargeRequest, params(("Idempotency-Key" = String, Header)), operation_id = "charge",
    responses((status = 200, body = BalanceBody),
        (status = 422, body = ErrorBody, description = "invalid_amount, balance_limit_exceeded")))]
pub async fn charge(
    user: AuthUser,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: crate::json::Json<ChargeRequest>,
) -> Result<HttpResponse, ApiError> {
    let amount = match &body.amount {
        serde_json::Value::Number(n) => crate::json::to_i64(n),
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidAmount,
            "amount must be a positive integer",
        )
    })
    .and_then(|raw| ChargeAmount::parse(raw).map_err(ApiError::from))?;
    let canonical = serde_json::json!({ "amount": amount.get() });
    idempotency::required_claim(&req, user.0, &canonical)?;
    state.limits.check(Class::Money, user.0).await?;
    idempotency::run(
        &state.db,
        &req,
        user.0,
        &canonical,
        StatusCode::OK,
        |b: &Balance| BalanceBody::from(b),
        |save| async { Ok(commerce_accounts::charge(&state.db, user.0, amount, save).await?) },
    )
    .await
}
