//! Orders and payment. Stock is reserved with conditional updates (never
//! below zero, returned exactly once on cancel or expiry); an order is paid
//! at most once: under the order's distributed lock, in one transaction whose
//! every step is guarded, so a stale lock holder or a racing instance can only
//! fail, never pay twice.

pub mod config;
pub mod error;
pub mod gate;
pub mod model;
mod pay_writer;
pub mod seams;
mod store;
mod writer;

pub use config::OrderConfig;
pub use error::OrderError;
pub use model::{Line, NewOrder, Order, OrderItem, Payment, MAX_ITEMS, MAX_QUANTITY};

use commerce_domain::{OrderId, ProductId, UserId};
use commerce_resilience::{LockManager, RedisClient};
use commerce_storage::idempotency::SaveAnswer;
use commerce_storage::outbox::{self, event};
use commerce_storage::schema::orders;
use commerce_storage::{conn, DbPool, StorageError};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use seams::Seams;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use store::{
    create_in, load_items, pay_in, return_stock, to_order, unusable, OrderRow, ORDER_COLUMNS,
};
use tokio::sync::Semaphore;

/// Help text of this crate's metrics, for `/metrics` (call once, after
/// the recorder is installed).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "stock_gate_total",
        "Stock gate steps by outcome (taken, out_of_stock, refused_by_database, bypassed)."
    );
    // Created at 0 so that the first refusal is an increase Prometheus sees.
    metrics::counter!("stock_gate_total", "outcome" => "refused_by_database").increment(0);
    describe_counter!(
        "stock_gate_loads_total",
        "Stock gates loaded from PostgreSQL's committed stock."
    );
    describe_gauge!(
        "stock_gate_dirty_products",
        "Products whose gate missed a give-back and waits to be reloaded."
    );
    describe_counter!("orders_created_total", "Order creations by outcome.");
    describe_counter!("payments_total", "Payments by outcome.");
}

#[derive(Clone)]
pub struct Orders {
    db: DbPool,
    /// The process's shared pool: the PostgreSQL-only path while Redis is
    /// out takes its connections there, not from a worker's small pool
    /// (sized for its writers), which that path's crowd would drain.
    fallback_db: DbPool,
    locks: LockManager,
    redis: RedisClient,
    config: OrderConfig,
    seams: Seams,
    writer: Option<commerce_storage::batch::Batcher<writer::OrderBatch>>,
    /// Payments written in batches (None: one transaction each).
    payer: Option<commerce_storage::batch::Batcher<pay_writer::PayBatch>>,
    shared: Arc<Shared>,
}

/// What the clones of one process share.
struct Shared {
    fallback: Semaphore,
    /// Products whose units could not be given back to the gate (Redis was
    /// out): their gate under-counts and is reloaded before it is used.
    dirty: Mutex<HashSet<ProductId>>,
}

/// An order's units, asked of the stock gate before the order is written.
#[derive(Debug)]
#[must_use = "a hold is written with create_held or given back with release"]
pub enum Hold {
    /// The gate holds these units for the order.
    Units(Vec<(ProductId, i32)>),
    /// Redis is out: PostgreSQL alone will decide (bounded concurrency).
    Bypass,
    /// The gate is switched off (`stock_gate = false`).
    Direct,
}

/// Why a line could not be reserved through the gate.
enum GateRefusal {
    /// Redis is out or keeps losing the gate: use the PostgreSQL path.
    Down,
    Order(OrderError),
}

