//! The HTTP layer's one error type: a status, a stable snake_case `code`, a
//! message safe to show, and `Retry-After` on every 503.

use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use commerce_accounts::AccountsError;
use commerce_catalog::CatalogError;
use commerce_coupons::CouponError;
use commerce_domain::ParseError;
use commerce_orders::OrderError;
use commerce_storage::StorageError;
use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
    /// Extra fields merged into the body (e.g. a queue position).
    pub details: Option<serde_json::Value>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable snake_case error code.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
        e.retry_after = Some(retry_after.max(1));
        e
    }
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({ "code": self.code, "message": self.message });
        if let (Some(serde_json::Value::Object(extra)), serde_json::Value::Object(map)) =
            (&self.details, &mut body)
        {
            for (k, v) in extra {
                map.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        body
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status).json(self.body());
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                res.headers_mut().insert(RETRY_AFTER, v);
            }
        }
        res
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        Self::unprocessable(e.code, e.message)
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::PoolExhausted => {
                Self::unavailable("db_busy", "the database is busy, retry shortly", 1)
            }
            StorageError::Timeout => {
                Self::unavailable("db_timeout", "the database took too long, retry shortly", 1)
            }
            StorageError::SerializationFailure => {
                Self::unavailable("db_conflict", "a concurrent change won, retry", 1)
            }
            StorageError::Unavailable(msg) => {
                tracing::warn!(error = %msg, "database unavailable");
                Self::unavailable("db_unavailable", "the database is unavailable", 2)
            }
            StorageError::NotFound => Self::not_found("not_found", "not found"),
            other => {
                tracing::error!(error = %other, "storage error");
                Self::internal()
            }
        }
    }
}

impl From<AccountsError> for ApiError {
    fn from(e: AccountsError) -> Self {
        match e {
            AccountsError::UserNotFound => Self::not_found("user_not_found", "user not found"),
            AccountsError::BalanceLimit => Self::unprocessable(
                "balance_limit_exceeded",
                "the balance would exceed its limit",
            ),
            AccountsError::Storage(s) => s.into(),
        }
    }
}

/// JSON body, path and query extractor failures as 4xx JSON errors.
pub fn json_error(
    err: actix_web::error::JsonPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    let api = match &err {
        J::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json",
        ),
        J::OverflowKnownLength { .. } | J::Overflow { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body too large",
        ),
        J::Deserialize(e) if e.is_data() => {
            ApiError::unprocessable("invalid_body", format!("invalid body: {e}"))
        }
        J::Deserialize(e) => {
            ApiError::bad_request("malformed_json", format!("malformed JSON: {e}"))
        }
        other => ApiError::bad_request("invalid_body", other.to_string()),
    };
    api.into()
}

pub fn path_error(
    err: actix_web::error::PathError,
    req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::bad_request(
        "invalid_path",
        path_message(&err.to_string(), req.match_info()),
    )
    .into()
}

/// Names the path segment that did not parse: the extracted path
/// parameters are all ids (string segments cannot fail to extract).
fn path_message(err: &str, segments: &actix_web::dev::Path<actix_web::dev::Url>) -> String {
    segments
        .iter()
        .find(|(_, value)| value.parse::<i64>().is_err())
        .map_or_else(
            || format!("invalid path parameter: {err}"),
            |(name, value)| format!("{name}: expected a positive integer, got {value:?}"),
        )
}

pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::bad_request("invalid_query", format!("invalid query: {err}")).into()
}

