//! The waiting room: enter it (get a token) and poll the token.

use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::ratelimit::Class;
use crate::state::AppState;
use actix_web::http::header::RETRY_AFTER;
use actix_web::{web, HttpResponse};
use commerce_domain::{CouponId, ProductId};
use commerce_queue::{Target, Ticket};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/queue/tokens", web::post().to(enter))
        .route("/api/v1/queue/tokens/{token}", web::get().to(poll));
}

/// Optional body of `POST /api/v1/queue/tokens`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnterRequest {
    /// `store` (default), `coupon:<id>` or `sale:<id>` (a sale is a product on sale).
    #[schema(pattern = r"^(store|coupon:[1-9][0-9]{0,18}|sale:[1-9][0-9]{0,18})$")]
    target: Option<String>,
}

#[derive(Deserialize)]
pub struct TargetQuery {
    target: Option<String>,
}

/// A queue token's state.
#[derive(Serialize, ToSchema)]
pub struct TicketBody {
    token: String,
    #[schema(value_type = super::schemas::TicketStatus)]
    status: &'static str,
    /// 1 = next in line, 0 once active; null while degraded and waiting.
    position: Option<u64>,
    /// Seconds before the next poll (also in `Retry-After`); grows with the
    /// position, up to a minute. Once active: poll (or use a protected
    /// route) within this to keep the token alive.
    retry_after: u64,
    target: String,
    /// Answered by this instance's local limiter because Redis is out: no
    /// global order, and the token is only meaningful to this instance.
    degraded: bool,
}

fn respond(mut res: actix_web::HttpResponseBuilder, t: Ticket) -> HttpResponse {
    res.insert_header((RETRY_AFTER, t.retry_after_secs.to_string()))
        .json(TicketBody {
            token: t.token,
            status: t.status.as_str(),
            position: t.position,
            retry_after: t.retry_after_secs,
            target: t.target.to_string(),
            degraded: t.degraded,
        })
}

/// The room asked for, by body or query (they must agree), else the store.
/// The body is optional: empty, `null`, or an object; anything else is a
/// 422 `invalid_body`.
fn requested_target(query: Option<String>, body: &[u8]) -> Result<Target, ApiError> {
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::new(ErrorCode::MalformedJson, format!("malformed JSON: {e}")))?;
        match value {
            serde_json::Value::Null => None,
            serde_json::Value::Object(_) => {
                // Re-read for a refusal that names the field.
                crate::json::parse::<EnterRequest>(&value.to_string())?.target
            }
            _ => {
                return Err(ApiError::new(
                    ErrorCode::InvalidBody,
                    "invalid body: expected an object or null",
                ))
            }
        }
    };
    let raw = match (from_body, query) {
        (Some(b), Some(q)) if b != q => {
            return Err(ApiError::new(
                ErrorCode::InvalidQueueTarget,
                "target given in both body and query, with different values",
            ))
        }
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => return Ok(Target::Store),
    };
    Target::parse(&raw).map_err(|e| {
        // A well-formed id past i64 names no coupon or sale: not found, as
        // any other id that names nothing.
        let past_i64 = |d: &str| {
            !d.is_empty()
                && d.len() <= 19
                && !d.starts_with('0')
                && d.bytes().all(|b| b.is_ascii_digit())
        };
        match raw.split_once(':') {
            Some(("coupon", d)) if past_i64(d) => {
                ApiError::new(ErrorCode::CouponNotFound, "coupon not found")
            }
            Some(("sale", d)) if past_i64(d) => {
                ApiError::new(ErrorCode::SaleNotFound, "no sale (product) with this id")
            }
            _ => commerce_queue::QueueError::from(e).into(),
        }
    })
}

