//! Distributed locks: Redis first, PostgreSQL advisory locks when Redis is out.
//!
//! In Redis a lock is `SET key token NX PX ttl` with a random token, released
//! or extended only by its holder (compare-and-delete / compare-and-pexpire
//! scripts). When the `redis` breaker is open or Redis errors, the same call
//! takes a transaction-scoped advisory lock in PostgreSQL instead, held by a
//! pooled connection with an open transaction for as long as the guard lives;
//! its lease is `idle_in_transaction_session_timeout`, so a holder that goes
//! quiet loses it as it would in Redis.
//!
//! Every holder gets a fencing token, to be checked by storage
//! (`UPDATE … WHERE last_token < $token`) so a holder whose lease expired
//! cannot overwrite its successor. Tokens are `max(previous + 1, now in µs)`:
//! strictly increasing within a backend, still increasing after Redis lost its
//! data, and ordered across a switch between backends as long as the clocks
//! of the instances agree to better than the time it takes to switch.
//!
//! The two backends do not exclude each other: an instance that cannot reach
//! Redis while others can may hold the PostgreSQL lock at the same time as a
//! Redis holder. The fencing token is what keeps writes safe then.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use commerce_storage::{DbConn, DbPool};
use diesel::sql_types::{BigInt, Bool, Text};
use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use rand::Rng;
use redis::Script;

use crate::redis_client::{millis, RedisClient};

/// Takes the lock and its fencing token in one step.
/// KEYS: lock, fence counter. ARGV: holder token, ttl ms, now µs, counter ttl ms.
const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local t = redis.call('INCR', KEYS[2])
  local floor = tonumber(ARGV[3])
  if t < floor then
    redis.call('SET', KEYS[2], ARGV[3])
    t = floor
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  return t
end
return false
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// The table the PostgreSQL fallback takes fencing tokens from. Also in
/// `migrations/2026-11-22-000006_lock_fencing`; [`LockManager::ensure_schema`]
/// creates it for tests that run without the migrations.
pub const FENCING_TABLE_SQL: &str =
    "CREATE TABLE IF NOT EXISTS lock_fencing (name text PRIMARY KEY, token bigint NOT NULL)";

/// A fence counter outlives its lock's lease by this much, no more: the
/// clock floor (`now` in µs) keeps tokens increasing after it expires, so
/// keeping it longer protects nothing and lets made-up lock names grow Redis.
const FENCE_COUNTER_MARGIN: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else held the lock for the whole wait.
    #[error("lock {name:?} is busy")]
    Busy { name: String },
    /// Neither Redis nor PostgreSQL could take the lock.
    #[error("lock backends unavailable: {0}")]
    Unavailable(String),
    /// The lease expired (or the session died) before release or extension.
    #[error("lock {name:?} was lost before release")]
    Lost { name: String },
}

impl LockError {
    /// For a `Retry-After` header.
    pub fn retry_after_secs(&self) -> u64 {
        1
    }
}

/// Which store holds a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockBackend {
    Redis,
    Postgres,
}

/// Acquire pacing while a lock is contended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockConfig {
    /// First retry delay; doubles up to `retry_max`, each draw jittered.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for LockConfig {
    fn default() -> Self {
        Self {
            retry_min: Duration::from_millis(5),
            retry_max: Duration::from_millis(100),
        }
    }
}

struct Inner {
    redis: RedisClient,
    pool: DbPool,
    config: LockConfig,
    acquire: Script,
    release: Script,
    extend: Script,
}

/// Takes named locks. Cheap to clone.
#[derive(Clone)]
pub struct LockManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LockManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockManager")
            .field("config", &self.inner.config)
            .finish()
    }
}

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

#[derive(diesel::QueryableByName)]
struct Fence {
    #[diesel(sql_type = BigInt)]
    token: i64,
}

