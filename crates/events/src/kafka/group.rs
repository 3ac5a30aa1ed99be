//! Consumer groups: one per consumer, a client rebuilt after a transport
//! failure, batches applied in key order, offsets stored only once their
//! events are settled (at least once).

use super::{librdkafka_log, KafkaConfig};
use crate::kafka_errors::{kind_of, KafkaErrors, Op};
use crate::{Consumer, Dispatcher, Event};
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Notes transport failures, so the consume loop can rebuild its client: a
/// broker that restarted can leave a consumer joined to a group that no
/// longer knows it, waiting forever.
#[derive(Clone)]
struct Health {
    broken: Arc<std::sync::atomic::AtomicBool>,
    errors: KafkaErrors,
    group: Arc<str>,
}

impl Health {
    fn new(errors: KafkaErrors, group: &str) -> Self {
        Self {
            broken: Arc::default(),
            errors,
            group: group.into(),
        }
    }
}

/// `topic[0,2] other[1]`: a partition list, short enough for a log line.
fn partitions(list: &rdkafka::TopicPartitionList) -> String {
    let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
    for e in list.elements() {
        by_topic
            .entry(e.topic().to_owned())
            .or_default()
            .push(e.partition());
    }
    by_topic
        .into_iter()
        .map(|(topic, mut ps)| {
            ps.sort_unstable();
            let ps: Vec<String> = ps.iter().map(i32::to_string).collect();
            format!("{topic}[{}]", ps.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl rdkafka::ClientContext for Health {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors
            .record(Op::Consume, kind_of(&error), &format!("{error}: {reason}"));
        self.broken.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        librdkafka_log(level, fac, message);
    }
}

impl rdkafka::consumer::ConsumerContext for Health {
    /// Which partitions this instance holds, as the group deals them (two
    /// instances split them; a dead one's move after the session timeout).
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        use rdkafka::consumer::Rebalance;
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(group = %self.group, partitions = %partitions(list), "kafka partitions assigned");
            }
            Rebalance::Revoke(list) => {
                tracing::info!(group = %self.group, partitions = %partitions(list), "kafka partitions revoked");
            }
            Rebalance::Error(e) => self.errors.record_error(Op::Consume, e),
        }
    }

    /// An offset commit that failed (the events are read again after a
    /// rebalance; the inbox drops them): counted and logged by kind.
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &rdkafka::TopicPartitionList,
    ) {
        match result {
            // Nothing to commit: not a failure.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) | Ok(()) => {}
            Err(e) => self.errors.record_error(Op::Consume, &e),
        }
    }
}

fn consumer_client(
    config: &KafkaConfig,
    group: &str,
    health: Health,
) -> Result<StreamConsumer<Health>, KafkaError> {
    let session_ms = config.session_timeout.as_millis().max(1);
    ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "500")
        // Offsets are stored by hand once an event is settled.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // A dead member's partitions move after this; heartbeats three
        // times per session, so one lost heartbeat is no rebalance.
        .set("session.timeout.ms", session_ms.to_string())
        .set("heartbeat.interval.ms", (session_ms / 3).max(1).to_string())
        // Partitions of every topic of the group dealt in turn: two members
        // get an even share also when each topic has fewer partitions than
        // twice the members (`range` gives one member the first partitions
        // of every topic).
        .set("partition.assignment.strategy", "roundrobin")
        .set("socket.connection.setup.timeout.ms", "3000")
        .set("reconnect.backoff.max.ms", "1000")
        .create_with_context(health)
}

/// Runs `consumer` as its own group until `shutdown`. After transport
/// errors and a quiet spell the client is rebuilt (it rejoins the group and
/// resumes from the committed offsets; the inbox drops what is re-read).
pub async fn consume(
    config: KafkaConfig,
    dispatcher: Dispatcher,
    consumer: Arc<dyn Consumer>,
    errors: KafkaErrors,
    shutdown: CancellationToken,
) {
    let group = format!("{}{}", config.group_prefix, consumer.name());
    let topics: Vec<String> = consumer
        .event_types()
        .iter()
        .map(|t| config.topic(t))
        .collect();
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    while !shutdown.is_cancelled() {
        let health = Health::new(errors.clone(), &group);
        let client = match consumer_client(&config, &group, health.clone()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(group, error = %e, "kafka consumer could not be created");
                return;
            }
        };
        let rebuild = match client.subscribe(&topic_refs) {
            Ok(()) => {
                run_session(
                    &client,
                    &health,
                    &dispatcher,
                    consumer.as_ref(),
                    &group,
                    &shutdown,
                )
                .await
            }
            Err(e) => {
                errors.record_error(Op::Consume, &e);
                true
            }
        };
        close_in_background(client);
        if !rebuild {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        tracing::info!(group, "rebuilding kafka consumer after transport errors");
    }
}

/// Closing a consumer (and a synchronous commit) blocks until the group
/// coordinator answers (forever,
/// if it went away): do it on a thread of its own, never on the runtime.
fn close_in_background(client: StreamConsumer<Health>) {
    let spawned = std::thread::Builder::new()
        .name("kafka-consumer-close".into())
        .spawn(move || drop(client));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not close kafka consumer in the background");
    }
}

