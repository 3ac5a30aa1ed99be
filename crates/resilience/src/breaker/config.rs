//! Breaker names and how a breaker trips and recovers.

use std::time::Duration;

/// Breaker names used across the service, one per dependency.
pub const REDIS: &str = "redis";
pub const KAFKA: &str = "kafka";
pub const DATA_PLATFORM: &str = "data_platform";
pub const NOTIFICATION: &str = "notification";
/// The read replica of catalog reads; registered only when one is
/// configured (see [`crate::replica`]).
pub const DB_REPLICA: &str = "db_replica";

/// The breakers every instance has.
pub const STANDARD: [&str; 4] = [REDIS, KAFKA, DATA_PLATFORM, NOTIFICATION];

/// How a breaker trips and recovers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// First open period; doubles on each failed probe up to `max_open_for`.
    pub open_for: Duration,
    pub max_open_for: Duration,
    /// Calls let through at once while half-open; the rest are rejected.
    pub half_open_max_probes: usize,
    /// Default per-call timeout, counted as a failure when exceeded.
    pub call_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(60),
            half_open_max_probes: 1,
            call_timeout: Duration::from_millis(500),
        }
    }
}

impl BreakerConfig {
    /// Defaults suited to each standard dependency: Redis answers in
    /// microseconds, so 500 ms is already an outage; HTTP and Kafka get longer.
    pub fn for_dependency(name: &str) -> Self {
        let call_timeout = match name {
            REDIS => Duration::from_millis(500),
            KAFKA => Duration::from_secs(5),
            // A catalog read takes milliseconds; a replica that needs a
            // second is better skipped for the primary.
            DB_REPLICA => Duration::from_secs(1),
            _ => Duration::from_secs(2),
        };
        Self {
            call_timeout,
            ..Self::default()
        }
    }
}
