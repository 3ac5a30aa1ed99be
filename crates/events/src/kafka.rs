//! Kafka transport: an idempotent producer behind the `kafka` breaker, topic
//! creation at start-up, and one consumer group per consumer with offsets
//! stored only after the event is settled (at least once).

use crate::{Consumer, Dispatcher, Event};
use commerce_resilience::{Breaker, CallError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    /// Topics are `<topic_prefix><event_type>`.
    pub topic_prefix: String,
    /// Consumer groups are `<group_prefix><consumer name>`.
    pub group_prefix: String,
    /// Bound on one delivery (`message.timeout.ms`).
    pub delivery_timeout: Duration,
    pub partitions: i32,
}

impl KafkaConfig {
    pub fn topic(&self, event_type: &str) -> String {
        format!("{}{event_type}", self.topic_prefix)
    }
}

/// Publishes events; cheap to clone (clones share the producer).
#[derive(Clone)]
pub struct Publisher {
    /// Replaced by [`Publisher::renew`] after an outage.
    producer: Arc<std::sync::RwLock<FutureProducer>>,
    config: Arc<KafkaConfig>,
    breaker: Breaker,
}

fn producer(config: &KafkaConfig) -> Result<FutureProducer, KafkaError> {
    let timeout_ms = config.delivery_timeout.as_millis().to_string();
    ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", &timeout_ms)
        .set("request.timeout.ms", &timeout_ms)
        .set("socket.connection.setup.timeout.ms", "3000")
        .set("reconnect.backoff.max.ms", "1000")
        .set("linger.ms", "5")
        .create()
}

impl Publisher {
    pub fn new(config: &KafkaConfig, breaker: Breaker) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: Arc::new(std::sync::RwLock::new(producer(config)?)),
            config: Arc::new(config.clone()),
            breaker,
        })
    }

    fn current(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Starts a fresh producer (the relay does it before probing a broker
    /// that was down). The old one may hold an idempotence session (producer
    /// id, sequence numbers) the broker lost in a crash: a broker that
    /// restarted without it answers errors for good (the test broker, tansu
    /// 0.6, fails its storage), while a new producer asks for a new session.
    /// Events the old one still held are failed, and the relay publishes
    /// them again; consumers drop duplicates by event id.
    pub fn renew(&self) {
        let fresh = match producer(&self.config) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "kafka producer could not be renewed");
                return;
            }
        };
        let old = std::mem::replace(
            &mut *self
                .producer
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            fresh,
        );
        // Destroying a librdkafka client waits for its threads, which may
        // wait on a dead broker: never on the runtime.
        let spawned = std::thread::Builder::new()
            .name("kafka-producer-close".into())
            .spawn(move || drop(old));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not close the old kafka producer in the background");
        }
        tracing::info!("kafka producer renewed");
    }

    /// Sends one event and waits for the broker's acknowledgement.
    pub async fn publish(&self, event: &Event) -> Result<(), String> {
        let topic = self.config.topic(&event.event_type);
        let payload = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        let key = event.key.clone();
        let producer = self.current();
        let send = async {
            let record = FutureRecord::to(&topic).key(&key).payload(&payload);
            producer
                .send(record, self.config.delivery_timeout)
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        };
        self.through_breaker(send).await
    }

    /// Runs one broker call through the `kafka` breaker, bounded a little
    /// over the delivery timeout (librdkafka answers first).
    async fn through_breaker(
        &self,
        call: impl std::future::Future<Output = Result<(), KafkaError>>,
    ) -> Result<(), String> {
        let bound = self.config.delivery_timeout + Duration::from_secs(1);
        match self
            .breaker
            .call_classified(Some(bound), call, |_: &KafkaError| true)
            .await
        {
            Ok(()) => Ok(()),
            Err(CallError::Rejected { .. }) => Err("kafka breaker open".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Asks the broker for its metadata through the breaker: the probe of a
    /// half-open breaker when there is nothing to publish, so an idle
    /// instance's breaker closes once the broker is back instead of staying
    /// half-open (and unhealthy) until the next event.
    pub async fn ping(&self) -> Result<(), String> {
        use rdkafka::producer::Producer as _;
        let producer = self.current();
        let wait = self.config.delivery_timeout;
        // librdkafka's metadata call blocks its thread.
        let ask = async move {
            tokio::task::spawn_blocking(move || {
                producer.client().fetch_metadata(None, wait).map(|_| ())
            })
            .await
            .unwrap_or(Err(KafkaError::Canceled))
        };
        self.through_breaker(ask).await
    }

    /// Waits for queued messages (on shutdown; dropping purges them).
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer as _;
        if let Err(e) = self.current().flush(timeout) {
            tracing::warn!(error = %e, "kafka producer flush incomplete");
        }
    }
}

/// Creates the topics if missing (the test broker does not auto-create).
pub async fn ensure_topics(config: &KafkaConfig, event_types: &[&str]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("socket.connection.setup.timeout.ms", "3000")
        .create()?;
    let names: Vec<String> = event_types.iter().map(|t| config.topic(t)).collect();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, config.partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
    for result in admin.create_topics(&topics, &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                tracing::warn!(topic = %name, ?code, "topic creation failed");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}

/// Notes transport failures, so the consume loop can rebuild its client: a
/// broker that restarted can leave a consumer joined to a group that no
/// longer knows it, waiting forever.
#[derive(Clone, Default)]
struct Health {
    broken: Arc<std::sync::atomic::AtomicBool>,
}

impl rdkafka::ClientContext for Health {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "kafka client error");
        self.broken.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl rdkafka::consumer::ConsumerContext for Health {}

fn consumer_client(
    config: &KafkaConfig,
    group: &str,
    health: Health,
) -> Result<StreamConsumer<Health>, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "500")
        // Offsets are stored by hand once an event is settled.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
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
        let health = Health::default();
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
                tracing::warn!(group, error = %e, "kafka subscribe failed");
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
                tracing::debug!(group, error = %e, "kafka receive failed");
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
        let messages = more_of_batch(client, health, group, message).await;
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
        store_offsets(client, group, &messages);
    }
    let _ = client.commit_consumer_state(CommitMode::Async);
    false
}

/// `first` and whatever else arrives within [`BATCH_WINDOW`], at most
/// [`MAX_BATCH`] messages; stops early on a receive error.
async fn more_of_batch<'c>(
    client: &'c StreamConsumer<Health>,
    health: &Health,
    group: &str,
    first: BorrowedMessage<'c>,
) -> Vec<BorrowedMessage<'c>> {
    let mut messages = vec![first];
    let until = tokio::time::Instant::now() + BATCH_WINDOW;
    while messages.len() < MAX_BATCH {
        // `recv` is cancellation safe: a timed-out wait loses nothing.
        match tokio::time::timeout_at(until, client.recv()).await {
            Ok(Ok(m)) => messages.push(m),
            Ok(Err(e)) => {
                tracing::debug!(group, error = %e, "kafka receive failed");
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
fn store_offsets(client: &StreamConsumer<Health>, group: &str, messages: &[BorrowedMessage<'_>]) {
    let mut stored: std::collections::HashSet<(&str, i32)> = Default::default();
    for m in messages.iter().rev() {
        if stored.insert((m.topic(), m.partition())) {
            if let Err(e) = client.store_offset_from_message(m) {
                tracing::warn!(group, error = %e, "offset store failed");
            }
        }
    }
}
