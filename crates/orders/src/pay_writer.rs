//! Payments written in batches (see `batch`): one transaction and one
//! commit for many payments, every step as guarded as a lone payment's.
//! Each order moves `pending -> paid` only if it still is pending, its
//! owner's and unexpired; each payer's balance is debited once for the
//! batch, never below zero; each payment row is unique per order. A batch
//! that finds a balance short is rolled back and paid one by one, and an
//! order the batch could not claim (paid, expired, someone else's, or with
//! a coupon to redeem) is paid alone, which says exactly why.

use crate::error::OrderError;
use crate::model::{OrderItem, Payment};
use crate::seams::{Debit, Seams};
use crate::store::pay_in;
use chrono::{DateTime, Utc};
use commerce_domain::{OrderId, ProductId, UserId};
use commerce_storage::batch::{Batch, BatchError, Batcher};
use commerce_storage::idempotency::{self, SaveAnswer};
use commerce_storage::outbox::{self, event};
use commerce_storage::schema::order_items;
use commerce_storage::{tx, StorageError};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;
use tokio::sync::oneshot;

pub(crate) struct PayJob {
    user: UserId,
    order: OrderId,
    answer: Option<SaveAnswer<Payment>>,
    /// The batch claims `answer`'s key itself, storing the answer with the
    /// payment (the request did not claim it): a payment it cannot make
    /// answers `NotClaimed`, and the request goes the usual way.
    claims: bool,
    reply: oneshot::Sender<Result<Payment, OrderError>>,
    queued: Instant,
}

pub(crate) struct PayBatch {
    /// Balances and coupons, done by their owners' functions.
    pub seams: Seams,
}

impl Batch for PayBatch {
    type Job = PayJob;
    const NAME: &'static str = "payment";

    fn queued(job: &PayJob) -> Instant {
        job.queued
    }

    fn fail(job: PayJob, error: StorageError) {
        let _ = job.reply.send(Err(OrderError::Storage(error)));
    }

    fn write<'c>(
        &'c self,
        conn: &'c mut AsyncPgConnection,
        jobs: Vec<PayJob>,
    ) -> BoxFuture<'c, ()> {
        Box::pin(write_batch(conn, &self.seams, jobs))
    }
}

/// Queues one payment for its batch and waits for its answer (callers hold
/// the order's payment lock).
pub(crate) async fn pay(
    batcher: &Batcher<PayBatch>,
    user: UserId,
    order: OrderId,
    answer: Option<SaveAnswer<Payment>>,
    claims: bool,
) -> Result<Payment, OrderError> {
    let (reply, answered) = oneshot::channel();
    let job = PayJob {
        user,
        order,
        claims: claims && answer.is_some(),
        answer,
        reply,
        queued: Instant::now(),
    };
    batcher.submit(job, answered).await
}

async fn write_batch(conn: &mut AsyncPgConnection, seams: &Seams, jobs: Vec<PayJob>) {
    // One order twice in a batch (a double click on two instances) would
    // be claimed once; the repeat goes alone, after, and learns it is paid.
    let mut seen = HashSet::new();
    let (mut batch, mut alone): (Vec<PayJob>, Vec<PayJob>) =
        jobs.into_iter().partition(|j| seen.insert(j.order));
    // A lone payment is cheaper alone, unless the batch is to claim its key.
    if batch.len() > 1 || batch.iter().any(|j| j.claims) {
        let wants: Vec<(UserId, OrderId)> = batch.iter().map(|j| (j.user, j.order)).collect();
        let claims: Vec<bool> = batch.iter().map(|j| j.claims).collect();
        let answers: Vec<Option<SaveAnswer<Payment>>> =
            batch.iter_mut().map(|j| j.answer.take()).collect();
        let outcome = pay_batch(conn, seams, &wants, &claims, &answers).await;
        for (job, answer) in batch.iter_mut().zip(answers) {
            job.answer = answer;
        }
        match outcome {
            Ok(paid) => {
                for (job, payment) in batch.into_iter().zip(paid) {
                    match payment {
                        Some(p) => {
                            let _ = job.reply.send(Ok(p));
                        }
                        // Not paid here: alone, it learns exactly why.
                        None => alone.push(job),
                    }
                }
            }
            // A balance short, or a key the batch was to claim already
            // taken: nothing was written, each goes alone.
            Err(BatchError::Short | BatchError::Failed(StorageError::UniqueViolation(_))) => {
                alone.append(&mut batch);
            }
            Err(BatchError::Failed(e)) => {
                tracing::debug!(error = %e, payments = batch.len(), "batched payment failed");
                for job in batch {
                    let _ = job.reply.send(Err(OrderError::Storage(e.clone())));
                }
            }
        }
    } else {
        alone.append(&mut batch);
    }
    for job in alone {
        // A key nobody claimed yet goes back to its request, which claims
        // it (and replays it, if it was used before).
        let result = if job.claims {
            Err(OrderError::NotClaimed)
        } else {
            pay_in(conn, seams, job.user, job.order, job.answer).await
        };
        let _ = job.reply.send(result);
    }
}

