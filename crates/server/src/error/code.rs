//! Every error code the API answers, each with its one HTTP status and what
//! it means, in one table. `ApiError` takes its status from here, the
//! OpenAPI description lists these values, and a test keeps the table in
//! docs/api.md the same as this one.

use actix_web::http::StatusCode;
use std::borrow::Cow;
use std::fmt;

/// Declares [`ErrorCode`] from rows of `Variant => (code, STATUS, description)`.
macro_rules! error_codes {
    ($($variant:ident => ($code:literal, $status:ident, $description:literal),)+) => {
        /// A stable snake_case error code, with one HTTP status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)+
        }

        impl ErrorCode {
            /// Every code, in the table's order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The code as clients see it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)+
                }
            }

            /// The status every answer with this code has.
            pub const fn status(self) -> StatusCode {
                match self {
                    $(Self::$variant => StatusCode::$status,)+
                }
            }

            /// Where it is answered and what it means (for the docs).
            pub const fn description(self) -> &'static str {
                match self {
                    $(Self::$variant => $description,)+
                }
            }
        }
    };
}

// Sorted by code. A code means one thing and has one status: a new meaning
// gets a new code.
error_codes! {
    AlreadyIssued => ("already_issued", CONFLICT, "coupon issue: the coupon was already issued to the caller"),
    AlreadyPaid => ("already_paid", CONFLICT, "payment, cancel: the order is already paid"),
    BadRequest => ("bad_request", BAD_REQUEST, "any route: a request that could not be read (a bad header, a body cut short)"),
    BalanceLimitExceeded => ("balance_limit_exceeded", UNPROCESSABLE_ENTITY, "charge: the balance would exceed its limit"),
    CatalogBusy => ("catalog_busy", SERVICE_UNAVAILABLE, "product page, list, popular: the database is saturated and no copy could be served"),
    CouponAlreadyUsed => ("coupon_already_used", CONFLICT, "payment: the order's coupon was already used"),
    CouponBusy => ("coupon_busy", SERVICE_UNAVAILABLE, "coupon issue: issuing is saturated"),
    CouponExpired => ("coupon_expired", GONE, "coupon issue: past the coupon's `expires_at`; payment: the order's coupon expired meanwhile (the order stays pending)"),
    CouponNotFound => ("coupon_not_found", NOT_FOUND, "coupon issue, reconcile, waiting room (`coupon:<id>`): no such coupon"),
    DbBusy => ("db_busy", SERVICE_UNAVAILABLE, "any route that uses PostgreSQL: no connection was free in time"),
    DbConflict => ("db_conflict", SERVICE_UNAVAILABLE, "any route that uses PostgreSQL: a concurrent change won"),
    DbTimeout => ("db_timeout", SERVICE_UNAVAILABLE, "any route that uses PostgreSQL: it took too long"),
    DbUnavailable => ("db_unavailable", SERVICE_UNAVAILABLE, "any route that uses PostgreSQL: it is unavailable"),
    DeadLetterNotFound => ("dead_letter_not_found", NOT_FOUND, "redrive: no such dead letter"),
    DuplicateProduct => ("duplicate_product", UNPROCESSABLE_ENTITY, "order: the same product twice"),
    EmptyPatch => ("empty_patch", UNPROCESSABLE_ENTITY, "product change: no field to change"),
    HeadersTooLarge => ("headers_too_large", REQUEST_HEADER_FIELDS_TOO_LARGE, "any route: the request's headers are too large"),
    IdempotencyKeyMismatch => ("idempotency_key_mismatch", UNPROCESSABLE_ENTITY, "charge, order, payment: the key was used with a different request"),
    IdempotencyKeyRequired => ("idempotency_key_required", BAD_REQUEST, "charge, order: no Idempotency-Key header"),
    InsufficientBalance => ("insufficient_balance", CONFLICT, "payment: the balance is too low"),
    Internal => ("internal", INTERNAL_SERVER_ERROR, "any: a fault of the server's own"),
    InvalidAdminKey => ("invalid_admin_key", UNAUTHORIZED, "admin routes, token minting: a wrong X-Admin-Key"),
    InvalidAmount => ("invalid_amount", UNPROCESSABLE_ENTITY, "charge: not a positive integer within the limit"),
    InvalidBody => ("invalid_body", UNPROCESSABLE_ENTITY, "any route with a body: JSON of the wrong shape (the message names the field)"),
    InvalidCoupon => ("invalid_coupon", UNPROCESSABLE_ENTITY, "order: the coupon cannot be used (the message says why)"),
    InvalidDescription => ("invalid_description", UNPROCESSABLE_ENTITY, "product create and change"),
    InvalidDiscount => ("invalid_discount", UNPROCESSABLE_ENTITY, "coupon create"),
    InvalidExpiry => ("invalid_expiry", UNPROCESSABLE_ENTITY, "coupon create: `expires_at` not after `opens_at`"),
    InvalidId => ("invalid_id", UNPROCESSABLE_ENTITY, "order, token minting: an id that is not a positive integer"),
    InvalidIdempotencyKey => ("invalid_idempotency_key", BAD_REQUEST, "charge, order, payment: not 1 to 255 visible ASCII characters"),
    InvalidItems => ("invalid_items", UNPROCESSABLE_ENTITY, "order: no items, or too many"),
    InvalidName => ("invalid_name", UNPROCESSABLE_ENTITY, "sign-up, product create and change, coupon create"),
    InvalidPage => ("invalid_page", UNPROCESSABLE_ENTITY, "product list"),
    InvalidPath => ("invalid_path", BAD_REQUEST, "routes with a numeric path parameter: it is not a number"),
    InvalidPrice => ("invalid_price", UNPROCESSABLE_ENTITY, "product create and change"),
    InvalidQuantity => ("invalid_quantity", UNPROCESSABLE_ENTITY, "order (1 to 100), coupon create (1 to 10 000 000)"),
    InvalidQuery => ("invalid_query", BAD_REQUEST, "routes with a query: it does not parse"),
    InvalidQueueTarget => ("invalid_queue_target", UNPROCESSABLE_ENTITY, "waiting room entry: not `store`, `coupon:<id>` or `sale:<id>`, or body and query disagree"),
    InvalidQueueToken => ("invalid_queue_token", BAD_REQUEST, "waiting room poll: not a token this service hands out"),
    InvalidSize => ("invalid_size", UNPROCESSABLE_ENTITY, "product list"),
    InvalidStock => ("invalid_stock", UNPROCESSABLE_ENTITY, "product create and change"),
    InvalidToken => ("invalid_token", UNAUTHORIZED, "bearer routes: a malformed or forged token"),
    MalformedJson => ("malformed_json", BAD_REQUEST, "any route with a body: not JSON"),
    MethodNotAllowed => ("method_not_allowed", METHOD_NOT_ALLOWED, "a known path with another method (see `Allow`)"),
    MissingAdminKey => ("missing_admin_key", UNAUTHORIZED, "admin routes, token minting: no X-Admin-Key"),
    MissingToken => ("missing_token", UNAUTHORIZED, "bearer routes: no Authorization header"),
    NotAdmitted => ("not_admitted", FORBIDDEN, "coupon issue, order (waiting room protection on): no active queue token; with the place in line"),
    NotFound => ("not_found", NOT_FOUND, "no such route"),
    NotOpen => ("not_open", FORBIDDEN, "coupon issue: before the coupon's `opens_at`"),
    NotReady => ("not_ready", SERVICE_UNAVAILABLE, "readiness: PostgreSQL is down"),
    OrderBusy => ("order_busy", SERVICE_UNAVAILABLE, "order: ordering is degraded and busy, or the order could not be written"),
    OrderCancelled => ("order_cancelled", CONFLICT, "payment: the order was cancelled"),
    OrderExpired => ("order_expired", CONFLICT, "payment, cancel: the order's hold expired (its stock was released); order again"),
    OrderNotFound => ("order_not_found", NOT_FOUND, "order read, cancel, payment"),
    OutOfStock => ("out_of_stock", CONFLICT, "order: not enough stock"),
    PayloadTooLarge => ("payload_too_large", PAYLOAD_TOO_LARGE, "any route with a body: over the size limit"),
    PaymentInProgress => ("payment_in_progress", SERVICE_UNAVAILABLE, "payment, cancel: another request is paying the order"),
    ProductNotFound => ("product_not_found", NOT_FOUND, "product page, product change"),
    QueueRoomsFull => ("queue_rooms_full", SERVICE_UNAVAILABLE, "waiting room entry: too many rooms are open"),
    QueueTokenNotFound => ("queue_token_not_found", NOT_FOUND, "waiting room poll: unknown, expired, or another user's token"),
    RateLimited => ("rate_limited", TOO_MANY_REQUESTS, "charge, payment, order, cancel, coupon issue, waiting room entry: over the caller's limit"),
    RequestInProgress => ("request_in_progress", CONFLICT, "charge, order, payment: a request with this Idempotency-Key is still running"),
    RequestTimeout => ("request_timeout", REQUEST_TIMEOUT, "any route: the request did not arrive in time"),
    SaleNotFound => ("sale_not_found", NOT_FOUND, "waiting room (`sale:<id>`): no such product"),
    SoldOut => ("sold_out", CONFLICT, "coupon issue: none left"),
    TokenExpired => ("token_expired", UNAUTHORIZED, "bearer routes: the token's expiry passed"),
    UnknownAction => ("unknown_action", NOT_FOUND, "breaker control: not force-open, force-close or reset"),
    UnknownBreaker => ("unknown_breaker", NOT_FOUND, "breaker control: no breaker of that name"),
    UnknownConsumer => ("unknown_consumer", UNPROCESSABLE_ENTITY, "redrive: its consumer does not run on this instance"),
    UnknownProduct => ("unknown_product", UNPROCESSABLE_ENTITY, "order: a product id that names no product"),
    UnknownUser => ("unknown_user", UNAUTHORIZED, "bearer routes: the token's user does not exist"),
    UnsupportedMediaType => ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "any route with a JSON body: Content-Type is not application/json"),
    UriTooLong => ("uri_too_long", URI_TOO_LONG, "any route: the URI is too long"),
    UserNotFound => ("user_not_found", NOT_FOUND, "token minting: no such user"),
}

