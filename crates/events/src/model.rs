//! The crate's vocabulary: a committed event, what a consumer is, how one
//! delivery ended, and the retry policy.

use chrono::{DateTime, Utc};
use commerce_storage::StorageError;
use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One committed event, as relayed and consumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: uuid::Uuid,
    pub event_type: String,
    pub key: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Why a consumer could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth retrying now (a 5xx, a timeout): counts toward parking.
    #[error("retryable: {0}")]
    Retryable(String),
    /// The dependency is known to be down (its breaker is open): try the
    /// event again later without counting an attempt.
    #[error("unavailable, retry after {0:?}")]
    Unavailable(Duration),
    /// Will never succeed as it is (a 4xx, a malformed event): park it.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl From<StorageError> for HandleError {
    fn from(e: StorageError) -> Self {
        if e.is_unavailable() {
            Self::Unavailable(Duration::from_secs(1))
        } else {
            Self::Retryable(e.to_string())
        }
    }
}

impl From<diesel::result::Error> for HandleError {
    fn from(e: diesel::result::Error) -> Self {
        StorageError::from(e).into()
    }
}

/// A consumer group. A transactional consumer's effect runs inside the
/// transaction that records the event in its inbox (`tx` is `Some`), so a
/// database effect happens exactly once. Any other consumer runs outside a
/// transaction (`tx` is `None`, no connection held during a slow external
/// call): the inbox is checked before and written after, so its effect
/// happens at least once, and is sent with the event id for the peer to
/// drop the rare duplicate.
pub trait Consumer: Send + Sync + 'static {
    /// Group name; also names the inbox table `inbox_<name>`.
    fn name(&self) -> &'static str;
    /// Event types this consumer wants.
    fn event_types(&self) -> &'static [&'static str];
    /// Whether `handle` wants the inbox transaction.
    fn transactional(&self) -> bool {
        false
    }
    fn handle<'a>(
        &'a self,
        tx: Option<&'a mut AsyncPgConnection>,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), HandleError>>;
    /// Applies several events inside one inbox transaction (transactional
    /// consumers, one commit for a relay pass). The default applies them
    /// one after the other; a consumer whose effects add up can merge them
    /// into one statement.
    fn handle_many<'a>(
        &'a self,
        tx: &'a mut AsyncPgConnection,
        events: &'a [&'a Event],
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            for e in events {
                self.handle(Some(&mut *tx), e).await?;
            }
            Ok(())
        })
    }
    /// Runs after the inbox row committed (e.g. refresh a cache).
    fn after_commit<'a>(&'a self, _event: &'a Event) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    /// [`Consumer::after_commit`] for events that committed together; the
    /// default runs each event's hook, `concurrency` at a time.
    fn after_commit_many<'a>(
        &'a self,
        events: &'a [&'a Event],
        concurrency: usize,
    ) -> BoxFuture<'a, ()> {
        use futures::StreamExt;
        Box::pin(
            futures::stream::iter(events)
                .for_each_concurrent(concurrency.max(1), |e| self.after_commit(e)),
        )
    }
}

/// What delivering one event to one consumer came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Processed,
    /// Seen before: ignored.
    Duplicate,
    /// Given up after the retries: now in `dead_letters`.
    Parked,
    /// Not now (dependency down); deliver again after the delay.
    Deferred(Duration),
}

impl Delivery {
    /// Done with, from the sender's point of view (offset may advance).
    pub fn is_settled(self) -> bool {
        !matches!(self, Self::Deferred(_))
    }
}

/// Retry policy of a delivery.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts before the event is parked.
    pub max_attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}