#[derive(QueryableByName)]
struct Claimed {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = BigInt)]
    pay_amount: i64,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    paid_at: DateTime<Utc>,
}

/// Pays what it can of `wants` in one transaction; `None` for an order it
/// did not claim. Three round trips of pipelined statements, the `BEGIN`
/// sent with the first and the `COMMIT` with the last (see
/// `commerce_storage::tx`).
async fn pay_batch(
    conn: &mut AsyncPgConnection,
    seams: &Seams,
    wants: &[(UserId, OrderId)],
    claims: &[bool],
    answers: &[Option<SaveAnswer<Payment>>],
) -> Result<Vec<Option<Payment>>, BatchError> {
    let ids: Vec<i64> = wants.iter().map(|(_, o)| o.get()).collect();
    let owners: Vec<i64> = wants.iter().map(|(u, _)| u.get()).collect();
    let db: &AsyncPgConnection = conn;
    // 1. pending -> paid for every order still payable by its owner.
    //    Orders with a coupon are left to the lone path, which redeems it.
    //    `o.id = ANY($1)` lets the planner find the rows by primary key
    //    (joined only to the unnested pairs, it scanned the table).
    let claim = commerce_storage::sql::cached(
        "UPDATE orders o SET status = 'paid', paid_at = now() \
         FROM unnest($1::bigint[], $2::bigint[]) AS v(id, u) \
         WHERE o.id = ANY($1) AND o.id = v.id AND o.user_id = v.u AND o.status = 'pending' \
           AND o.expires_at > now() AND o.user_coupon_id IS NULL \
         RETURNING o.id, o.user_id, o.pay_amount, o.paid_at",
    )
    .bind::<Array<BigInt>, _>(&ids)
    .bind::<Array<BigInt>, _>(&owners)
    .load::<Claimed>(&mut &*db);
    let (begun, claimed) = futures::join!(tx::begin(db), claim);
    begun?;
    let claimed = match claimed {
        Ok(claimed) if !claimed.is_empty() => claimed,
        Ok(_) => {
            tx::roll_back(db).await;
            return Ok(vec![None; wants.len()]);
        }
        Err(e) => {
            tx::roll_back(db).await;
            return Err(e.into());
        }
    };
    match finish(db, seams, wants, claims, answers, &claimed).await {
        Ok(committed) => committed,
        Err(Unsent(e)) => {
            tx::roll_back(db).await;
            Err(e)
        }
    }
}

/// A failure found before the `COMMIT` was sent: the caller rolls back.
struct Unsent(BatchError);

impl From<StorageError> for Unsent {
    fn from(e: StorageError) -> Self {
        Self(BatchError::Failed(e))
    }
}

impl From<diesel::result::Error> for Unsent {
    fn from(e: diesel::result::Error) -> Self {
        Self(e.into())
    }
}

