//! Resilience for every call that leaves the process: circuit breakers (one
//! per dependency, failsafe at the core), a Redis client that never hangs, and
//! distributed locks that fall back to PostgreSQL when Redis is out.
//!
//! Built once at start-up and cloned into workers:
//!
//! ```no_run
//! # async fn build(pool: commerce_storage::DbPool) -> Result<(), Box<dyn std::error::Error>> {
//! use commerce_resilience::{AlertSink, BreakerRegistry, LockConfig, LockManager, RedisClient, RedisConfig};
//! let breakers = BreakerRegistry::with_standard(AlertSink::from_url(None));
//! let redis = RedisClient::new(&RedisConfig::with_url("redis://127.0.0.1:6379"), breakers.redis())?;
//! let locks = LockManager::new(redis.clone(), pool, LockConfig::default());
//! # Ok(()) }
//! ```

pub mod alert;
pub mod breaker;
pub mod lock;
pub mod redis_client;
pub mod replica;

pub use alert::AlertSink;
pub use breaker::{
    Breaker, BreakerAction, BreakerConfig, BreakerRegistry, BreakerSnapshot, BreakerState,
    BreakersReport, CallError, Classify, Fallback, RecoveryWatch, UnknownAction, UnknownBreaker,
};
pub use lock::{LockBackend, LockConfig, LockError, LockGuard, LockManager};
pub use redis_client::{RedisClient, RedisConfig, RedisResult};
pub use replica::ReadReplica;

/// Help text of this crate's metrics, for `/metrics` (call once, after
/// the recorder is installed).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        "breaker_state",
        "Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open."
    );
    describe_counter!(
        "breaker_calls_total",
        "Calls through a breaker by outcome (success, failure, rejected, ...)."
    );
    describe_counter!(
        "breaker_transitions_total",
        "Breaker state changes by breaker and state entered."
    );
    describe_counter!(
        "db_reads_total",
        "Reads a replica may serve (catalog misses), by where they were served: replica or primary."
    );
}
