//! First-come coupon issuing, exact under a peak and without row locks.
//!
//! Fast path: one atomic Redis Lua script (the gate) answers duplicate, sold
//! out, or winner with a numbered slot; only winners write to PostgreSQL,
//! and their row is committed before the answer. PostgreSQL stays the truth
//! and the last guard (unique user, unique slot within 1..quantity), so rule 1
//! holds even when the gate's state is wrong, stale or lost.
//!
//! Degraded paths: a missing gate is rebuilt from PostgreSQL under a lock; an
//! unavailable Redis sends requests to a PostgreSQL-only path behind a
//! concurrency limit, and the gate is rebuilt before it is trusted again.

pub mod config;
pub mod error;
pub mod gate;
pub mod model;
pub mod redeem;
pub mod store;
pub mod writer;

use chrono::Utc;
use commerce_domain::{CouponId, UserId};
use commerce_resilience::{LockManager, RedisClient};
use commerce_storage::{DbPool, StorageError};
use gate::{GateAnswer, GateState};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Semaphore;

pub use config::CouponConfig;
pub use error::CouponError;
pub use model::{
    Coupon, IssuedCoupon, MyCoupon, NewCoupon, ReconcileReport, MAX_DISCOUNT, MAX_QUANTITY,
};
pub use store::InsertError;

/// The coupon capability. Cheap to clone; built once per process, with
/// [`Coupons::on_this_thread`] handles for the HTTP workers.
#[derive(Clone)]
pub struct Coupons {
    inner: Arc<Inner>,
    io: Arc<Io>,
}

/// Where a handle's Redis and PostgreSQL calls go.
struct Io {
    db: DbPool,
    redis: RedisClient,
    /// Batched winner writes (None: one insert per winner).
    writer: Option<writer::WinnerWriter>,
}

impl Io {
    fn new(db: DbPool, redis: RedisClient, config: &CouponConfig) -> Self {
        let writer =
            (config.writers > 0 && tokio::runtime::Handle::try_current().is_ok()).then(|| {
                writer::WinnerWriter::start(
                    db.clone(),
                    writer::WriterConfig {
                        writers: config.writers,
                        max_batch: config.write_batch,
                        timeout: config.write_timeout,
                    },
                )
            });
        Self { db, redis, writer }
    }
}

/// What every handle of one process shares.
struct Inner {
    locks: LockManager,
    config: CouponConfig,
    fallback: Semaphore,
    /// Coupons are immutable once created: cache their definitions.
    /// Loaded once per instance even under a stampede (single flight).
    defs: RwLock<HashMap<CouponId, Arc<tokio::sync::OnceCell<Arc<Coupon>>>>>,
    /// Coupons this instance issued while the gate was bypassed: their gate
    /// is rebuilt before it is trusted again.
    dirty: Mutex<HashSet<CouponId>>,
    /// Coupons PostgreSQL showed to be fully issued (permanent: rows are
    /// never deleted).
    sold_out: RwLock<HashSet<CouponId>>,
    /// Last (gate users, database rows) seen by the periodic check.
    drift: Mutex<HashMap<CouponId, (i64, i64)>>,
}

/// Help text of this crate's metrics, for `/metrics` (call once, after
/// the recorder is installed).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(
        "coupon_issue_total",
        "Coupon issue answers by path (gate, fallback) and outcome."
    );
    describe_histogram!(
        "coupon_gate_seconds",
        Unit::Seconds,
        "Time of the Redis gate step of an issue."
    );
    describe_histogram!(
        "coupon_write_seconds",
        Unit::Seconds,
        "Time from a gate winner to its row written."
    );
    describe_histogram!(
        "coupon_write_batch_size",
        "Winners written per batched statement."
    );
    describe_histogram!(
        "coupon_write_queue_seconds",
        Unit::Seconds,
        "Time a winner waited for a writer."
    );
    describe_histogram!(
        "coupon_write_batch_seconds",
        Unit::Seconds,
        "Time of one batched write."
    );
    describe_counter!(
        "coupon_gate_rebuilds_total",
        "Coupon gates loaded from PostgreSQL (missing, dirty or repaired)."
    );
    describe_counter!(
        "coupon_gate_repairs_total",
        "Gates found to disagree with PostgreSQL and rebuilt, by trigger (periodic, admin)."
    );
    // Created at 0 so that the first repair is an increase Prometheus sees.
    for trigger in ["periodic", "admin"] {
        metrics::counter!("coupon_gate_repairs_total", "trigger" => trigger).increment(0);
    }
}

