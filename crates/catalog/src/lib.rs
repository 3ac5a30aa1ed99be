//! Products and the popular-products ranking.
//!
//! # Product pages: three layers, each in front of the next
//!
//! 1. **L1, in process** (moka): `l1_ttl` fresh, bounded to `l1_capacity`
//!    products. Concurrent misses of one product share one load
//!    (`try_get_with`), so a crowd arriving on a cold product costs one read.
//!    A hit on an entry older than `refresh_ahead_pct` of its TTL reloads it
//!    in the background, so a product that keeps being read never expires.
//! 2. **L2, Redis**: the JSON document with its version (`updated_at`) and a
//!    TTL of `l2_ttl` ± `l2_jitter_pct` (spread so products cached together do
//!    not expire together). Writes are *put-if-not-older* (a Lua script), so a
//!    slow reader can never overwrite a newer copy. Near the end of its TTL a
//!    read refreshes it from PostgreSQL in the background, one instance at a
//!    time (a `SET NX` lock).
//! 3. **PostgreSQL**, the truth, read behind a semaphore (`db_concurrency`,
//!    waiting at most `db_wait`, then 503 `catalog_busy` with `Retry-After`).
//!    With a read replica configured, these reads (and the list, and the
//!    popular ranking's fallback) go to the replica through its own breaker
//!    and fall back to the primary; writes, and everything orders decide
//!    on, stay on the primary (see `commerce_resilience::replica`).
//!
//! # How stale a page can be (the invalidation bound)
//!
//! A change made through the catalog ([`Catalog::update`], or
//! [`Catalog::invalidate`] after a change made elsewhere) is written through
//! to L2 before the call returns and announced on the Redis channel
//! `<prefix>catalog:invalidate`, which every instance listens to and answers by
//! dropping its L1 copy. So every instance serves the new value **within
//! `l1_ttl` (default 1 s) of the change's answer**, and usually within
//! milliseconds: even with the announcement lost (listener reconnecting), an
//! L1 copy was read from L2 at most `l1_ttl` ago. Stock on the product page is
//! at most that stale for changes the catalog is told about; a stock change it
//! is not told about shows within `l2_ttl + l1_ttl`.
//!
//! When Redis is unreachable at write time the writer keeps the change in a
//! retry set (it reads PostgreSQL for that product meanwhile) and re-sends it
//! every 250 ms once Redis answers; other instances, whose Redis calls fail
//! too, fall through to PostgreSQL as their L1 copies expire. Every instance
//! also refuses an L2 copy older than one it has already seen, so a copy left
//! in Redis by an outage cannot bring an old value back.
//!
//! # Degraded answers
//!
//! With Redis out (its breaker open) pages come from L1, then PostgreSQL. When
//! PostgreSQL is busy or down too, the last copy seen (kept `stale_ttl`) is
//! served, marked stale with its age; without one the answer is a 503.
//!
//! # Popular products
//!
//! See [`Catalog::record_sales`] and [`Catalog::popular`].

pub mod config;
pub mod error;
pub mod model;
mod popular;
mod shared;
pub mod stock;
pub mod store;
mod sync;

pub use config::CatalogConfig;
pub use error::CatalogError;
pub use model::*;
pub use popular::{PopularBoard, RankingOrigin};

use shared::{bump, lock};

