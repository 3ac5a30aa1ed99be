//! Winners' writes, grouped: the gate lets a peak's winners through within
//! milliseconds of each other, and one statement + one commit for many of
//! them costs PostgreSQL a fraction of one per winner (parse and plan once,
//! one WAL flush, a handful of warm backends instead of every pooled one).
//!
//! A few writer tasks share one queue. Each takes whatever is waiting (up to
//! `max_batch`) as soon as it is free, so a lone winner is written at once and
//! a crowd forms batches by itself: no timer holds anyone back. Every winner
//! still gets its own answer after its row committed; a row the batch could
//! not write (a UNIQUE conflict) is retried alone to learn exactly why.

use crate::model::{Coupon, IssuedCoupon};
use crate::store::{self, InsertError, Winner};
use commerce_domain::{CouponId, UserId};
use commerce_storage::{DbPool, StorageError};
use diesel_async::AsyncPgConnection;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex};

struct Job {
    coupon: Arc<Coupon>,
    user: UserId,
    slot: i32,
    reply: oneshot::Sender<Result<IssuedCoupon, InsertError>>,
    queued: std::time::Instant,
}

/// The queue in front of the writer tasks. Cheap to clone; the tasks stop
/// when the last handle is dropped.
#[derive(Clone)]
pub struct WinnerWriter {
    tx: mpsc::Sender<Job>,
    /// Bound on a winner's wait for its answer (queue, pool, statement).
    timeout: Duration,
}

/// Settings of [`WinnerWriter::start`].
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Writer tasks (each holds a pooled connection only while it writes).
    pub writers: usize,
    /// Most winners per statement.
    pub max_batch: usize,
    /// Bound on one winner's wait for its answer.
    pub timeout: Duration,
}

impl WinnerWriter {
    /// Spawns the writer tasks on the current Tokio runtime.
    pub fn start(db: DbPool, config: WriterConfig) -> Self {
        let max_batch = config.max_batch.max(1);
        let (tx, rx) = mpsc::channel(max_batch.saturating_mul(64).max(1024));
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..config.writers.max(1) {
            tokio::spawn(run(db.clone(), rx.clone(), max_batch));
        }
        Self {
            tx,
            timeout: config.timeout,
        }
    }

    /// Writes one winner; answers once its row committed (or why it did not).
    pub async fn write(
        &self,
        coupon: Arc<Coupon>,
        user: UserId,
        slot: i32,
    ) -> Result<IssuedCoupon, InsertError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            coupon,
            user,
            slot,
            reply,
            queued: std::time::Instant::now(),
        };
        let waited = tokio::time::timeout(self.timeout, async {
            self.tx
                .send(job)
                .await
                .map_err(|_| StorageError::Unavailable("coupon writers stopped".into()))?;
            answer
                .await
                .map_err(|_| StorageError::Unavailable("coupon writer dropped the write".into()))
        })
        .await;
        match waited {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(InsertError::Storage(e)),
            // The row may still land: the caller gives the unit back and
            // PostgreSQL's constraints keep rule 1 either way.
            Err(_) => Err(InsertError::Storage(StorageError::Timeout)),
        }
    }
}

async fn run(db: DbPool, rx: Arc<Mutex<mpsc::Receiver<Job>>>, max_batch: usize) {
    // Warm a backend for the statement before the first winner needs it
    // (its plan, the tables' and indexes' caches): the first peak after a
    // deploy otherwise pays for it. Best effort; the database may be down.
    if let Ok(mut conn) = commerce_storage::conn(&db).await {
        let _ = store::insert_batch(&mut conn, &[]).await;
    }
    let mut jobs = Vec::with_capacity(max_batch);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut jobs, max_batch).await == 0 {
                return; // every sender is gone
            }
        }
        metrics::histogram!("coupon_write_batch_size").record(jobs.len() as f64);
        // Queue wait and statement time: which of them a slow write spent.
        let picked = std::time::Instant::now();
        for job in &jobs {
            metrics::histogram!("coupon_write_queue_seconds")
                .record(picked.duration_since(job.queued).as_secs_f64());
        }
        let jobs = std::mem::take(&mut jobs);
        // A connection per batch, back to the pool right after: a writer
        // never keeps one idle, so a small pool is not starved by writers
        // that have nothing to write (the LIFO pool hands back a warm one).
        match commerce_storage::conn(&db).await {
            Ok(mut conn) => {
                write_batch(&mut conn, jobs).await;
                metrics::histogram!("coupon_write_batch_seconds")
                    .record(picked.elapsed().as_secs_f64());
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(InsertError::Storage(e.clone())));
                }
            }
        }
    }
}

fn issued(coupon: &Coupon, user: UserId, w: &store::Written) -> IssuedCoupon {
    IssuedCoupon {
        user_coupon_id: w.user_coupon_id,
        coupon_id: coupon.id,
        user_id: user,
        discount_amount: coupon.discount_amount,
        issued_at: w.issued_at,
        expires_at: coupon.expires_at,
    }
}

/// Writes and answers `jobs`.
async fn write_batch(conn: &mut AsyncPgConnection, jobs: Vec<Job>) {
    // A pair twice in one statement would get two events for one row: the
    // repeats go alone, after the batch.
    let mut seen_users = HashSet::new();
    let mut seen_slots = HashSet::new();
    let (batch, alone): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| {
        let user_new = seen_users.insert((j.coupon.id, j.user));
        let slot_new = seen_slots.insert((j.coupon.id, j.slot));
        user_new && slot_new
    });
    let winners: Vec<Winner> = batch
        .iter()
        .map(|j| Winner {
            coupon_id: j.coupon.id,
            coupon_quantity: j.coupon.quantity,
            user: j.user,
            slot: j.slot,
        })
        .collect();
    let mut one_by_one = alone;
    match store::insert_batch(conn, &winners).await {
        Ok(written) => {
            let by_pair: HashMap<(CouponId, UserId), store::Written> = written
                .into_iter()
                .map(|w| ((w.coupon_id, w.user), w))
                .collect();
            for job in batch {
                match by_pair.get(&(job.coupon.id, job.user)) {
                    Some(w) => {
                        let answer = issued(&job.coupon, job.user, w);
                        let _ = job.reply.send(Ok(answer));
                    }
                    // Skipped on a conflict: the single insert says which.
                    None => one_by_one.push(job),
                }
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, rows = batch.len(), "batched coupon write failed; writing one by one");
            one_by_one.extend(batch);
        }
    }
    for job in one_by_one {
        let result = store::insert(conn, &job.coupon, job.user, job.slot).await;
        let _ = job.reply.send(result);
    }
}
