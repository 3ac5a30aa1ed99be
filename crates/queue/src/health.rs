//! What the admitter looks at before letting people in: open breakers,
//! requests queued on the database pool, and (when the server reports
//! latencies) a rolling p95.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (ms) of the latency buckets; the last one catches the rest.
const BOUNDS_MS: [u64; 18] = [
    1, 2, 5, 10, 20, 50, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 10_000,
];

/// Fewer samples than this in a window say nothing about the p95.
pub const MIN_SAMPLES: u64 = 20;

/// A lock-free latency histogram, emptied at every admission tick: the p95
/// it reports is that of the last tick's requests. Bucketed, so recording is
/// one atomic add and the estimate is the bucket's upper bound (errs high).
#[derive(Debug, Default)]
pub struct LatencyWindow {
    buckets: [AtomicU64; BOUNDS_MS.len() + 1],
}

impl LatencyWindow {
    pub fn record(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        let i = BOUNDS_MS.partition_point(|b| *b < ms);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The p95 of everything recorded since the last call, then starts a
    /// new window. `None` with fewer than [`MIN_SAMPLES`] samples.
    pub fn take_p95(&self) -> Option<Duration> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total < MIN_SAMPLES {
            return None;
        }
        let rank = total.saturating_mul(95).div_ceil(100);
        let mut seen = 0;
        for (i, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let ms = BOUNDS_MS.get(i).copied().unwrap_or(u64::MAX);
                return Some(Duration::from_millis(ms));
            }
        }
        None
    }
}

/// One tick's view of this instance's health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Breakers not closed (open or probing).
    pub breakers_not_closed: Vec<String>,
    /// Requests waiting for a database connection.
    pub pool_waiters: usize,
    pub p95: Option<Duration>,
    /// Another instance reported itself unhealthy within the last ticks.
    pub peer_unhealthy: bool,
}

impl Health {
    /// Healthy unless a breaker is not closed, someone waits for the pool,
    /// or the p95 is above `p95_limit` (when there is one and a p95).
    pub fn is_healthy_locally(&self, p95_limit: Option<Duration>) -> bool {
        self.breakers_not_closed.is_empty()
            && self.pool_waiters == 0
            && !matches!((self.p95, p95_limit), (Some(p), Some(l)) if p > l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_needs_samples_and_resets() {
        let w = LatencyWindow::default();
        for _ in 0..10 {
            w.record(Duration::from_millis(3));
        }
        assert_eq!(w.take_p95(), None);
        for _ in 0..95 {
            w.record(Duration::from_millis(3));
        }
        for _ in 0..5 {
            w.record(Duration::from_millis(900));
        }
        assert_eq!(w.take_p95(), Some(Duration::from_millis(5)));
        assert_eq!(w.take_p95(), None, "a new window");
        for _ in 0..90 {
            w.record(Duration::from_millis(3));
        }
        for _ in 0..10 {
            w.record(Duration::from_millis(900));
        }
        assert_eq!(w.take_p95(), Some(Duration::from_millis(1_000)));
        for _ in 0..30 {
            w.record(Duration::from_secs(60));
        }
        assert_eq!(w.take_p95(), Some(Duration::from_millis(u64::MAX)));
    }

    #[test]
    fn health_signals() {
        let limit = Some(Duration::from_millis(500));
        let ok = Health::default();
        assert!(ok.is_healthy_locally(limit));
        let slow = Health {
            p95: Some(Duration::from_millis(750)),
            ..Health::default()
        };
        assert!(!slow.is_healthy_locally(limit));
        assert!(slow.is_healthy_locally(None), "no limit, no signal");
        let waiting = Health {
            pool_waiters: 1,
            ..Health::default()
        };
        assert!(!waiting.is_healthy_locally(limit));
        let open = Health {
            breakers_not_closed: vec!["redis".into()],
            ..Health::default()
        };
        assert!(!open.is_healthy_locally(limit));
    }
}
