//! One order's own transactions, each on a connection the caller holds:
//! create (reserve stock, price, insert) and pay (debit, payment row,
//! coupon, event), with the row mapping and helpers they share. The batch
//! writers fall back to these for a batch that must be sorted out one
//! order at a time.

use crate::error::OrderError;
use crate::model::{NewOrder, Order, OrderItem, Payment};
use crate::seams::{Debit, Reserved, Seams, Unusable};
use chrono::{DateTime, Utc};
use commerce_domain::{OrderId, ProductId, UserCouponId, UserId};
use commerce_storage::idempotency::SaveAnswer;
use commerce_storage::outbox::{self, event};
use commerce_storage::schema::{order_items, orders, payments};
use commerce_storage::StorageError;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use std::time::Duration;

pub(crate) type OrderRow = (
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

pub(crate) const ORDER_COLUMNS: (
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

pub(crate) fn to_order(r: OrderRow, items: Vec<OrderItem>) -> Order {
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
pub(crate) async fn load_items(
    c: &AsyncPgConnection,
    order: i64,
) -> Result<Vec<OrderItem>, OrderError> {
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

/// Returns the stock of `order_ids`' items; answers the units per product,
/// for the gate once the transaction committed. Callers have just moved the
/// orders out of `pending` in the same transaction, which makes this
/// exactly once.
pub(crate) async fn return_stock(
    c: &AsyncPgConnection,
    seams: &Seams,
    order_ids: &[i64],
) -> Result<Vec<(ProductId, i32)>, OrderError> {
    #[derive(QueryableByName)]
    struct Units {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        product_id: i64,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        n: i32,
    }
    let units: Vec<Units> = commerce_storage::sql::cached(
        "SELECT product_id, SUM(quantity)::int AS n FROM order_items \
         WHERE order_id = ANY($1) GROUP BY product_id ORDER BY product_id",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::BigInt>, _>(order_ids)
    .load(&mut &*c)
    .await?;
    let units: Vec<(i64, i32)> = units.into_iter().map(|u| (u.product_id, u.n)).collect();
    seams.stock.give_back(c, &units).await?;
    Ok(units
        .into_iter()
        .map(|(p, n)| (ProductId::from_db(p), n))
        .collect())
}

/// Why a coupon cannot price an order, as the client is told.
pub(crate) fn unusable(why: Unusable) -> OrderError {
    OrderError::InvalidCoupon(why.as_str())
}

/// Writes one order's items; arrays keep the statement's text the same
/// whatever the number of lines (prepared once per connection).
pub(crate) async fn insert_items(
    c: &AsyncPgConnection,
    order: i64,
    items: &[OrderItem],
) -> Result<(), OrderError> {
    use diesel::sql_types::{Array, BigInt, Integer};
    let products: Vec<i64> = items.iter().map(|i| i.product_id.get()).collect();
    let quantities: Vec<i32> = items.iter().map(|i| i.quantity).collect();
    let prices: Vec<i64> = items.iter().map(|i| i.unit_price).collect();
    commerce_storage::sql::cached(
        "INSERT INTO order_items (order_id, product_id, quantity, unit_price) \
         SELECT $1, * FROM unnest($2::bigint[], $3::int[], $4::bigint[])",
    )
    .bind::<BigInt, _>(order)
    .bind::<Array<BigInt>, _>(&products)
    .bind::<Array<Integer>, _>(&quantities)
    .bind::<Array<BigInt>, _>(&prices)
    .execute(&mut &*c)
    .await?;
    Ok(())
}

/// Reserves stock and creates a pending order in one transaction on `c`,
/// each line's conditional update being the reservation and the guard.
pub(crate) async fn create_in(
    c: &mut AsyncPgConnection,
    seams: &Seams,
    user: UserId,
    new: &NewOrder,
    answer: Option<SaveAnswer<Order>>,
    ttl: Duration,
) -> Result<Order, OrderError> {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(5));
    c.transaction(async |tx| {
        let mut items = Vec::with_capacity(new.lines.len());
        let mut total: i64 = 0;
        for line in &new.lines {
            let price = match seams.stock.reserve(tx, line.product, line.quantity).await? {
                Reserved::Taken { price } => price,
                Reserved::Short => return Err(OrderError::OutOfStock(line.product)),
                Reserved::Unknown => return Err(OrderError::UnknownProduct(line.product)),
            };
            total = total.saturating_add(price.saturating_mul(i64::from(line.quantity)));
            items.push(OrderItem {
                product_id: line.product,
                quantity: line.quantity,
                unit_price: price,
            });
        }
        let discount = match new.user_coupon {
            Some(uc) => seams
                .coupons
                .discount(tx, user, uc)
                .await?
                .map_err(unusable)?
                .min(total),
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
        insert_items(tx, row.0, &items).await?;
        let order = to_order(row, items);
        if let Some(answer) = answer {
            answer.save(tx, &order).await?;
        }
        Ok(order)
    })
    .await
}

/// Pays `id` in one transaction on `c`, every step guarded: the order moves
/// `pending -> paid` once, the balance never goes below zero, the payment
/// row is unique per order.
pub(crate) async fn pay_in(
    c: &mut AsyncPgConnection,
    seams: &Seams,
    user: UserId,
    id: OrderId,
    answer: Option<SaveAnswer<Payment>>,
) -> Result<Payment, OrderError> {
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
            // Debit with its ledger row (guarded: never below zero).
            let debits = [Debit { amount, order: id }];
            let debit = seams.wallet.debit(db, user, &debits);
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
            let redeemed = seams
                .coupons
                .redeem(tx, user, UserCouponId::from_db(uc), id)
                .await?;
            redeemed.map_err(|why| match why {
                Unusable::Expired => OrderError::CouponExpired,
                _ => OrderError::CouponAlreadyUsed,
            })?;
        }
        let db: &AsyncPgConnection = tx;
        // 3. The event (outbox) and the stored answer.
        let payment = Payment {
            order_id: id,
            status: "paid",
            paid_amount: amount,
            balance,
            paid_at,
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
        let (event, saved) = futures::join!(event, saved);
        event?;
        saved?;
        Ok(payment)
    })
    .await
}

/// Why the guarded `pending -> paid` update matched nothing.
pub(crate) async fn why_not_payable(
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
