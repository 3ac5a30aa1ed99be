//! Side effects leave the request path through events (rule 6).
//!
//! State changes write outbox rows in their own transaction (see
//! `commerce_storage::outbox`). The [`relay::Relay`] publishes unpublished
//! rows to Kafka, or, with no broker configured, hands them to the same
//! consumers in process. Every consumer is its own group with its own inbox:
//! an event id seen before is ignored, and the inbox row commits with the
//! consumer's effect. A consumer that keeps failing parks the event in
//! `dead_letters`, from where an admin re-drives it.

pub mod consumers;
mod dead_letters;
mod dispatch;
pub mod kafka;
pub mod kafka_errors;
mod model;
pub mod relay;

pub use dead_letters::{DeadLetter, DeadLetterError};
pub use model::{Consumer, Delivery, Event, HandleError, RetryPolicy};

use commerce_storage::DbPool;
use std::sync::Arc;

/// The consumers of this process and how to deliver to them.
#[derive(Clone)]
pub struct Dispatcher {
    db: DbPool,
    consumers: Arc<Vec<Arc<dyn Consumer>>>,
    policy: RetryPolicy,
}

/// Help text of this crate's metrics, for `/metrics` (call once, after
/// the recorder is installed).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        "events_lag_seconds",
        Unit::Seconds,
        "Time from an event's commit to a consumer's effect, per consumer."
    );
    describe_counter!(
        "events_consumed_total",
        "Deliveries to a consumer by outcome (processed, duplicate, deferred, retry, permanent)."
    );
    describe_counter!(
        "events_dead_lettered_total",
        "Events parked in dead_letters after the last attempt, per consumer."
    );
    describe_gauge!(
        "events_dead_letters",
        "Parked events not yet re-driven, per consumer (counted at scrape)."
    );
    describe_counter!(
        "outbox_published_total",
        "Outbox rows published by this instance's relay."
    );
    describe_gauge!(
        "outbox_backlog",
        "Unpublished outbox rows (all instances; counted at scrape)."
    );
    describe_gauge!(
        "outbox_oldest_age_seconds",
        Unit::Seconds,
        "Age of the oldest unpublished outbox row (counted at scrape)."
    );
    describe_counter!(
        "kafka_publish_errors_total",
        "Failed Kafka publishes by kind."
    );
    describe_counter!(
        "kafka_consume_errors_total",
        "Failed Kafka consumes by kind."
    );
    describe_counter!("kafka_client_errors_total", "Kafka client errors by kind.");
}
