//! How the order capability runs: expiry, payment lock, gate, writers,
//! fallback. The `[orders]` section of the server's configuration is this
//! struct: its keys, defaults and checks live here and nowhere else.

use commerce_domain::setting::{nonzero, nonzero_duration, within, InvalidSetting};
use serde::{Deserialize, Serialize};
use serde_with::{serde_as, DurationMilliSeconds, DurationSeconds};
use std::time::Duration;

#[serde_as]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrderConfig {
    /// How long a pending order holds its stock.
    #[serde(rename = "ttl_secs")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub ttl: Duration,
    /// How often overdue pending orders are expired.
    #[serde(rename = "sweep_interval_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub sweep_interval: Duration,
    /// Lease of the payment lock (longer than a payment transaction).
    #[serde(skip)]
    pub pay_lock_ttl: Duration,
    /// How long a payment waits for a concurrent payment of the same order.
    #[serde(skip)]
    pub pay_lock_wait: Duration,
    /// Reservations decided by the Redis stock gate first (`false`: every
    /// order is its own PostgreSQL transaction on the product rows).
    pub stock_gate: bool,
    /// Tasks writing gated orders in batches (0: one transaction per order).
    pub writers: usize,
    /// Most orders (or payments) per batch.
    pub write_batch: usize,
    /// Tasks writing payments in batches (0: one transaction per payment).
    pub pay_writers: usize,
    /// Bound on an order's wait for its batch to commit.
    #[serde(skip)]
    pub write_timeout: Duration,
    /// Orders at once per instance on the PostgreSQL-only path (Redis out).
    pub fallback_concurrency: usize,
    /// Wait for one of those, then 503.
    #[serde(rename = "fallback_wait_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub fallback_wait: Duration,
    /// Each HTTP worker takes orders and payments through its own Redis
    /// connection, PostgreSQL pool and batch writers, driven on its own
    /// thread (no cross-thread wake-ups per order); false: through the
    /// process's shared clients. Wired by the server.
    pub worker_io: bool,
    /// Connections of each worker's order pool (opened on demand): its
    /// order and payment writers, and the reads beside them.
    pub worker_pool_size: usize,
}

impl Default for OrderConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            sweep_interval: Duration::from_secs(1),
            pay_lock_ttl: Duration::from_secs(10),
            pay_lock_wait: Duration::from_secs(3),
            stock_gate: true,
            writers: 4,
            write_batch: 64,
            pay_writers: 4,
            write_timeout: Duration::from_secs(10),
            fallback_concurrency: 16,
            fallback_wait: Duration::from_secs(5),
            worker_io: true,
            worker_pool_size: 12,
        }
    }
}

impl OrderConfig {
    /// Checks the values a user can set.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        nonzero_duration("ttl_secs", self.ttl)?;
        nonzero_duration("sweep_interval_ms", self.sweep_interval)?;
        nonzero_duration("fallback_wait_ms", self.fallback_wait)?;
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
        let c: OrderConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::to_value(OrderConfig::default()).unwrap()
        );
        let c: OrderConfig =
            serde_json::from_str(r#"{"ttl_secs": 2, "fallback_wait_ms": 250}"#).unwrap();
        assert!(
            c.ttl == Duration::from_secs(2) && c.fallback_wait == Duration::from_millis(250),
            "{c:?}"
        );
        assert!(serde_json::from_str::<OrderConfig>(r#"{"ttl": 2}"#).is_err());
    }

    #[test]
    fn checks_name_the_key() {
        assert_eq!(OrderConfig::default().validate(), Ok(()));
        let c: OrderConfig = serde_json::from_str(r#"{"write_batch": 0}"#).unwrap();
        assert_eq!(c.validate().unwrap_err().key, "write_batch");
    }
}
