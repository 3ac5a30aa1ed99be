//! Orders and payment. Stock is reserved with conditional updates (never
//! below zero, returned exactly once on cancel or expiry); an order is paid
//! at most once: under the order's distributed lock, in one transaction whose
//! every step is guarded, so a stale lock holder or a racing instance can only
//! fail, never pay twice.

use chrono::{DateTime, Utc};
use commerce_domain::{OrderId, ParseError, ProductId, UserCouponId, UserId};
use commerce_resilience::LockManager;
use commerce_storage::idempotency::SaveAnswer;
use commerce_storage::outbox::{self, event};
use commerce_storage::schema::{
    balance_ledger, coupons, order_items, orders, payments, products, user_coupons, users,
};
use commerce_storage::{conn, DbPool, StorageError};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use std::collections::HashSet;
use std::time::Duration;

pub const MAX_ITEMS: usize = 20;
pub const MAX_QUANTITY: i64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("order not found")]
    NotFound,
    #[error("product {0} does not exist")]
    UnknownProduct(ProductId),
    #[error("not enough stock for product {0}")]
    OutOfStock(ProductId),
    #[error("coupon cannot be used: {0}")]
    InvalidCoupon(&'static str),
    #[error("order already paid")]
    AlreadyPaid,
    #[error("order expired")]
    Expired,
    #[error("order cancelled")]
    Cancelled,
    #[error("insufficient balance")]
    InsufficientBalance,
    #[error("coupon already used")]
    CouponAlreadyUsed,
    #[error("coupon expired")]
    CouponExpired,
    #[error("the order is being paid by another request")]
    Busy,
    #[error(transparent)]
    Invalid(#[from] ParseError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<diesel::result::Error> for OrderError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Storage(e.into())
    }
}

/// A validated order line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub product: ProductId,
    pub quantity: i32,
}

/// Validated order request: 1..=MAX_ITEMS distinct products, quantities
/// 1..=MAX_QUANTITY. Lines are sorted by product so concurrent orders touch
/// product rows in one order (no deadlocks between multi-item orders).
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub lines: Vec<Line>,
    pub user_coupon: Option<UserCouponId>,
}