/// Steps 2 and 3 of [`pay_batch`], inside its transaction; the `COMMIT`
/// goes with step 3 (`Ok`: it was sent, and says how the batch ended).
async fn finish(
    db: &AsyncPgConnection,
    seams: &Seams,
    wants: &[(UserId, OrderId)],
    claims: &[bool],
    answers: &[Option<SaveAnswer<Payment>>],
    claimed: &[Claimed],
) -> Result<Result<Vec<Option<Payment>>, BatchError>, Unsent> {
    let by_order: HashMap<i64, &Claimed> = claimed.iter().map(|c| (c.id, c)).collect();
    // Each payer's payments in the batch, payers in id order (row
    // locks taken in one order by every batch: no deadlock between
    // them), each payer debited once with a ledger row per payment.
    let mut per_payer: BTreeMap<i64, Vec<Debit>> = BTreeMap::new();
    for (_, order) in wants {
        if let Some(c) = by_order.get(&order.get()) {
            per_payer.entry(c.user_id).or_default().push(Debit {
                amount: c.pay_amount,
                order: *order,
            });
        }
    }
    let claimed_ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
    // 2. The debits (guarded) with their ledger rows, the payment rows
    //    (UNIQUE per order: the last guard of rule 4) and the events'
    //    items, in one round trip.
    let debits = futures::future::join_all(per_payer.iter().map(|(&user, payments)| async move {
        let balance = seams
            .wallet
            .debit(db, UserId::from_db(user), payments)
            .await;
        balance.map(|b| b.map(|b| (user, b)))
    }));
    let amounts: Vec<i64> = claimed.iter().map(|c| c.pay_amount).collect();
    let payers: Vec<i64> = claimed.iter().map(|c| c.user_id).collect();
    // Arrays: one statement text whatever the batch size (prepared once).
    let inserted = commerce_storage::sql::cached(
        "INSERT INTO payments (order_id, user_id, amount) \
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[])",
    )
    .bind::<Array<BigInt>, _>(&claimed_ids)
    .bind::<Array<BigInt>, _>(&payers)
    .bind::<Array<BigInt>, _>(&amounts)
    .execute(&mut &*db);
    let items = order_items::table
        .filter(order_items::order_id.eq_any(&claimed_ids))
        .select((
            order_items::order_id,
            order_items::product_id,
            order_items::quantity,
            order_items::unit_price,
        ))
        .order((order_items::order_id, order_items::product_id))
        .load::<(i64, i64, i32, i64)>(&mut &*db);
    let (debits, inserted, items) = futures::join!(debits, inserted, items);
    let mut balances: HashMap<i64, i64> = HashMap::new();
    for debit in debits {
        let Some((user, balance)) = debit? else {
            return Err(Unsent(BatchError::Short));
        };
        balances.insert(user, balance);
    }
    inserted?;
    let mut items_of: HashMap<i64, Vec<OrderItem>> = HashMap::new();
    for (order, product, quantity, unit_price) in items? {
        items_of.entry(order).or_default().push(OrderItem {
            product_id: ProductId::from_db(product),
            quantity,
            unit_price,
        });
    }
    // 3. Events and stored answers, then the commit. A payer with several
    //    payments in the batch sees the balance after each in turn, as the
    //    ledger does: as if they were paid one after another.
    let mut remaining_after: HashMap<i64, i64> = HashMap::new();
    let mut result: Vec<Option<Payment>> = vec![None; wants.len()];
    let mut events = Vec::new();
    for (slot, (_, order)) in result.iter_mut().zip(wants).rev() {
        let Some(c) = by_order.get(&order.get()) else {
            continue;
        };
        // Walking backwards: the final balance belongs to the last.
        let after = *remaining_after
            .entry(c.user_id)
            .or_insert_with(|| balances.get(&c.user_id).copied().unwrap_or(0));
        remaining_after.insert(c.user_id, after.saturating_add(c.pay_amount));
        *slot = Some(Payment {
            order_id: *order,
            status: "paid",
            paid_amount: c.pay_amount,
            balance: after,
            paid_at: c.paid_at,
        });
    }
    for (payment, (user, order)) in result.iter().zip(wants) {
        let Some(p) = payment else { continue };
        let items = items_of.remove(&order.get()).unwrap_or_default();
        events.push((
            event::ORDER_PAID,
            order.to_string(),
            serde_json::json!({
                "order_id": order, "user_id": user, "amount": p.paid_amount,
                "paid_at": p.paid_at, "items": items,
            }),
        ));
    }
    // Keys the batch claims are inserted with their answers (a key taken
    // fails the insert); keys their requests claimed get their answers.
    // (Rendered, not taken: a batch rolled back here leaves every job its
    // answer for the lone path.)
    let (new_keys, claimed_keys): (Vec<_>, Vec<_>) = answers
        .iter()
        .zip(&result)
        .zip(claims)
        .filter_map(|((a, p), c)| Some((*c, a.as_ref()?.render(p.as_ref()?))))
        .partition(|(c, _)| *c);
    let new_keys: Vec<_> = new_keys.into_iter().map(|(_, a)| a).collect();
    let claimed_keys: Vec<_> = claimed_keys.into_iter().map(|(_, a)| a).collect();
    // A failure of any aborts the transaction, and the COMMIT sent behind
    // them rolls it back.
    let (keys_written, events_written, saved, committed) = futures::join!(
        idempotency::insert_answered(db, &new_keys),
        outbox::enqueue_many(db, &events),
        idempotency::complete_many(db, &claimed_keys),
        tx::commit(db),
    );
    Ok(keys_written
        .and(events_written)
        .and(saved)
        .and(committed)
        .map(|()| result)
        .map_err(BatchError::Failed))
}
