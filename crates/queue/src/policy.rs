//! Pure policy: how long a waiting client should wait before its next poll,
//! and how fast the admitter lets people in. No I/O, unit-tested.

use std::time::Duration;

/// How poll intervals are derived from a queue position.
///
/// The reference report (seed 002) melted at 400 TPS when everyone polled
/// every 10 s whatever their place. Here a client is told to come back after
/// a fraction of its estimated wait, clamped: the head of the line polls
/// every second or so, the tail every minute, so the polling load is about
/// `polls_per_wait × rate × (1 + ln(max / min))` per second whatever the
/// crowd, plus `crowd / max` for the part of the crowd beyond the clamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub min_secs: u64,
    pub max_secs: u64,
    /// About this many polls during the estimated wait (the `k` in
    /// `wait / k`).
    pub polls_per_wait: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_secs: 1,
            max_secs: 60,
            polls_per_wait: 2,
        }
    }
}

impl RetryPolicy {
    /// Seconds until the next poll for a client at `position` (1 = next in
    /// line; 0 = already active) when `per_tick` people are admitted every
    /// `tick`. Non-decreasing in `position`.
    pub fn retry_after_secs(&self, position: u64, per_tick: u32, tick: Duration) -> u64 {
        let per_tick = u64::from(per_tick.max(1));
        // Ticks until this position is admitted, the wait they take, and a
        // `polls_per_wait`-th of it, rounded up.
        let ticks = u128::from(position.div_ceil(per_tick));
        let wait_ms = ticks.saturating_mul(tick.as_millis());
        let per_poll = 1000 * u128::from(self.polls_per_wait.max(1));
        let secs = u64::try_from(wait_ms.div_ceil(per_poll)).unwrap_or(u64::MAX);
        secs.clamp(self.min_secs, self.max_secs.max(self.min_secs))
    }
}

/// The admitter's current rate: halves on an unhealthy tick, recovers by a
/// quarter of the configured rate per healthy tick. Multiplicative decrease
/// sheds load fast when PostgreSQL or a dependency struggles; additive
/// increase avoids oscillating back into the overload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmitRate {
    max: u32,
    current: u32,
}

impl AdmitRate {
    pub fn new(max: u32) -> Self {
        let max = max.max(1);
        Self { max, current: max }
    }

    pub fn current(&self) -> u32 {
        self.current
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    /// The floor: a tenth of the configured rate (at least 1).
    pub fn min(&self) -> u32 {
        (self.max / 10).max(1)
    }

    /// Applies one tick's health and returns the rate for that tick. Never
    /// below [`AdmitRate::min`]: admission slows down but does not stop,
    /// since the trouble (a side-effect dependency's breaker, say) may not
    /// be one that fewer users would fix.
    pub fn on_tick(&mut self, healthy: bool) -> u32 {
        self.current = if healthy {
            self.current
                .saturating_add((self.max / 4).max(1))
                .min(self.max)
        } else {
            (self.current / 2).max(self.min())
        };
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn retry_after_is_short_at_the_front_and_capped_at_the_back() {
        let p = RetryPolicy::default();
        assert_eq!(p.retry_after_secs(0, 100, SEC), 1);
        assert_eq!(p.retry_after_secs(1, 100, SEC), 1);
        assert_eq!(p.retry_after_secs(100, 100, SEC), 1);
        assert_eq!(p.retry_after_secs(250, 100, SEC), 2); // 3 ticks, 3 s / 2
        assert_eq!(p.retry_after_secs(2_000, 100, SEC), 10);
        assert_eq!(p.retry_after_secs(12_000, 100, SEC), 60);
        assert_eq!(p.retry_after_secs(u64::MAX, 1, Duration::MAX), 60);
        // A slower admitter means a longer wait and fewer polls.
        assert!(p.retry_after_secs(500, 10, SEC) > p.retry_after_secs(500, 100, SEC));
        // Zero rate is treated as one, not a division by zero.
        assert_eq!(p.retry_after_secs(3, 0, SEC), 2);
    }

    #[test]
    fn retry_after_is_monotonic_in_position() {
        for (per_tick, tick_ms, k) in [(1, 1000, 1), (100, 1000, 2), (7, 250, 3), (500, 5000, 4)] {
            let p = RetryPolicy {
                min_secs: 1,
                max_secs: 60,
                polls_per_wait: k,
            };
            let tick = Duration::from_millis(tick_ms);
            let mut last = 0;
            for pos in 0..50_000 {
                let r = p.retry_after_secs(pos, per_tick, tick);
                assert!(r >= last, "position {pos}: {r} < {last}");
                assert!((1..=60).contains(&r));
                last = r;
            }
            assert_eq!(last, 60, "the far back reaches the cap");
        }
    }

    #[test]
    fn rate_halves_when_unhealthy_and_recovers_by_quarters() {
        let mut r = AdmitRate::new(100);
        assert_eq!(r.current(), 100);
        assert_eq!(r.on_tick(true), 100, "capped at the configured rate");
        assert_eq!(r.on_tick(false), 50);
        assert_eq!(r.on_tick(false), 25);
        assert_eq!(r.on_tick(false), 12);
        assert_eq!(r.on_tick(true), 37);
        assert_eq!(r.on_tick(true), 62);
        assert_eq!(r.on_tick(true), 87);
        assert_eq!(r.on_tick(true), 100);
        assert_eq!(r.on_tick(true), 100);
        // A long outage bottoms out at a tenth, never zero.
        for _ in 0..10 {
            r.on_tick(false);
        }
        assert_eq!(r.current(), 10);
        assert_eq!(r.on_tick(true), 35);
    }

    #[test]
    fn rate_never_stops_and_small_rates_still_recover() {
        let mut r = AdmitRate::new(3);
        for _ in 0..10 {
            assert!(r.on_tick(false) >= 1);
        }
        assert_eq!(r.current(), 1);
        assert_eq!(r.on_tick(true), 2, "+max(1, 3/4)");
        assert_eq!(r.on_tick(true), 3);
        assert_eq!(AdmitRate::new(0).max(), 1);
    }
}