impl NewOrder {
    pub fn parse(items: &[(i64, i64)], user_coupon: Option<i64>) -> Result<Self, ParseError> {
        if items.is_empty() {
            return Err(ParseError::new("invalid_items", "items must not be empty"));
        }
        if items.len() > MAX_ITEMS {
            return Err(ParseError::new(
                "invalid_items",
                format!("at most {MAX_ITEMS} items"),
            ));
        }
        let mut seen = HashSet::new();
        let mut lines = Vec::with_capacity(items.len());
        for &(product, quantity) in items {
            let product = ProductId::parse(product)?;
            if !(1..=MAX_QUANTITY).contains(&quantity) {
                return Err(ParseError::new(
                    "invalid_quantity",
                    format!("quantity must be between 1 and {MAX_QUANTITY}"),
                ));
            }
            if !seen.insert(product) {
                return Err(ParseError::new(
                    "duplicate_product",
                    "each product may appear once",
                ));
            }
            lines.push(Line {
                product,
                quantity: i32::try_from(quantity)
                    .map_err(|_| ParseError::new("invalid_quantity", "too large"))?,
            });
        }
        lines.sort_by_key(|l| l.product);
        let user_coupon = user_coupon.map(UserCouponId::parse).transpose()?;
        Ok(Self { lines, user_coupon })
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OrderItem {
    pub product_id: ProductId,
    pub quantity: i32,
    pub unit_price: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    pub status: String,
    pub total: i64,
    pub discount: i64,
    pub pay_amount: i64,
    pub user_coupon_id: Option<UserCouponId>,
    pub items: Vec<OrderItem>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Payment {
    pub order_id: OrderId,
    pub status: &'static str,
    pub paid_amount: i64,
    pub balance: i64,
    pub paid_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct OrderConfig {
    /// How long a pending order holds its stock.
    pub ttl: Duration,
    /// Lease of the payment lock (longer than a payment transaction).
    pub pay_lock_ttl: Duration,
    /// How long a payment waits for a concurrent payment of the same order.
    pub pay_lock_wait: Duration,
}

impl Default for OrderConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            pay_lock_ttl: Duration::from_secs(10),
            pay_lock_wait: Duration::from_secs(3),
        }
    }
}

#[derive(Clone)]
pub struct Orders {
    db: DbPool,
    locks: LockManager,
    config: OrderConfig,
}

type OrderRow = (
    i64,
    i64,
    String,
    i64,
    i64,
    i64,
    Option<i64>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

const ORDER_COLUMNS: (
    orders::id,
    orders::user_id,
    orders::status,
    orders::total,
    orders::discount,
    orders::pay_amount,
    orders::user_coupon_id,
    orders::expires_at,
    orders::created_at,
    orders::paid_at,
) = (
    orders::id,
    orders::user_id,
    orders::status,
    orders::total,
    orders::discount,
    orders::pay_amount,
    orders::user_coupon_id,
    orders::expires_at,
    orders::created_at,
    orders::paid_at,
);

fn to_order(r: OrderRow, items: Vec<OrderItem>) -> Order {
    Order {
        id: OrderId::from_db(r.0),
        user_id: UserId::from_db(r.1),
        status: r.2,
        total: r.3,
        discount: r.4,
        pay_amount: r.5,
        user_coupon_id: r.6.map(UserCouponId::from_db),
        expires_at: r.7,
        created_at: r.8,
        paid_at: r.9,
        items,
    }
}

/// Takes a shared reference, so it can be pipelined.
async fn load_items(c: &AsyncPgConnection, order: i64) -> Result<Vec<OrderItem>, OrderError> {
    let rows: Vec<(i64, i32, i64)> = order_items::table
        .filter(order_items::order_id.eq(order))
        .select((
            order_items::product_id,
            order_items::quantity,
            order_items::unit_price,
        ))
        .order(order_items::product_id)
        .load(&mut &*c)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(p, q, u)| OrderItem {
            product_id: ProductId::from_db(p),
            quantity: q,
            unit_price: u,
        })
        .collect())
}

