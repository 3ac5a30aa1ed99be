//! The per-instance token bucket the room falls back to while Redis is out.
//!
//! Hand-written (a dozen lines) rather than `governor`: we need a "time until
//! the next permit" for `Retry-After` and an injectable clock for tests, and
//! one mutex held for a few nanoseconds is no contention at our rates.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// Starts full: the first `burst` callers after an outage get in at once.
    pub fn new(rate_per_sec: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate_per_sec: rate_per_sec.max(f64::MIN_POSITIVE),
            burst,
            state: Mutex::new(State {
                tokens: burst,
                at: Instant::now(),
            }),
        }
    }

    /// Takes one permit if available.
    pub fn try_acquire(&self) -> bool {
        self.try_acquire_at(Instant::now())
    }

    pub fn try_acquire_at(&self, now: Instant) -> bool {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.refill(&mut s, now);
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until one permit is available (zero if one is now).
    pub fn wait_hint(&self) -> Duration {
        self.wait_hint_at(Instant::now())
    }

    pub fn wait_hint_at(&self, now: Instant) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.refill(&mut s, now);
        let missing = (1.0 - s.tokens).max(0.0);
        Duration::from_secs_f64(missing / self.rate_per_sec).min(Duration::from_secs(3600))
    }

    /// Seconds for the bucket to fill up again: after that long a whole
    /// burst of waiting clients can be let in.
    pub fn refill_secs(&self) -> u64 {
        // Bounded by the config's validation; saturates anyway.
        (self.burst / self.rate_per_sec).ceil().min(3600.0) as u64
    }

    fn refill(&self, s: &mut State, now: Instant) {
        let elapsed = now.saturating_duration_since(s.at).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.rate_per_sec).min(self.burst);
        s.at = s.at.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let b = TokenBucket::new(2.0, 5);
        let t0 = Instant::now();
        let granted = (0..20).filter(|_| b.try_acquire_at(t0)).count();
        assert_eq!(granted, 5, "a full bucket grants the burst");
        assert!(!b.try_acquire_at(t0));
        assert_eq!(b.wait_hint_at(t0), Duration::from_millis(500));
        let t1 = t0 + Duration::from_millis(500);
        assert!(b.try_acquire_at(t1), "refilled at 2/s");
        assert!(!b.try_acquire_at(t1));
        // Never more than the burst, however long it rested.
        let later = t1 + Duration::from_secs(3600);
        assert_eq!((0..20).filter(|_| b.try_acquire_at(later)).count(), 5);
        assert_eq!(b.refill_secs(), 3);
    }

    #[test]
    fn time_going_backwards_grants_nothing_extra() {
        let b = TokenBucket::new(1.0, 1);
        let t0 = Instant::now() + Duration::from_secs(10);
        assert!(b.try_acquire_at(t0));
        assert!(!b.try_acquire_at(t0 - Duration::from_secs(5)));
        assert!(!b.try_acquire_at(t0 + Duration::from_millis(999)));
        assert!(b.try_acquire_at(t0 + Duration::from_secs(1)));
    }
}