/// Open coupons in `/metrics` at most (the latest opened): bounds the
/// series and the scrape's work.
pub const EXPOSED_COUPONS: i64 = 20;

/// Which path served an issue, for metrics.
fn count(path: &'static str, outcome: &'static str) {
    metrics::counter!("coupon_issue_total", "path" => path, "outcome" => outcome).increment(1);
}

/// A write that failed for a reason other than a constraint: the caller
/// may retry (never a 500: nothing about the request was wrong).
fn write_failed(e: StorageError) -> CouponError {
    if e.is_unavailable() {
        CouponError::Storage(e)
    } else {
        tracing::warn!(error = %e, "coupon write failed");
        CouponError::Busy("the coupon could not be recorded, retry")
    }
}

fn lock_poisoned<T>(_: T) -> CouponError {
    CouponError::Storage(StorageError::Other("lock poisoned".into()))
}

impl Coupons {
    /// Call from within a Tokio runtime to get batched winner writes (the
    /// writer tasks are spawned here); outside one, winners write alone.
    pub fn new(db: DbPool, redis: RedisClient, locks: LockManager, config: CouponConfig) -> Self {
        Self {
            io: Arc::new(Io::new(db, redis, &config)),
            inner: Arc::new(Inner {
                fallback: Semaphore::new(config.fallback_concurrency.max(1)),
                locks,
                config,
                defs: RwLock::default(),
                dirty: Mutex::default(),
                sold_out: RwLock::default(),
                drift: Mutex::default(),
            }),
        }
    }

    /// A handle sharing this one's state (definitions, degraded-path marks,
    /// the fallback limit) whose Redis and PostgreSQL calls go through `db`
    /// and `redis`, with its own winner writers spawned on the current
    /// runtime. An HTTP worker builds one from clients it created, so the
    /// connections' tasks run on the thread that serves the request: an
    /// issue then wakes no other thread, each wake-up being a scheduler
    /// round trip on a machine whose cores a peak keeps busy.
    pub fn on_this_thread(&self, db: DbPool, redis: RedisClient) -> Self {
        Self {
            io: Arc::new(Io::new(db, redis, &self.inner.config)),
            inner: self.inner.clone(),
        }
    }

    /// Opens this handle's Redis connection and loads the gate's script
    /// ahead of traffic: otherwise the first requests of the first peak
    /// after a start wait for both. Best effort: with Redis down, the first
    /// request connects, as it would without this.
    pub async fn warm_up(&self) {
        if let Err(e) = gate::prepare(&self.io.redis).await {
            tracing::debug!(error = %e, "coupon gate connection not warmed up");
        }
    }

    pub async fn create(&self, new: &NewCoupon) -> Result<Coupon, CouponError> {
        let coupon = store::create(&self.io.db, new).await?;
        // Prime the gate; if Redis is out the first request rebuilds it.
        if let Err(e) = self.rebuild(&coupon).await {
            tracing::info!(coupon = %coupon.id, error = %e, "gate not primed at creation");
        }
        Ok(coupon)
    }

    pub async fn get(&self, id: CouponId) -> Result<Arc<Coupon>, CouponError> {
        let cell = {
            let found = self
                .inner
                .defs
                .read()
                .map_err(lock_poisoned)?
                .get(&id)
                .cloned();
            match found {
                Some(cell) => cell,
                None => self
                    .inner
                    .defs
                    .write()
                    .map_err(lock_poisoned)?
                    .entry(id)
                    .or_default()
                    .clone(),
            }
        };
        let coupon = cell
            .get_or_try_init(|| async {
                store::find(&self.io.db, id)
                    .await?
                    .map(Arc::new)
                    .ok_or(CouponError::NotFound)
            })
            .await;
        if coupon.is_err() {
            // Unknown ids must not grow the map (an empty cell is retried).
            let mut defs = self.inner.defs.write().map_err(lock_poisoned)?;
            if defs.get(&id).is_some_and(|c| c.get().is_none()) {
                defs.remove(&id);
            }
        }
        coupon.cloned()
    }

    pub async fn mine(&self, user: UserId) -> Result<Vec<MyCoupon>, CouponError> {
        store::mine(&self.io.db, user).await
    }

