//! Response documents for the API description where the body is built from
//! another crate's type (or ad hoc): these mirror what is served, field for
//! field, so the description is typed. A test in `openapi.rs` compares them
//! with live answers through schemathesis (CI).

#![allow(dead_code)]

use utoipa::ToSchema;

/// The name pattern: no control characters, at least one visible character.
pub const NAME_PATTERN: &str =
    r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Pending,
    Paid,
    Cancelled,
    Expired,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaidStatus {
    Paid,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IssuedStatus {
    Issued,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserCouponStatus {
    Issued,
    Used,
    Expired,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    Waiting,
    Active,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerName {
    Redis,
    Kafka,
    DataPlatform,
    Notification,
}

#[derive(ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerAction {
    ForceOpen,
    ForceClose,
    Reset,
}

/// One line of an order.
#[derive(ToSchema)]
pub struct OrderItemBody {
    product_id: i64,
    quantity: i32,
    /// The product's price when the order was made (minor units).
    unit_price: i64,
}

/// One of the caller's coupons.
#[derive(ToSchema)]
pub struct MyCouponBody {
    user_coupon_id: i64,
    coupon_id: i64,
    name: String,
    discount_amount: i64,
    status: UserCouponStatus,
    /// The order that used it.
    order_id: Option<i64>,
    issued_at: chrono::DateTime<chrono::Utc>,
    used_at: Option<chrono::DateTime<chrono::Utc>>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A coupon definition.
#[derive(ToSchema)]
pub struct CouponBody {
    id: i64,
    name: String,
    discount_amount: i64,
    quantity: i32,
    opens_at: chrono::DateTime<chrono::Utc>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A coupon's Redis gate.
#[derive(ToSchema)]
pub struct GateStateBody {
    loaded: bool,
    users: i64,
    next_slot: i64,
    free_slots: i64,
}

/// What a reconciliation found and did.
#[derive(ToSchema)]
pub struct ReconcileBody {
    coupon_id: i64,
    issued_in_database: i64,
    gate_before: Option<GateStateBody>,
    gate_after: GateStateBody,
    /// Whether the gate disagreed with PostgreSQL and was rewritten.
    repaired: bool,
}

/// One circuit breaker.
#[derive(ToSchema)]
pub struct BreakerBody {
    name: BreakerName,
    state: BreakerState,
    successes: u64,
    failures: u64,
    rejected: u64,
    open_until: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(ToSchema)]
pub struct BreakersBody {
    breakers: Vec<BreakerBody>,
}

/// An event a consumer parked after its retries.
#[derive(ToSchema)]
pub struct DeadLetterBody {
    id: i64,
    consumer: String,
    event_id: uuid::Uuid,
    event_type: String,
    aggregate_key: String,
    #[schema(value_type = Object)]
    payload: serde_json::Value,
    event_created_at: chrono::DateTime<chrono::Utc>,
    error: String,
    attempts: i32,
    created_at: chrono::DateTime<chrono::Utc>,
    redriven_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(ToSchema)]
pub struct DeadLettersBody {
    items: Vec<DeadLetterBody>,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RedriveOutcome {
    Processed,
    Duplicate,
    ParkedAgain,
    Deferred,
}

#[derive(ToSchema)]
pub struct RedriveBody {
    id: i64,
    consumer: String,
    event_id: uuid::Uuid,
    outcome: RedriveOutcome,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LiveStatus {
    Ok,
}

#[derive(ToSchema)]
pub struct LiveBody {
    status: LiveStatus,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    Ready,
    Degraded,
    Unavailable,
}

/// Readiness with each dependency's state; `degraded` is still ready.
#[derive(ToSchema)]
pub struct ReadyBody {
    status: ReadyStatus,
    /// Per dependency: database, redis, db_pool, breakers, outbox.
    #[schema(value_type = Object)]
    checks: serde_json::Value,
    /// `not_ready` on a 503.
    code: Option<String>,
    message: Option<String>,
}
