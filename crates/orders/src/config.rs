//! How the order capability runs: expiry, payment lock, gate, writers, fallback.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct OrderConfig {
    /// How long a pending order holds its stock.
    pub ttl: Duration,
    /// Lease of the payment lock (longer than a payment transaction).
    pub pay_lock_ttl: Duration,
    /// How long a payment waits for a concurrent payment of the same order.
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
    pub write_timeout: Duration,
    /// Orders at once per instance on the PostgreSQL-only path (Redis out).
    pub fallback_concurrency: usize,
    /// Wait for one of those, then 503.
    pub fallback_wait: Duration,
}

impl Default for OrderConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            pay_lock_ttl: Duration::from_secs(10),
            pay_lock_wait: Duration::from_secs(3),
            stock_gate: true,
            writers: 4,
            write_batch: 64,
            pay_writers: 4,
            write_timeout: Duration::from_secs(10),
            fallback_concurrency: 16,
            fallback_wait: Duration::from_secs(5),
        }
    }
}
