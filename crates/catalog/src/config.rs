//! The catalog's cache sizes and lifetimes, and its database bound.

use std::time::Duration;

/// Cache sizes and lifetimes. See the crate docs for how they bound staleness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogConfig {
    /// Whether product pages are cached at all. Off: every detail read goes
    /// to PostgreSQL (behind `db_concurrency`), the baseline the cache is
    /// measured against.
    pub detail_cache: bool,
    /// How long an in-process copy is served: the invalidation bound.
    pub l1_ttl: Duration,
    /// Products kept in process (each layer of L1).
    pub l1_capacity: u64,
    /// Lifetime of a Redis copy, before jitter.
    pub l2_ttl: Duration,
    /// Spread of the Redis TTL, in percent either side.
    pub l2_jitter_pct: u32,
    /// A copy read after this share of its TTL is refreshed in the background.
    pub refresh_ahead_pct: u32,
    /// How long a last-seen copy is kept to answer while PostgreSQL fails.
    pub stale_ttl: Duration,
    /// Concurrent PostgreSQL reads of product pages per instance.
    pub db_concurrency: usize,
    /// Wait for one of those before answering 503.
    pub db_wait: Duration,
    /// How long the merged popular board is reused in process.
    pub popular_ttl: Duration,
    /// How long the list's `total` is reused in process.
    pub count_ttl: Duration,
    /// How often the Redis ranking is re-checked against PostgreSQL.
    pub ranking_rebuild_every: Duration,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            detail_cache: true,
            l1_ttl: Duration::from_secs(1),
            l1_capacity: 10_000,
            l2_ttl: Duration::from_secs(5),
            l2_jitter_pct: 10,
            refresh_ahead_pct: 75,
            stale_ttl: Duration::from_secs(300),
            db_concurrency: 16,
            db_wait: Duration::from_millis(500),
            popular_ttl: Duration::from_secs(2),
            count_ttl: Duration::from_secs(5),
            ranking_rebuild_every: Duration::from_secs(60),
        }
    }
}
