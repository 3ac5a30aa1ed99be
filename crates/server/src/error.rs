//! The HTTP layer's one error type: an [`ErrorCode`] (which fixes the
//! status), a message safe to show, and `Retry-After` on every 503. Each
//! lower layer's error maps here to exactly one code per variant.

mod code;

pub use code::ErrorCode;

use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use commerce_accounts::AccountsError;
use commerce_catalog::CatalogError;
use commerce_coupons::CouponError;
use commerce_domain::{ParseCode, ParseError};
use commerce_orders::OrderError;
use commerce_storage::StorageError;
use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<u64>,
    /// Extra fields merged into the body (e.g. a queue position).
    pub details: Option<serde_json::Value>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        // Every 503 says when to retry; `unavailable` sets a longer wait.
        let retry_after = (code.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(1);
        Self {
            code,
            message: message.into(),
            retry_after,
            details: None,
        }
    }
    /// A 503 (or other code) with its `Retry-After` in seconds (at least 1).
    pub fn unavailable(code: ErrorCode, message: impl Into<String>, retry_after: u64) -> Self {
        Self::new(code, message).with_retry_after(retry_after)
    }
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
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
            self.status().as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }
    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status()).json(self.body());
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                res.headers_mut().insert(RETRY_AFTER, v);
            }
        }
        res
    }
}

