//! The waiting room: a token queue in front of the flash-sale routes.
//!
//! Users enter a room (the store, or one coupon or sale) and get a token with
//! a position; they poll it until it turns active, then use the protected
//! routes while active. What the reference reports (seeds 001-002) got wrong
//! and this crate does instead:
//!
//! - **Polling is paced by position.** `Retry-After` is a fraction of the
//!   estimated wait, clamped (1 s at the front, 60 s at the back), so the
//!   poll rate stays bounded however large the crowd; a poll is one Lua
//!   script, one Redis round trip.
//! - **Order is exact across instances.** Arrival numbers come from one
//!   Redis `INCR` per room, and admission pops the front of a sorted set.
//! - **One admitter at a time, N per interval.** Each tick an instance claims
//!   the interval (numbered from Redis's clock) with a lease; only the
//!   claimer admits, so two or ten instances admit exactly N per interval.
//! - **Admission follows health.** The rate halves on a tick where a breaker
//!   is open, requests wait for a database connection or the p95 is over its
//!   bound (on any instance), down to N/10, and recovers by N/4 per healthy
//!   tick.
//! - **Redis failing does not stop the shop.** Every call goes through the
//!   `redis` breaker; on any failure the room fails open to a per-instance
//!   token bucket and says so (`degraded: true`).

mod config;
mod error;
mod health;
mod limiter;
mod policy;
mod room;
mod scripts;
mod target;

pub use config::{CouponRoom, QueueConfig};
pub use error::QueueError;
pub use health::{Health, LatencyWindow};
pub use limiter::TokenBucket;
pub use policy::{AdmitRate, RetryPolicy};
pub use room::{Protected, Status, TickOutcome, TickReport, Ticket, WaitingRoom};
pub use target::{token_target, BadTarget, Target};

/// Help text of this crate's metrics, for `/metrics` (call once, after
/// the recorder is installed).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "queue_admitted_total",
        "Users moved from waiting to active by this instance's admission ticks."
    );
    describe_counter!(
        "queue_not_admitted_total",
        "Protected calls refused for want of an active waiting-room token."
    );
    describe_gauge!(
        "queue_waiting",
        "Users waiting in the rooms at the last admission tick this instance ran."
    );
    describe_gauge!(
        "queue_active",
        "Active users in the rooms at the last admission tick this instance ran."
    );
    describe_gauge!(
        "queue_admit_rate",
        "Users admitted per room per tick now (lowered while the service is unhealthy)."
    );
    describe_counter!(
        "queue_degraded_total",
        "Waiting-room operations answered by the local limiter because Redis failed, by operation."
    );
    // At 0 from the start: the first degraded answer is then an increase
    // Prometheus sees, not a series appearing mid-outage.
    for op in ["enter", "poll", "require_admitted"] {
        metrics::counter!("queue_degraded_total", "op" => op).increment(0);
    }
}
