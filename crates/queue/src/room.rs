//! The room itself: entering, polling, the admission check of protected
//! routes, and the admission loop.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use commerce_domain::{CouponId, UserId};
use commerce_resilience::{BreakerRegistry, BreakerState, CallError, Classify, RedisClient};
use commerce_storage::DbPool;
use redis::{RedisError, ScriptInvocation};

use crate::config::{CouponRoom, QueueConfig};
use crate::error::QueueError;
use crate::health::{Health, LatencyWindow};
use crate::limiter::TokenBucket;
use crate::policy::AdmitRate;
use crate::scripts::{
    ADMIT_SCRIPT, CHECK_SCRIPT, CLAIM_SCRIPT, ENTER_SCRIPT, POLL_SCRIPT, REGISTER_SCRIPT,
    RELEASE_SCRIPT, SIZE_SCRIPT,
};
use crate::target::{make_token, token_target, Target};

/// How often an instance re-asserts a room it enters people into, so a
/// registry entry lost to a failed write comes back on its own.
const REGISTER_REFRESH: Duration = Duration::from_secs(10);
/// Expired or abandoned tokens removed per room per tick, at most (bounds the
/// time the admission script holds Redis).
const SWEEP_LIMIT: u64 = 1000;
/// Callers remembered by the degraded limiter (one entry is a few dozen bytes).
const LOCAL_ADMITTED_CAPACITY: u64 = 100_000;

/// A route that may require an active token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protected {
    CouponIssue(CouponId),
    OrderCreate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Waiting,
    Active,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Active => "active",
        }
    }
}

/// A token's state as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub token: String,
    pub status: Status,
    /// 1 = next in line; 0 once active; `None` when degraded and waiting
    /// (without Redis there is no global line).
    pub position: Option<u64>,
    /// When to poll next (a keep-alive hint once active).
    pub retry_after_secs: u64,
    pub target: Target,
    /// Answered by the local limiter because Redis is unavailable.
    pub degraded: bool,
    /// A new token (false when the caller already had one).
    pub created: bool,
}

/// What one admission tick did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickOutcome {
    /// This instance held the interval and admitted.
    Admitted(TickReport),
    /// Another instance holds this interval (or its lease).
    NotOurTurn { rate: u32 },
    /// Redis did not answer; nobody is admitted meanwhile.
    Unavailable,
}

impl TickOutcome {
    /// Users admitted by this tick, across rooms.
    pub fn admitted(&self) -> u64 {
        match self {
            Self::Admitted(r) => r.admitted,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// The interval's number (Redis time / tick).
    pub epoch: i64,
    /// Users admitted per room this tick.
    pub rate: u32,
    pub healthy: bool,
    pub rooms: usize,
    pub admitted: u64,
    pub waiting: u64,
    pub active: u64,
    /// Expired or abandoned tokens removed.
    pub swept: u64,
}

struct AdmitterKeys {
    epoch: String,
    lease: String,
    sick: String,
    rooms: String,
}

struct Inner {
    redis: RedisClient,
    breakers: BreakerRegistry,
    db: DbPool,
    config: QueueConfig,
    rate: Mutex<AdmitRate>,
    latency: LatencyWindow,
    limiter: TokenBucket,
    /// Callers the local limiter let in while degraded: they keep access
    /// while active (idle expiry), without spending a permit per request.
    local_admitted: moka::future::Cache<(UserId, Target), ()>,
    /// Rooms this instance registered recently.
    registered: Mutex<HashMap<Target, Instant>>,
    /// This instance's name on the admission lease.
    holder: String,
    /// Keys degraded tokens, so they are stable per user on this instance.
    degraded_salt: RandomState,
    keys: AdmitterKeys,
}

/// The waiting room. Cheap to clone; build once per process.
#[derive(Clone)]
pub struct WaitingRoom {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WaitingRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitingRoom")
            .field("config", &self.inner.config)
            .field("rate", &self.current_rate())
            .finish()
    }
}

type Keys = [String; 6];

impl WaitingRoom {
    /// Builds the room; nothing is sent to Redis until it is used. Must be
    /// called inside a tokio runtime (the degraded cache spawns no task, but
    /// the Redis client it is given does).
    pub fn new(
        redis: RedisClient,
        breakers: BreakerRegistry,
        db: DbPool,
        config: QueueConfig,
    ) -> Self {
        let keys = AdmitterKeys {
            epoch: redis.key("queue:{admitter}:epoch"),
            lease: redis.key("queue:{admitter}:lease"),
            sick: redis.key("queue:{admitter}:unhealthy"),
            rooms: redis.key("queue:rooms"),
        };
        let local_admitted = moka::future::Cache::builder()
            .max_capacity(LOCAL_ADMITTED_CAPACITY)
            .time_to_idle(config.active_idle)
            .build();
        Self {
            inner: Arc::new(Inner {
                rate: Mutex::new(AdmitRate::new(config.admit_per_tick)),
                latency: LatencyWindow::default(),
                limiter: TokenBucket::new(config.fallback_rate_per_sec, config.fallback_burst),
                local_admitted,
                registered: Mutex::new(HashMap::new()),
                holder: format!("{:032x}", rand::random::<u128>()),
                degraded_salt: RandomState::new(),
                keys,
                redis,
                breakers,
                db,
                config,
            }),
        }
    }

    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    /// The admission rate this instance currently applies (per room per tick).
    pub fn current_rate(&self) -> u32 {
        self.inner
            .rate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .current()
    }