impl ErrorCode {
    /// The code for an error answer actix built itself (no code of ours).
    /// A status with no code of its own (none of our routes makes one) is
    /// `bad_request` or `internal`; the answer keeps actix's status.
    pub fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => Self::RequestTimeout,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::URI_TOO_LONG => Self::UriTooLong,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Self::HeadersTooLarge,
            s if s.is_server_error() => Self::Internal,
            _ => Self::BadRequest,
        }
    }

    /// The docs' table of codes (docs/api.md, "Error codes").
    pub fn markdown_table() -> String {
        let mut out = String::from("| code | status | where, and what it means |\n|---|---|---|\n");
        for code in Self::ALL {
            out.push_str(&format!(
                "| `{}` | {} | {} |\n",
                code.as_str(),
                code.status().as_u16(),
                code.description()
            ));
        }
        out
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A string enum of every code, so the description's `ErrorBody.code`
/// lists exactly what the server can answer.
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let table: Vec<String> = Self::ALL
            .iter()
            .map(|c| format!("- `{c}` ({}): {}", c.status().as_u16(), c.description()))
            .collect();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Self::ALL.iter().map(|c| c.as_str())))
            .description(Some(format!(
                "Stable snake_case error code; each has one HTTP status.\n\n{}",
                table.join("\n")
            )))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorCode")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_code_is_distinct_snake_case_and_an_error_status() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                !s.is_empty()
                    && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    && !s.starts_with('_')
                    && !s.ends_with('_'),
                "{s} is not snake_case"
            );
            let status = code.status();
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{s}: {status}"
            );
            assert!(!code.description().is_empty(), "{s}: no description");
        }
        // The table is sorted, so a new code has one place to go.
        let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        assert_eq!(codes, sorted);
    }

    #[test]
    fn the_renamed_codes_and_their_statuses() {
        let pairs: Vec<(&str, u16)> = [
            ErrorCode::CouponExpired,
            ErrorCode::OrderExpired,
            ErrorCode::BadRequest,
            ErrorCode::InvalidBody,
            ErrorCode::RequestInProgress,
            ErrorCode::NotReady,
        ]
        .iter()
        .map(|c| (c.as_str(), c.status().as_u16()))
        .collect();
        assert_eq!(
            pairs,
            [
                ("coupon_expired", 410),
                ("order_expired", 409),
                ("bad_request", 400),
                ("invalid_body", 422),
                ("request_in_progress", 409),
                ("not_ready", 503),
            ]
        );
        assert!(ErrorCode::ALL.iter().all(|c| c.as_str() != "expired"));
    }

    #[test]
    fn serializes_as_its_string() {
        assert_eq!(
            serde_json::to_value(ErrorCode::OrderExpired).ok(),
            Some(serde_json::json!("order_expired"))
        );
    }

    #[test]
    fn actix_statuses_map_to_codes_of_that_status() {
        for status in [400, 404, 405, 408, 413, 414, 415, 431, 500] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(ErrorCode::for_status(status).status(), status);
        }
    }

    /// docs/api.md's table of codes is this enum's: regenerate it from the
    /// failure message when a code changes.
    #[test]
    fn the_docs_list_the_same_codes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md");
        let docs = std::fs::read_to_string(path).unwrap_or_default();
        let expected = ErrorCode::markdown_table();
        let start = docs
            .find("| code | status | where, and what it means |")
            .unwrap_or(docs.len());
        let table: String = docs[start..]
            .lines()
            .take_while(|l| l.starts_with('|'))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(
            table == expected,
            "docs/api.md's error code table differs from ErrorCode; replace it with:\n\n{expected}"
        );
    }
}