/// A coupon's or sale's room opens only for a coupon or product (a sale is
/// a product on sale) that exists: made-up ids would use up room slots
/// that real sales need. Both lookups are cached in process.
async fn ensure_exists(state: &AppState, target: Target) -> Result<(), ApiError> {
    match target {
        Target::Store => Ok(()),
        Target::Coupon(id) => {
            let id = CouponId::parse(id)?;
            state
                .coupons
                .get(id)
                .await
                .map(|_| ())
                .map_err(ApiError::from)
        }
        Target::Sale(id) => {
            let id = ProductId::parse(id)?;
            match state.catalog.detail(id).await {
                Ok(_) => Ok(()),
                Err(commerce_catalog::CatalogError::NotFound) => Err(ApiError::new(
                    ErrorCode::SaleNotFound,
                    "no sale (product) with this id",
                )),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Enter a waiting room. The same caller gets the same token back while it
/// is alive: 201 for a new token, 200 for the existing one.
#[utoipa::path(post, path = "/api/v1/queue/tokens", tag = "queue", security(("bearer" = [])),
    operation_id = "enterQueue",
    params(("target" = Option<String>, Query, description = "store (default), coupon:<id> or sale:<id>",
        pattern = r"^(store|coupon:[1-9][0-9]{0,18}|sale:[1-9][0-9]{0,18})$")),
    request_body(content = Option<EnterRequest>, description = "optional (empty or null: the store); `target` as in the query"),
    responses((status = 201, body = TicketBody, description = "new token; Retry-After says when to poll",
            headers(("Retry-After" = u64, description = "seconds before the next poll"))),
        (status = 200, body = TicketBody, description = "the caller's existing token",
            headers(("Retry-After" = u64, description = "seconds before the next poll"))),
        (status = 404, body = ErrorBody, description = "coupon_not_found, sale_not_found"),
        (status = 422, body = ErrorBody, description = "invalid_queue_target"),
        (status = 503, body = ErrorBody, description = "queue_rooms_full")))]
pub async fn enter(
    user: AuthUser,
    state: web::Data<AppState>,
    query: web::Query<TargetQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let target = requested_target(query.into_inner().target, &body)?;
    state.limits.check(Class::Queue, user.0).await?;
    ensure_exists(&state, target).await?;
    if target != Target::Store {
        state.limits.check(Class::Room, user.0).await?;
    }
    let ticket = state.queue.enter(user.0, target).await?;
    let res = if ticket.created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(respond(res, ticket))
}

/// Poll a token (only its owner can; anyone else gets 404). One Redis round
/// trip; it also keeps the token alive.
#[utoipa::path(get, path = "/api/v1/queue/tokens/{token}", tag = "queue", security(("bearer" = [])),
    operation_id = "pollQueueToken",
    params(("token" = String, Path, pattern = r"^(store|coupon-[1-9][0-9]{0,17}|sale-[1-9][0-9]{0,17})\.[0-9a-f]{32}$")),
    responses((status = 200, body = TicketBody, headers(("Retry-After" = u64, description = "seconds before the next poll"))),
        (status = 400, body = ErrorBody, description = "invalid_queue_token"),
        (status = 404, body = ErrorBody, description = "queue_token_not_found: unknown, expired or not yours")))]
pub async fn poll(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let ticket = state.queue.poll(user.0, &path.into_inner()).await?;
    Ok(respond(HttpResponse::Ok(), ticket))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn target_from_body_or_query() {
        assert_eq!(requested_target(None, b"").unwrap(), Target::Store);
        assert_eq!(requested_target(None, b"  \n").unwrap(), Target::Store);
        assert_eq!(requested_target(None, b"{}").unwrap(), Target::Store);
        assert_eq!(
            requested_target(None, br#"{"target":"coupon:4"}"#).unwrap(),
            Target::Coupon(4)
        );
        assert_eq!(
            requested_target(Some("sale:2".into()), b"").unwrap(),
            Target::Sale(2)
        );
        assert_eq!(
            requested_target(Some("sale:2".into()), br#"{"target":"sale:2"}"#).unwrap(),
            Target::Sale(2)
        );
        let e = requested_target(Some("sale:2".into()), br#"{"target":"store"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidQueueTarget);
        assert_eq!(
            requested_target(None, b"{").unwrap_err().code,
            ErrorCode::MalformedJson
        );
        assert_eq!(
            requested_target(None, br#"{"x":1}"#).unwrap_err().code,
            ErrorCode::InvalidBody
        );
        assert_eq!(requested_target(None, b"null").unwrap(), Target::Store);
        assert_eq!(
            requested_target(None, b"[null]").unwrap_err().code,
            ErrorCode::InvalidBody
        );
        let e = requested_target(Some("nope".into()), b"").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidQueueTarget);
    }
}
