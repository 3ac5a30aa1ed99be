//! Why a Kafka call failed, told to operators: every publish, consume and
//! client failure is sorted into a stable `kind`, counted
//! (`kafka_publish_errors_total{kind}`, `kafka_consume_errors_total{kind}`,
//! `kafka_client_errors_total{kind}`), kept for `GET /admin/breakers`, and
//! logged at most once per [`LOG_EVERY`] per operation and kind, with how
//! many were left unsaid since (a broker that is down fails every call).

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Least time between two log lines of one operation and kind.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// What was being done when the error came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Sending an outbox event (its delivery report, or the breaker's
    /// bound), and the `kafka` breaker's metadata probes on the way there.
    Publish,
    /// A consumer's receive, commit or offset store.
    Consume,
    /// The producer's client itself: connection losses, all brokers down, a
    /// fatal error (librdkafka's error callback), and topic creation.
    Client,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Consume => "consume",
            Self::Client => "client",
        }
    }
}

/// The stable kind of a Kafka error (a label value; snake_case).
pub fn kind_of(error: &KafkaError) -> &'static str {
    match error {
        KafkaError::Canceled => "canceled",
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => "config",
        KafkaError::AdminOp(code) => code_kind(*code),
        other => other.rdkafka_error_code().map_or("other", code_kind),
    }
}

/// The kind of a librdkafka or broker error code.
pub fn code_kind(code: RDKafkaErrorCode) -> &'static str {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut => "timeout",
        C::AllBrokersDown
        | C::BrokerTransportFailure
        | C::BrokerNotAvailable
        | C::NetworkException
        | C::Resolve
        | C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::CoordinatorNotAvailable
        | C::NotCoordinator => "unreachable",
        C::QueueFull => "queue_full",
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition => "unknown_topic",
        C::OutOfOrderSequenceNumber
        | C::DuplicateSequenceNumber
        | C::UnknownProducerId
        | C::InvalidProducerEpoch
        | C::ProducerFenced
        | C::InvalidProducerIdMapping
        | C::Fatal
        | C::Inconsistent => "fatal",
        C::MessageSizeTooLarge | C::InvalidMessageSize | C::InvalidMessage => "rejected",
        C::BrokerDestroy | C::DestroyBroker | C::PurgeQueue | C::PurgeInflight => "purged",
        C::NotEnoughReplicas | C::NotEnoughReplicasAfterAppend => "not_enough_replicas",
        C::UnknownMemberId
        | C::IllegalGeneration
        | C::RebalanceInProgress
        | C::CoordinatorLoadInProgress => "group",
        _ => "broker",
    }
}

/// The last failure seen, as operators read it.
#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub op: Op,
    pub kind: &'static str,
    pub message: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Counts per operation and kind, with the last error.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErrorReport {
    pub publish: BTreeMap<&'static str, u64>,
    pub consume: BTreeMap<&'static str, u64>,
    pub client: BTreeMap<&'static str, u64>,
    pub last: Option<LastError>,
}

#[derive(Default)]
struct State {
    report: ErrorReport,
    /// Per operation and kind: when it was last logged, and how many came
    /// since without a line of their own.
    logged: BTreeMap<(Op, &'static str), (Instant, u64)>,
}

/// Shared by the producer, the consumers and the admin routes of one
/// process; clones share the counts.
#[derive(Clone, Default)]
pub struct KafkaErrors {
    state: Arc<Mutex<State>>,
}

impl KafkaErrors {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one failure of `kind`, logs it unless one of its operation and
    /// kind was logged less than [`LOG_EVERY`] ago.
    pub fn record(&self, op: Op, kind: &'static str, message: &str) {
        let name = match op {
            Op::Publish => "kafka_publish_errors_total",
            Op::Consume => "kafka_consume_errors_total",
            Op::Client => "kafka_client_errors_total",
        };
        metrics::counter!(name, "kind" => kind).increment(1);
        let say = {
            let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let counts = match op {
                Op::Publish => &mut s.report.publish,
                Op::Consume => &mut s.report.consume,
                Op::Client => &mut s.report.client,
            };
            *counts.entry(kind).or_default() += 1;
            s.report.last = Some(LastError {
                op,
                kind,
                message: message.to_owned(),
                at: chrono::Utc::now(),
            });
            let now = Instant::now();
            match s.logged.get_mut(&(op, kind)) {
                Some((last, unsaid)) if now.duration_since(*last) < LOG_EVERY => {
                    *unsaid += 1;
                    None
                }
                Some((last, unsaid)) => {
                    *last = now;
                    Some(std::mem::take(unsaid))
                }
                None => {
                    s.logged.insert((op, kind), (now, 0));
                    Some(0)
                }
            }
        };
        if let Some(unsaid) = say {
            tracing::warn!(
                op = op.as_str(),
                kind,
                error = message,
                similar_since_last_line = unsaid,
                "kafka {} failed",
                op.as_str()
            );
        }
    }

    /// [`KafkaErrors::record`] for a client error.
    pub fn record_error(&self, op: Op, error: &KafkaError) {
        self.record(op, kind_of(error), &error.to_string());
    }

    pub fn report(&self) -> ErrorReport {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .report
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_stable() {
        assert_eq!(
            kind_of(&KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut
            )),
            "timeout"
        );
        assert_eq!(
            kind_of(&KafkaError::MessageProduction(
                RDKafkaErrorCode::AllBrokersDown
            )),
            "unreachable"
        );
        assert_eq!(
            kind_of(&KafkaError::MessageProduction(
                RDKafkaErrorCode::OutOfOrderSequenceNumber
            )),
            "fatal"
        );
        assert_eq!(kind_of(&KafkaError::Canceled), "canceled");
    }

    #[test]
    fn counts_every_failure_and_keeps_the_last() {
        let errors = KafkaErrors::new();
        for _ in 0..3 {
            errors.record(Op::Publish, "timeout", "Message timed out");
        }
        errors.record(Op::Consume, "unreachable", "all brokers down");
        let r = errors.report();
        assert_eq!(r.publish.get("timeout"), Some(&3));
        assert_eq!(r.consume.get("unreachable"), Some(&1));
        assert_eq!(r.last.map(|l| l.kind), Some("unreachable"));
    }
}
