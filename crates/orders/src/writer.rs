//! Orders the stock gate let through, written in batches (see `batch`):
//! one transaction and one commit for many orders, each product's stock
//! moved once per batch. A sale's buyers then wait for a batch commit, not
//! in line for the product's row lock one transaction at a time. A batch
//! that finds a product short (the gate over-counted) is rolled back and
//! its orders are written one by one, each learning exactly why it failed.

use crate::error::OrderError;
use crate::model::{NewOrder, Order, OrderItem};
use crate::seams::{Seams, Take};
use crate::store::create_in;
use chrono::SubsecRound;
use commerce_domain::{OrderId, UserCouponId, UserId};
use commerce_storage::batch::{Batch, BatchError, Batcher};
use commerce_storage::idempotency::{self, Claim, SaveAnswer};
use commerce_storage::{tx, StorageError};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub(crate) struct Job {
    pub user: UserId,
    pub order: NewOrder,
    /// The coupon's discount, read before the gate (used at payment under
    /// its own guard; here it only prices the order).
    pub discount: i64,
    pub answer: Option<SaveAnswer<Order>>,
    /// The batch claims `answer`'s key itself, in its own transaction (the
    /// request did not): a key found taken answers `NotClaimed`.
    pub claims: bool,
    pub reply: oneshot::Sender<Result<Order, OrderError>>,
    pub queued: Instant,
}

impl Job {
    /// The key this job's batch is to claim, if it claims one.
    fn to_claim(&self) -> Option<&Claim> {
        self.answer
            .as_ref()
            .filter(|_| self.claims)
            .map(|a| &a.claim)
    }
}

/// Gated orders, written in batches.
pub(crate) struct OrderBatch {
    /// How long a pending order holds its stock.
    pub ttl: Duration,
    /// Stock and coupons, done by their owners' functions.
    pub seams: Seams,
}

impl Batch for OrderBatch {
    type Job = Job;
    const NAME: &'static str = "order";

    fn queued(job: &Job) -> Instant {
        job.queued
    }

    fn fail(job: Job, error: StorageError) {
        let _ = job.reply.send(Err(OrderError::Storage(error)));
    }

    fn write<'c>(&'c self, conn: &'c mut AsyncPgConnection, jobs: Vec<Job>) -> BoxFuture<'c, ()> {
        Box::pin(write_batch(conn, &self.seams, jobs, self.ttl))
    }
}

/// Queues one order for its batch and waits for its answer. A timeout
/// means the order may still land (pending, expiring with its stock): the
/// caller gives its units back, and a gate over-counting costs a refused
/// write at worst.
pub(crate) async fn write(
    batcher: &Batcher<OrderBatch>,
    user: UserId,
    order: NewOrder,
    discount: i64,
    answer: Option<SaveAnswer<Order>>,
    claims: bool,
) -> Result<Order, OrderError> {
    let (reply, answered) = oneshot::channel();
    let job = Job {
        user,
        order,
        discount,
        claims: claims && answer.is_some(),
        answer,
        reply,
        queued: Instant::now(),
    };
    batcher.submit(job, answered).await
}

/// Writes and answers `jobs`.
async fn write_batch(conn: &mut AsyncPgConnection, seams: &Seams, jobs: Vec<Job>, ttl: Duration) {
    // A key sent twice in one batch (a double click) is claimed by its
    // first job; the other's request settles it the usual way.
    let mut seen = HashSet::new();
    let (mut jobs, twice): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|j| j.to_claim().is_none_or(|c| seen.insert(c.id())));
    for job in twice {
        let _ = job.reply.send(Err(OrderError::NotClaimed));
    }
    let mut retried = false;
    loop {
        let written = {
            let wants: Vec<Want<'_>> = jobs
                .iter()
                .map(|j| Want {
                    user: j.user,
                    order: &j.order,
                    discount: j.discount,
                    answer: j.answer.as_ref(),
                    claims: j.claims,
                })
                .collect();
            insert_batch(conn, seams, &wants, ttl).await
        };
        match written {
            Ok(orders) => {
                for (job, order) in jobs.into_iter().zip(orders) {
                    let _ = job.reply.send(Ok(order));
                }
                return;
            }
            // A key the batch was to claim is taken (a retry of an earlier
            // request, or one still running): nothing was written. Those
            // keys go back to their requests, the rest is tried once more.
            Err(BatchError::Failed(StorageError::UniqueViolation(c)))
                if !retried && c == idempotency::KEYS_PKEY =>
            {
                retried = true;
                let claims: Vec<&Claim> = jobs.iter().filter_map(Job::to_claim).collect();
                let taken = match idempotency::taken(conn, &claims).await {
                    Ok(taken) => taken,
                    Err(e) => {
                        for job in jobs {
                            let _ = job.reply.send(Err(OrderError::Storage(e.clone())));
                        }
                        return;
                    }
                };
                let (rest, settled): (Vec<Job>, Vec<Job>) = jobs
                    .into_iter()
                    .partition(|j| j.to_claim().is_none_or(|c| !taken.contains(&c.id())));
                for job in settled {
                    let _ = job.reply.send(Err(OrderError::NotClaimed));
                }
                if rest.is_empty() {
                    return;
                }
                jobs = rest;
            }
            // Nothing was written: the orders go one by one; one whose key
            // the batch was to claim goes back to the request, which claims
            // it.
            Err(BatchError::Short | BatchError::Failed(StorageError::UniqueViolation(_))) => {
                for job in jobs {
                    let result = if job.claims {
                        Err(OrderError::NotClaimed)
                    } else {
                        create_in(conn, seams, job.user, &job.order, job.answer, ttl).await
                    };
                    let _ = job.reply.send(result);
                }
                return;
            }
            Err(BatchError::Failed(e)) => {
                tracing::debug!(error = %e, orders = jobs.len(), "batched order write failed");
                for job in jobs {
                    let _ = job.reply.send(Err(OrderError::Storage(e.clone())));
                }
                return;
            }
        }
    }
}