    /// Issues `coupon` to `user`, first come first served.
    pub async fn issue(&self, id: CouponId, user: UserId) -> Result<IssuedCoupon, CouponError> {
        let coupon = self.get(id).await?;
        let now = Utc::now();
        if now < coupon.opens_at {
            return Err(CouponError::NotOpen(coupon.opens_at));
        }
        if coupon.expires_at.is_some_and(|e| now >= e) {
            return Err(CouponError::Expired);
        }
        if self.is_dirty(id)?
            && self.io.redis.breaker().state() != commerce_resilience::BreakerState::Open
        {
            // Back from a Redis outage: rebuild before trusting the gate.
            if self.rebuild_locked(&coupon).await.is_ok() {
                self.inner.dirty.lock().map_err(lock_poisoned)?.remove(&id);
            }
        }
        for _ in 0..2 {
            let asked = std::time::Instant::now();
            let answer = gate::issue(&self.io.redis, id, user, coupon.quantity).await;
            metrics::histogram!("coupon_gate_seconds").record(asked.elapsed().as_secs_f64());
            match answer {
                Ok(GateAnswer::Winner { slot }) => {
                    return self.commit_winner(&coupon, user, slot).await
                }
                Ok(GateAnswer::AlreadyIssued) => {
                    if self.confirm_holder(id, user).await? {
                        count("gate", "already_issued");
                        return Err(CouponError::AlreadyIssued);
                    }
                    // A phantom: the gate counted a winner whose write never
                    // landed (reply lost, write failed). Forget it and retry.
                    self.give_back(id, user, true, None).await;
                }
                Ok(GateAnswer::SoldOut) => {
                    count("gate", "sold_out");
                    return Err(CouponError::SoldOut);
                }
                Ok(GateAnswer::NotLoaded) => {
                    if self.rebuild_locked(&coupon).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(coupon = %id, error = %e, "gate unavailable, using the database path");
                    self.mark_dirty(id)?;
                    break;
                }
            }
        }
        self.issue_in_database(&coupon, user).await
    }

    /// A gate winner writes its row. The gate is compensated when the
    /// database refuses, so no unit is lost.
    async fn commit_winner(
        &self,
        coupon: &Arc<Coupon>,
        user: UserId,
        slot: i32,
    ) -> Result<IssuedCoupon, CouponError> {
        let asked = std::time::Instant::now();
        let result = match &self.io.writer {
            Some(w) => w.write(coupon.clone(), user, slot).await,
            None => {
                let mut c = commerce_storage::conn(&self.io.db).await;
                match c.as_mut() {
                    Ok(conn) => store::insert(conn, coupon, user, slot).await,
                    Err(_) => Err(InsertError::Storage(StorageError::PoolExhausted)),
                }
            }
        };
        metrics::histogram!("coupon_write_seconds").record(asked.elapsed().as_secs_f64());
        match result {
            Ok(issued) => {
                count("gate", "issued");
                Ok(issued)
            }
            Err(InsertError::AlreadyIssued) => {
                // The gate lost track of this holder (rebuilt mid-flight):
                // keep the user, free the slot.
                self.give_back(coupon.id, user, false, Some(slot)).await;
                count("gate", "already_issued");
                Err(CouponError::AlreadyIssued)
            }
            Err(InsertError::SlotTaken) => {
                // The gate's numbering is stale (state lost, or the database
                // path issued meanwhile): find a real free slot instead.
                self.mark_dirty(coupon.id)?;
                match self.issue_in_database(coupon, user).await {
                    Err(CouponError::SoldOut) => {
                        self.give_back(coupon.id, user, true, None).await;
                        Err(CouponError::SoldOut)
                    }
                    other => other,
                }
            }
            Err(InsertError::Storage(e)) => {
                tracing::warn!(coupon = %coupon.id, user = %user, error = %e, "winner's write failed; unit given back");
                self.give_back(coupon.id, user, true, Some(slot)).await;
                count("gate", "write_failed");
                Err(write_failed(e))
            }
        }
    }