    /// Feeds the p95 health signal: call it with each request's duration
    /// (e.g. from the request metrics middleware). Without calls the
    /// signal is simply absent.
    pub fn observe_latency(&self, latency: Duration) {
        self.inner.latency.record(latency);
    }

    /// Enters `target`'s room, or returns the caller's live token there.
    pub async fn enter(&self, user: UserId, target: Target) -> Result<Ticket, QueueError> {
        match self.ensure_registered(target).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(QueueError::RoomsFull {
                    retry_after_secs: self.inner.config.retry().max_secs,
                })
            }
            Err(e) => return Ok(self.degraded_ticket(user, target, None, "enter", &e).await),
        }
        let c = &self.inner.config;
        let fresh = make_token(target, rand::random::<u128>());
        let keys = self.room_keys(target);
        let mut inv = ENTER_SCRIPT.prepare_invoke();
        add_keys(&mut inv, &keys);
        inv.arg(user.get())
            .arg(&fresh)
            .arg(millis(c.active_idle))
            .arg(millis(c.room_ttl()));
        let answer: Result<(String, i64, i64, i64, i64), _> =
            self.inner.redis.invoke_script(&inv).await;
        match answer {
            Ok((token, active, position, created, was_empty)) => {
                if was_empty == 1 {
                    // The admitter may have just dropped the empty room
                    // from the registry: put it back.
                    self.register_again(target).await;
                }
                Ok(self.ticket(token, active == 1, position, target, created == 1))
            }
            Err(e) => Ok(self.degraded_ticket(user, target, None, "enter", &e).await),
        }
    }

    /// The state of `token`, which must be the caller's.
    pub async fn poll(&self, user: UserId, token: &str) -> Result<Ticket, QueueError> {
        let target = token_target(token)?;
        let keys = self.room_keys(target);
        let mut inv = POLL_SCRIPT.prepare_invoke();
        add_keys(&mut inv, &keys);
        inv.arg(token)
            .arg(user.get())
            .arg(millis(self.inner.config.active_idle));
        let answer: Result<(i64, i64), _> = self.inner.redis.invoke_script(&inv).await;
        match answer {
            Ok((1, _)) => Ok(self.ticket(token.to_owned(), true, 0, target, false)),
            Ok((0, position)) => Ok(self.ticket(token.to_owned(), false, position, target, false)),
            Ok(_) => Err(QueueError::TokenNotFound),
            Err(e) => Ok(self
                .degraded_ticket(user, target, Some(token), "poll", &e)
                .await),
        }
    }

    /// Passes if `route` is not protected or the caller holds an active
    /// token for its room (refreshing it); else `NotAdmitted` with the
    /// caller's position. While Redis is out, the local limiter decides.
    pub async fn require_admitted(&self, user: UserId, route: Protected) -> Result<(), QueueError> {
        let c = &self.inner.config;
        let target = match route {
            Protected::CouponIssue(_) if !c.protect_coupon_issue => return Ok(()),
            Protected::CouponIssue(id) => match c.coupon_room {
                CouponRoom::Store => Target::Store,
                CouponRoom::PerCoupon => Target::Coupon(id.get()),
            },
            Protected::OrderCreate if !c.protect_order_create => return Ok(()),
            Protected::OrderCreate => Target::Store,
        };
        let keys = self.room_keys(target);
        let mut inv = CHECK_SCRIPT.prepare_invoke();
        add_keys(&mut inv, &keys);
        inv.arg(user.get()).arg(millis(c.active_idle));
        let answer: Result<(i64, i64), _> = self.inner.redis.invoke_script(&inv).await;
        let refused = |position: Option<u64>, retry_after_secs, degraded| {
            metrics::counter!("queue_not_admitted_total").increment(1);
            Err(QueueError::NotAdmitted {
                target,
                position,
                retry_after_secs,
                degraded,
            })
        };
        match answer {
            Ok((1, _)) => Ok(()),
            Ok((0, position)) => {
                let position = to_u64(position);
                refused(Some(position), self.retry_after(position), false)
            }
            Ok(_) => refused(None, c.retry().min_secs, false),
            Err(e) => {
                note_degraded("require_admitted", &e);
                if self.local_admit(user, target).await {
                    Ok(())
                } else {
                    refused(None, self.degraded_retry_after(), true)
                }
            }
        }
    }

    /// Admits forever, one tick per interval (the first one interval from
    /// now). Run it on every instance: the interval claim makes exactly one
    /// of them admit per interval. Returns at once if `admitter` is off.
    pub async fn run_admission(&self) {
        if !self.inner.config.admitter {
            return;
        }
        let every = self.inner.config.tick;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.admit_once().await {
                TickOutcome::Admitted(r) if r.admitted > 0 || r.swept > 0 || !r.healthy => {
                    tracing::debug!(?r, "queue admission tick");
                }
                _ => {}
            }
        }
    }

    /// One admission tick: read health, adjust the rate, claim the interval,
    /// and if it is ours move up to `rate` users per room from waiting to
    /// active. Safe to call from every instance at once (tests do).
    pub async fn admit_once(&self) -> TickOutcome {
        let inner = &self.inner;
        let c = &inner.config;
        let mut health = self.take_health();
        let locally_healthy = health.is_healthy_locally(c.p95_limit);
        let tick_ms = millis(c.tick);
        let mut inv = CLAIM_SCRIPT.prepare_invoke();
        inv.key(&inner.keys.epoch)
            .key(&inner.keys.lease)
            .key(&inner.keys.sick)
            .arg(tick_ms)
            .arg(&inner.holder)
            .arg(millis(
                c.tick
                    .clamp(Duration::from_secs(1), Duration::from_secs(10)),
            ))
            .arg(u8::from(locally_healthy))
            .arg(tick_ms.saturating_mul(2).max(1000));
        let claim: Result<(i64, i64), _> = inner.redis.invoke_script(&inv).await;
        let (epoch, sick) = match claim {
            Ok(v) => v,
            Err(e) => {
                // The `redis` breaker shows in the next healthy check.
                self.apply_health(false);
                tracing::debug!(error = %e, "queue admission skipped: redis unavailable");
                return TickOutcome::Unavailable;
            }
        };
        health.peer_unhealthy = sick == 1;
        let healthy = locally_healthy && !health.peer_unhealthy;
        if !healthy {
            tracing::info!(?health, "queue admission slowed: service unhealthy");
        }
        let rate = self.apply_health(healthy);
        if epoch < 0 {
            return TickOutcome::NotOurTurn { rate };
        }
        let rooms = self.rooms().await;
        let mut report = TickReport {
            epoch,
            rate,
            healthy,
            rooms: rooms.len(),
            admitted: 0,
            waiting: 0,
            active: 0,
            swept: 0,
        };
        for target in rooms {
            let keys = self.room_keys(target);
            let mut inv = ADMIT_SCRIPT.prepare_invoke();
            add_keys(&mut inv, &keys);
            inv.arg(rate)
                .arg(millis(c.active_idle))
                .arg(millis(c.waiting_idle))
                .arg(c.max_active)
                .arg(millis(c.room_ttl()))
                .arg(SWEEP_LIMIT.max(u64::from(rate) * 4));
            let step: Result<(i64, i64, i64, i64), _> = inner.redis.invoke_script(&inv).await;
            match step {
                Ok((admitted, waiting, active, swept)) => {
                    report.admitted += to_u64(admitted);
                    report.waiting += to_u64(waiting);
                    report.active += to_u64(active);
                    report.swept += to_u64(swept);
                    if waiting == 0 && active == 0 && target != Target::Store {
                        self.collect_room(target, &keys).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(room = %target, error = %e, "queue admission step failed");
                    break;
                }
            }
        }
        let mut release = RELEASE_SCRIPT.prepare_invoke();
        release.key(&inner.keys.lease).arg(&inner.holder);
        if let Err(e) = inner.redis.invoke_script::<i64>(&release).await {
            tracing::debug!(error = %e, "queue admission lease left to expire");
        }
        metrics::counter!("queue_admitted_total").increment(report.admitted);
        metrics::gauge!("queue_waiting").set(report.waiting as f64);
        metrics::gauge!("queue_active").set(report.active as f64);
        TickOutcome::Admitted(report)
    }

    fn take_health(&self) -> Health {
        let (_, _, waiting) = commerce_storage::pool_status(&self.inner.db);
        Health {
            breakers_not_closed: self
                .inner
                .breakers
                .snapshot()
                .into_iter()
                .filter(|b| b.state != BreakerState::Closed)
                .map(|b| b.name)
                .collect(),
            pool_waiters: waiting,
            p95: self.inner.latency.take_p95(),
            peer_unhealthy: false,
        }
    }

    fn apply_health(&self, healthy: bool) -> u32 {
        let rate = self
            .inner
            .rate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .on_tick(healthy);
        metrics::gauge!("queue_admit_rate").set(f64::from(rate));
        rate
    }

    /// Every room the admitter walks: the store's, plus the registry.
    async fn rooms(&self) -> Vec<Target> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(&self.inner.keys.rooms);
        let names: Vec<String> = match self.inner.redis.query(cmd).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "queue room registry unreadable; admitting the store room only");
                Vec::new()
            }
        };
        let mut rooms: Vec<Target> = names.iter().filter_map(|n| Target::parse(n).ok()).collect();
        rooms.push(Target::Store);
        rooms.sort_unstable();
        rooms.dedup();
        rooms
    }

    /// `Ok(false)` when the room is new and too many rooms exist.
    async fn ensure_registered(&self, target: Target) -> Result<bool, CallError<RedisError>> {
        if target == Target::Store || self.registered_recently(target) {
            return Ok(true);
        }
        let mut inv = REGISTER_SCRIPT.prepare_invoke();
        inv.key(&self.inner.keys.rooms)
            .arg(target.to_string())
            .arg(self.inner.config.max_rooms);
        let ok: i64 = self.inner.redis.invoke_script(&inv).await?;
        if ok == 1 {
            self.mark_registered(target);
        }
        Ok(ok == 1)
    }

    fn registered_recently(&self, target: Target) -> bool {
        let map = self
            .inner
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(&target)
            .is_some_and(|at| at.elapsed() < REGISTER_REFRESH)
    }

    fn mark_registered(&self, target: Target) {
        let mut map = self
            .inner
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() as u64 > self.inner.config.max_rooms.saturating_mul(2) {
            map.clear();
        }
        map.insert(target, Instant::now());
    }

    async fn register_again(&self, target: Target) {
        if target == Target::Store {
            return;
        }
        let mut cmd = redis::cmd("SADD");
        cmd.arg(&self.inner.keys.rooms).arg(target.to_string());
        match self.inner.redis.query::<i64>(cmd).await {
            Ok(_) => self.mark_registered(target),
            Err(e) => tracing::warn!(room = %target, error = %e, "queue room not re-registered"),
        }
    }

    /// Drops an empty room from the registry. Removal first, then a recheck
    /// that puts it back if someone entered meanwhile: an entry into an
    /// empty room re-registers it too, so no entrant is ever left in an
    /// unregistered room.
    async fn collect_room(&self, target: Target, keys: &Keys) {
        let mut srem = redis::cmd("SREM");
        srem.arg(&self.inner.keys.rooms).arg(target.to_string());
        if self.inner.redis.query::<i64>(srem).await.is_err() {
            return;
        }
        let mut inv = SIZE_SCRIPT.prepare_invoke();
        add_keys(&mut inv, keys);
        match self.inner.redis.invoke_script::<i64>(&inv).await {
            Ok(0) => {}
            _ => self.register_again(target).await,
        }
    }

    fn room_keys(&self, target: Target) -> Keys {
        let tag = format!("queue:{{{target}}}");
        ["waiting", "active", "seen", "owner", "user", "seq"]
            .map(|part| self.inner.redis.key(&format!("{tag}:{part}")))
    }

    fn retry_after(&self, position: u64) -> u64 {
        let c = &self.inner.config;
        c.retry()
            .retry_after_secs(position, self.current_rate(), c.tick)
    }

    /// For an active token: come back well within the idle timeout.
    fn keep_alive_secs(&self) -> u64 {
        let r = self.inner.config.retry();
        (self.inner.config.active_idle.as_secs() / 3).clamp(r.min_secs, r.max_secs.max(r.min_secs))
    }

    fn ticket(
        &self,
        token: String,
        active: bool,
        position: i64,
        target: Target,
        created: bool,
    ) -> Ticket {
        let (status, position, retry_after_secs) = if active {
            (Status::Active, 0, self.keep_alive_secs())
        } else {
            let p = to_u64(position);
            (Status::Waiting, p, self.retry_after(p))
        };
        Ticket {
            token,
            status,
            position: Some(position),
            retry_after_secs,
            target,
            degraded: false,
            created,
        }
    }

    /// The local limiter's answer while Redis is out.
    async fn degraded_ticket(
        &self,
        user: UserId,
        target: Target,
        token: Option<&str>,
        op: &'static str,
        error: &CallError<RedisError>,
    ) -> Ticket {
        note_degraded(op, error);
        let admitted = self.local_admit(user, target).await;
        let token = match token {
            Some(t) => t.to_owned(),
            None => self.degraded_token(user, target),
        };
        Ticket {
            token,
            status: if admitted {
                Status::Active
            } else {
                Status::Waiting
            },
            position: admitted.then_some(0),
            retry_after_secs: if admitted {
                self.keep_alive_secs()
            } else {
                self.degraded_retry_after()
            },
            target,
            degraded: true,
            created: false,
        }
    }

    /// Whether the local limiter lets `user` into `target` (a permit once,
    /// then remembered while the caller stays active).
    async fn local_admit(&self, user: UserId, target: Target) -> bool {
        let key = (user, target);
        if self.inner.local_admitted.get(&key).await.is_some() {
            return true;
        }
        if self.inner.limiter.try_acquire() {
            self.inner.local_admitted.insert(key, ()).await;
            true
        } else {
            false
        }
    }

    /// Without positions, spread the crowd's retries over a window starting
    /// when the bucket has refilled, so they do not all return at once.
    fn degraded_retry_after(&self) -> u64 {
        let r = self.inner.config.retry();
        let max = r.max_secs.max(r.min_secs);
        let base = self
            .inner
            .limiter
            .refill_secs()
            .max(self.inner.limiter.wait_hint().as_secs())
            .clamp(r.min_secs, max);
        let top = base.saturating_mul(2).min(max);
        rand::random_range(base..=top)
    }

    /// A token stable per user and room on this instance (so entering twice
    /// answers the same while degraded); it names nothing in Redis.
    fn degraded_token(&self, user: UserId, target: Target) -> String {
        let salt = &self.inner.degraded_salt;
        let hi = salt.hash_one((0u8, user, target));
        let lo = salt.hash_one((1u8, user, target));
        make_token(target, (u128::from(hi) << 64) | u128::from(lo))
    }
}

fn add_keys(inv: &mut ScriptInvocation<'_>, keys: &Keys) {
    for k in keys {
        inv.key(k);
    }
}

fn note_degraded(op: &'static str, error: &CallError<RedisError>) {
    metrics::counter!("queue_degraded_total", "op" => op).increment(1);
    if error.is_unavailable() {
        tracing::debug!(op, error = %error, "waiting room degraded: redis unavailable");
    } else {
        // A script or protocol error is a bug, not an outage: worth a look.
        let failure = error.inner().is_some_and(Classify::is_failure);
        tracing::warn!(op, error = %error, failure, "waiting room degraded: unexpected redis answer");
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
