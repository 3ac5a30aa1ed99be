//! The waiting room's settings. The `[queue]` section of the server's
//! configuration is this struct: its keys, defaults and checks live here
//! and nowhere else.

use commerce_domain::setting::{nonzero, InvalidSetting};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_with::{serde_as, DurationMilliSeconds, DurationSeconds};
use std::time::Duration;

use crate::policy::RetryPolicy;

/// Which room guards coupon issuing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum CouponRoom {
    /// The store's room: one line for the whole sale.
    #[serde(rename = "store")]
    Store,
    /// Each coupon's own room (`coupon:<id>`).
    #[serde(rename = "coupon")]
    PerCoupon,
}

#[serde_as]
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Users moved from waiting to active per room per tick, when healthy.
    pub admit_per_tick: u32,
    /// The admission interval.
    #[serde(rename = "tick_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub tick: Duration,
    /// Whether [`crate::WaitingRoom::run_admission`] runs on this instance
    /// (at least one instance must; tests drive ticks by hand instead).
    pub admitter: bool,
    /// An active token lapses after this long without a poll or a protected
    /// call.
    #[serde(rename = "active_idle_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub active_idle: Duration,
    /// A waiting token nobody polled for this long is dropped (a closed tab
    /// must not take an admission slot). Longer than the longest
    /// `Retry-After`.
    #[serde(rename = "waiting_idle_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub waiting_idle: Duration,
    /// Cap on active users per room (0: none): admission pauses while full.
    pub max_active: u64,
    /// Rooms that may exist at once (the store's room is not counted).
    pub max_rooms: u64,
    /// `retry_after` bounds, and polls per estimated wait (`wait / k`):
    /// see [`RetryPolicy`].
    pub retry_min_secs: u64,
    pub retry_max_secs: u64,
    pub polls_per_wait: u32,
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
    /// `0` in the configuration.
    #[serde(rename = "p95_limit_ms", with = "zero_is_none")]
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
            retry_min_secs: RetryPolicy::default().min_secs,
            retry_max_secs: RetryPolicy::default().max_secs,
            polls_per_wait: RetryPolicy::default().polls_per_wait,
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
    /// How long clients are told to wait between polls.
    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            min_secs: self.retry_min_secs,
            max_secs: self.retry_max_secs,
            polls_per_wait: self.polls_per_wait,
        }
    }

    /// Checks the values a user can set.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let bad = |key, message: &str| Err(InvalidSetting::new(key, message));
        nonzero("admit_per_tick", self.admit_per_tick)?;
        if self.tick < Duration::from_millis(10) {
            return bad("tick_ms", "must be at least 10");
        }
        nonzero("active_idle_secs", self.active_idle.as_secs())?;
        nonzero("retry_min_secs", self.retry_min_secs)?;
        if self.retry_max_secs < self.retry_min_secs {
            return bad("retry_max_secs", "must be at least queue.retry_min_secs");
        }
        nonzero("polls_per_wait", self.polls_per_wait)?;
        if self.waiting_idle.as_secs() < self.retry_max_secs.saturating_mul(2) {
            return bad(
                "waiting_idle_secs",
                "must be at least 2 × queue.retry_max_secs (slow pollers would be dropped)",
            );
        }
        nonzero("max_rooms", self.max_rooms)?;
        if !(self.fallback_rate_per_sec.is_finite() && self.fallback_rate_per_sec > 0.0) {
            return bad("fallback_rate_per_sec", "must be a positive number");
        }
        nonzero("fallback_burst", self.fallback_burst)
    }

    /// Lifetime of a room's keys, refreshed by entries and admission ticks.
    pub(crate) fn room_ttl(&self) -> Duration {
        self.active_idle.max(self.waiting_idle) * 2 + self.tick
    }
}

/// `p95_limit_ms`: whole milliseconds, 0 for none.
mod zero_is_none {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        let ms = v.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        s.serialize_u64(ms)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let ms = u64::deserialize(d)?;
        Ok((ms > 0).then(|| Duration::from_millis(ms)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn deserialises_itself_under_the_keys_users_set() {
        let c: QueueConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::to_value(QueueConfig::default()).unwrap()
        );
        let c: QueueConfig =
            serde_json::from_str(r#"{"tick_ms": 250, "p95_limit_ms": 0, "coupon_room": "coupon"}"#)
                .unwrap();
        assert!(
            c.tick == Duration::from_millis(250)
                && c.p95_limit.is_none()
                && c.coupon_room == CouponRoom::PerCoupon,
            "{c:?}"
        );
        assert!(serde_json::from_str::<QueueConfig>(r#"{"tick": 250}"#).is_err());
    }

    #[test]
    fn checks_name_the_key() {
        assert_eq!(QueueConfig::default().validate(), Ok(()));
        let c: QueueConfig = serde_json::from_str(r#"{"retry_max_secs": 100}"#).unwrap();
        assert_eq!(c.validate().unwrap_err().key, "waiting_idle_secs");
    }
}
