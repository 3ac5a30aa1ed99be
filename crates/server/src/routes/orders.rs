//! Orders: create (reserves stock), read, cancel, pay.

use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::idempotency;
use crate::ratelimit::Class;
use crate::state::{AppState, WorkerIo};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use commerce_domain::OrderId;
use commerce_orders::{NewOrder, Order, OrderError, Payment};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/orders", web::post().to(create))
        .route("/api/v1/orders/{id}", web::get().to(get))
        .route("/api/v1/orders/{id}/cancel", web::post().to(cancel))
        .route("/api/v1/orders/{id}/payment", web::post().to(pay));
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemRequest {
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    #[serde(deserialize_with = "crate::json::int")]
    product_id: i64,
    #[schema(minimum = 1, maximum = 100)]
    #[serde(deserialize_with = "crate::json::int")]
    quantity: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    /// 1 to 20 lines, each product at most once (else 422 `duplicate_product`).
    #[schema(min_items = 1, max_items = 20)]
    items: Vec<ItemRequest>,
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    #[serde(default, deserialize_with = "crate::json::opt_int")]
    user_coupon_id: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct OrderBody {
    id: i64,
    #[schema(value_type = super::schemas::OrderStatus)]
    status: String,
    total: i64,
    discount: i64,
    pay_amount: i64,
    user_coupon_id: Option<i64>,
    #[schema(value_type = Vec<super::schemas::OrderItemBody>)]
    items: Vec<commerce_orders::OrderItem>,
    expires_at: chrono::DateTime<chrono::Utc>,
    created_at: chrono::DateTime<chrono::Utc>,
    paid_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<&Order> for OrderBody {
    fn from(o: &Order) -> Self {
        Self {
            id: o.id.get(),
            status: o.status.clone(),
            total: o.total,
            discount: o.discount,
            pay_amount: o.pay_amount,
            user_coupon_id: o.user_coupon_id.map(|c| c.get()),
            items: o.items.clone(),
            expires_at: o.expires_at,
            created_at: o.created_at,
            paid_at: o.paid_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PaymentBody {
    order_id: i64,
    #[schema(value_type = super::schemas::PaidStatus)]
    status: &'static str,
    paid_amount: i64,
    balance: i64,
    paid_at: chrono::DateTime<chrono::Utc>,
}

impl From<&Payment> for PaymentBody {
    fn from(p: &Payment) -> Self {
        Self {
            order_id: p.order_id.get(),
            status: p.status,
            paid_amount: p.paid_amount,
            balance: p.balance,
            paid_at: p.paid_at,
        }
    }
}

fn order_id(raw: i64) -> Result<OrderId, ApiError> {
    crate::telemetry::record_on_request("order_id", raw);
    OrderId::parse(raw).map_err(|_| ApiError::new(ErrorCode::OrderNotFound, "order not found"))
}

/// Create an order: reserves stock until it is paid, cancelled or expires.
#[utoipa::path(post, path = "/api/v1/orders", tag = "orders", security(("bearer" = [])), request_body = CreateOrder,
    params(("Idempotency-Key" = String, Header)), operation_id = "createOrder",
    responses((status = 201, body = OrderBody),
        (status = 403, body = ErrorBody, description = "not_admitted when the waiting room guards ordering (with Retry-After)",
            headers(("Retry-After" = u64, description = "seconds"))),
        (status = 409, body = ErrorBody, description = "out_of_stock"),
        (status = 422, body = ErrorBody, description = "invalid_items, invalid_quantity, duplicate_product, invalid_id, unknown_product, invalid_coupon"),
        (status = 503, body = ErrorBody, description = "order_busy (Redis out and the database path full), db_busy, db_unavailable; with Retry-After")))]
pub async fn create(
    user: AuthUser,
    state: web::Data<AppState>,
    io: web::Data<WorkerIo>,
    req: HttpRequest,
    body: crate::json::Json<CreateOrder>,
) -> Result<HttpResponse, ApiError> {
    io.limits.check(Class::Stock, user.0).await?;
    state
        .queue
        .require_admitted(user.0, commerce_queue::Protected::OrderCreate)
        .await?;
    let items: Vec<(i64, i64)> = body
        .items
        .iter()
        .map(|i| (i.product_id, i.quantity))
        .collect();
    let new = NewOrder::parse(&items, body.user_coupon_id)?;
    let canonical = serde_json::json!({
        "items": new.lines.iter().map(|l| (l.product.get(), l.quantity)).collect::<Vec<_>>(),
        "user_coupon_id": new.user_coupon.map(|c| c.get()),
    });
    // Required, and checked before the gate takes any unit.
    let claim = idempotency::required_claim(&req, user.0, &canonical)?;
    // The stock gate first: a sold-out answer is recorded under the key in
    // a batch of refusals, and nothing else touches the database.
    let hold = match io.orders.hold(&new).await {
        Ok(hold) => hold,
        Err(e) => {
            return idempotency::refuse(&io.refusals, &req, user.0, &canonical, e.into()).await
        }
    };
    // Also stamps the new order's id on the request's log lines (a no-op
    // where a batch writer renders a stored answer, outside the request).
    let present = |o: &Order| {
        crate::telemetry::record_on_request("order_id", o.id.get());
        OrderBody::from(o)
    };
    // The order's batch claims the key with the order in one transaction.
    let answer = idempotency::answer_for(claim, StatusCode::CREATED, present);
    match io.orders.create_claiming(user.0, &new, hold, answer).await {
        Ok(order) => return Ok(HttpResponse::Created().json(present(&order))),
        Err(OrderError::NotClaimed) => {}
        Err(e) => {
            return idempotency::refuse(&io.refusals, &req, user.0, &canonical, e.into()).await
        }
    }
    // The key was used before, or the order could not be batched: the
    // usual way (claim, then write; a used key replays its first answer).
    idempotency::run(
        &state.db,
        &req,
        user.0,
        &canonical,
        StatusCode::CREATED,
        present,
        |save| async { Ok(io.orders.create(user.0, &new, save).await?) },
    )
    .await
}

/// One of the caller's orders (another user's order is 404).
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), operation_id = "getOrder",
    responses((status = 200, body = OrderBody), (status = 404, body = ErrorBody, description = "order_not_found")))]
