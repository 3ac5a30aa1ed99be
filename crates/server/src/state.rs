//! Application state, built once per process and shared by every worker.

use crate::config::Settings;
use commerce_coupons::Coupons;
use commerce_resilience::{BreakerRegistry, LockManager, RedisClient};
use commerce_storage::DbPool;
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

pub struct AppState {
    pub settings: Settings,
    pub db: DbPool,
    pub tokens: crate::tokens::Tokens,
    /// Users known to exist (a token of a missing user is a 401).
    pub known_users: crate::tokens::KnownUsers,
    pub limits: crate::ratelimit::RateLimiter,
    pub admin_key: SecretString,
    pub metrics: PrometheusHandle,
    pub breakers: BreakerRegistry,
    pub redis: RedisClient,
    pub locks: LockManager,
    pub coupons: Coupons,
    pub catalog: commerce_catalog::Catalog,
    pub orders: commerce_orders::Orders,
    pub queue: commerce_queue::WaitingRoom,
    /// The consumers of this process (dead letters are re-driven through it).
    pub events: commerce_events::Dispatcher,
    pub relay: commerce_events::relay::Relay,
    /// Sold-out answers recorded under their Idempotency-Keys in batches.
    pub refusals: commerce_storage::batch::Batcher<commerce_storage::idempotency::RefusalBatch>,
    /// First-sight checks that a token's user exists, in batches.
    pub users: commerce_storage::batch::Batcher<commerce_accounts::lookup::UserLookups>,
    /// The HTTP workers' own pools (`*.worker_io`), counted with `db` in the
    /// pool gauges and the readiness check.
    pub worker_pools: std::sync::Mutex<Vec<commerce_storage::DbPool>>,
    /// Cancelled when the server stops, ending background tasks.
    pub shutdown: CancellationToken,
}

/// What one HTTP worker issues coupons, takes orders and payments through:
/// its own Redis connection, pool and batch writers on its own thread
/// (`coupons.worker_io`, `orders.worker_io`), sharing the process's state
/// (gates, fallback limits, caches). Where a setting is off, the process's
/// shared clients.
pub struct WorkerIo {
    pub coupons: Coupons,
    pub orders: commerce_orders::Orders,
    pub limits: crate::ratelimit::RateLimiter,
    /// Sold-out answers recorded under their Idempotency-Keys in batches.
    pub refusals: commerce_storage::batch::Batcher<commerce_storage::idempotency::RefusalBatch>,
    /// First-sight checks that a token's user exists, in batches.
    pub users: commerce_storage::batch::Batcher<commerce_accounts::lookup::UserLookups>,
}

impl AppState {
    /// Connections of every pool of this instance (the shared one and the
    /// workers'): open, idle, and requests waiting for one.
    pub fn pool_status(&self) -> (usize, usize, usize) {
        let workers = self
            .worker_pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        std::iter::once(&self.db)
            .chain(workers.iter())
            .map(commerce_storage::pool_status)
            .fold((0, 0, 0), |(s, a, w), (s2, a2, w2)| {
                (s + s2, a + a2, w + w2)
            })
    }

    /// Counts `pool` in [`AppState::pool_status`].
    pub fn register_pool(&self, pool: &commerce_storage::DbPool) {
        self.worker_pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(pool.clone());
    }
}
