//! The catalog's cache sizes and lifetimes, and its database bound. The
//! `[catalog]` section of the server's configuration is this struct: its
//! keys, defaults and checks live here and nowhere else.

use commerce_domain::setting::{nonzero, nonzero_duration, InvalidSetting};
use serde::{Deserialize, Serialize};
use serde_with::{serde_as, DurationMilliSeconds, DurationSeconds};
use std::time::Duration;

/// Cache sizes and lifetimes. See the crate docs for how they bound
/// staleness. A change made through the catalog is visible on every
/// instance within `l1_ttl_ms`.
#[serde_as]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// Whether product pages are cached at all. Off: every detail read goes
    /// to PostgreSQL (behind `db_concurrency`), the baseline the cache is
    /// measured against.
    pub detail_cache: bool,
    /// How long an in-process copy is served: the invalidation bound.
    #[serde(rename = "l1_ttl_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub l1_ttl: Duration,
    /// Products kept in process (each layer of L1).
    pub l1_capacity: u64,
    /// Lifetime of a Redis copy, before jitter.
    #[serde(rename = "l2_ttl_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub l2_ttl: Duration,
    /// Spread of the Redis TTL, in percent either side.
    pub l2_jitter_pct: u32,
    /// A copy read after this share of its TTL is refreshed in the background.
    pub refresh_ahead_pct: u32,
    /// How long a last-seen copy is kept to answer while PostgreSQL fails.
    #[serde(rename = "stale_ttl_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub stale_ttl: Duration,
    /// Concurrent PostgreSQL reads of product pages per instance.
    pub db_concurrency: usize,
    /// Wait for one of those before answering 503.
    #[serde(rename = "db_wait_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub db_wait: Duration,
    /// How long the merged popular board is reused in process.
    #[serde(rename = "popular_ttl_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub popular_ttl: Duration,
    /// How long the list's `total` is reused in process.
    #[serde(rename = "count_ttl_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub count_ttl: Duration,
    /// How often the Redis ranking is re-checked against PostgreSQL.
    #[serde(rename = "ranking_rebuild_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
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

impl CatalogConfig {
    /// Checks the values a user can set.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        nonzero_duration("l1_ttl_ms", self.l1_ttl)?;
        nonzero("l1_capacity", self.l1_capacity)?;
        nonzero_duration("l2_ttl_ms", self.l2_ttl)?;
        nonzero_duration("stale_ttl_secs", self.stale_ttl)?;
        nonzero_duration("db_wait_ms", self.db_wait)?;
        nonzero_duration("popular_ttl_ms", self.popular_ttl)?;
        nonzero_duration("count_ttl_ms", self.count_ttl)?;
        nonzero_duration("ranking_rebuild_secs", self.ranking_rebuild_every)?;
        if self.l2_ttl < self.l1_ttl {
            return Err(InvalidSetting::new(
                "l2_ttl_ms",
                "must be at least catalog.l1_ttl_ms",
            ));
        }
        if self.l2_jitter_pct > 50 {
            return Err(InvalidSetting::new("l2_jitter_pct", "must be at most 50"));
        }
        if !(10..=95).contains(&self.refresh_ahead_pct) {
            return Err(InvalidSetting::new(
                "refresh_ahead_pct",
                "must be between 10 and 95",
            ));
        }
        nonzero("db_concurrency", self.db_concurrency as u128)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn deserialises_itself_under_the_keys_users_set() {
        let c: CatalogConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::to_value(CatalogConfig::default()).unwrap()
        );
        let c: CatalogConfig =
            serde_json::from_str(r#"{"l1_ttl_ms": 300, "stale_ttl_secs": 9}"#).unwrap();
        assert!(
            c.l1_ttl == Duration::from_millis(300) && c.stale_ttl == Duration::from_secs(9),
            "{c:?}"
        );
        assert!(serde_json::from_str::<CatalogConfig>(r#"{"l1_ttl": 300}"#).is_err());
    }

    #[test]
    fn checks_name_the_key() {
        assert_eq!(CatalogConfig::default().validate(), Ok(()));
        let c: CatalogConfig = serde_json::from_str(r#"{"l1_ttl_ms": 6000}"#).unwrap();
        assert_eq!(c.validate().unwrap_err().key, "l2_ttl_ms");
    }
}