use chrono::Utc;
use commerce_domain::ProductId;
use commerce_resilience::{ReadReplica, RedisClient, RedisConfig};
use commerce_storage::DbPool;
use moka::future::Cache;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Counters since start, for tests and diagnostics (also exported as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatalogStats {
    /// Product pages read from PostgreSQL.
    pub detail_db_loads: u64,
    /// Product pages found in Redis.
    pub l2_hits: u64,
    /// Popular boards computed from PostgreSQL (Redis out or not built).
    pub popular_db_loads: u64,
    /// Popular boards computed from Redis.
    pub popular_redis_loads: u64,
    /// `COUNT(*)` queries for the list's total.
    pub count_loads: u64,
    /// Answers served from a stale copy.
    pub stale_served: u64,
}

#[derive(Default)]
struct Counters {
    detail_db_loads: AtomicU64,
    l2_hits: AtomicU64,
    popular_db_loads: AtomicU64,
    popular_redis_loads: AtomicU64,
    count_loads: AtomicU64,
    stale_served: AtomicU64,
}

/// One product as held in process: `None` remembers "no such product" for
/// the same short TTL, so unknown ids do not reach PostgreSQL every time.
#[derive(Debug)]
struct Entry {
    product: Option<Arc<ProductDetail>>,
    source: Source,
    /// When this instance got the copy (drives refresh-ahead).
    fetched: Instant,
    /// Wall clock (ms) when the copy was read from PostgreSQL (drives the
    /// stale age shown to clients, across instances).
    read_at_ms: i64,
}

impl Entry {
    fn from_db(product: Option<ProductDetail>) -> Self {
        Self {
            product: product.map(Arc::new),
            source: Source::Db,
            fetched: Instant::now(),
            read_at_ms: now_ms(),
        }
    }

    fn version(&self) -> Option<i64> {
        self.product.as_ref().map(|p| p.version())
    }

    fn age(&self) -> Duration {
        Duration::from_millis(u64::try_from(now_ms() - self.read_at_ms).unwrap_or(0))
    }

    fn served(
        &self,
        source: Source,
        stale_age: Option<Duration>,
    ) -> Result<Served<Arc<ProductDetail>>, CatalogError> {
        let product = self.product.clone().ok_or(CatalogError::NotFound)?;
        Ok(Served {
            value: product,
            source,
            stale_age,
        })
    }
}

/// The Redis L2 document.
#[derive(Debug, Serialize, Deserialize)]
struct L2Doc {
    /// `updated_at` in microseconds; the put-if-not-older script reads it.
    version: i64,
    read_at_ms: i64,
    ttl_ms: u64,
    product: ProductDetail,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Writes an L2 copy unless Redis holds a newer one. KEYS[1] = key,
/// ARGV = document, its version, TTL in ms.
const PUT_IF_NOT_OLDER: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, doc = pcall(cjson.decode, cur)
  if ok and type(doc) == 'table' and tonumber(doc['version']) and tonumber(doc['version']) > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"#;

/// The catalog capability. Cheap to clone; built once per process.
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

struct Inner {
    /// The primary: writes, and reads whose answer feeds a write.
    db: DbPool,
    /// Reads that tolerate a replica's lag (pages, list, popular ranking).
    reads: ReadReplica,
    redis: RedisClient,
    /// For the invalidation listener's dedicated connection: the one Redis,
    /// or each node of a cluster (tried in turn; any node hears every
    /// PUBLISH).
    subscribers: Vec<redis::Client>,
    /// Which of `subscribers` the next attempt uses.
    next_subscriber: std::sync::atomic::AtomicUsize,
    subscribe_timeout: Duration,
    /// Tags this instance's announcements, so it skips its own (it already
    /// applied them, and dropping its fresh copy would only cost a reload).
    origin: u64,
    config: CatalogConfig,
    refresh_after: Duration,
    l1: Cache<ProductId, Arc<Entry>>,
    /// Last copy of each product seen, kept `stale_ttl`: answers while
    /// PostgreSQL fails, and the floor below which L2 copies are refused.
    seen: Cache<ProductId, Arc<Entry>>,
    /// Bumped on every invalidation: a load that overlapped one reloads.
    epoch: AtomicU64,
    refreshing: Mutex<HashSet<ProductId>>,
    /// Changes not yet written to Redis (it was unreachable).
    pending: Mutex<HashSet<ProductId>>,
    db_gate: Semaphore,
    count: Cache<(), i64>,
    popular: Cache<(), Arc<PopularBoard>>,
    last_board: Mutex<Option<Arc<PopularBoard>>>,
    /// Days whose Redis ranking must be rebuilt from PostgreSQL.
    dirty_days: Mutex<BTreeSet<chrono::NaiveDate>>,
    put_script: redis::Script,
    top_script: redis::Script,
    counters: Counters,
}

/// Removes a product from the refreshing set however the refresh ends.
struct RefreshGuard {
    catalog: Catalog,
    id: ProductId,
}

impl Drop for RefreshGuard {
    fn drop(&mut self) {
        lock(&self.catalog.inner.refreshing).remove(&self.id);
    }
}

impl Catalog {
    /// Builds the catalog without touching Redis or PostgreSQL (the
    /// listener connects from [`Catalog::run_background`]). Fails only on a
    /// malformed Redis URL. `db`'s primary takes the writes; its replica,
    /// if any, the reads that tolerate lag.
    pub fn new(
        db: ReadReplica,
        redis: RedisClient,
        redis_config: &RedisConfig,
        config: CatalogConfig,
    ) -> Result<Self, redis::RedisError> {
        let subscribers = redis_config
            .pubsub_urls()
            .iter()
            .map(|url| redis::Client::open(url.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let refresh_after = config
            .l1_ttl
            .mul_f64(f64::from(config.refresh_ahead_pct.clamp(1, 99)) / 100.0);
        let l1 = Cache::builder()
            .max_capacity(config.l1_capacity.max(1))
            .time_to_live(config.l1_ttl)
            .build();
        let seen = Cache::builder()
            .max_capacity(config.l1_capacity.max(1))
            .time_to_live(config.stale_ttl.max(config.l1_ttl))
            .build();
        let count = Cache::builder()
            .max_capacity(1)
            .time_to_live(config.count_ttl)
            .build();
        let popular = Cache::builder()
            .max_capacity(1)
            .time_to_live(config.popular_ttl)
            .build();
        Ok(Self {
            inner: Arc::new(Inner {
                db: db.primary().clone(),
                reads: db,
                redis,
                subscribers,
                next_subscriber: std::sync::atomic::AtomicUsize::new(0),
                subscribe_timeout: redis_config.connect_timeout.max(Duration::from_millis(100)) * 2,
                origin: rand::random(),
                refresh_after,
                l1,
                seen,
                epoch: AtomicU64::new(0),
                refreshing: Mutex::default(),
                pending: Mutex::default(),
                db_gate: Semaphore::new(config.db_concurrency.max(1)),
                count,
                popular,
                last_board: Mutex::default(),
                dirty_days: Mutex::default(),
                put_script: redis::Script::new(PUT_IF_NOT_OLDER),
                top_script: redis::Script::new(popular::TOP_SCRIPT),
                counters: Counters::default(),
                config,
            }),
        })
    }

    pub fn config(&self) -> &CatalogConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> CatalogStats {
        let c = &self.inner.counters;
        CatalogStats {
            detail_db_loads: c.detail_db_loads.load(Ordering::Relaxed),
            l2_hits: c.l2_hits.load(Ordering::Relaxed),
            popular_db_loads: c.popular_db_loads.load(Ordering::Relaxed),
            popular_redis_loads: c.popular_redis_loads.load(Ordering::Relaxed),
            count_loads: c.count_loads.load(Ordering::Relaxed),
            stale_served: c.stale_served.load(Ordering::Relaxed),
        }
    }

    /// Product pages read from PostgreSQL since start.
    pub fn db_loads(&self) -> u64 {
        self.inner.counters.detail_db_loads.load(Ordering::Relaxed)
    }

    fn l2_key(&self, id: ProductId) -> String {
        self.inner.redis.key(&format!("catalog:product:{id}"))
    }

    fn channel(&self) -> String {
        self.inner.redis.key("catalog:invalidate")
    }

    // ---- writes ----------------------------------------------------------

    pub async fn create(&self, new: &NewProduct) -> Result<Product, CatalogError> {
        let product = store::insert(&self.inner.db, new).await?;
        self.inner.count.invalidate_all();
        // Another instance may hold "no such product" for this id.
        self.announce(&product).await;
        Ok(product)
    }

    pub async fn update(
        &self,
        id: ProductId,
        patch: &ProductPatch,
    ) -> Result<Product, CatalogError> {
        let product = store::update(&self.inner.db, id, patch).await?;
        self.announce(&product).await;
        Ok(product)
    }

    /// For changes made outside the catalog (stock reserved by an order):
    /// drops every cached copy of these products, here and on every instance.
    pub async fn invalidate(&self, ids: &[ProductId]) {
        if ids.is_empty() || !self.inner.config.detail_cache {
            return;
        }
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        for id in ids {
            self.inner.l1.invalidate(id).await;
        }
        lock(&self.inner.pending).extend(ids.iter().copied());
        self.flush_pending().await;
    }

    /// Makes a just-written product visible: in this instance at once, in
    /// Redis (write-through, only if newer) and on other instances (the
    /// invalidation channel). What Redis refused is retried by the upkeep.
    async fn announce(&self, product: &Product) {
        if !self.inner.config.detail_cache {
            return;
        }
        let detail = product.detail();
        let id = detail.id;
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        let entry = Arc::new(Entry::from_db(Some(detail.clone())));
        self.inner.seen.insert(id, entry.clone()).await;
        self.inner.l1.insert(id, entry).await;
        metrics::counter!("catalog_invalidations_total", "via" => "write").increment(1);
        let shared = match self.l2_put(&detail).await {
            Ok(()) => self.publish(&[id]).await,
            Err(e) => Err(e),
        };
        if let Err(e) = shared {
            tracing::info!(product = %id, error = %e, "change not yet in Redis; will retry");
            lock(&self.inner.pending).insert(id);
        }
    }

    async fn publish(
        &self,
        ids: &[ProductId],
    ) -> Result<(), commerce_resilience::CallError<redis::RedisError>> {
        let ids = ids.iter().map(ToString::to_string).collect::<Vec<_>>();
        let payload = format!("{:x}:{}", self.inner.origin, ids.join(","));
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(self.channel()).arg(payload);
        self.inner.redis.query::<i64>(cmd).await.map(|_| ())
    }

    /// Re-sends changes Redis missed: drops their L2 copies (the next reader
    /// loads PostgreSQL) and announces them.
    pub(crate) async fn flush_pending(&self) {
        let ids: Vec<ProductId> = lock(&self.inner.pending).iter().copied().collect();
        if ids.is_empty() {
            return;
        }
        let keys: Vec<String> = ids.iter().map(|id| self.l2_key(*id)).collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let sent = match self.inner.redis.del(&key_refs).await {
            Ok(_) => self.publish(&ids).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(()) => {
                let mut pending = lock(&self.inner.pending);
                for id in &ids {
                    pending.remove(id);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, waiting = ids.len(), "pending invalidations still waiting for Redis")
            }
        }
    }

    /// Drops this instance's copy (an announcement from another instance).
    pub(crate) async fn drop_local(&self, id: ProductId) {
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        self.inner.l1.invalidate(&id).await;
        metrics::counter!("catalog_invalidations_total", "via" => "channel").increment(1);
    }

    /// Drops every L1 copy: after the listener (re)connects, announcements
    /// sent while it was away are lost.
    pub(crate) fn drop_all_local(&self) {
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        self.inner.l1.invalidate_all();
    }

    // ---- reads -----------------------------------------------------------

    /// The product page, from the nearest layer that has it.
    pub async fn detail(&self, id: ProductId) -> Result<Served<Arc<ProductDetail>>, CatalogError> {
        let inner = &self.inner;
        if !inner.config.detail_cache {
            metrics::counter!("catalog_detail_total", "layer" => "db").increment(1);
            let product = self.read_db(id).await?.ok_or(CatalogError::NotFound)?;
            return Ok(Served {
                value: Arc::new(product),
                source: Source::Db,
                stale_age: None,
            });
        }
        if let Some(entry) = inner.l1.get(&id).await {
            self.refresh_ahead(id, &entry);
            metrics::counter!("catalog_detail_total", "layer" => "l1").increment(1);
            return entry.served(Source::L1, None);
        }
        let ran = AtomicBool::new(false);
        let loaded = inner
            .l1
            .try_get_with(id, async {
                ran.store(true, Ordering::Relaxed);
                self.load(id).await
            })
            .await;
        match loaded {
            Ok(entry) => {
                // Callers that waited on another's load were served in process.
                let source = if ran.load(Ordering::Relaxed) {
                    entry.source
                } else {
                    Source::L1
                };
                metrics::counter!("catalog_detail_total", "layer" => source.as_str()).increment(1);
                entry.served(source, None)
            }
            Err(e) => {
                if e.is_unavailable() {
                    if let Some(old) = inner.seen.get(&id).await.filter(|o| o.product.is_some()) {
                        bump(&inner.counters.stale_served);
                        metrics::counter!("catalog_detail_total", "layer" => "stale").increment(1);
                        tracing::debug!(product = %id, error = %e, "serving a stale copy");
                        return old.served(Source::L1, Some(old.age()));
                    }
                }
                Err(CatalogError::from_shared(&e))
            }
        }
    }

    /// Reloads a hot entry before it expires, once at a time per product.
    fn refresh_ahead(&self, id: ProductId, entry: &Entry) {
        if entry.fetched.elapsed() < self.inner.refresh_after
            || !lock(&self.inner.refreshing).insert(id)
        {
            return;
        }
        let guard = RefreshGuard {
            catalog: self.clone(),
            id,
        };
        tokio::spawn(async move {
            let this = guard.catalog.clone();
            if let Ok(fresh) = this.load(id).await {
                this.inner.l1.insert(id, fresh).await;
            }
            drop(guard);
        });
    }

    /// L2 then PostgreSQL; reloads when an invalidation overlapped the load
    /// (it may have read the old copy), and never goes back in time.
    async fn load(&self, id: ProductId) -> Result<Arc<Entry>, CatalogError> {
        let inner = &self.inner;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let epoch = inner.epoch.load(Ordering::SeqCst);
            let entry = self.load_once(id).await?;
            if inner.epoch.load(Ordering::SeqCst) != epoch && attempt < 3 {
                continue;
            }
            let seen = inner.seen.get(&id).await;
            if let Some(newer) = seen.filter(|s| s.version() > entry.version()) {
                // This instance wrote a newer version while we were reading.
                return Ok(Arc::new(Entry {
                    product: newer.product.clone(),
                    source: entry.source,
                    fetched: Instant::now(),
                    read_at_ms: newer.read_at_ms,
                }));
            }
            if entry.product.is_some() {
                inner.seen.insert(id, entry.clone()).await;
            }
            return Ok(entry);
        }
    }

    async fn load_once(&self, id: ProductId) -> Result<Arc<Entry>, CatalogError> {
        let inner = &self.inner;
        let floor = inner.seen.get(&id).await.and_then(|e| e.version());
        let unsent_change = lock(&inner.pending).contains(&id);
        if !unsent_change {
            match self.l2_get(id).await {
                Ok(Some(doc)) if floor.is_none_or(|f| doc.version >= f) => {
                    bump(&inner.counters.l2_hits);
                    let age_ms = u64::try_from(now_ms() - doc.read_at_ms).unwrap_or(0);
                    if age_ms.saturating_mul(100)
                        >= doc
                            .ttl_ms
                            .saturating_mul(u64::from(inner.config.refresh_ahead_pct))
                    {
                        self.refresh_l2_ahead(id);
                    }
                    return Ok(Arc::new(Entry {
                        product: Some(Arc::new(doc.product)),
                        source: Source::L2,
                        fetched: Instant::now(),
                        read_at_ms: doc.read_at_ms,
                    }));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::trace!(product = %id, error = %e, "L2 unavailable, reading PostgreSQL")
                }
            }
        }
        let product = self.read_db(id).await?;
        if let Some(p) = &product {
            if let Err(e) = self.l2_put(p).await {
                tracing::trace!(product = %id, error = %e, "L2 not filled");
            }
        }
        Ok(Arc::new(Entry::from_db(product)))
    }

    /// A slot among the bounded PostgreSQL reads, or a 503-worthy refusal
    /// after `db_wait`.
    pub(crate) async fn db_permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, CatalogError> {
        tokio::time::timeout(self.inner.config.db_wait, self.inner.db_gate.acquire())
            .await
            .map_err(|_| CatalogError::Busy {
                reason: "product reads are saturated, retry shortly",
                retry_after_secs: 1,
            })?
            .map_err(|_| CatalogError::Busy {
                reason: "catalog is shutting down",
                retry_after_secs: 1,
            })
    }

    /// One PostgreSQL read of a product page, behind the semaphore.
    async fn read_db(&self, id: ProductId) -> Result<Option<ProductDetail>, CatalogError> {
        let inner = &self.inner;
        let _permit = self.db_permit().await?;
        bump(&inner.counters.detail_db_loads);
        metrics::counter!("catalog_db_loads_total", "what" => "detail").increment(1);
        // A product missing on the replica may have been created a moment
        // ago: only the primary may say "not found".
        Ok(inner
            .reads
            .read_confirming(
                |db| async move { store::detail(&db, id).await },
                Option::is_none,
            )
            .await?)
    }

    async fn l2_get(
        &self,
        id: ProductId,
    ) -> Result<Option<L2Doc>, commerce_resilience::CallError<redis::RedisError>> {
        let raw: Option<String> = self.inner.redis.get(&self.l2_key(id)).await?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    async fn l2_put(
        &self,
        product: &ProductDetail,
    ) -> Result<(), commerce_resilience::CallError<redis::RedisError>> {
        let cfg = &self.inner.config;
        let base = u64::try_from(cfg.l2_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let spread = base.saturating_mul(u64::from(cfg.l2_jitter_pct.min(90))) / 100;
        let ttl_ms = if spread == 0 {
            base
        } else {
            base - spread + rand::random_range(0..=spread.saturating_mul(2))
        };
        let doc = L2Doc {
            version: product.version(),
            read_at_ms: now_ms(),
            ttl_ms,
            product: product.clone(),
        };
        let json = serde_json::to_string(&doc).unwrap_or_default();
        let key = self.l2_key(product.id);
        let mut invocation = self.inner.put_script.key(&key);
        invocation.arg(json).arg(doc.version).arg(ttl_ms);
        self.inner
            .redis
            .invoke_script::<i64>(&invocation)
            .await
            .map(|_| ())
    }

    /// Refreshes an L2 copy near its end from PostgreSQL, in the background
    /// and by one instance at a time (a lock released when done, expiring on
    /// its own if the holder dies), so it never expires under readers.
    fn refresh_l2_ahead(&self, id: ProductId) {
        let this = self.clone();
        tokio::spawn(async move {
            let lock_key = this
                .inner
                .redis
                .key(&format!("catalog:product:{id}:refresh"));
            let mut cmd = redis::cmd("SET");
            cmd.arg(&lock_key).arg(1).arg("NX").arg("PX").arg(5_000);
            if let Ok(Some(_)) = this.inner.redis.query::<Option<String>>(cmd).await {
                if let Ok(Some(p)) = this.read_db(id).await {
                    let _ = this.l2_put(&p).await;
                }
                let _ = this.inner.redis.del(&[&lock_key]).await;
            }
        });
    }

    /// A page of the list in id order, with the (briefly cached) total.
    pub async fn list(&self, req: PageRequest) -> Result<ProductPage, CatalogError> {
        let (items, total) = tokio::try_join!(
            async {
                let (limit, offset) = (i64::from(req.size()), req.offset());
                self.inner
                    .reads
                    .read(|db| async move { store::page(&db, limit, offset).await })
                    .await
                    .map_err(CatalogError::from)
            },
            self.total()
        )?;
        Ok(ProductPage {
            items,
            page: req.page(),
            size: req.size(),
            total,
        })
    }

    /// `COUNT(*)` is exact but visits every row, so one count is shared by
    /// every list request for `count_ttl` (single flight); a product created
    /// through this instance clears it.
    async fn total(&self) -> Result<i64, CatalogError> {
        self.inner
            .count
            .try_get_with((), async {
                bump(&self.inner.counters.count_loads);
                metrics::counter!("catalog_db_loads_total", "what" => "count").increment(1);
                self.inner
                    .reads
                    .read(|db| async move { store::count(&db).await })
                    .await
                    .map_err(CatalogError::from)
            })
            .await
            .map_err(|e| CatalogError::from_shared(&e))
    }
}

/// Help text of this crate's metrics, for `/metrics` (call once, after
/// the recorder is installed).
pub fn describe_metrics() {
    use metrics::describe_counter;
    describe_counter!(
        "catalog_detail_total",
        "Product pages served by layer (l1, l2, db, stale)."
    );
    describe_counter!(
        "catalog_db_loads_total",
        "PostgreSQL reads of the catalog by what (detail, count, popular)."
    );
    describe_counter!(
        "catalog_invalidations_total",
        "Product copies dropped, by how the change arrived (write, channel)."
    );
    describe_counter!(
        "catalog_sales_recorded_total",
        "Sales added to the popular-products ranking."
    );
}
