//! First-come coupon issuing and the caller's coupons.

use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::ratelimit::Class;
use crate::state::{AppState, WorkerIo};
use actix_web::{web, HttpResponse};
use commerce_domain::CouponId;
use serde::Serialize;
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/coupons/{id}/issue", web::post().to(issue))
        .route("/api/v1/me/coupons", web::get().to(mine));
}

#[derive(Serialize, ToSchema)]
pub struct IssuedBody {
    user_coupon_id: i64,
    coupon_id: i64,
    user_id: i64,
    #[schema(value_type = super::schemas::IssuedStatus)]
    status: &'static str,
    discount_amount: i64,
    issued_at: chrono::DateTime<chrono::Utc>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Issue a first-come coupon to the caller.
#[utoipa::path(post, path = "/api/v1/coupons/{id}/issue", tag = "coupons", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), operation_id = "issueCoupon",
    responses((status = 201, body = IssuedBody),
        (status = 403, body = ErrorBody, description = "not_open (with opens_at); not_admitted when the waiting room guards issuing (with Retry-After)",
            headers(("Retry-After" = u64, description = "seconds, on not_admitted"))),
        (status = 404, body = ErrorBody, description = "coupon_not_found"), (status = 409, body = ErrorBody, description = "sold_out or already_issued"),
        (status = 410, body = ErrorBody, description = "coupon_expired"), (status = 503, body = ErrorBody)))]
pub async fn issue(
    user: AuthUser,
    state: web::Data<AppState>,
    io: web::Data<WorkerIo>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = CouponId::parse(path.into_inner())
        .map_err(|_| ApiError::new(ErrorCode::CouponNotFound, "coupon not found"))?;
    io.limits.check(Class::Stock, user.0).await?;
    state
        .queue
        .require_admitted(user.0, commerce_queue::Protected::CouponIssue(id))
        .await?;
    let issued = io.coupons.issue(id, user.0).await?;
    Ok(HttpResponse::Created().json(IssuedBody {
        user_coupon_id: issued.user_coupon_id.get(),
        coupon_id: issued.coupon_id.get(),
        user_id: issued.user_id.get(),
        status: "issued",
        discount_amount: issued.discount_amount,
        issued_at: issued.issued_at,
        expires_at: issued.expires_at,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct MyCouponsBody {
    #[schema(value_type = Vec<super::schemas::MyCouponBody>)]
    items: Vec<commerce_coupons::MyCoupon>,
}

/// The caller's coupons, newest first.
#[utoipa::path(get, path = "/api/v1/me/coupons", tag = "coupons", security(("bearer" = [])),
    operation_id = "myCoupons", responses((status = 200, body = MyCouponsBody)))]
pub async fn mine(user: AuthUser, io: web::Data<WorkerIo>) -> Result<HttpResponse, ApiError> {
    let items = io.coupons.mine(user.0).await?;
    Ok(HttpResponse::Ok().json(MyCouponsBody { items }))
}
