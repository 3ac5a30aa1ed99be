//! Kafka transport: a producer behind the `kafka` breaker, topic creation at
//! start-up, and one consumer group per consumer with offsets stored only
//! after the event is settled (at least once).
//!
//! Partitioning and order. One topic per event type; every message's key is
//! its outbox row's aggregate key, so librdkafka's default partitioner
//! (a hash of the key) puts all events of one aggregate in one partition:
//!
//! | topic | key | why |
//! |---|---|---|
//! | `order_paid`, `order_cancelled`, `order_expired` | order id | the order's life |
//! | `balance_charged` | user id | the balance; each event carries the new balance |
//! | `coupon_issued` | user id | a user's coupons and notifications; a coupon id would put a flash coupon's whole peak in one partition |
//!
//! Within a key, consumers get events in outbox order (`created_at`, id):
//! the relay claims a key's rows only while no other relay holds an older
//! one of that key, the producer keeps one request in flight per broker
//! unless idempotence keeps order itself, and a consumer applies one key's
//! events one after the other. A publish that fails (broker down, delivery
//! timeout) goes again in a later pass, possibly after newer events of its
//! key went through: order holds while the broker acknowledges.
//! Consumers still never depend on it for correctness (the ranking adds up
//! sales, which commute; the HTTP consumers' peers drop duplicates by id).
//! There are no per-product events: an order spans products.
//!
//! Two instances share each consumer group and split its partitions
//! (round robin over every topic's partitions). A member that dies without
//! leaving is noticed after `session_timeout`; until then its partitions
//! wait, the rest of the group keeps consuming.

use crate::kafka_errors::{kind_of, KafkaErrors, Op};
use crate::{Consumer, Dispatcher, Event};
use commerce_resilience::{Breaker, BreakerState, CallError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};
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
    /// librdkafka's idempotent producer. Off by default: the outbox already
    /// publishes at least once and every consumer drops duplicates by event
    /// id, and a broker that mishandles idempotence sessions (tansu 0.6
    /// does; see the README) fails every later publish.
    pub idempotence: bool,
    /// How often an idle instance asks the broker whether it is there (its
    /// metadata), so the `kafka` breaker and readiness see an unreachable
    /// broker within seconds, also one that was never reachable.
    pub probe_interval: Duration,
    /// A consumer group member the broker has not heard from for this long
    /// (a SIGKILLed instance) loses its partitions to the other members:
    /// the longest its events wait. Kafka refuses less than its
    /// `group.min.session.timeout.ms` (6 s by default).
    pub session_timeout: Duration,
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
    producer: Arc<std::sync::RwLock<FutureProducer<ClientErrors>>>,
    config: Arc<KafkaConfig>,
    breaker: Breaker,
    errors: KafkaErrors,
    /// When the broker last acknowledged something (ms since `born`).
    last_ok_ms: Arc<AtomicU64>,
    born: Instant,
    /// Event types whose topic is known to exist (made by this process or
    /// found existing).
    topics: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// The producer's librdkafka context: client errors (connection lost, all
/// brokers down, a fatal error) are counted and logged by kind.
#[derive(Clone)]
pub struct ClientErrors {
    errors: KafkaErrors,
    op: Op,
}

impl rdkafka::ClientContext for ClientErrors {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors
            .record(self.op, kind_of(&error), &format!("{error}: {reason}"));
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        librdkafka_log(level, fac, message);
    }
}

/// librdkafka's own log lines. Its errors also reach the error callback,
/// which counts them by kind and logs them rate limited; repeated here at
/// error level they would be one line per connection attempt while a
/// broker is away.
fn librdkafka_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
            tracing::warn!(target: "librdkafka", fac, "{message}");
        }
        _ => tracing::debug!(target: "librdkafka", fac, "{message}"),
    }
}

/// The admin client's context: its failures are recorded by the caller.
struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        librdkafka_log(level, fac, message);
    }
}

/// The producer settings, and why.
fn producer(
    config: &KafkaConfig,
    errors: &KafkaErrors,
) -> Result<FutureProducer<ClientErrors>, KafkaError> {
    let timeout_ms = config.delivery_timeout.as_millis().to_string();
    // A produce request gets as long as the whole delivery: one that
    // timed out would be sent again (a duplicate the inbox drops), and a
    // broker that is slow under a steady load is not made slower by
    // retries piling onto it.
    ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set(
            "enable.idempotence",
            if config.idempotence { "true" } else { "false" },
        )
        .set("acks", "all")
        .set("message.timeout.ms", &timeout_ms)
        .set("request.timeout.ms", &timeout_ms)
        // A key's events stay in order in their partition: without
        // idempotence a retried request could land behind a later one, so
        // one request at a time (the next one's batch fills meanwhile);
        // the idempotent producer keeps order with five.
        .set(
            "max.in.flight.requests.per.connection",
            if config.idempotence { "5" } else { "1" },
        )
        .set("socket.connection.setup.timeout.ms", "3000")
        .set("reconnect.backoff.max.ms", "1000")
        .set("linger.ms", "5")
        .create_with_context(ClientErrors {
            errors: errors.clone(),
            op: Op::Client,
        })
}

