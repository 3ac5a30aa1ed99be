//! How the coupon capability issues: its fallback and batch writers.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct CouponConfig {
    /// Concurrent PostgreSQL-only issues per instance while Redis is out.
    pub fallback_concurrency: usize,
    /// How long a request waits for a fallback permit before a 503.
    pub fallback_wait: Duration,
    /// Bound on waiting for another instance's gate rebuild.
    pub rebuild_wait: Duration,
    /// Tasks writing winners in batches (0: each winner writes its own row).
    pub writers: usize,
    /// Most winners per batched statement.
    pub write_batch: usize,
    /// Bound on a winner's wait for its row to commit.
    pub write_timeout: Duration,
}

impl Default for CouponConfig {
    fn default() -> Self {
        Self {
            fallback_concurrency: 16,
            fallback_wait: Duration::from_secs(5),
            rebuild_wait: Duration::from_secs(3),
            writers: 4,
            write_batch: 64,
            write_timeout: Duration::from_secs(10),
        }
    }
}