/// The batch writers of one handle (none outside a Tokio runtime, or where
/// the config writes each order or payment alone).
#[allow(clippy::type_complexity)]
fn start_writers(
    db: &DbPool,
    config: &OrderConfig,
    seams: &Seams,
) -> (
    Option<commerce_storage::batch::Batcher<writer::OrderBatch>>,
    Option<commerce_storage::batch::Batcher<pay_writer::PayBatch>>,
) {
    let in_runtime = tokio::runtime::Handle::try_current().is_ok();
    let writer = (config.stock_gate && config.writers > 0 && in_runtime).then(|| {
        commerce_storage::batch::Batcher::start(
            db.clone(),
            writer::OrderBatch {
                ttl: config.ttl,
                seams: seams.clone(),
            },
            commerce_storage::batch::BatchConfig {
                writers: config.writers,
                max_batch: config.write_batch,
                timeout: config.write_timeout,
            },
        )
    });
    let payer = (config.pay_writers > 0 && in_runtime).then(|| {
        commerce_storage::batch::Batcher::start(
            db.clone(),
            pay_writer::PayBatch {
                seams: seams.clone(),
            },
            commerce_storage::batch::BatchConfig {
                writers: config.pay_writers,
                max_batch: config.write_batch,
                timeout: config.write_timeout,
            },
        )
    });
    (writer, payer)
}

impl Orders {
    /// Call from within a Tokio runtime to get batched writes (the writer
    /// tasks are spawned here); outside one, each order writes alone.
    pub fn new(db: DbPool, locks: LockManager, config: OrderConfig, seams: Seams) -> Self {
        let (writer, payer) = start_writers(&db, &config, &seams);
        Self {
            payer,
            redis: locks.redis().clone(),
            shared: Arc::new(Shared {
                fallback: Semaphore::new(config.fallback_concurrency.max(1)),
                dirty: Mutex::default(),
            }),
            fallback_db: db.clone(),
            db,
            locks,
            config,
            seams,
            writer,
        }
    }

    /// A handle whose calls go through `db` and `locks` (an HTTP worker's
    /// own pool and Redis connection), with batch writers of its own
    /// spawned on the current runtime. Called on a worker's thread, its
    /// connections' tasks run on the thread serving the request: an order
    /// or a payment then wakes no other thread (each wake-up is a scheduler
    /// round trip on a machine a sale keeps busy). The gate, the fallback
    /// limit and the products to reload stay shared with every handle.
    pub fn on_this_thread(&self, db: DbPool, locks: LockManager) -> Self {
        let (writer, payer) = start_writers(&db, &self.config, &self.seams);
        Self {
            payer,
            redis: locks.redis().clone(),
            shared: self.shared.clone(),
            db,
            fallback_db: self.fallback_db.clone(),
            locks,
            config: self.config.clone(),
            seams: self.seams.clone(),
            writer,
        }
    }

    /// Loads the gate's scripts and opens its connection ahead of traffic.
    pub async fn warm_up(&self) {
        if let Err(e) = gate::prepare(&self.redis).await {
            tracing::debug!(error = %e, "stock gate not warmed up");
        }
    }

    /// Reserves stock and creates a pending order. Not enough stock for any
    /// line: nothing is reserved.
    pub async fn create(
        &self,
        user: UserId,
        new: &NewOrder,
        answer: Option<SaveAnswer<Order>>,
    ) -> Result<Order, OrderError> {
        let hold = self.hold(new).await?;
        self.create_held(user, new, hold, answer).await
    }

    /// One transaction on the product rows (no gate).
    async fn create_direct(
        &self,
        user: UserId,
        new: &NewOrder,
        answer: Option<SaveAnswer<Order>>,
    ) -> Result<Order, OrderError> {
        let mut c = conn(&self.db).await?;
        create_in(&mut c, &self.seams, user, new, answer, self.config.ttl).await
    }

    /// Asks the stock gate for `new`'s units, before anything else: a sold
    /// out answer then costs no database work at all. The [`Hold`] must be
    /// passed to [`Orders::create_held`] or [`Orders::release`].
    pub async fn hold(&self, new: &NewOrder) -> Result<Hold, OrderError> {
        if !self.config.stock_gate {
            return Ok(Hold::Direct);
        }
        let mut held: Vec<(ProductId, i32)> = Vec::with_capacity(new.lines.len());
        for line in &new.lines {
            match self.reserve(line.product, line.quantity).await {
                Ok(true) => held.push((line.product, line.quantity)),
                Ok(false) => {
                    self.give_back(&held).await;
                    metrics::counter!("stock_gate_total", "outcome" => "out_of_stock").increment(1);
                    metrics::counter!("orders_created_total", "outcome" => "out_of_stock")
                        .increment(1);
                    return Err(OrderError::OutOfStock(line.product));
                }
                Err(GateRefusal::Order(e)) => {
                    self.give_back(&held).await;
                    return Err(e);
                }
                Err(GateRefusal::Down) => {
                    self.give_back(&held).await;
                    return Ok(Hold::Bypass);
                }
            }
        }
        metrics::counter!("stock_gate_total", "outcome" => "taken").increment(1);
        Ok(Hold::Units(held))
    }