impl LockManager {
    pub fn new(redis: RedisClient, pool: DbPool, config: LockConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis,
                pool,
                config,
                acquire: Script::new(ACQUIRE),
                release: Script::new(RELEASE),
                extend: Script::new(EXTEND),
            }),
        }
    }

    /// The same locks, taken through `redis` and `pool` (an HTTP worker's
    /// own connections, so no other thread is woken per lock).
    pub fn through(&self, redis: RedisClient, pool: DbPool) -> Self {
        Self::new(redis, pool, self.inner.config.clone())
    }

    /// The Redis client (and through it the `redis` breaker) locks go through.
    pub fn redis(&self) -> &RedisClient {
        &self.inner.redis
    }

    /// Creates the fencing table if missing (until it is in the migrations).
    pub async fn ensure_schema(&self) -> Result<(), LockError> {
        let mut conn = self.conn().await?;
        match diesel::sql_query(FENCING_TABLE_SQL)
            .execute(&mut *conn)
            .await
        {
            Ok(_) => Ok(()),
            // Concurrent CREATE IF NOT EXISTS can still collide on the type.
            Err(e) if e.to_string().contains("already exists") => Ok(()),
            Err(e) => Err(LockError::Unavailable(e.to_string())),
        }
    }

    /// Takes `name` for `ttl`, retrying with jitter for up to `wait`.
    pub async fn acquire(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LockGuard, LockError> {
        let deadline = Instant::now() + wait;
        let mut backoff = self.inner.config.retry_min;
        loop {
            if let Some(guard) = self.try_acquire(name, ttl).await? {
                return Ok(guard);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(LockError::Busy {
                    name: name.to_owned(),
                });
            }
            let low = backoff / 2;
            let pause = rand::rng().random_range(low..=backoff).min(deadline - now);
            tokio::time::sleep(pause).await;
            backoff = backoff.saturating_mul(2).min(self.inner.config.retry_max);
        }
    }

    /// One attempt: `Ok(None)` if someone else holds the lock.
    pub async fn try_acquire(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<Option<LockGuard>, LockError> {
        match self.try_redis(name, ttl).await {
            Ok(found) => Ok(found),
            Err(e) => {
                tracing::debug!(lock = name, error = %e, "redis lock unavailable, using postgres advisory lock");
                self.try_postgres(name, ttl).await
            }
        }
    }

    /// Runs `f` while holding `name`, then releases it. A failed release is
    /// logged, not returned: the work is done and the lease will expire.
    pub async fn with_lock<T, F>(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
        f: F,
    ) -> Result<T, LockError>
    where
        F: AsyncFnOnce(&LockGuard) -> T,
    {
        let guard = self.acquire(name, ttl, wait).await?;
        let out = f(&guard).await;
        if let Err(e) = guard.release().await {
            tracing::warn!(lock = name, error = %e, "lock release failed");
        }
        Ok(out)
    }

    fn redis_keys(&self, name: &str) -> (String, String) {
        // The hash tag keeps both keys in one cluster slot for the script.
        let lock = self.inner.redis.key(&format!("lock:{{{name}}}"));
        let fence = format!("{lock}:fence");
        (lock, fence)
    }

    async fn try_redis(&self, name: &str, ttl: Duration) -> Result<Option<LockGuard>, String> {
        let (key, fence) = self.redis_keys(name);
        let holder = format!("{:032x}", rand::rng().random::<u128>());
        let token: Option<i64> = self
            .inner
            .redis
            .invoke_script(
                self.inner
                    .acquire
                    .key(&key)
                    .key(&fence)
                    .arg(&holder)
                    .arg(millis(ttl))
                    .arg(now_micros())
                    .arg(millis(ttl + FENCE_COUNTER_MARGIN)),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(token.map(|token| LockGuard {
            name: name.to_owned(),
            token,
            backend: LockBackend::Redis,
            held: tokio::sync::Mutex::new(Some(Held::Redis { key, holder })),
            manager: self.clone(),
        }))
    }

    async fn conn(&self) -> Result<DbConn, LockError> {
        commerce_storage::conn(&self.inner.pool)
            .await
            .map_err(|e| LockError::Unavailable(e.to_string()))
    }

    async fn try_postgres(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<Option<LockGuard>, LockError> {
        let unavailable = |e: diesel::result::Error| LockError::Unavailable(e.to_string());
        let mut tx = TxConn(Some(self.conn().await?));
        let conn = tx.conn()?;
        conn.batch_execute("BEGIN").await.map_err(unavailable)?;
        let got: Locked = commerce_storage::sql::cached(
            "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0)) AS locked",
        )
        .bind::<Text, _>(format!("lock:{name}"))
        .get_result(conn)
        .await
        .map_err(unavailable)?;
        if !got.locked {
            tx.finish("ROLLBACK").await.map_err(unavailable)?;
            return Ok(None);
        }
        set_lease(conn, ttl).await.map_err(unavailable)?;
        let fence: Fence = commerce_storage::sql::cached(
            "INSERT INTO lock_fencing (name, token) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET token = GREATEST(lock_fencing.token + 1, EXCLUDED.token) \
             RETURNING token",
        )
        .bind::<Text, _>(name)
        .bind::<BigInt, _>(now_micros())
        .get_result(conn)
        .await
        .map_err(unavailable)?;
        Ok(Some(LockGuard {
            name: name.to_owned(),
            token: fence.token,
            backend: LockBackend::Postgres,
            held: tokio::sync::Mutex::new(Some(Held::Postgres(Box::new(tx)))),
            manager: self.clone(),
        }))
    }
}

/// The lease of a PostgreSQL-held lock: the session ends (and the lock with
/// it) once the holder has been silent this long.
async fn set_lease(
    conn: &mut AsyncPgConnection,
    ttl: Duration,
) -> Result<(), diesel::result::Error> {
    #[derive(diesel::QueryableByName)]
    struct Set {
        #[diesel(sql_type = Text)]
        #[allow(dead_code)]
        v: String,
    }
    commerce_storage::sql::cached(
        "SELECT set_config('idle_in_transaction_session_timeout', $1, true) AS v",
    )
    .bind::<Text, _>(format!("{}ms", millis(ttl)))
    .get_result::<Set>(conn)
    .await
    .map(|_| ())
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A pooled connection inside a raw `BEGIN`. Dropped without `finish`
/// (cancelled, panicked), it is detached from the pool and closed, which ends
/// the transaction: it must never go back to the pool mid-transaction.
struct TxConn(Option<DbConn>);

impl TxConn {
    fn conn(&mut self) -> Result<&mut AsyncPgConnection, LockError> {
        self.0
            .as_deref_mut()
            .ok_or_else(|| LockError::Unavailable("connection already returned".into()))
    }

    /// Ends the transaction with `sql` (COMMIT/ROLLBACK) and returns the
    /// connection to the pool; on failure the connection is discarded.
    async fn finish(mut self, sql: &str) -> Result<(), diesel::result::Error> {
        let Some(conn) = self.0.as_deref_mut() else {
            return Ok(());
        };
        conn.batch_execute(sql).await?;
        // Back to the pool, clean.
        self.0.take();
        Ok(())
    }
}

impl Drop for TxConn {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(Object::take(conn));
        }
    }
}

enum Held {
    Redis { key: String, holder: String },
    Postgres(Box<TxConn>),
}

/// A held lock. Release it with [`LockGuard::release`]; dropped unreleased,
/// it is released in the background (or its lease expires).
pub struct LockGuard {
    name: String,
    token: i64,
    backend: LockBackend,
    held: tokio::sync::Mutex<Option<Held>>,
    manager: LockManager,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("token", &self.token)
            .field("backend", &self.backend)
            .finish()
    }
}

impl LockGuard {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Increases with every acquisition of this lock name; storage rejects
    /// writes carrying a token lower than one it has seen.
    pub fn fencing_token(&self) -> i64 {
        self.token
    }

    pub fn backend(&self) -> LockBackend {
        self.backend
    }

    /// Renews the lease for `ttl` from now; `Lost` if it had already expired.
    pub async fn extend(&self, ttl: Duration) -> Result<(), LockError> {
        let mut held = self.held.lock().await;
        let lost = || LockError::Lost {
            name: self.name.clone(),
        };
        match held.as_mut() {
            None => Err(lost()),
            Some(Held::Redis { key, holder }) => {
                let m = &self.manager.inner;
                let n: i64 = m
                    .redis
                    .invoke_script(
                        m.extend
                            .key(key.as_str())
                            .arg(holder.as_str())
                            .arg(millis(ttl)),
                    )
                    .await
                    .map_err(|e| LockError::Unavailable(e.to_string()))?;
                if n == 1 {
                    Ok(())
                } else {
                    Err(lost())
                }
            }
            Some(Held::Postgres(tx)) => {
                let conn = tx.conn()?;
                // Any statement resets the idle clock; this one also sets the new lease.
                set_lease(conn, ttl).await.map_err(|_| lost())
            }
        }
    }

    /// Releases the lock; `Lost` if the lease had already expired (someone
    /// else may have held it meanwhile, which the fencing token reveals).
    pub async fn release(self) -> Result<(), LockError> {
        let held = self.held.lock().await.take();
        let lost = LockError::Lost {
            name: self.name.clone(),
        };
        match held {
            None => Err(lost),
            Some(Held::Redis { key, holder }) => {
                let m = &self.manager.inner;
                let n: i64 = m
                    .redis
                    .invoke_script(m.release.key(key.as_str()).arg(holder.as_str()))
                    .await
                    .map_err(|e| LockError::Unavailable(e.to_string()))?;
                if n == 1 {
                    Ok(())
                } else {
                    Err(lost)
                }
            }
            Some(Held::Postgres(tx)) => tx.finish("COMMIT").await.map_err(|_| lost),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(held) = self.held.get_mut().take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime: the Redis lease expires on its own, and dropping
            // the PostgreSQL connection ends its transaction.
            return;
        };
        let manager = self.manager.clone();
        rt.spawn(async move {
            match held {
                Held::Redis { key, holder } => {
                    let m = &manager.inner;
                    let _ = m
                        .redis
                        .invoke_script::<i64>(m.release.key(key.as_str()).arg(holder.as_str()))
                        .await;
                }
                Held::Postgres(tx) => {
                    // COMMIT, not ROLLBACK: it keeps the fencing increment.
                    let _ = tx.finish("COMMIT").await;
                }
            }
        });
    }
}
