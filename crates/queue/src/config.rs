//! The waiting room's settings (the server maps its `[queue]` section here).

use std::time::Duration;

use crate::policy::RetryPolicy;

/// Which room guards coupon issuing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CouponRoom {
    /// The store's room: one line for the whole sale.
    Store,
    /// Each coupon's own room (`coupon:<id>`).
    PerCoupon,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Users moved from waiting to active per room per tick, when healthy.
    pub admit_per_tick: u32,
    /// The admission interval.
    pub tick: Duration,
    /// Whether [`crate::WaitingRoom::run_admission`] runs on this instance
    /// (at least one instance must; tests drive ticks by hand instead).
    pub admitter: bool,
    /// An active token lapses after this long without a poll or a protected
    /// call.
    pub active_idle: Duration,
    /// A waiting token nobody polled for this long is dropped (a closed tab
    /// must not take an admission slot). Longer than the longest
    /// `Retry-After`.
    pub waiting_idle: Duration,
    /// Cap on active users per room (0: none): admission pauses while full.
    pub max_active: u64,
    /// Rooms that may exist at once (the store's room is not counted).
    pub max_rooms: u64,
    pub retry: RetryPolicy,
    /// Whether coupon issuing requires an active token, and in which room.
    pub protect_coupon_issue: bool,
    pub coupon_room: CouponRoom,
    /// Whether order creation requires an active token (store room).
    pub protect_order_create: bool,
    /// The per-instance limiter used while Redis is out.
    pub fallback_rate_per_sec: f64,
    pub fallback_burst: u32,
    /// Admission slows down while the p95 reported through
    /// `WaitingRoom::observe_latency` is above this (`None`: ignored).
    pub p95_limit: Option<Duration>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            admit_per_tick: 100,
            tick: Duration::from_secs(1),
            admitter: true,
            active_idle: Duration::from_secs(300),
            waiting_idle: Duration::from_secs(180),
            max_active: 0,
            max_rooms: 1000,
            retry: RetryPolicy::default(),
            protect_coupon_issue: false,
            coupon_room: CouponRoom::Store,
            protect_order_create: false,
            fallback_rate_per_sec: 50.0,
            fallback_burst: 100,
            p95_limit: Some(Duration::from_millis(500)),
        }
    }
}

impl QueueConfig {
    /// Lifetime of a room's keys, refreshed by entries and admission ticks.
    pub(crate) fn room_ttl(&self) -> Duration {
        self.active_idle.max(self.waiting_idle) * 2 + self.tick
    }
}