impl From<ParseCode> for ErrorCode {
    fn from(c: ParseCode) -> Self {
        match c {
            ParseCode::InvalidId => Self::InvalidId,
            ParseCode::InvalidAmount => Self::InvalidAmount,
            ParseCode::InvalidName => Self::InvalidName,
            ParseCode::InvalidIdempotencyKey => Self::InvalidIdempotencyKey,
            ParseCode::InvalidDescription => Self::InvalidDescription,
            ParseCode::InvalidPrice => Self::InvalidPrice,
            ParseCode::InvalidStock => Self::InvalidStock,
            ParseCode::EmptyPatch => Self::EmptyPatch,
            ParseCode::InvalidPage => Self::InvalidPage,
            ParseCode::InvalidSize => Self::InvalidSize,
            // Units sold come from our own events, never from a request:
            // one reaching a client is the server's fault.
            ParseCode::InvalidUnits => Self::Internal,
            ParseCode::InvalidItems => Self::InvalidItems,
            ParseCode::InvalidQuantity => Self::InvalidQuantity,
            ParseCode::DuplicateProduct => Self::DuplicateProduct,
            ParseCode::InvalidDiscount => Self::InvalidDiscount,
            ParseCode::InvalidExpiry => Self::InvalidExpiry,
        }
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        match ErrorCode::from(e.code) {
            ErrorCode::Internal => {
                tracing::error!(code = %e.code, error = %e.message, "internal value refused");
                Self::internal()
            }
            code => Self::new(code, e.message),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::PoolExhausted => {
                Self::unavailable(ErrorCode::DbBusy, "the database is busy, retry shortly", 1)
            }
            StorageError::Timeout => Self::unavailable(
                ErrorCode::DbTimeout,
                "the database took too long, retry shortly",
                1,
            ),
            StorageError::SerializationFailure => {
                Self::unavailable(ErrorCode::DbConflict, "a concurrent change won, retry", 1)
            }
            StorageError::Unavailable(msg) => {
                tracing::warn!(error = %msg, "database unavailable");
                Self::unavailable(ErrorCode::DbUnavailable, "the database is unavailable", 2)
            }
            StorageError::NotFound => Self::new(ErrorCode::NotFound, "not found"),
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
            AccountsError::UserNotFound => Self::new(ErrorCode::UserNotFound, "user not found"),
            AccountsError::BalanceLimit => Self::new(
                ErrorCode::BalanceLimitExceeded,
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
            ErrorCode::UnsupportedMediaType,
            "Content-Type must be application/json",
        ),
        J::OverflowKnownLength { .. } | J::Overflow { .. } => {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body too large")
        }
        J::Deserialize(e) if e.is_data() => {
            ApiError::new(ErrorCode::InvalidBody, format!("invalid body: {e}"))
        }
        J::Deserialize(e) => {
            ApiError::new(ErrorCode::MalformedJson, format!("malformed JSON: {e}"))
        }
        // The body could not be read (cut short, say): 400 as actix
        // answers it elsewhere, not the 422 of a body of the wrong shape.
        other => ApiError::new(ErrorCode::BadRequest, other.to_string()),
    };
    api.into()
}

pub fn path_error(
    err: actix_web::error::PathError,
    req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::new(
        ErrorCode::InvalidPath,
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
    req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::new(
        ErrorCode::InvalidQuery,
        query_message(&err.to_string(), req.query_string()),
    )
    .into()
}

/// The query parameters that are integers (the product list's paging).
const INTEGER_PARAMS: &[&str] = &["page", "size"];

/// Names the integer query parameter that did not parse; other failures
/// keep the parser's words.
fn query_message(err: &str, query: &str) -> String {
    let bad = url::form_urlencoded::parse(query.as_bytes()).find(|(name, value)| {
        INTEGER_PARAMS.contains(&name.as_ref()) && value.parse::<i64>().is_err()
    });
    match bad {
        Some((name, value)) => format!("{name}: expected an integer, got {value:?}"),
        None => format!("invalid query: {err}"),
    }
}

impl From<CouponError> for ApiError {
    fn from(e: CouponError) -> Self {
        match e {
            CouponError::NotFound => Self::new(ErrorCode::CouponNotFound, "coupon not found"),
            CouponError::NotOpen(at) => Self::new(ErrorCode::NotOpen, "the coupon is not open yet")
                .with_details(serde_json::json!({ "opens_at": at })),
            CouponError::Expired => Self::new(ErrorCode::CouponExpired, "the coupon has expired"),
            CouponError::SoldOut => Self::new(ErrorCode::SoldOut, "the coupon is sold out"),
            CouponError::AlreadyIssued => Self::new(
                ErrorCode::AlreadyIssued,
                "the coupon was already issued to you",
            ),
            CouponError::Busy(why) => Self::unavailable(ErrorCode::CouponBusy, why, 1),
            CouponError::Invalid(p) => p.into(),
            CouponError::Storage(s) => s.into(),
        }
    }
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::NotFound => Self::new(ErrorCode::OrderNotFound, "order not found"),
            OrderError::UnknownProduct(p) => Self::new(
                ErrorCode::UnknownProduct,
                format!("product {p} does not exist"),
            ),
            OrderError::OutOfStock(p) => Self::new(
                ErrorCode::OutOfStock,
                format!("not enough stock for product {p}"),
            )
            .with_details(serde_json::json!({ "product_id": p })),
            OrderError::InvalidCoupon(why) => Self::new(ErrorCode::InvalidCoupon, why),
            OrderError::AlreadyPaid => {
                Self::new(ErrorCode::AlreadyPaid, "the order is already paid")
            }
            OrderError::Expired => Self::new(ErrorCode::OrderExpired, "the order has expired"),
            OrderError::Cancelled => {
                Self::new(ErrorCode::OrderCancelled, "the order was cancelled")
            }
            OrderError::InsufficientBalance => {
                Self::new(ErrorCode::InsufficientBalance, "the balance is too low")
            }
            OrderError::CouponAlreadyUsed => {
                Self::new(ErrorCode::CouponAlreadyUsed, "the coupon was already used")
            }
            OrderError::CouponExpired => {
                Self::new(ErrorCode::CouponExpired, "the coupon has expired")
            }
            OrderError::Busy => Self::unavailable(
                ErrorCode::PaymentInProgress,
                "the order is being paid, retry shortly",
                1,
            ),
            OrderError::Degraded => Self::unavailable(
                ErrorCode::OrderBusy,
                "ordering is degraded and busy, retry shortly",
                1,
            ),
            // Settled by the route before it gets here; never the client's fault.
            OrderError::NotClaimed => Self::unavailable(
                ErrorCode::OrderBusy,
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
        let message = e.to_string();
        match e {
            Q::InvalidTarget(_) => Self::new(ErrorCode::InvalidQueueTarget, message),
            Q::InvalidToken => Self::new(ErrorCode::InvalidQueueToken, message),
            Q::TokenNotFound => Self::new(ErrorCode::QueueTokenNotFound, message),
            Q::NotAdmitted {
                target,
                position,
                retry_after_secs,
                degraded,
            } => Self::new(ErrorCode::NotAdmitted, message)
                .with_details(serde_json::json!({
                    "target": target.to_string(),
                    "position": position,
                    "retry_after": retry_after_secs,
                    "degraded": degraded,
                }))
                .with_retry_after(retry_after_secs),
            Q::RoomsFull { retry_after_secs } => {
                Self::unavailable(ErrorCode::QueueRoomsFull, message, retry_after_secs)
            }
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::NotFound => Self::new(ErrorCode::ProductNotFound, "product not found"),
            CatalogError::Busy {
                reason,
                retry_after_secs,
            } => Self::unavailable(ErrorCode::CatalogBusy, reason, retry_after_secs),
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
    let code = ErrorCode::for_status(status);
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
