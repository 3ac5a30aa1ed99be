//! The Redis gate: one atomic Lua script decides duplicate, sold out or
//! winner (with the winner's slot). Keys are declared, never built inside a
//! script, and share the hash tag `{coupon:ID}` so they live on one Redis
//! Cluster slot.

use commerce_domain::{CouponId, UserId};
use commerce_resilience::{CallError, RedisClient};
use redis::{RedisError, Script};
use std::sync::LazyLock;

/// Slots given back by failed winners are reused before new ones.
const ISSUE: &str = r#"
if redis.call('EXISTS', KEYS[4]) == 0 then return {-3, 0} end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return {-1, 0} end
local slot = redis.call('LPOP', KEYS[3])
if not slot then
  local used = tonumber(redis.call('GET', KEYS[2]) or '0')
  if used >= tonumber(ARGV[2]) then return {-2, 0} end
  slot = redis.call('INCR', KEYS[2])
end
redis.call('SADD', KEYS[1], ARGV[1])
return {1, tonumber(slot)}
"#;

/// Undo of a winner whose database write failed: the user may try again and
/// the slot goes back to the pool. ARGV[2] = 0 keeps the user (it does hold a
/// coupon); ARGV[3] = 0 keeps the slot (another row holds it).
const GIVE_BACK: &str = r#"
if redis.call('EXISTS', KEYS[4]) == 0 then return 0 end
if ARGV[2] == '1' then redis.call('SREM', KEYS[1], ARGV[1]) end
if ARGV[3] ~= '0' then redis.call('RPUSH', KEYS[3], ARGV[3]) end
return 1
"#;

static ISSUE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ISSUE));
static GIVE_BACK_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(GIVE_BACK));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateAnswer {
    Winner {
        slot: i32,
    },
    AlreadyIssued,
    SoldOut,
    /// The gate's state is missing (new coupon, Redis restart or flush).
    NotLoaded,
}

/// The four keys of one coupon's gate.
pub struct Keys {
    pub users: String,
    pub seq: String,
    pub free: String,
    pub meta: String,
}

impl Keys {
    pub fn new(redis: &RedisClient, coupon: CouponId) -> Self {
        let tag = format!("{{coupon:{coupon}}}");
        Self {
            users: redis.key(&format!("{tag}:users")),
            seq: redis.key(&format!("{tag}:seq")),
            free: redis.key(&format!("{tag}:free")),
            meta: redis.key(&format!("{tag}:meta")),
        }
    }
    fn all(&self) -> [&str; 4] {
        [&self.users, &self.seq, &self.free, &self.meta]
    }
}

pub async fn issue(
    redis: &RedisClient,
    coupon: CouponId,
    user: UserId,
    quantity: i32,
) -> Result<GateAnswer, CallError<RedisError>> {
    let keys = Keys::new(redis, coupon);
    let mut inv = ISSUE_SCRIPT.prepare_invoke();
    for k in keys.all() {
        inv.key(k);
    }
    inv.arg(user.get()).arg(quantity);
    let (code, slot): (i64, i64) = redis.invoke_script(&inv).await?;
    Ok(match code {
        1 => Winner {
            slot: i32::try_from(slot).unwrap_or(i32::MAX),
        },
        -1 => AlreadyIssued,
        -2 => SoldOut,
        _ => NotLoaded,
    })
}
use GateAnswer::*;

/// Loads the issue script into Redis (kept there until a restart or a
/// SCRIPT FLUSH) through this client, whose connection this opens.
pub async fn prepare(redis: &RedisClient) -> Result<(), CallError<RedisError>> {
    redis
        .run(|mut c| async move { ISSUE_SCRIPT.load_async(&mut c).await.map(|_| ()) })
        .await
}

pub async fn give_back(
    redis: &RedisClient,
    coupon: CouponId,
    user: UserId,
    forget_user: bool,
    slot: Option<i32>,
) -> Result<(), CallError<RedisError>> {
    let keys = Keys::new(redis, coupon);
    let mut inv = GIVE_BACK_SCRIPT.prepare_invoke();
    for k in keys.all() {
        inv.key(k);
    }
    inv.arg(user.get())
        .arg(if forget_user { "1" } else { "0" })
        .arg(slot.unwrap_or(0));
    let _: i64 = redis.invoke_script(&inv).await?;
    Ok(())
}

/// What the gate holds, for reconciliation reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GateState {
    pub loaded: bool,
    pub users: i64,
    pub next_slot: i64,
    pub free_slots: i64,
}

pub async fn state(
    redis: &RedisClient,
    coupon: CouponId,
) -> Result<GateState, CallError<RedisError>> {
    let keys = Keys::new(redis, coupon);
    let (loaded, users, seq, free): (bool, i64, Option<i64>, i64) = redis
        .run(|mut c| async move {
            redis::pipe()
                .exists(&keys.meta)
                .scard(&keys.users)
                .get(&keys.seq)
                .llen(&keys.free)
                .query_async(&mut c)
                .await
        })
        .await?;
    Ok(GateState {
        loaded,
        users,
        next_slot: seq.unwrap_or(0),
        free_slots: free,
    })
}

/// Replaces the gate's state with what PostgreSQL says, atomically: the
/// holders, the highest slot handed out, and the holes below it (slots whose
/// winners never committed) as free slots.
pub async fn load(
    redis: &RedisClient,
    coupon: CouponId,
    quantity: i32,
    holders: &[(i64, i32)],
    expire_at_unix: i64,
) -> Result<(), CallError<RedisError>> {
    let keys = Keys::new(redis, coupon);
    let max_slot = holders.iter().map(|(_, s)| *s).max().unwrap_or(0);
    let mut taken = vec![false; usize::try_from(max_slot).unwrap_or(0) + 1];
    for (_, s) in holders {
        if let Some(t) = usize::try_from(*s).ok().and_then(|i| taken.get_mut(i)) {
            *t = true;
        }
    }
    let holes: Vec<i32> = (1..=max_slot)
        .filter(|s| {
            !taken
                .get(usize::try_from(*s).unwrap_or(0))
                .copied()
                .unwrap_or(true)
        })
        .collect();
    let users: Vec<i64> = holders.iter().map(|(u, _)| *u).collect();
    redis
        .run(|mut c| async move {
            let mut p = redis::pipe();
            p.atomic();
            p.del(&keys.all()).ignore();
            for chunk in users.chunks(1000) {
                p.sadd(&keys.users, chunk).ignore();
            }
            p.set(&keys.seq, max_slot).ignore();
            for chunk in holes.chunks(1000) {
                p.rpush(&keys.free, chunk).ignore();
            }
            p.hset(&keys.meta, "quantity", quantity).ignore();
            for k in keys.all() {
                p.cmd("PEXPIREAT")
                    .arg(k)
                    .arg(expire_at_unix.saturating_mul(1000))
                    .ignore();
            }
            p.query_async::<()>(&mut c).await
        })
        .await
}

/// Forgets the gate's state so the next request rebuilds it from PostgreSQL.
pub async fn invalidate(
    redis: &RedisClient,
    coupon: CouponId,
) -> Result<(), CallError<RedisError>> {
    let keys = Keys::new(redis, coupon);
    redis.del(&[&keys.meta]).await.map(|_| ())
}
