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

mod group;

pub use group::{consume, BATCH_WINDOW, MAX_BATCH};

use crate::kafka_errors::{kind_of, KafkaErrors, Op};
use crate::Event;
use commerce_resilience::{Breaker, BreakerState, CallError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
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
