//! The stock gate: one atomic Redis step per product decides whether an
//! order's units are there before anything touches PostgreSQL, so a sale's
//! losers never reach the database and its winners queue for a batch, not
//! for the product's row lock.
//!
//! The gate holds a product's available units (`{stock:ID}`). PostgreSQL
//! stays the truth and the last guard (`stock >= 0`, the conditional
//! update). The gate may only ever count *more* units than are really left
//! (a load from PostgreSQL misses units reserved but not yet written): that
//! costs a refused write, never an oversold unit. Counting fewer (a unit
//! given back while Redis was out) would undersell, so such products are
//! reloaded from PostgreSQL before the gate is trusted again.

use commerce_domain::ProductId;
use commerce_resilience::{CallError, RedisClient};
use redis::{RedisError, Script};
use std::sync::LazyLock;
use std::time::Duration;

/// Takes ARGV[1] units if that many are left. Missing key: not loaded.
const RESERVE: &str = r#"
local left = redis.call('GET', KEYS[1])
if not left then return -2 end
left = tonumber(left)
local n = tonumber(ARGV[1])
if left < n then return -1 end
return redis.call('DECRBY', KEYS[1], n)
"#;

/// Gives ARGV[1] units back; a missing gate is left missing (its next load
/// reads PostgreSQL, which already has them back).
const RELEASE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"#;

static RESERVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RESERVE));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));

/// How long a loaded gate lives without use: long enough for a sale, short
/// enough that ten thousand products touched once do not stay forever.
pub const GATE_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserve {
    /// The units are held; this many are left.
    Taken {
        left: i64,
    },
    OutOfStock,
    /// No gate for this product (never loaded, expired, Redis restarted or
    /// flushed, or invalidated by a stock change).
    NotLoaded,
}

pub fn key(redis: &RedisClient, product: ProductId) -> String {
    // The hash tag keeps the key on one Cluster slot with nothing else.
    redis.key(&format!("{{stock:{product}}}"))
}

pub async fn reserve(
    redis: &RedisClient,
    product: ProductId,
    quantity: i32,
) -> Result<Reserve, CallError<RedisError>> {
    let mut inv = RESERVE_SCRIPT.prepare_invoke();
    inv.key(key(redis, product)).arg(quantity);
    let answer: i64 = redis.invoke_script(&inv).await?;
    Ok(match answer {
        -2 => Reserve::NotLoaded,
        -1 => Reserve::OutOfStock,
        left => Reserve::Taken { left },
    })
}

/// Gives units back. `Ok(false)`: there was no gate to give them to.
pub async fn release(
    redis: &RedisClient,
    product: ProductId,
    quantity: i32,
) -> Result<bool, CallError<RedisError>> {
    let mut inv = RELEASE_SCRIPT.prepare_invoke();
    inv.key(key(redis, product)).arg(quantity);
    let answer: i64 = redis.invoke_script(&inv).await?;
    Ok(answer != -2)
}

/// Loads the gate with PostgreSQL's stock unless another request already
/// did (`SET NX`): concurrent loaders need no lock, and whichever value
/// lands was read from committed stock, so it can only over-count.
pub async fn load(
    redis: &RedisClient,
    product: ProductId,
    stock: i64,
) -> Result<(), CallError<RedisError>> {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key(redis, product))
        .arg(stock)
        .arg("NX")
        .arg("PX")
        .arg(u64::try_from(GATE_TTL.as_millis()).unwrap_or(u64::MAX));
    let _: Option<String> = redis.query(cmd).await?;
    Ok(())
}

/// Forgets the gate so the next order loads it from PostgreSQL.
pub async fn invalidate(
    redis: &RedisClient,
    products: &[ProductId],
) -> Result<(), CallError<RedisError>> {
    if products.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = products.iter().map(|p| key(redis, *p)).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    redis.del(&refs).await.map(|_| ())
}

/// The units the gate holds (`None`: not loaded), for reconciliation.
pub async fn peek(
    redis: &RedisClient,
    product: ProductId,
) -> Result<Option<i64>, CallError<RedisError>> {
    redis.get(&key(redis, product)).await
}

/// Loads both scripts (a peak's first requests otherwise each pay a
/// NOSCRIPT round trip) and opens the connection.
pub async fn prepare(redis: &RedisClient) -> Result<(), CallError<RedisError>> {
    redis
        .run(|mut c| async move {
            RESERVE_SCRIPT.load_async(&mut c).await?;
            RELEASE_SCRIPT.load_async(&mut c).await.map(|_| ())
        })
        .await
}