    /// Gives a hold's units back (its order will not be written).
    pub async fn release(&self, hold: Hold) {
        if let Hold::Units(units) = hold {
            self.give_back(&units).await;
        }
    }

    /// Writes the order whose units `hold` holds.
    pub async fn create_held(
        &self,
        user: UserId,
        new: &NewOrder,
        hold: Hold,
        answer: Option<SaveAnswer<Order>>,
    ) -> Result<Order, OrderError> {
        self.count(self.write_held(user, new, hold, answer, false).await)
    }

    /// [`Orders::create_held`] for a request that has not claimed its
    /// `Idempotency-Key` yet: the order's batch claims it in the same
    /// transaction that writes the order and its answer (one statement
    /// fewer per order, and no connection of its own). A key found taken,
    /// or an order the gate cannot batch, answers `NotClaimed` and nothing
    /// is written.
    pub async fn create_claiming(
        &self,
        user: UserId,
        new: &NewOrder,
        hold: Hold,
        answer: SaveAnswer<Order>,
    ) -> Result<Order, OrderError> {
        if self.writer.is_none() || !matches!(hold, Hold::Units(_)) {
            self.release(hold).await;
            return Err(OrderError::NotClaimed);
        }
        match self.write_held(user, new, hold, Some(answer), true).await {
            Err(OrderError::NotClaimed) => Err(OrderError::NotClaimed),
            other => self.count(other),
        }
    }

    fn count(&self, result: Result<Order, OrderError>) -> Result<Order, OrderError> {
        let outcome = match &result {
            Ok(_) => "created",
            Err(OrderError::OutOfStock(_)) => "out_of_stock",
            Err(_) => "refused",
        };
        metrics::counter!("orders_created_total", "outcome" => outcome).increment(1);
        result
    }

    async fn write_held(
        &self,
        user: UserId,
        new: &NewOrder,
        hold: Hold,
        answer: Option<SaveAnswer<Order>>,
        claims: bool,
    ) -> Result<Order, OrderError> {
        let held = match hold {
            Hold::Direct => return self.create_direct(user, new, answer).await,
            Hold::Bypass => return self.create_degraded(user, new, answer).await,
            Hold::Units(units) => units,
        };
        // A coupon the caller cannot use is refused; its units go back.
        let discount = match new.user_coupon {
            Some(uc) => {
                let read = async {
                    let c = conn(&self.db).await?;
                    self.seams
                        .coupons
                        .discount(&c, user, uc)
                        .await?
                        .map_err(unusable)
                };
                match read.await {
                    Ok(d) => d,
                    Err(e) => {
                        self.give_back(&held).await;
                        return Err(e);
                    }
                }
            }
            None => 0,
        };
        let result = match &self.writer {
            Some(w) => writer::write(w, user, new.clone(), discount, answer, claims).await,
            None => self.create_direct(user, new, answer).await,
        };
        match &result {
            Ok(_) => {}
            Err(OrderError::OutOfStock(short)) => {
                // PostgreSQL had fewer units than the gate: reload its count
                // rather than give these back to it.
                metrics::counter!("stock_gate_total", "outcome" => "refused_by_database")
                    .increment(1);
                self.forget(&[*short]).await;
                let others: Vec<_> = held.into_iter().filter(|(p, _)| p != short).collect();
                self.give_back(&others).await;
            }
            Err(_) => self.give_back(&held).await,
        }
        result
    }