/// What a batch's transaction needs of one job (not its reply sender).
struct Want<'a> {
    user: UserId,
    order: &'a NewOrder,
    discount: i64,
    answer: Option<&'a SaveAnswer<Order>>,
    claims: bool,
}

/// One transaction for `jobs` in two round trips, the `COMMIT` sent in the
/// second right behind the statements it commits:
/// 1. `BEGIN`, the products' prices (no lock) and the new orders' ids;
/// 2. each key claimed with its answer, the orders, their items, the
///    answers of keys claimed earlier, the stock of every product taken in
///    one statement (guarded, in id order), then `COMMIT`.
///
/// Every statement of (2) that cannot do its part fails, and a failure
/// aborts the transaction, so PostgreSQL turns the `COMMIT` into a
/// rollback: a taken key (unique violation), stock short or a price
/// changed since (1) (the stock check, see `Stock::take`). The product's
/// row lock is then held from its update to the commit's flush, with no
/// round trip to this process in between: the next batch on the same
/// product waits for one flush, not for this batch's round trips.
/// (See `commerce_storage::tx` for why the order of sending holds.)
async fn insert_batch(
    conn: &mut AsyncPgConnection,
    seams: &Seams,
    jobs: &[Want<'_>],
    ttl: Duration,
) -> Result<Vec<Order>, BatchError> {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(5));
    let count = i64::try_from(jobs.len()).unwrap_or(i64::MAX);
    let mut product_ids: Vec<i64> = jobs
        .iter()
        .flat_map(|j| j.order.lines.iter().map(|l| l.product.get()))
        .collect();
    product_ids.sort_unstable();
    product_ids.dedup();
    let db: &AsyncPgConnection = conn;
    let begin = tx::begin(db);
    let prices = seams.stock.prices(db, &product_ids);
    let ids = commerce_storage::sql::cached(
        "SELECT nextval(pg_get_serial_sequence('orders', 'id')) AS id \
         FROM generate_series(1, $1)",
    )
    .bind::<diesel::sql_types::BigInt, _>(count)
    .load::<NextId>(&mut &*db);
    let (begun, prices, ids) = futures::join!(begin, prices, ids);
    begun?;
    let (prices, ids) = match (prices, ids) {
        (Ok(prices), Ok(ids)) => (prices, ids),
        (Err(e), _) => {
            tx::roll_back(db).await;
            return Err(BatchError::Failed(e));
        }
        (_, Err(e)) => {
            tx::roll_back(db).await;
            return Err(e.into());
        }
    };
    let prices: BTreeMap<i64, i64> = prices.into_iter().collect();
    if prices.len() != product_ids.len() || ids.len() != jobs.len() {
        tx::roll_back(db).await;
        // A product that does not exist: the lone path names it.
        return Err(BatchError::Short);
    }
    let mut wanted: BTreeMap<i64, i32> = BTreeMap::new();
    for job in jobs {
        for line in &job.order.lines {
            let units = wanted.entry(line.product.get()).or_default();
            *units = units.saturating_add(line.quantity);
        }
    }
    // PostgreSQL keeps microseconds: so does the answer.
    let now = chrono::Utc::now().trunc_subsecs(6);
    let expires_at = now + ttl;
    let (made, rows, item_rows) = rows_of(jobs, &ids, &prices, now, expires_at);
    let (claimed, answered): (Vec<_>, Vec<_>) = jobs
        .iter()
        .zip(&made)
        .filter_map(|(job, order)| job.answer.map(|a| (job.claims, a.render(order))))
        .partition(|(claims, _)| *claims);
    let claimed: Vec<_> = claimed.into_iter().map(|(_, a)| a).collect();
    let answered: Vec<_> = answered.into_iter().map(|(_, a)| a).collect();
    // Column arrays, not one VALUES row per order: the statements' text
    // does not change with the batch size, so each connection prepares
    // them once (see `commerce_storage::sql`).
    let claims = idempotency::insert_answered(db, &claimed);
    let inserted = commerce_storage::sql::cached(
        "INSERT INTO orders (id, user_id, total, discount, pay_amount, user_coupon_id, \
                             expires_at, created_at) \
         SELECT v.id, v.user_id, v.total, v.discount, v.total - v.discount, v.uc, $6, $7 \
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[]) \
              AS v(id, user_id, total, discount, uc)",
    )
    .bind::<Array<BigInt>, _>(&rows.id)
    .bind::<Array<BigInt>, _>(&rows.user_id)
    .bind::<Array<BigInt>, _>(&rows.total)
    .bind::<Array<BigInt>, _>(&rows.discount)
    .bind::<Array<Nullable<BigInt>>, _>(&rows.user_coupon_id)
    .bind::<Timestamptz, _>(expires_at)
    .bind::<Timestamptz, _>(now)
    .execute(&mut &*db);
    let items = commerce_storage::sql::cached(
        "INSERT INTO order_items (order_id, product_id, quantity, unit_price) \
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::bigint[])",
    )
    .bind::<Array<BigInt>, _>(&item_rows.order_id)
    .bind::<Array<BigInt>, _>(&item_rows.product_id)
    .bind::<Array<Integer>, _>(&item_rows.quantity)
    .bind::<Array<BigInt>, _>(&item_rows.unit_price)
    .execute(&mut &*db);
    let saved = idempotency::complete_many(db, &answered);
    // The price is part of the guard: a price changed since it was read
    // sends the batch down the lone path, which prices atomically.
    let takes: Vec<Take> = wanted
        .iter()
        .map(|(&product, &units)| Take {
            product,
            units,
            price: prices.get(&product).copied().unwrap_or(0),
        })
        .collect();
    let taken = seams.stock.take(db, &takes);
    let commit = tx::commit(db);
    // Polled in this order, so sent in this order (one round trip).
    let (claims, inserted, items, saved, taken, commit) =
        futures::join!(claims, inserted, items, saved, taken, commit);
    // The first failure is the cause; every statement after it failed
    // because the transaction was aborted, and the COMMIT rolled back.
    let failed = [
        claims.err(),
        inserted.err().map(StorageError::from),
        items.err().map(StorageError::from),
        saved.err(),
        taken.err(),
    ]
    .into_iter()
    .flatten()
    .next();
    match (failed, commit) {
        (None, Ok(_)) => Ok(made),
        (Some(StorageError::CheckViolation(_)), _) => Err(BatchError::Short),
        (Some(e), _) => Err(BatchError::Failed(e)),
        // The commit's own failure (a lost connection): the outcome is
        // unknown, as with any commit; the callers give the units back
        // and the orders, if written, expire with theirs.
        (None, Err(e)) => Err(e.into()),
    }
}