/// Returns the stock of `order`'s items. Callers have just moved the order
/// out of `pending` in the same transaction, which makes this exactly once.
async fn return_stock(c: &mut AsyncPgConnection, order_ids: &[i64]) -> Result<(), OrderError> {
    diesel::sql_query(
        "UPDATE products p SET stock = p.stock + s.q, updated_at = now() \
         FROM (SELECT product_id, SUM(quantity)::int AS q FROM order_items \
               WHERE order_id = ANY($1) GROUP BY product_id) s \
         WHERE p.id = s.product_id",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::BigInt>, _>(order_ids)
    .execute(c)
    .await?;
    Ok(())
}

impl Orders {
    pub fn new(db: DbPool, locks: LockManager, config: OrderConfig) -> Self {
        Self { db, locks, config }
    }

    /// Reserves stock and creates a pending order. Not enough stock for any
    /// line: nothing is reserved.
    pub async fn create(
        &self,
        user: UserId,
        new: &NewOrder,
        answer: Option<SaveAnswer<Order>>,
    ) -> Result<Order, OrderError> {
        let mut c = conn(&self.db).await?;
        let ttl =
            chrono::Duration::from_std(self.config.ttl).unwrap_or(chrono::Duration::minutes(5));
        let result = c
            .transaction(async |tx| {
                let mut items = Vec::with_capacity(new.lines.len());
                let mut total: i64 = 0;
                for line in &new.lines {
                    // The conditional update is the reservation and the guard.
                    let price: Option<i64> = diesel::update(
                        products::table
                            .filter(products::id.eq(line.product.get()))
                            .filter(products::stock.ge(line.quantity)),
                    )
                    .set((
                        products::stock.eq(products::stock - line.quantity),
                        products::updated_at.eq(diesel::dsl::now),
                    ))
                    .returning(products::price)
                    .get_result(tx)
                    .await
                    .optional()?;
                    let Some(price) = price else {
                        let exists: Option<i64> = products::table
                            .find(line.product.get())
                            .select(products::id)
                            .first(tx)
                            .await
                            .optional()?;
                        return Err(match exists {
                            Some(_) => OrderError::OutOfStock(line.product),
                            None => OrderError::UnknownProduct(line.product),
                        });
                    };
                    total = total.saturating_add(price.saturating_mul(i64::from(line.quantity)));
                    items.push(OrderItem {
                        product_id: line.product,
                        quantity: line.quantity,
                        unit_price: price,
                    });
                }
                let discount = match new.user_coupon {
                    Some(uc) => coupon_discount(tx, user, uc).await?.min(total),
                    None => 0,
                };
                let row: OrderRow = diesel::insert_into(orders::table)
                    .values((
                        orders::user_id.eq(user.get()),
                        orders::total.eq(total),
                        orders::discount.eq(discount),
                        orders::pay_amount.eq(total - discount),
                        orders::user_coupon_id.eq(new.user_coupon.map(UserCouponId::get)),
                        orders::expires_at.eq(Utc::now() + ttl),
                    ))
                    .returning(ORDER_COLUMNS)
                    .get_result(tx)
                    .await?;
                let rows: Vec<_> = items
                    .iter()
                    .map(|i| {
                        (
                            order_items::order_id.eq(row.0),
                            order_items::product_id.eq(i.product_id.get()),
                            order_items::quantity.eq(i.quantity),
                            order_items::unit_price.eq(i.unit_price),
                        )
                    })
                    .collect();
                diesel::insert_into(order_items::table)
                    .values(&rows)
                    .execute(tx)
                    .await?;
                let order = to_order(row, items);
                if let Some(answer) = answer {
                    answer.save(tx, &order).await?;
                }
                Ok(order)
            })
            .await;
        let outcome = match &result {
            Ok(_) => "created",
            Err(OrderError::OutOfStock(_)) => "out_of_stock",
            Err(_) => "refused",
        };
        metrics::counter!("orders_created_total", "outcome" => outcome).increment(1);
        result
    }

    /// The caller's order (another user's order is "not found").
    pub async fn get(&self, user: UserId, id: OrderId) -> Result<Order, OrderError> {
        let mut c = conn(&self.db).await?;
        let row: OrderRow = orders::table
            .filter(orders::id.eq(id.get()))
            .filter(orders::user_id.eq(user.get()))
            .select(ORDER_COLUMNS)
            .first(&mut c)
            .await
            .optional()?
            .ok_or(OrderError::NotFound)?;
        let items = load_items(&c, row.0).await?;
        Ok(to_order(row, items))
    }

    /// Cancels a pending order and returns its stock. Cancelling a cancelled
    /// order answers its current state.
    pub async fn cancel(&self, user: UserId, id: OrderId) -> Result<Order, OrderError> {
        let mut c = conn(&self.db).await?;
        let moved = c
            .transaction(async |tx| {
                let done: Option<i64> = diesel::update(
                    orders::table
                        .filter(orders::id.eq(id.get()))
                        .filter(orders::user_id.eq(user.get()))
                        .filter(orders::status.eq("pending")),
                )
                .set((
                    orders::status.eq("cancelled"),
                    orders::closed_at.eq(diesel::dsl::now),
                ))
                .returning(orders::id)
                .get_result(tx)
                .await
                .optional()?;
                if let Some(order) = done {
                    return_stock(tx, &[order]).await?;
                    outbox::enqueue(
                        tx,
                        event::ORDER_CANCELLED,
                        &order.to_string(),
                        &serde_json::json!({ "order_id": order, "user_id": user }),
                    )
                    .await?;
                }
                Ok::<_, OrderError>(done.is_some())
            })
            .await?;
        drop(c);
        let order = self.get(user, id).await?;
        match order.status.as_str() {
            "cancelled" => Ok(order),
            "paid" => Err(OrderError::AlreadyPaid),
            "expired" => Err(OrderError::Expired),
            _ if !moved => Err(OrderError::Busy),
            _ => Ok(order),
        }
    }

    /// Pays an order from the balance, at most once.
    pub async fn pay(
        &self,
        user: UserId,
        id: OrderId,
        answer: Option<SaveAnswer<Payment>>,
    ) -> Result<Payment, OrderError> {
        let lock = self
            .locks
            .acquire(
                &format!("order-pay:{id}"),
                self.config.pay_lock_ttl,
                self.config.pay_lock_wait,
            )
            .await
            .map_err(|e| match e {
                commerce_resilience::LockError::Busy { .. } => OrderError::Busy,
                other => OrderError::Storage(StorageError::Unavailable(other.to_string())),
            })?;
        let result = self.pay_locked(user, id, answer).await;
        if let Err(e) = lock.release().await {
            tracing::debug!(order = %id, error = %e, "payment lock release failed (lease will expire)");
        }
        let outcome = match &result {
            Ok(_) => "paid",
            Err(OrderError::AlreadyPaid) => "already_paid",
            Err(OrderError::InsufficientBalance) => "insufficient_balance",
            Err(OrderError::Expired) => "expired",
            Err(_) => "refused",
        };
        metrics::counter!("payments_total", "outcome" => outcome).increment(1);
        if matches!(result, Err(OrderError::Expired)) {
            // Return the stock now rather than at the next sweep.
            let _ = self.expire_one(id).await;
        }
        result
    }

    async fn pay_locked(
        &self,
        user: UserId,
        id: OrderId,
        answer: Option<SaveAnswer<Payment>>,
    ) -> Result<Payment, OrderError> {
        let mut c = conn(&self.db).await?;
        c.transaction(async |tx| {
            // 1. pending -> paid, guarded on owner, status and expiry.
            let moved: Option<(i64, Option<i64>, DateTime<Utc>)> = diesel::update(
                orders::table
                    .filter(orders::id.eq(id.get()))
                    .filter(orders::user_id.eq(user.get()))
                    .filter(orders::status.eq("pending"))
                    .filter(orders::expires_at.gt(diesel::dsl::now)),
            )
            .set((
                orders::status.eq("paid"),
                orders::paid_at.eq(diesel::dsl::now),
            ))
            .returning((
                orders::pay_amount,
                orders::user_coupon_id,
                orders::created_at,
            ))
            .get_result(tx)
            .await
            .optional()?;
            let Some((amount, user_coupon, _)) = moved else {
                return Err(why_not_payable(tx, user, id).await?);
            };
            // Once the order is claimed, what is left goes in two round trips
            // of pipelined statements (PostgreSQL runs them in order, and a
            // failed one aborts the rest of the transaction): a payment
            // holds its connection and its rows for a few round trips, not
            // nine, which is what a payment peak queues on.
            // 2. Debit (guarded: never below zero), the payment row (UNIQUE
            //    per order, the last guard of rule 4) and the event's items.
            let (balance, paid_at, items) = {
                let db: &AsyncPgConnection = tx;
                let debit = async {
                    if amount > 0 {
                        diesel::update(
                            users::table
                                .filter(users::id.eq(user.get()))
                                .filter(users::balance.ge(amount)),
                        )
                        .set((
                            users::balance.eq(users::balance - amount),
                            users::updated_at.eq(diesel::dsl::now),
                        ))
                        .returning(users::balance)
                        .get_result::<i64>(&mut &*db)
                        .await
                        .optional()
                    } else {
                        users::table
                            .find(user.get())
                            .select(users::balance)
                            .first::<i64>(&mut &*db)
                            .await
                            .map(Some)
                    }
                };
                let payment_row = diesel::insert_into(payments::table)
                    .values((
                        payments::order_id.eq(id.get()),
                        payments::user_id.eq(user.get()),
                        payments::amount.eq(amount),
                    ))
                    .returning(payments::created_at)
                    .get_result::<DateTime<Utc>>(&mut &*db);
                let (balance, paid_at, items) =
                    futures::join!(debit, payment_row, load_items(db, id.get()));
                // In statement order: the first failure is the cause.
                let balance = balance?.ok_or(OrderError::InsufficientBalance)?;
                let paid_at = paid_at.map_err(|e| match StorageError::from(e) {
                    StorageError::UniqueViolation(_) => OrderError::AlreadyPaid,
                    other => OrderError::Storage(other),
                })?;
                (balance, paid_at, items?)
            };
            // The coupon, guarded: unused, the caller's, not expired.
            if let Some(uc) = user_coupon {
                let used: Option<i64> = diesel::update(
                    user_coupons::table
                        .filter(user_coupons::id.eq(uc))
                        .filter(user_coupons::user_id.eq(user.get()))
                        .filter(user_coupons::status.eq("issued")),
                )
                .set((
                    user_coupons::status.eq("used"),
                    user_coupons::order_id.eq(id.get()),
                    user_coupons::used_at.eq(diesel::dsl::now),
                ))
                .returning(user_coupons::coupon_id)
                .get_result(tx)
                .await
                .optional()?;
                let coupon = used.ok_or(OrderError::CouponAlreadyUsed)?;
                let expires: Option<DateTime<Utc>> = coupons::table
                    .find(coupon)
                    .select(coupons::expires_at)
                    .first(tx)
                    .await?;
                if expires.is_some_and(|e| e <= Utc::now()) {
                    return Err(OrderError::CouponExpired);
                }
            }
            let db: &AsyncPgConnection = tx;
            // 3. The ledger row, the event (outbox) and the stored answer.
            let payment = Payment {
                order_id: id,
                status: "paid",
                paid_amount: amount,
                balance,
                paid_at,
            };
            let reference = format!("order:{id}");
            let ledger = async {
                if amount > 0 {
                    diesel::insert_into(balance_ledger::table)
                        .values((
                            balance_ledger::user_id.eq(user.get()),
                            balance_ledger::delta.eq(-amount),
                            balance_ledger::balance_after.eq(balance),
                            balance_ledger::kind.eq("payment"),
                            balance_ledger::reference.eq(&reference),
                        ))
                        .execute(&mut &*db)
                        .await?;
                }
                Ok::<_, diesel::result::Error>(())
            };
            let payload = serde_json::json!({
                "order_id": id, "user_id": user, "amount": amount, "paid_at": paid_at,
                "items": items,
            });
            let key = id.to_string();
            let event = outbox::enqueue(db, event::ORDER_PAID, &key, &payload);
            let saved = async {
                match answer {
                    Some(answer) => answer.save(db, &payment).await,
                    None => Ok(()),
                }
            };
            let (ledger, event, saved) = futures::join!(ledger, event, saved);
            ledger?;
            event?;
            saved?;
            Ok(payment)
        })
        .await
    }

    /// Expires one overdue pending order (if it still is one).
    async fn expire_one(&self, id: OrderId) -> Result<usize, OrderError> {
        self.expire_where(Some(id), 1).await
    }

    /// Expires up to `limit` overdue pending orders and returns their stock,
    /// exactly once: only the transaction that moves an order out of
    /// `pending` returns its stock, so concurrent sweepers (several
    /// instances) and racing payments cannot double it.
    pub async fn expire_overdue(&self, limit: i64) -> Result<usize, OrderError> {
        self.expire_where(None, limit).await
    }

    async fn expire_where(&self, only: Option<OrderId>, limit: i64) -> Result<usize, OrderError> {
        let mut c = conn(&self.db).await?;
        c.transaction(async |tx| {
            let mut candidates = orders::table
                .filter(orders::status.eq("pending"))
                .filter(orders::expires_at.le(diesel::dsl::now))
                .select(orders::id)
                .order(orders::expires_at)
                .limit(limit)
                .into_boxed();
            if let Some(id) = only {
                candidates = candidates.filter(orders::id.eq(id.get()));
            }
            let candidates: Vec<i64> = candidates.load(tx).await?;
            if candidates.is_empty() {
                return Ok(0);
            }
            let expired: Vec<(i64, i64)> = diesel::update(
                orders::table
                    .filter(orders::id.eq_any(&candidates))
                    .filter(orders::status.eq("pending"))
                    .filter(orders::expires_at.le(diesel::dsl::now)),
            )
            .set((
                orders::status.eq("expired"),
                orders::closed_at.eq(diesel::dsl::now),
            ))
            .returning((orders::id, orders::user_id))
            .get_results(tx)
            .await?;
            let ids: Vec<i64> = expired.iter().map(|(id, _)| *id).collect();
            if !ids.is_empty() {
                return_stock(tx, &ids).await?;
            }
            for (order, user) in &expired {
                outbox::enqueue(
                    tx,
                    event::ORDER_EXPIRED,
                    &order.to_string(),
                    &serde_json::json!({ "order_id": order, "user_id": user }),
                )
                .await?;
            }
            Ok::<_, OrderError>(ids.len())
        })
        .await
    }
}

/// The discount a user coupon gives, if the caller may use it now.
async fn coupon_discount(
    tx: &mut AsyncPgConnection,
    user: UserId,
    uc: UserCouponId,
) -> Result<i64, OrderError> {
    let found: Option<(i64, String, i64, Option<DateTime<Utc>>)> = user_coupons::table
        .inner_join(coupons::table)
        .filter(user_coupons::id.eq(uc.get()))
        .select((
            user_coupons::user_id,
            user_coupons::status,
            coupons::discount_amount,
            coupons::expires_at,
        ))
        .first(tx)
        .await
        .optional()?;
    match found {
        Some((owner, _, _, _)) if owner != user.get() => {
            Err(OrderError::InvalidCoupon("not your coupon"))
        }
        None => Err(OrderError::InvalidCoupon("no such coupon")),
        Some((_, status, _, _)) if status != "issued" => {
            Err(OrderError::InvalidCoupon("coupon already used"))
        }
        Some((_, _, _, Some(exp))) if exp <= Utc::now() => {
            Err(OrderError::InvalidCoupon("coupon expired"))
        }
        Some((_, _, discount, _)) => Ok(discount),
    }
}

/// Why the guarded `pending -> paid` update matched nothing.
async fn why_not_payable(
    tx: &mut AsyncPgConnection,
    user: UserId,
    id: OrderId,
) -> Result<OrderError, OrderError> {
    let row: Option<(i64, String, DateTime<Utc>)> = orders::table
        .find(id.get())
        .select((orders::user_id, orders::status, orders::expires_at))
        .first(tx)
        .await
        .optional()?;
    Ok(match row {
        None => OrderError::NotFound,
        Some((owner, _, _)) if owner != user.get() => OrderError::NotFound,
        Some((_, status, _)) if status == "paid" => OrderError::AlreadyPaid,
        Some((_, status, _)) if status == "cancelled" => OrderError::Cancelled,
        _ => OrderError::Expired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_requests_are_validated() {
        assert_eq!(
            NewOrder::parse(&[], None).unwrap_err().code,
            "invalid_items"
        );
        assert_eq!(
            NewOrder::parse(&[(1, 0)], None).unwrap_err().code,
            "invalid_quantity"
        );
        assert_eq!(
            NewOrder::parse(&[(1, 101)], None).unwrap_err().code,
            "invalid_quantity"
        );
        assert_eq!(
            NewOrder::parse(&[(0, 1)], None).unwrap_err().code,
            "invalid_id"
        );
        assert_eq!(
            NewOrder::parse(&[(1, 1), (1, 2)], None).unwrap_err().code,
            "duplicate_product"
        );
        let many: Vec<(i64, i64)> = (1..=21).map(|i| (i, 1)).collect();
        assert_eq!(
            NewOrder::parse(&many, None).unwrap_err().code,
            "invalid_items"
        );
        let ok = NewOrder::parse(&[(9, 1), (3, 2)], Some(4)).unwrap();
        assert_eq!(ok.lines[0].product.get(), 3, "sorted by product");
        assert_eq!(ok.user_coupon.map(UserCouponId::get), Some(4));
    }
}