    /// Redis is out: PostgreSQL alone decides, a bounded number at once.
    /// The gate does not see these units go, so it can only over-count.
    async fn create_degraded(
        &self,
        user: UserId,
        new: &NewOrder,
        answer: Option<SaveAnswer<Order>>,
    ) -> Result<Order, OrderError> {
        let _permit =
            tokio::time::timeout(self.config.fallback_wait, self.shared.fallback.acquire())
                .await
                .map_err(|_| OrderError::Degraded)?
                .map_err(|_| OrderError::Degraded)?;
        metrics::counter!("stock_gate_total", "outcome" => "bypassed").increment(1);
        let mut c = conn(&self.fallback_db).await?;
        create_in(&mut c, &self.seams, user, new, answer, self.config.ttl).await
    }

    /// Takes `quantity` units of `product` from the gate, loading the gate
    /// from PostgreSQL when it is missing. `Ok(false)`: not enough left.
    async fn reserve(&self, product: ProductId, quantity: i32) -> Result<bool, GateRefusal> {
        if self.is_dirty(product) {
            if gate::invalidate(&self.redis, &[product]).await.is_err() {
                return Err(GateRefusal::Down);
            }
            self.lock_dirty().remove(&product);
        }
        for _ in 0..3 {
            match gate::reserve(&self.redis, product, quantity).await {
                Ok(gate::Reserve::Taken { .. }) => return Ok(true),
                Ok(gate::Reserve::OutOfStock) => return Ok(false),
                Ok(gate::Reserve::NotLoaded) => {
                    let stock = self
                        .stock_of(product)
                        .await
                        .map_err(GateRefusal::Order)?
                        .ok_or(GateRefusal::Order(OrderError::UnknownProduct(product)))?;
                    if gate::load(&self.redis, product, stock).await.is_err() {
                        return Err(GateRefusal::Down);
                    }
                    metrics::counter!("stock_gate_loads_total").increment(1);
                }
                Err(e) => {
                    tracing::debug!(product = %product, error = %e, "stock gate unavailable, using the database path");
                    return Err(GateRefusal::Down);
                }
            }
        }
        Err(GateRefusal::Down)
    }

    /// Committed stock of `product` (`None`: no such product).
    async fn stock_of(&self, product: ProductId) -> Result<Option<i64>, OrderError> {
        let c = conn(&self.db).await?;
        Ok(self.seams.stock.committed(&c, product).await?)
    }

    /// Gives units back to the gate. What cannot be given back (Redis out)
    /// marks the product for a reload from PostgreSQL.
    async fn give_back(&self, units: &[(ProductId, i32)]) {
        if !self.config.stock_gate {
            return;
        }
        for &(product, quantity) in units {
            if let Err(e) = gate::release(&self.redis, product, quantity).await {
                tracing::debug!(product = %product, error = %e, "units not given back to the gate; it will be reloaded");
                self.lock_dirty().insert(product);
            }
        }
    }

    /// Drops the gate of `products` (their next order reloads it).
    async fn forget(&self, products: &[ProductId]) {
        if !self.config.stock_gate {
            return;
        }
        if gate::invalidate(&self.redis, products).await.is_err() {
            self.lock_dirty().extend(products.iter().copied());
        }
    }

    /// Loads the gate of a product just created with `stock` units (best
    /// effort: a gate not loaded here is loaded by its first order).
    pub async fn prime(&self, product: ProductId, stock: i64) {
        if !self.config.stock_gate {
            return;
        }
        if let Err(e) = gate::load(&self.redis, product, stock).await {
            tracing::debug!(product = %product, error = %e, "stock gate not primed");
        }
    }

    /// The stock of `product` was set by hand (admin): the gate reloads it.
    pub async fn stock_changed(&self, product: ProductId) {
        self.forget(&[product]).await;
    }

    /// Reloads the gates that missed a give-back, once Redis answers again.
    pub async fn heal_gates(&self) {
        let dirty: Vec<ProductId> = self.lock_dirty().iter().copied().collect();
        if !dirty.is_empty() && gate::invalidate(&self.redis, &dirty).await.is_ok() {
            let mut set = self.lock_dirty();
            for p in dirty {
                set.remove(&p);
            }
        }
        // Runs every sweep: a gate left unreloaded for minutes shows as drift.
        let left = self.lock_dirty().len();
        metrics::gauge!("stock_gate_dirty_products").set(left as f64);
    }