    /// "Already issued" is only said when PostgreSQL agrees. The first
    /// request may still be writing, so a missing row is awaited briefly.
    async fn confirm_holder(&self, id: CouponId, user: UserId) -> Result<bool, CouponError> {
        for attempt in 0..6 {
            if store::holds(&self.io.db, id, user).await? {
                return Ok(true);
            }
            if attempt < 5 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(false)
    }

    async fn give_back(&self, id: CouponId, user: UserId, forget_user: bool, slot: Option<i32>) {
        if let Err(e) = gate::give_back(&self.io.redis, id, user, forget_user, slot).await {
            tracing::warn!(coupon = %id, error = %e, "gate compensation failed; gate will be rebuilt");
            let _ = self.mark_dirty(id);
        }
    }

    /// The PostgreSQL-only path: bounded concurrency, constraints decide.
    async fn issue_in_database(
        &self,
        coupon: &Coupon,
        user: UserId,
    ) -> Result<IssuedCoupon, CouponError> {
        // Cheap answers first (one indexed read); the permit only guards
        // the slot search and insert.
        if store::holds(&self.io.db, coupon.id, user).await? {
            count("database", "already_issued");
            return Err(CouponError::AlreadyIssued);
        }
        if self
            .inner
            .sold_out
            .read()
            .map_err(lock_poisoned)?
            .contains(&coupon.id)
        {
            count("database", "sold_out");
            return Err(CouponError::SoldOut);
        }
        let _permit = tokio::time::timeout(
            self.inner.config.fallback_wait,
            self.inner.fallback.acquire(),
        )
        .await
        .map_err(|_| CouponError::Busy("coupon issuing is degraded and busy, retry shortly"))?
        .map_err(|_| CouponError::Busy("coupon issuing is shutting down"))?;
        let mut c = commerce_storage::conn(&self.io.db).await?;
        // Collisions with concurrent issuers are retried. Every collision
        // means another issuer took a slot, so this ends: sold out, issued,
        // or the deadline. The first search starts at a random slot; after a
        // collision the slot is drawn among all free ones.
        let deadline = std::time::Instant::now() + self.inner.config.fallback_wait;
        let mut collided = false;
        while std::time::Instant::now() < deadline {
            let slot = if collided {
                store::random_free_slot(&mut c, coupon).await?
            } else {
                store::free_slot(&mut c, coupon).await?
            };
            let Some(slot) = slot else {
                self.inner
                    .sold_out
                    .write()
                    .map_err(lock_poisoned)?
                    .insert(coupon.id);
                count("database", "sold_out");
                return Err(CouponError::SoldOut);
            };
            match store::insert(&mut c, coupon, user, slot).await {
                Ok(issued) => {
                    count("database", "issued");
                    return Ok(issued);
                }
                Err(InsertError::AlreadyIssued) => {
                    count("database", "already_issued");
                    return Err(CouponError::AlreadyIssued);
                }
                Err(InsertError::SlotTaken) => collided = true,
                Err(InsertError::Storage(e)) => return Err(write_failed(e)),
            }
        }
        Err(CouponError::Busy("too much contention, retry"))
    }

    fn is_dirty(&self, id: CouponId) -> Result<bool, CouponError> {
        Ok(self
            .inner
            .dirty
            .lock()
            .map_err(lock_poisoned)?
            .contains(&id))
    }

    fn mark_dirty(&self, id: CouponId) -> Result<(), CouponError> {
        self.inner.dirty.lock().map_err(lock_poisoned)?.insert(id);
        Ok(())
    }

    /// Rebuilds the gate unless another instance just did: takes the
    /// coupon's lock, then re-checks that the state is still missing or
    /// dirty before loading it from PostgreSQL.
    async fn rebuild_locked(&self, coupon: &Coupon) -> Result<(), CouponError> {
        let name = format!("coupon-gate:{}", coupon.id);
        let guard = self
            .inner
            .locks
            .acquire(
                &name,
                Duration::from_secs(10),
                self.inner.config.rebuild_wait,
            )
            .await
            .map_err(|_| CouponError::Busy("coupon gate is being rebuilt"))?;
        let loaded = gate::state(&self.io.redis, coupon.id)
            .await
            .map(|s| s.loaded);
        let result = match loaded {
            Ok(true) if !self.is_dirty(coupon.id)? => Ok(()),
            Ok(_) => self.rebuild(coupon).await.map(|_| ()),
            Err(_) => Err(CouponError::Busy("redis unavailable")),
        };
        let _ = guard.release().await;
        result
    }

    /// Loads the gate from PostgreSQL (callers hold the coupon's lock, or
    /// the coupon is brand new).
    async fn rebuild(&self, coupon: &Coupon) -> Result<GateState, CouponError> {
        let holders = store::holders(&self.io.db, coupon.id).await?;
        let expire = coupon
            .expires_at
            .unwrap_or_else(|| Utc::now() + chrono::Duration::days(30))
            + chrono::Duration::days(1);
        gate::load(
            &self.io.redis,
            coupon.id,
            coupon.quantity,
            &holders,
            expire.timestamp(),
        )
        .await
        .map_err(|_| CouponError::Busy("redis unavailable"))?;
        metrics::counter!("coupon_gate_rebuilds_total").increment(1);
        tracing::info!(coupon = %coupon.id, holders = holders.len(), "coupon gate rebuilt from the database");
        gate::state(&self.io.redis, coupon.id)
            .await
            .map_err(|_| CouponError::Busy("redis unavailable"))
    }

    /// Repairs drift between the gate and PostgreSQL (admin route).
    pub async fn reconcile(&self, id: CouponId) -> Result<ReconcileReport, CouponError> {
        let report = self.rebuild_checked(id).await?;
        if report.repaired {
            metrics::counter!("coupon_gate_repairs_total", "trigger" => "admin").increment(1);
        }
        Ok(report)
    }

    async fn rebuild_checked(&self, id: CouponId) -> Result<ReconcileReport, CouponError> {
        let coupon = self.get(id).await?;
        let name = format!("coupon-gate:{id}");
        let guard = self
            .inner
            .locks
            .acquire(
                &name,
                Duration::from_secs(10),
                self.inner.config.rebuild_wait,
            )
            .await
            .map_err(|_| CouponError::Busy("coupon gate is being rebuilt"))?;
        let before = gate::state(&self.io.redis, id).await.ok();
        let result = self.rebuild(&coupon).await;
        let _ = guard.release().await;
        let after = result?;
        self.inner.dirty.lock().map_err(lock_poisoned)?.remove(&id);
        let issued = store::issued_count(&self.io.db, id).await?;
        Ok(ReconcileReport {
            coupon_id: id,
            issued_in_database: issued,
            repaired: before != Some(after),
            gate_before: before,
            gate_after: after,
        })
    }

    /// `coupon_issued` and `coupon_quantity` of the open coupons that opened
    /// last (at most [`EXPOSED_COUPONS`]), from PostgreSQL, in Prometheus's
    /// text format, read at scrape: fresh whenever Prometheus looks, and a
    /// coupon that closes leaves the metrics instead of keeping its last
    /// count as a gauge would.
    pub async fn issued_exposition(&self) -> Result<String, CouponError> {
        let rows = store::open_issued(&self.io.db, EXPOSED_COUPONS).await?;
        if rows.is_empty() {
            return Ok(String::new());
        }
        let mut issued = String::from(
            "# HELP coupon_issued Coupons issued per open coupon, from PostgreSQL (read at scrape).\n\
             # TYPE coupon_issued gauge\n",
        );
        let mut quantity = String::from(
            "# HELP coupon_quantity Coupons that exist per open coupon (read at scrape).\n\
             # TYPE coupon_quantity gauge\n",
        );
        for (id, n, q) in rows {
            issued.push_str(&format!("coupon_issued{{coupon=\"{id}\"}} {n}\n"));
            quantity.push_str(&format!("coupon_quantity{{coupon=\"{id}\"}} {q}\n"));
        }
        Ok(issued + &quantity)
    }

    /// Periodic check of open coupons: a gate whose holder count differs
    /// from PostgreSQL's by the same amount on two consecutive checks (so not
    /// just winners in flight) is rebuilt. Returns the coupons repaired.
    pub async fn reconcile_open(&self) -> Result<Vec<CouponId>, CouponError> {
        let mut repaired = Vec::new();
        for coupon in store::open_now(&self.io.db).await? {
            let Ok(state) = gate::state(&self.io.redis, coupon.id).await else {
                return Ok(repaired);
            };
            let rows = store::issued_count(&self.io.db, coupon.id).await?;
            let seen = (state.users, rows);
            let previous = self
                .inner
                .drift
                .lock()
                .map_err(lock_poisoned)?
                .insert(coupon.id, seen);
            let drifted = !state.loaded || (state.users != rows && previous == Some(seen));
            if drifted {
                if let Ok(report) = self.rebuild_checked(coupon.id).await {
                    if report.repaired {
                        metrics::counter!("coupon_gate_repairs_total", "trigger" => "periodic")
                            .increment(1);
                    }
                    repaired.push(coupon.id);
                }
            }
        }
        Ok(repaired)
    }
}
