//! Admin routes: coupons, reconciliation, circuit breakers.

use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use commerce_coupons::NewCoupon;
use commerce_domain::CouponId;
use commerce_resilience::BreakerAction;
use serde::Deserialize;
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/coupons", web::post().to(create_coupon))
        .route(
            "/admin/coupons/{id}/reconcile",
            web::post().to(reconcile_coupon),
        )
        .route("/admin/dead-letters", web::get().to(dead_letters))
        .route("/admin/dead-letters/{id}/redrive", web::post().to(redrive))
        .route("/admin/breakers", web::get().to(breakers))
        .route(
            "/admin/breakers/{name}/{action}",
            web::post().to(control_breaker),
        );
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCoupon {
    /// Trimmed; no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    /// Minor units.
    #[schema(minimum = 1, maximum = 100_000_000_000_i64)]
    #[serde(deserialize_with = "crate::json::int")]
    discount_amount: i64,
    #[schema(minimum = 1, maximum = 10_000_000)]
    #[serde(deserialize_with = "crate::json::int")]
    quantity: i64,
    /// RFC 3339, e.g. `2026-12-24T10:00:00Z`.
    #[serde(deserialize_with = "crate::json::time")]
    opens_at: chrono::DateTime<chrono::Utc>,
    /// After `opens_at` (else 422 `invalid_expiry`).
    #[serde(default, deserialize_with = "crate::json::opt_time")]
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Create a first-come coupon.
#[utoipa::path(post, path = "/admin/coupons", tag = "admin", security(("admin" = [])), request_body = CreateCoupon, operation_id = "createCoupon",
    responses((status = 201, body = super::schemas::CouponBody),
        (status = 422, body = ErrorBody, description = "invalid_name, invalid_discount, invalid_quantity, invalid_expiry")))]
pub async fn create_coupon(
    _admin: Admin,
    state: web::Data<AppState>,
    body: crate::json::Json<CreateCoupon>,
) -> Result<HttpResponse, ApiError> {
    let new = NewCoupon::parse(
        &body.name,
        body.discount_amount,
        body.quantity,
        body.opens_at,
        body.expires_at,
    )?;
    let coupon = state.coupons.create(&new).await?;
    Ok(HttpResponse::Created().json(coupon))
}

/// Repair drift between the coupon's Redis gate and PostgreSQL.
#[utoipa::path(post, path = "/admin/coupons/{id}/reconcile", tag = "admin", security(("admin" = [])),
    operation_id = "reconcileCoupon",
    params(("id" = i64, Path, minimum = 1)), responses((status = 200, body = super::schemas::ReconcileBody),
        (status = 404, body = ErrorBody, description = "coupon_not_found")))]
pub async fn reconcile_coupon(
    _admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = CouponId::parse(path.into_inner())
        .map_err(|_| ApiError::new(ErrorCode::CouponNotFound, "coupon not found"))?;
    let report = state.coupons.reconcile(id).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// Every circuit breaker's state and counts.
#[utoipa::path(get, path = "/admin/breakers", tag = "admin", security(("admin" = [])), operation_id = "listBreakers",
    responses((status = 200, body = super::schemas::BreakersBody)))]
pub async fn breakers(_admin: Admin, state: web::Data<AppState>) -> HttpResponse {
    let mut report = serde_json::to_value(state.breakers.report()).unwrap_or_default();
    // The `kafka` breaker says why its calls failed: counts per kind of
    // publish, consume and client error, and the last one.
    if let commerce_events::relay::Sink::Kafka(p) = state.relay.sink() {
        let errors = serde_json::to_value(p.errors().report()).unwrap_or_default();
        if let Some(list) = report
            .get_mut("breakers")
            .and_then(serde_json::Value::as_array_mut)
        {
            for b in list.iter_mut().filter(|b| b["name"] == "kafka") {
                b["errors"] = errors.clone();
            }
        }
    }
    HttpResponse::Ok().json(report)
}

/// Force a breaker open or closed, or reset it.
#[utoipa::path(post, path = "/admin/breakers/{name}/{action}", tag = "admin", security(("admin" = [])),
    operation_id = "controlBreaker",
    params(("name" = super::schemas::BreakerName, Path), ("action" = super::schemas::BreakerAction, Path)),
    responses((status = 200, body = super::schemas::BreakerBody),
        (status = 404, body = ErrorBody, description = "unknown_breaker, unknown_action")))]
pub async fn control_breaker(
    _admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (name, action) = path.into_inner();
    let action: BreakerAction = action.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::UnknownAction,
            "action must be force-open, force-close or reset",
        )
    })?;
    let snapshot = state.breakers.control(&name, action).map_err(|_| {
        ApiError::new(
            ErrorCode::UnknownBreaker,
            format!("no breaker named `{name}`"),
        )
    })?;
    Ok(HttpResponse::Ok().json(snapshot))
}

/// Events parked by a consumer after its retries, oldest first.
#[utoipa::path(get, path = "/admin/dead-letters", tag = "admin", security(("admin" = [])), operation_id = "listDeadLetters",
    responses((status = 200, body = super::schemas::DeadLettersBody)))]
pub async fn dead_letters(
    _admin: Admin,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let items = state
        .events
        .dead_letters(500)
        .await
        .map_err(dead_letter_error)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

/// Deliver a parked event to its consumer again.
#[utoipa::path(post, path = "/admin/dead-letters/{id}/redrive", tag = "admin", security(("admin" = [])),
    operation_id = "redriveDeadLetter",
    params(("id" = i64, Path, minimum = 1)), responses((status = 200, body = super::schemas::RedriveBody),
        (status = 404, body = ErrorBody, description = "dead_letter_not_found"),
        (status = 422, body = ErrorBody, description = "unknown_consumer")))]
pub async fn redrive(
    _admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let (letter, delivery) = state
        .events
        .redrive(path.into_inner())
        .await
        .map_err(dead_letter_error)?;
    let outcome = match delivery {
        commerce_events::Delivery::Processed => "processed",
        commerce_events::Delivery::Duplicate => "duplicate",
        commerce_events::Delivery::Parked => "parked_again",
        commerce_events::Delivery::Deferred(_) => "deferred",
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "id": letter.id, "consumer": letter.consumer, "event_id": letter.event_id, "outcome": outcome,
    })))
}

fn dead_letter_error(e: commerce_events::DeadLetterError) -> ApiError {
    match e {
        commerce_events::DeadLetterError::NotFound => {
            ApiError::new(ErrorCode::DeadLetterNotFound, "no such dead letter")
        }
        commerce_events::DeadLetterError::UnknownConsumer(c) => ApiError::new(
            ErrorCode::UnknownConsumer,
            format!("consumer {c} does not run here"),
        ),
        commerce_events::DeadLetterError::Storage(s) => s.into(),
    }
}