pub async fn get(
    user: AuthUser,
    io: web::Data<WorkerIo>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let order = io.orders.get(user.0, order_id(path.into_inner())?).await?;
    Ok(HttpResponse::Ok().json(OrderBody::from(&order)))
}

/// Cancel a pending order; its stock is returned.
#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel", tag = "orders", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), operation_id = "cancelOrder",
    responses((status = 200, body = OrderBody), (status = 404, body = ErrorBody, description = "order_not_found"),
        (status = 409, body = ErrorBody, description = "already_paid, order_expired")))]
pub async fn cancel(
    user: AuthUser,
    io: web::Data<WorkerIo>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(path.into_inner())?;
    io.limits.check(Class::Stock, user.0).await?;
    let order = io.orders.cancel(user.0, id).await?;
    Ok(HttpResponse::Ok().json(OrderBody::from(&order)))
}

/// Pay an order from the balance, at most once.
#[utoipa::path(post, path = "/api/v1/orders/{id}/payment", tag = "orders", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1), ("Idempotency-Key" = Option<String>, Header)), operation_id = "payOrder",
    responses((status = 200, body = PaymentBody),
        (status = 409, body = ErrorBody, description = "insufficient_balance, already_paid, order_expired, order_cancelled, coupon_already_used"),
        (status = 410, body = ErrorBody, description = "coupon_expired: the order's coupon expired meanwhile (the order stays pending)"),
        (status = 404, body = ErrorBody, description = "order_not_found")))]
pub async fn pay(
    user: AuthUser,
    state: web::Data<AppState>,
    io: web::Data<WorkerIo>,
    req: HttpRequest,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(path.into_inner())?;
    io.limits.check(Class::Money, user.0).await?;
    let canonical = serde_json::json!({ "order_id": id.get() });
    let present = |p: &Payment| PaymentBody::from(p);
    // The payment's batch claims the key with the payment in one
    // transaction; a key used before, or a payment the batch does not
    // make, goes the usual way (claim, then pay; a used key replays).
    if let Some(claim) = idempotency::claim_of(&req, user.0, &canonical)? {
        let answer = idempotency::answer_for(claim, StatusCode::OK, present);
        match io.orders.pay_claiming(user.0, id, answer).await {
            Ok(payment) => return Ok(HttpResponse::Ok().json(present(&payment))),
            Err(OrderError::NotClaimed) => {}
            Err(e) => return Err(e.into()),
        }
    }
    idempotency::run(
        &state.db,
        &req,
        user.0,
        &canonical,
        StatusCode::OK,
        present,
        |save| async { Ok(io.orders.pay(user.0, id, save).await?) },
    )
    .await
}