/// Most messages one consumer takes into one delivery (one inbox read and
/// write, or one inbox transaction, for the lot).
pub const MAX_BATCH: usize = 500;
/// How long a batch waits for more messages after its first: a backlog
/// fills a batch at once from the client's prefetch, a lone event waits at
/// most this.
pub const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// Events of a batch handled at once by a non-transactional consumer (its
/// external calls).
const CONCURRENCY: usize = 16;

/// Consumes until shutdown (returns false) or until the client looks stuck
/// after transport errors (returns true: rebuild it). Messages are taken in
/// batches (up to [`MAX_BATCH`], or what arrives within [`BATCH_WINDOW`] of
/// the first); a batch's offsets are stored only once every event of it is
/// settled (applied, a duplicate, or parked), so at least once holds, and
/// the inbox drops what a restart reads again.
async fn run_session(
    client: &StreamConsumer<Health>,
    health: &Health,
    dispatcher: &Dispatcher,
    consumer: &dyn Consumer,
    group: &str,
    shutdown: &CancellationToken,
) -> bool {
    let mut quiet_since_error: Option<std::time::Instant> = None;
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = client.recv() => Some(m),
            _ = tokio::time::sleep(Duration::from_secs(1)) => None,
        };
        let Some(message) = message else {
            if health.broken.load(std::sync::atomic::Ordering::SeqCst) {
                let since = *quiet_since_error.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= Duration::from_secs(5) {
                    let _ = client.commit_consumer_state(CommitMode::Async);
                    return true;
                }
            }
            continue;
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                health.errors.record_error(Op::Consume, &e);
                health
                    .broken
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                continue;
            }
        };
        health
            .broken
            .store(false, std::sync::atomic::Ordering::SeqCst);
        quiet_since_error = None;
        let messages = more_of_batch(client, health, message).await;
        let events: Vec<Event> = messages
            .iter()
            .filter_map(|m| {
                let event = m.payload().and_then(|p| serde_json::from_slice(p).ok());
                if event.is_none() {
                    tracing::warn!(group, offset = m.offset(), "undecodable event skipped");
                }
                event
            })
            .collect();
        if !settle(dispatcher, consumer, events, shutdown).await {
            // Not settled: leave the offsets, another member redelivers.
            let _ = client.commit_consumer_state(CommitMode::Async);
            return false;
        }
        store_offsets(client, health, &messages);
    }
    let _ = client.commit_consumer_state(CommitMode::Async);
    false
}

/// `first` and whatever else arrives within [`BATCH_WINDOW`], at most
/// [`MAX_BATCH`] messages; stops early on a receive error.
async fn more_of_batch<'c>(
    client: &'c StreamConsumer<Health>,
    health: &Health,
    first: BorrowedMessage<'c>,
) -> Vec<BorrowedMessage<'c>> {
    let mut messages = vec![first];
    let until = tokio::time::Instant::now() + BATCH_WINDOW;
    while messages.len() < MAX_BATCH {
        // `recv` is cancellation safe: a timed-out wait loses nothing.
        match tokio::time::timeout_at(until, client.recv()).await {
            Ok(Ok(m)) => messages.push(m),
            Ok(Err(e)) => {
                health.errors.record_error(Op::Consume, &e);
                health
                    .broken
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                break;
            }
            Err(_) => break,
        }
    }
    messages
}

/// Delivers `events` to `consumer` until each is settled, waiting out
/// deferrals (a dependency down) and delivering again only what was
/// deferred. False if shutdown came first.
async fn settle(
    dispatcher: &Dispatcher,
    consumer: &dyn Consumer,
    mut events: Vec<Event>,
    shutdown: &CancellationToken,
) -> bool {
    while !events.is_empty() {
        let outcome = dispatcher
            .deliver_batch(consumer, &events, CONCURRENCY)
            .await;
        let wait = outcome
            .iter()
            .filter_map(|d| match d {
                Some(crate::Delivery::Deferred(w)) => Some(*w),
                _ => None,
            })
            .max();
        let Some(wait) = wait else {
            return true;
        };
        events = events
            .into_iter()
            .zip(outcome)
            .filter(|(_, d)| matches!(d, Some(crate::Delivery::Deferred(_))))
            .map(|(e, _)| e)
            .collect();
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    true
}

/// Stores, per partition, the offset of the batch's last message (the
/// consumer commits it with its next auto-commit).
fn store_offsets(
    client: &StreamConsumer<Health>,
    health: &Health,
    messages: &[BorrowedMessage<'_>],
) {
    let mut stored: std::collections::HashSet<(&str, i32)> = Default::default();
    for m in messages.iter().rev() {
        if stored.insert((m.topic(), m.partition())) {
            if let Err(e) = client.store_offset_from_message(m) {
                health.errors.record_error(Op::Consume, &e);
            }
        }
    }
}