impl Publisher {
    pub fn new(config: &KafkaConfig, breaker: Breaker) -> Result<Self, KafkaError> {
        let errors = KafkaErrors::new();
        Ok(Self {
            producer: Arc::new(std::sync::RwLock::new(producer(config, &errors)?)),
            config: Arc::new(config.clone()),
            breaker,
            errors,
            last_ok_ms: Arc::new(AtomicU64::new(0)),
            born: Instant::now(),
            topics: Arc::default(),
        })
    }

    /// Makes the topics of `event_types` (existing ones are fine) and
    /// remembers them.
    pub async fn ensure_topics(&self, event_types: &[&str]) -> Result<(), KafkaError> {
        let result = ensure_topics(&self.config, event_types).await;
        match &result {
            Ok(()) => {
                let mut known = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
                known.extend(event_types.iter().map(|t| (*t).to_owned()));
            }
            Err(e) => self.errors.record_error(Op::Client, e),
        }
        result
    }

    fn topic_known(&self, event_type: &str) -> bool {
        self.topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(event_type)
    }

    /// The failures of this process's Kafka clients, by kind.
    pub fn errors(&self) -> &KafkaErrors {
        &self.errors
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    fn note_ok(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ok_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the broker last answered (since start if never).
    fn since_ok(&self) -> Duration {
        let at = Duration::from_millis(self.last_ok_ms.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(at)
    }

    fn current(&self) -> FutureProducer<ClientErrors> {
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
    /// them again; consumers drop duplicates by event id. Without
    /// idempotence there is no session to lose, and nothing is done: a
    /// closed producer drops its requests in flight, which is what some
    /// brokers handle worst.
    pub fn renew(&self) {
        if !self.config.idempotence {
            return;
        }
        let fresh = match producer(&self.config, &self.errors) {
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

    /// Sends one event and waits for the broker's acknowledgement. An
    /// event of a type whose topic this process has not made yet (written
    /// by a newer instance) gets its topic first: a broker that does not
    /// create topics on its own would otherwise keep the event waiting
    /// until it times out, every time, and the breaker would blame the
    /// broker.
    pub async fn publish(&self, event: &Event) -> Result<(), String> {
        if !self.topic_known(&event.event_type) {
            if let Err(e) = self.ensure_topics(&[event.event_type.as_str()]).await {
                return Err(format!("{}: topic not created: {e}", kind_of(&e)));
            }
        }
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
        let bound = self.config.delivery_timeout + Duration::from_secs(1);
        self.through_breaker(Op::Publish, bound, send).await
    }

    /// Runs one broker call through the `kafka` breaker, bounded by
    /// `bound`; a failure is counted and logged by kind, and answered as
    /// `"<kind>: <error>"` (what the outbox row keeps as its last error).
    async fn through_breaker(
        &self,
        op: Op,
        bound: Duration,
        call: impl std::future::Future<Output = Result<(), KafkaError>>,
    ) -> Result<(), String> {
        match self
            .breaker
            .call_classified(Some(bound), call, |_: &KafkaError| true)
            .await
        {
            Ok(()) => {
                self.note_ok();
                Ok(())
            }
            // Not a call to the broker: the breaker's own counters tell.
            Err(CallError::Rejected { .. }) => Err("breaker_open: kafka breaker open".into()),
            Err(CallError::Inner(e)) => {
                let kind = kind_of(&e);
                let message = e.to_string();
                self.errors.record(op, kind, &message);
                Err(format!("{kind}: {message}"))
            }
            Err(e) => {
                let message = e.to_string();
                let kind = if e.is_timeout() { "timeout" } else { "other" };
                self.errors.record(op, kind, &message);
                Err(format!("{kind}: {message}"))
            }
        }
    }

    /// Asks the broker for its metadata through the breaker: the probe of a
    /// half-open breaker when there is nothing to publish, so an idle
    /// instance's breaker closes once the broker is back instead of staying
    /// half-open (and unhealthy) until the next event.
    pub async fn ping(&self) -> Result<(), String> {
        self.ping_within(self.probe_timeout()).await
    }

    /// Bound on one metadata probe: a broker that is there (and, probed
    /// only while idle, not busy) answers it in milliseconds.
    fn probe_timeout(&self) -> Duration {
        self.config
            .delivery_timeout
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(200))
    }

    async fn ping_within(&self, wait: Duration) -> Result<(), String> {
        use rdkafka::producer::Producer as _;
        let producer = self.current();
        // librdkafka's metadata call blocks its thread (at most `wait`).
        let ask = async move {
            tokio::task::spawn_blocking(move || {
                producer.client().fetch_metadata(None, wait).map(|_| ())
            })
            .await
            .unwrap_or(Err(KafkaError::Canceled))
        };
        self.through_breaker(Op::Publish, wait + Duration::from_millis(500), ask)
            .await
    }

    /// Keeps the `kafka` breaker honest while there is nothing to publish:
    /// every `probe_interval`, unless the broker answered more recently
    /// than that, asks it for its metadata through the breaker (after a
    /// failed probe, four times as often). A broker that does not answer
    /// (down, stalled, never there) opens the breaker after
    /// `failure_threshold` probes, a few seconds; a half-open breaker
    /// closes on the first answer. While the breaker is open, the broker is
    /// asked every [`RECOVERY_CHECK_EVERY`] outside the breaker, and its
    /// first answer closes it (see [`Publisher::recovered`]). Ends on
    /// `shutdown`.
    pub async fn watch(&self, shutdown: CancellationToken) {
        let every = self.config.probe_interval.max(Duration::from_millis(100));
        let mut pause = every;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = every;
            let due = match self.breaker.state_for_call() {
                BreakerState::Open => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = self.recovered() => {}
                    }
                    pause = RECOVERY_CHECK_EVERY;
                    false
                }
                BreakerState::HalfOpen => true,
                BreakerState::Closed => self.since_ok() >= every,
            };
            if due {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = self.ping() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "kafka probe failed");
                            pause = every / 4;
                        }
                    }
                }
            }
        }
    }

    /// One recovery check of an open breaker: the broker's metadata, asked
    /// outside the breaker (an open breaker would refuse the call, and its
    /// open period doubles with each failed half-open probe: 2, 4, 8, 16 s,
    /// so a broker back after a crash of several seconds was used again
    /// only up to 16 s later). The first answer closes the breaker, and the
    /// backoff starts afresh. The producer's own connection is asked, the
    /// one publishes use: it reconnects within `reconnect.backoff.max.ms`
    /// of the broker's return, so an answer means publishing works again.
    async fn recovered(&self) {
        use rdkafka::producer::Producer as _;
        let producer = self.current();
        let wait = self.probe_timeout();
        let asked = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(None, wait).map(|_| ())
        });
        let answered = matches!(
            tokio::time::timeout(wait + Duration::from_millis(500), asked).await,
            Ok(Ok(Ok(())))
        );
        if answered && self.breaker.close_after_health_check() {
            self.note_ok();
            tracing::info!(breaker = self.breaker.name(), "kafka broker answers again");
        }
    }

    /// Waits at most `timeout` for queued messages to be delivered (on
    /// shutdown; dropping the producer purges them, and the outbox still
    /// holds every row not marked published). Runs off the runtime: a
    /// flush blocks its thread. True when everything was delivered.
    pub async fn flush(&self, timeout: Duration) -> bool {
        use rdkafka::producer::Producer as _;
        let producer = self.current();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout));
        match tokio::time::timeout(timeout + Duration::from_millis(500), flushed).await {
            Ok(Ok(Ok(()))) => true,
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "kafka producer flush incomplete; the outbox keeps what was not delivered");
                false
            }
            _ => {
                tracing::warn!("kafka producer flush did not return in time; the outbox keeps what was not delivered");
                false
            }
        }
    }
}

/// How often an open `kafka` breaker's broker is asked whether it answers
/// again (each ask waits at most the probe timeout).
const RECOVERY_CHECK_EVERY: Duration = Duration::from_millis(250);

/// Creates the topics if missing (the test broker does not auto-create).
pub async fn ensure_topics(config: &KafkaConfig, event_types: &[&str]) -> Result<(), KafkaError> {
    let admin: AdminClient<Quiet> = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("socket.connection.setup.timeout.ms", "3000")
        .create_with_context(Quiet)?;
    let result = create_topics(&admin, config, event_types).await;
    // Destroying a client can wait on a broker that does not answer.
    let spawned = std::thread::Builder::new()
        .name("kafka-admin-close".into())
        .spawn(move || drop(admin));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not close the kafka admin client in the background");
    }
    result
}

async fn create_topics(
    admin: &AdminClient<Quiet>,
    config: &KafkaConfig,
    event_types: &[&str],
) -> Result<(), KafkaError> {
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
                tracing::debug!(topic = %name, ?code, "topic creation failed");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}

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