    fn lock_dirty(&self) -> std::sync::MutexGuard<'_, HashSet<ProductId>> {
        // A panic elsewhere while holding it leaves a set still worth using.
        self.shared
            .dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is_dirty(&self, product: ProductId) -> bool {
        let set = self.lock_dirty();
        !set.is_empty() && set.contains(&product)
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
                let mut returned = Vec::new();
                if let Some(order) = done {
                    returned = return_stock(tx, &self.seams, &[order]).await?;
                    outbox::enqueue(
                        tx,
                        event::ORDER_CANCELLED,
                        &order.to_string(),
                        &serde_json::json!({ "order_id": order, "user_id": user }),
                    )
                    .await?;
                }
                Ok::<_, OrderError>((done.is_some(), returned))
            })
            .await?;
        drop(c);
        let (moved, returned) = moved;
        self.give_back(&returned).await;
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
        self.pay_as(user, id, answer, false).await
    }

    /// [`Orders::pay`] for a request that has not claimed its
    /// `Idempotency-Key` yet: the payment's batch claims it with the
    /// payment and its answer, in one transaction (no claim statement and
    /// no answer update of its own). Anything but a payment made here (a
    /// key used before, an order not payable, someone else's order)
    /// answers `NotClaimed` with nothing written, and the request goes the
    /// usual way, which says exactly why.
    pub async fn pay_claiming(
        &self,
        user: UserId,
        id: OrderId,
        answer: SaveAnswer<Payment>,
    ) -> Result<Payment, OrderError> {
        if self.payer.is_none() {
            return Err(OrderError::NotClaimed);
        }
        match self.pay_as(user, id, Some(answer), true).await {
            Err(OrderError::NotFound) => Err(OrderError::NotClaimed),
            other => other,
        }
    }

    async fn pay_as(
        &self,
        user: UserId,
        id: OrderId,
        answer: Option<SaveAnswer<Payment>>,
        claims: bool,
    ) -> Result<Payment, OrderError> {
        // The caller's order, or nothing is taken: no lock (and no Redis
        // key) for an order that does not exist or is someone else's.
        let owned: Option<i64> = {
            let mut c = conn(&self.db).await?;
            orders::table
                .filter(orders::id.eq(id.get()))
                .filter(orders::user_id.eq(user.get()))
                .select(orders::id)
                .first(&mut c)
                .await
                .optional()?
        };
        if owned.is_none() {
            return Err(OrderError::NotFound);
        }
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
        let result = self.pay_locked(user, id, answer, claims).await;
        if let Err(e) = lock.release().await {
            tracing::debug!(order = %id, error = %e, "payment lock release failed (lease will expire)");
        }
        let outcome = match &result {
            // Counted when the request pays the usual way.
            Err(OrderError::NotClaimed) => return result,
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
        claims: bool,
    ) -> Result<Payment, OrderError> {
        match &self.payer {
            Some(p) => pay_writer::pay(p, user, id, answer, claims).await,
            None => {
                let mut c = conn(&self.db).await?;
                pay_in(&mut c, &self.seams, user, id, answer).await
            }
        }
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
        let (expired, returned) = c
            .transaction(async |tx| {
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
                    return Ok((0, Vec::new()));
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
                let returned = if ids.is_empty() {
                    Vec::new()
                } else {
                    return_stock(tx, &self.seams, &ids).await?
                };
                for (order, user) in &expired {
                    outbox::enqueue(
                        tx,
                        event::ORDER_EXPIRED,
                        &order.to_string(),
                        &serde_json::json!({ "order_id": order, "user_id": user }),
                    )
                    .await?;
                }
                Ok::<_, OrderError>((ids.len(), returned))
            })
            .await?;
        drop(c);
        self.give_back(&returned).await;
        Ok(expired)
    }
}
