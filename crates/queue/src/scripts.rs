//! The Lua scripts. Each works on one room's keys, all declared and sharing
//! the room's hash tag (`queue:{coupon:42}:…`), so a room lives on one
//! Redis Cluster slot and every step is atomic. Time is Redis's own (`TIME`,
//! allowed in scripts since Redis 5 effect replication), so instances with
//! drifting clocks agree on expiries and on the admission interval.
//!
//! A room's keys (`KEYS[1..6]` for every room script):
//! 1. `waiting` sorted set, token → arrival number (from `seq`): exact order
//!    across instances;
//! 2. `active` sorted set, token → expiry (ms);
//! 3. `seen` sorted set, waiting token → last sign of life (ms);
//! 4. `owner` hash, token → user id;
//! 5. `user` hash, user id → token;
//! 6. `seq` counter.
//!
//! Redis 7.0 has no per-field TTL, so a token's lifetime is its score in
//! `active` or `seen`, and the admitter sweeps what is past it; every key of
//! a room also carries a TTL, refreshed on entry and by the admitter, so an
//! abandoned room disappears on its own.

use redis::Script;
use std::sync::LazyLock;

/// Shared helpers, prepended to every room script.
const PRELUDE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function forget(tok)
  local uid = redis.call('HGET', KEYS[4], tok)
  if uid and redis.call('HGET', KEYS[5], uid) == tok then
    redis.call('HDEL', KEYS[5], uid)
  end
  redis.call('HDEL', KEYS[4], tok)
  redis.call('ZREM', KEYS[1], tok)
  redis.call('ZREM', KEYS[2], tok)
  redis.call('ZREM', KEYS[3], tok)
end
local function touch_room(ttl)
  for i = 1, 6 do redis.call('PEXPIRE', KEYS[i], ttl) end
end
";

/// Enter: the user's live token if any (idempotent), else a new one at the
/// back. ARGV: user id, new token, idle ms, room ttl ms.
/// Returns {token, active 0/1, position, created 0/1, room_was_empty 0/1}.
const ENTER: &str = r"
local uid, idle = ARGV[1], tonumber(ARGV[3])
local tok = redis.call('HGET', KEYS[5], uid)
if tok then
  local exp = redis.call('ZSCORE', KEYS[2], tok)
  if exp and tonumber(exp) > now then
    redis.call('ZADD', KEYS[2], 'XX', now + idle, tok)
    return {tok, 1, 0, 0, 0}
  end
  -- Still in line (not yet swept): coming back is a sign of life.
  local rank = redis.call('ZRANK', KEYS[1], tok)
  if rank then
    redis.call('ZADD', KEYS[3], now, tok)
    return {tok, 0, rank + 1, 0, 0}
  end
  forget(tok)
end
local empty = 0
if redis.call('ZCARD', KEYS[1]) == 0 and redis.call('ZCARD', KEYS[2]) == 0 then
  empty = 1
end
tok = ARGV[2]
local n = redis.call('INCR', KEYS[6])
redis.call('ZADD', KEYS[1], n, tok)
redis.call('ZADD', KEYS[3], now, tok)
redis.call('HSET', KEYS[4], tok, uid)
redis.call('HSET', KEYS[5], uid, tok)
touch_room(tonumber(ARGV[4]))
return {tok, 0, redis.call('ZRANK', KEYS[1], tok) + 1, 1, empty}
";

/// Poll: the owner's token's state, refreshing its life. ARGV: token, user
/// id, idle ms. Returns {-1, 0} unknown, expired or not the caller's;
/// {1, 0} active; {0, position} waiting.
const POLL: &str = r"
local tok, idle = ARGV[1], tonumber(ARGV[3])
if redis.call('HGET', KEYS[4], tok) ~= ARGV[2] then return {-1, 0} end
local exp = redis.call('ZSCORE', KEYS[2], tok)
if exp then
  if tonumber(exp) <= now then return {-1, 0} end
  redis.call('ZADD', KEYS[2], 'XX', now + idle, tok)
  return {1, 0}
