//! How the coupon capability issues: its fallback, batch writers and gate
//! checks. The `[coupons]` section of the server's configuration is this
//! struct: its keys, defaults and checks live here and nowhere else.

use commerce_domain::setting::{nonzero, nonzero_duration, within, InvalidSetting};
use serde::{Deserialize, Serialize};
use serde_with::{serde_as, DurationMilliSeconds, DurationSeconds};
use std::time::Duration;

#[serde_as]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CouponConfig {
    /// Concurrent PostgreSQL-only issues per instance while Redis is out.
    pub fallback_concurrency: usize,
    /// How long a request waits for a fallback permit before a 503.
    #[serde(rename = "fallback_wait_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub fallback_wait: Duration,
    /// How often open coupons' Redis gates are checked against PostgreSQL.
    #[serde(rename = "reconcile_interval_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub reconcile_interval: Duration,
    /// Bound on waiting for another instance's gate rebuild.
    #[serde(skip)]
    pub rebuild_wait: Duration,
    /// Tasks writing winners in batches (0: each winner writes its own row).
    pub writers: usize,
    /// Most winners per batched statement.
    pub write_batch: usize,
    /// Bound on a winner's wait for its row to commit. The server sets it
    /// from the database's waits (pool checkout and statement, each bounded).
    #[serde(skip)]
    pub write_timeout: Duration,
    /// Each HTTP worker issues through its own Redis connection and
    /// PostgreSQL pool, driven on its own thread (no cross-thread wake-ups
    /// per issue); false: through the process's shared clients. Wired by
    /// the server.
    pub worker_io: bool,
    /// Connections of each worker's pool (opened on demand).
    pub worker_pool_size: usize,
}

impl Default for CouponConfig {
    fn default() -> Self {
        Self {
            fallback_concurrency: 16,
            fallback_wait: Duration::from_secs(5),
            reconcile_interval: Duration::from_secs(30),
            rebuild_wait: Duration::from_secs(3),
            writers: 4,
            write_batch: 64,
            write_timeout: Duration::from_secs(10),
            worker_io: true,
            worker_pool_size: 8,
        }
    }
}

impl CouponConfig {
    /// Checks the values a user can set.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        nonzero_duration("fallback_wait_ms", self.fallback_wait)?;
        nonzero_duration("reconcile_interval_secs", self.reconcile_interval)?;
        within("write_batch", self.write_batch, 1..=1000)?;
        nonzero("fallback_concurrency", self.fallback_concurrency as u128)?;
        if self.worker_io {
            nonzero("worker_pool_size", self.worker_pool_size as u128)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn deserialises_itself_under_the_keys_users_set() {
        let c: CouponConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::to_value(CouponConfig::default()).unwrap()
        );
        let c: CouponConfig =
            serde_json::from_str(r#"{"reconcile_interval_secs": 7, "fallback_wait_ms": 250}"#)
                .unwrap();
        assert!(
            c.reconcile_interval == Duration::from_secs(7)
                && c.fallback_wait == Duration::from_millis(250),
            "{c:?}"
        );
        assert!(serde_json::from_str::<CouponConfig>(r#"{"reconcile_interval": 7}"#).is_err());
    }

    #[test]
    fn checks_name_the_key() {
        assert_eq!(CouponConfig::default().validate(), Ok(()));
        let c: CouponConfig = serde_json::from_str(r#"{"fallback_concurrency": 0}"#).unwrap();
        assert_eq!(c.validate().unwrap_err().key, "fallback_concurrency");
    }
}