/// The batch's orders as answered, and as column arrays for its inserts.
fn rows_of(
    jobs: &[Want<'_>],
    ids: &[NextId],
    prices: &BTreeMap<i64, i64>,
    now: chrono::DateTime<chrono::Utc>,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> (Vec<Order>, OrderRows, ItemRows) {
    let mut made = Vec::with_capacity(jobs.len());
    let mut rows = OrderRows::default();
    let mut item_rows = ItemRows::default();
    for (job, id) in jobs.iter().zip(ids) {
        let mut total: i64 = 0;
        let mut items = Vec::with_capacity(job.order.lines.len());
        for line in &job.order.lines {
            let price = prices.get(&line.product.get()).copied().unwrap_or(0);
            total = total.saturating_add(price.saturating_mul(i64::from(line.quantity)));
            items.push(OrderItem {
                product_id: line.product,
                quantity: line.quantity,
                unit_price: price,
            });
            item_rows.order_id.push(id.id);
            item_rows.product_id.push(line.product.get());
            item_rows.quantity.push(line.quantity);
            item_rows.unit_price.push(price);
        }
        let discount = job.discount.min(total);
        rows.id.push(id.id);
        rows.user_id.push(job.user.get());
        rows.total.push(total);
        rows.discount.push(discount);
        rows.user_coupon_id
            .push(job.order.user_coupon.map(UserCouponId::get));
        made.push(Order {
            id: OrderId::from_db(id.id),
            user_id: job.user,
            status: "pending".to_owned(),
            total,
            discount,
            pay_amount: total - discount,
            user_coupon_id: job.order.user_coupon,
            items,
            expires_at,
            created_at: now,
            paid_at: None,
        });
    }
    (made, rows, item_rows)
}

#[derive(QueryableByName)]
struct NextId {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}

/// The batch's orders, column by column.
#[derive(Default)]
struct OrderRows {
    id: Vec<i64>,
    user_id: Vec<i64>,
    total: Vec<i64>,
    discount: Vec<i64>,
    user_coupon_id: Vec<Option<i64>>,
}

/// The batch's order items, column by column.
#[derive(Default)]
struct ItemRows {
    order_id: Vec<i64>,
    product_id: Vec<i64>,
    quantity: Vec<i32>,
    unit_price: Vec<i64>,
}