end
local rank = redis.call('ZRANK', KEYS[1], tok)
if not rank then return {-1, 0} end
redis.call('ZADD', KEYS[3], 'XX', now, tok)
return {0, rank + 1}
";

/// Admission check for a protected route, by user (the route has no token).
/// ARGV: user id, idle ms. Same answers as [`POLL`].
const CHECK: &str = r"
local tok = redis.call('HGET', KEYS[5], ARGV[1])
if not tok then return {-1, 0} end
local exp = redis.call('ZSCORE', KEYS[2], tok)
if exp then
  if tonumber(exp) <= now then return {-1, 0} end
  redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[2]), tok)
  return {1, 0}
end
local rank = redis.call('ZRANK', KEYS[1], tok)
if not rank then return {-1, 0} end
redis.call('ZADD', KEYS[3], 'XX', now, tok)
return {0, rank + 1}
";

/// One admission step for one room: sweep expired actives and waiting
/// tokens nobody polled for, then move up to `n` from the front of the line
/// to active, in arrival order. ARGV: n, idle ms, waiting idle ms,
/// max active (0 = no cap), room ttl ms, sweep limit.
/// Returns {admitted, waiting left, active now, swept}.
const ADMIT: &str = r"
local idle, wait_idle, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[6])
local swept = 0
for _, tok in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)) do
  forget(tok)
  swept = swept + 1
end
for _, tok in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now - wait_idle), 'LIMIT', 0, limit)) do
  forget(tok)
  swept = swept + 1
end
local n = tonumber(ARGV[1])
local cap = tonumber(ARGV[4])
if cap > 0 then n = math.min(n, cap - redis.call('ZCARD', KEYS[2])) end
local admitted = 0
if n > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[1], n)
  for i = 1, #popped, 2 do
    redis.call('ZADD', KEYS[2], now + idle, popped[i])
    redis.call('ZREM', KEYS[3], popped[i])
    admitted = admitted + 1
  end
end
local waiting = redis.call('ZCARD', KEYS[1])
local active = redis.call('ZCARD', KEYS[2])
if waiting + active > 0 then touch_room(tonumber(ARGV[5])) end
return {admitted, waiting, active, swept}
";

/// Sizes of a room, for the registry's garbage collection.
const SIZE: &str = r"
return redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
";

/// Claims this admission interval for the caller. The interval number comes
/// from Redis's clock, so exactly one instance admits per interval; the
/// lease keeps a slow admitter from overlapping the next one. An unhealthy
/// caller leaves a mark the admitter reads, so one instance's trouble slows
/// admission everywhere.
/// KEYS: epoch, lease, sick. ARGV: tick ms, holder, lease ms, healthy 0/1,
/// sick ttl ms. Returns {epoch or -1 (interval taken) or -2 (lease held),
/// sick 0/1}.
const CLAIM: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tick = tonumber(ARGV[1])
if ARGV[4] == '0' then redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[5]) end
local sick = redis.call('EXISTS', KEYS[3])
local epoch = math.floor(now / tick)
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if last >= epoch then return {-1, sick} end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {-2, sick} end
redis.call('SET', KEYS[1], epoch, 'PX', tick * 10)
return {epoch, sick}
";

/// Releases the lease if still ours. KEYS: lease. ARGV: holder.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Registers a room unless too many exist. KEYS: rooms. ARGV: target, max.
/// Returns 1 registered (or already), 0 full.
const REGISTER: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
";

fn room(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

pub(crate) static ENTER_SCRIPT: LazyLock<Script> = LazyLock::new(|| room(ENTER));
pub(crate) static POLL_SCRIPT: LazyLock<Script> = LazyLock::new(|| room(POLL));
pub(crate) static CHECK_SCRIPT: LazyLock<Script> = LazyLock::new(|| room(CHECK));
pub(crate) static ADMIT_SCRIPT: LazyLock<Script> = LazyLock::new(|| room(ADMIT));
pub(crate) static SIZE_SCRIPT: LazyLock<Script> = LazyLock::new(|| room(SIZE));
pub(crate) static CLAIM_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIM));
pub(crate) static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));
pub(crate) static REGISTER_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(REGISTER));