impl From<CouponError> for ApiError {
    fn from(e: CouponError) -> Self {
        match e {
            CouponError::NotFound => Self::not_found("coupon_not_found", "coupon not found"),
            CouponError::NotOpen(at) => Self::new(
                StatusCode::FORBIDDEN,
                "not_open",
                "the coupon is not open yet",
            )
            .with_details(serde_json::json!({ "opens_at": at })),
            CouponError::Expired => {
                Self::new(StatusCode::GONE, "expired", "the coupon has expired")
            }
            CouponError::SoldOut => Self::conflict("sold_out", "the coupon is sold out"),
            CouponError::AlreadyIssued => {
                Self::conflict("already_issued", "the coupon was already issued to you")
            }
            CouponError::Busy(why) => Self::unavailable("coupon_busy", why, 1),
            CouponError::Invalid(p) => p.into(),
            CouponError::Storage(s) => s.into(),
        }
    }
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::NotFound => Self::not_found("order_not_found", "order not found"),
            OrderError::UnknownProduct(p) => {
                Self::unprocessable("unknown_product", format!("product {p} does not exist"))
            }
            OrderError::OutOfStock(p) => {
                Self::conflict("out_of_stock", format!("not enough stock for product {p}"))
                    .with_details(serde_json::json!({ "product_id": p }))
            }
            OrderError::InvalidCoupon(why) => Self::unprocessable("invalid_coupon", why),
            OrderError::AlreadyPaid => Self::conflict("already_paid", "the order is already paid"),
            OrderError::Expired => Self::conflict("expired", "the order has expired"),
            OrderError::Cancelled => Self::conflict("order_cancelled", "the order was cancelled"),
            OrderError::InsufficientBalance => {
                Self::conflict("insufficient_balance", "the balance is too low")
            }
            OrderError::CouponAlreadyUsed => {
                Self::conflict("coupon_already_used", "the coupon was already used")
            }
            OrderError::CouponExpired => Self::conflict("coupon_expired", "the coupon has expired"),
            OrderError::Busy => Self::unavailable(
                "payment_in_progress",
                "the order is being paid, retry shortly",
                1,
            ),
            OrderError::Degraded => Self::unavailable(
                "order_busy",
                "ordering is degraded and busy, retry shortly",
                1,
            ),
            // Settled by the route before it gets here; never the client's fault.
            OrderError::NotClaimed => Self::unavailable(
                "order_busy",
                "the order could not be written, retry shortly",
                1,
            ),
            OrderError::Invalid(p) => p.into(),
            OrderError::Storage(s) => s.into(),
        }
    }
}

impl From<commerce_queue::QueueError> for ApiError {
    /// `not_admitted` is a 403 carrying the caller's place in line and a
    /// `Retry-After`, so clients wait instead of hammering the route.
    fn from(e: commerce_queue::QueueError) -> Self {
        use commerce_queue::QueueError as Q;
        let (code, message) = (e.code(), e.to_string());
        match e {
            Q::InvalidTarget(_) => Self::unprocessable(code, message),
            Q::InvalidToken => Self::bad_request(code, message),
            Q::TokenNotFound => Self::not_found(code, message),
            Q::NotAdmitted {
                target,
                position,
                retry_after_secs,
                degraded,
            } => {
                let mut api = Self::new(StatusCode::FORBIDDEN, code, message).with_details(
                    serde_json::json!({
                        "target": target.to_string(),
                        "position": position,
                        "retry_after": retry_after_secs,
                        "degraded": degraded,
                    }),
                );
                api.retry_after = Some(retry_after_secs.max(1));
                api
            }
            Q::RoomsFull { retry_after_secs } => Self::unavailable(code, message, retry_after_secs),
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::NotFound => Self::not_found("product_not_found", "product not found"),
            CatalogError::Busy {
                reason,
                retry_after_secs,
            } => Self::unavailable("catalog_busy", reason, retry_after_secs),
            CatalogError::Invalid(p) => p.into(),
            CatalogError::Storage(s) => s.into(),
        }
    }
}

/// Gives every error answer a JSON body with a stable code, also those that
/// actix builds itself (a body over the limit on a raw-bytes route, a bad
/// header, …). Headers such as `Allow` and `Retry-After` are kept.
pub async fn json_errors(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<
    actix_web::dev::ServiceResponse<
        actix_web::body::EitherBody<impl actix_web::body::MessageBody, actix_web::body::BoxBody>,
    >,
    actix_web::Error,
> {
    use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
    let res = next.call(req).await?;
    let status = res.status();
    let is_json = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return Ok(res.map_into_left_body());
    }
    let code = match status.as_u16() {
        400 => "bad_request",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        431 => "headers_too_large",
        s if s >= 500 => "internal",
        _ => "bad_request",
    };
    let message = status.canonical_reason().unwrap_or("error").to_lowercase();
    let (req, old) = res.into_parts();
    let mut new =
        HttpResponse::build(status).json(serde_json::json!({ "code": code, "message": message }));
    for (name, value) in old.headers() {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH {
            new.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(actix_web::dev::ServiceResponse::new(req, new).map_into_right_body())
}
