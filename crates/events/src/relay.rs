//! The outbox relay: claims unpublished rows with a short lease (so several
//! instances share the work without blocking each other), publishes them,
//! and marks them published only once the broker (or, in process, every
//! consumer) has them. A key's rows are claimed by one relay at a time,
//! oldest first, so they are published in outbox order (see the
//! partitioning notes in [`crate::kafka`]).

use crate::kafka::Publisher;
use crate::{Dispatcher, Event};
use chrono::{DateTime, Utc};
use commerce_resilience::{Breaker, BreakerState};
use commerce_storage::{conn, DbPool, StorageError};
use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, RunQueryDsl};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where relayed events go.
#[derive(Clone)]
pub enum Sink {
    /// No broker configured: the consumers of this process.
    InProcess(Dispatcher),
    Kafka(Publisher),
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub batch: i64,
    /// Longest pause between polls when the outbox is empty. This
    /// process's own writes wake the relay sooner; the poll is for rows
    /// written elsewhere (another instance that stopped before relaying
    /// them, rows whose lease ran out).
    pub idle: Duration,
    /// After a wake-up by written events, how long the writes must pause
    /// before the relay claims: a peak's events are relayed in a few large
    /// passes after the burst, not in many small ones competing with it.
    pub lull: Duration,
    /// Bound on that wait: under a steady stream of writes the relay still
    /// runs this often.
    pub max_delay: Duration,
    /// How long a claim keeps other relays off a row.
    pub lease: Duration,
    /// Events delivered at once in process.
    pub concurrency: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch: 200,
            idle: Duration::from_millis(500),
            // A coupon burst's writes last ~100 ms and pause less than
            // 150 ms: the relay runs `max_delay` after the first, past the
            // burst. Under steady writes it keeps a 200 ms cadence (1 s gave
            // payment-load one large pass a second, a spike in its latency).
            lull: Duration::from_millis(150),
            max_delay: Duration::from_millis(200),
            lease: Duration::from_secs(60),
            concurrency: 16,
        }
    }
}

#[derive(Clone)]
pub struct Relay {
    db: DbPool,
    sink: Sink,
    kafka_breaker: Breaker,
    config: RelayConfig,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = SqlUuid)]
    id: uuid::Uuid,
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = Text)]
    aggregate_key: String,
    #[diesel(sql_type = Jsonb)]
    payload: serde_json::Value,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
}

/// The transaction lock relays take turns on to claim outbox rows (any
/// constant no other code locks: "outbox" in ASCII).
const CLAIM_LOCK: i64 = 0x6f7574626f78;

/// What one relay pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub claimed: usize,
    pub published: usize,
    /// Rows left for later (consumer deferred or broker refused).
    pub failed: usize,
    /// Set when the relay should wait before the next pass.
    pub pause: Option<Duration>,
}

/// Outbox backlog for readiness and metrics.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Backlog {
    pub unpublished: i64,
    pub oldest_age_secs: f64,
}

impl Relay {
    pub fn new(db: DbPool, sink: Sink, kafka_breaker: Breaker, config: RelayConfig) -> Self {
        Self {
            db,
            sink,
            kafka_breaker,
            config,
        }
    }

    pub fn sink(&self) -> &Sink {
        &self.sink
    }

    /// Relays until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut written = commerce_storage::outbox::subscribe();
        loop {
            // `idle`: nothing is wrong, only nothing to do; a pause after a
            // failure is kept whatever gets written meanwhile.
            let (wait, idle) = match self.run_once().await {
                Ok(pass) if pass.claimed as i64 >= self.config.batch && pass.pause.is_none() => {
                    (Duration::ZERO, false)
                }
                Ok(pass) => match pass.pause {
                    Some(p) => (p, false),
                    None => (self.config.idle, true),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay pass failed");
                    (Duration::from_secs(1), false)
                }
            };
            if wait.is_zero() {
                if shutdown.is_cancelled() {
                    break;
                }
                continue;
            }
            let woken = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => false,
                changed = written.changed(), if idle => changed.is_ok(),
            };
            if woken {
                self.await_lull(&mut written, &shutdown).await;
            }
        }
    }

    /// Waits until no event was written for `lull`, at most `max_delay`.
    async fn await_lull(
        &self,
        written: &mut tokio::sync::watch::Receiver<u64>,
        shutdown: &CancellationToken,
    ) {
        let deadline = tokio::time::Instant::now() + self.config.max_delay;
        loop {
            let quiet = (tokio::time::Instant::now() + self.config.lull).min(deadline);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(quiet) => return,
                changed = written.changed() => {
                    if changed.is_err() || tokio::time::Instant::now() >= deadline {
                        return;
                    }
                }
            }
        }
    }

    /// Claims, publishes and settles one batch.
    pub async fn run_once(&self) -> Result<Pass, StorageError> {
        if let Sink::Kafka(publisher) = &self.sink {
            match self.kafka_breaker.state_for_call() {
                BreakerState::Open => {
                    // Broker down: rows wait in PostgreSQL; probe again when
                    // allowed. At most 250 ms: the broker watch may close
                    // the breaker well before its open period ends (the
                    // broker answered), and the backlog should flow then.
                    let until = self.kafka_breaker.snapshot().open_until;
                    let wait = until
                        .and_then(|u| (u - Utc::now()).to_std().ok())
                        .unwrap_or(Duration::from_millis(250))
                        .clamp(Duration::from_millis(50), Duration::from_millis(250));
                    return Ok(Pass {
                        pause: Some(wait),
                        ..Pass::default()
                    });
                }
                BreakerState::HalfOpen => {
                    publisher.renew();
                    // The broker itself is the probe, not the oldest row:
                    // a row that fails for its own sake (a topic that cannot
                    // be made, a message too large) would fail every probe
                    // and hold every other event back for good.
                    if let Err(e) = publisher.ping().await {
                        tracing::debug!(error = %e, "kafka probe failed");
                        return Ok(Pass {
                            pause: Some(Duration::from_millis(50)),
                            ..Pass::default()
                        });
                    }
                }
                BreakerState::Closed => {}
            }
        }
        self.pass(self.config.batch).await
    }

    /// Claims up to `limit` rows, publishes and settles them.
    async fn pass(&self, limit: i64) -> Result<Pass, StorageError> {
        let lease = self.config.lease.as_secs_f64();
        let rows: Vec<Row> = {
            let mut c = conn(&self.db).await?;
            // One key's events in order across instances: a row is claimed
            // only while no other relay holds a claim on its key (the
            // oldest rows come first, so that claim is on an older row).
            // Claims take turns (a transaction lock, a few milliseconds),
            // so each sees the claims committed before it.
            c.transaction(async |tx| {
                commerce_storage::sql::cached("SELECT pg_advisory_xact_lock($1)")
                    .bind::<BigInt, _>(CLAIM_LOCK)
                    .execute(tx)
                    .await?;
                commerce_storage::sql::cached(
                    "UPDATE outbox SET claimed_until = now() + make_interval(secs => $2) \
                     WHERE id IN (SELECT o.id FROM outbox o WHERE o.published_at IS NULL \
                       AND (o.claimed_until IS NULL OR o.claimed_until < now()) \
                       AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.published_at IS NULL \
                         AND p.claimed_until IS NOT NULL AND p.claimed_until >= now() \
                         AND p.event_type = o.event_type AND p.aggregate_key = o.aggregate_key) \
                       ORDER BY o.created_at LIMIT $1 FOR UPDATE OF o SKIP LOCKED) \
                     RETURNING id, event_type, aggregate_key, payload, created_at",
                )
                .bind::<BigInt, _>(limit)
                .bind::<diesel::sql_types::Double, _>(lease)
                .load(tx)
                .await
            })
            .await
            .map_err(StorageError::from)?
        };
        if rows.is_empty() {
            return Ok(Pass::default());
        }
        let mut events: Vec<Event> = rows
            .into_iter()
            .map(|r| Event {
                id: r.id,
                event_type: r.event_type,
                key: r.aggregate_key,
                payload: r.payload,
                created_at: r.created_at,
            })
            .collect();
        events.sort_by_key(|e| (e.created_at, e.id));
        let claimed = events.len();
        let (ok, failed, pause) = match &self.sink {
            Sink::InProcess(dispatcher) => {
                let waits = dispatcher
                    .deliver_many(&events, self.config.concurrency.max(1))
                    .await;
                let pause = waits.iter().filter_map(|d| *d).max();
                let mut ok = Vec::new();
                let mut failed = Vec::new();
                for (e, wait) in events.iter().zip(waits) {
                    match wait {
                        None => ok.push(e.id),
                        Some(_) => failed.push((e.id, "consumer deferred".to_owned())),
                    }
                }
                (ok, failed, pause.map(|p| p.min(Duration::from_secs(5))))
            }
            Sink::Kafka(publisher) => {
                let results = futures::future::join_all(events.into_iter().map(|e| {
                    let publisher = publisher.clone();
                    async move { (e.id, publisher.publish(&e).await) }
                }))
                .await;
                let mut ok = Vec::new();
                let mut failed = Vec::new();
                for (id, r) in results {
                    match r {
                        Ok(()) => ok.push(id),
                        Err(e) => failed.push((id, e)),
                    }
                }
                let pause = (!failed.is_empty()).then_some(Duration::from_millis(200));
                (ok, failed, pause)
            }
        };
        self.settle(&ok, &failed).await?;
        metrics::counter!("outbox_published_total").increment(ok.len() as u64);
        Ok(Pass {
            claimed,
            published: ok.len(),
            failed: failed.len(),
            pause,
        })
    }

    async fn settle(
        &self,
        ok: &[uuid::Uuid],
        failed: &[(uuid::Uuid, String)],
    ) -> Result<(), StorageError> {
        let mut c = conn(&self.db).await?;
        if !ok.is_empty() {
            commerce_storage::sql::cached(
                "UPDATE outbox SET published_at = now(), attempts = attempts + 1, claimed_until = NULL WHERE id = ANY($1)",
            )
            .bind::<Array<SqlUuid>, _>(ok)
            .execute(&mut c)
            .await?;
        }
        if !failed.is_empty() {
            let ids: Vec<uuid::Uuid> = failed.iter().map(|(id, _)| *id).collect();
            let error = failed.first().map(|(_, e)| e.clone());
            commerce_storage::sql::cached(
                "UPDATE outbox SET attempts = attempts + 1, claimed_until = NULL, last_error = $2 WHERE id = ANY($1)",
            )
            .bind::<Array<SqlUuid>, _>(&ids)
            .bind::<Nullable<Text>, _>(error)
            .execute(&mut c)
            .await?;
        }
        Ok(())
    }

    /// Unpublished rows and the age of the oldest.
    pub async fn backlog(&self) -> Result<Backlog, StorageError> {
        #[derive(QueryableByName)]
        struct B {
            #[diesel(sql_type = BigInt)]
            n: i64,
            #[diesel(sql_type = diesel::sql_types::Double)]
            age: f64,
        }
        let mut c = conn(&self.db).await?;
        let b: B = commerce_storage::sql::cached(
            "SELECT COUNT(*) AS n, COALESCE(EXTRACT(EPOCH FROM now() - MIN(created_at)), 0)::float8 AS age \
             FROM outbox WHERE published_at IS NULL",
        )
        .get_result(&mut c)
        .await?;
        metrics::gauge!("outbox_backlog").set(b.n as f64);
        metrics::gauge!("outbox_oldest_age_seconds").set(b.age);
        Ok(Backlog {
            unpublished: b.n,
            oldest_age_secs: b.age,
        })
    }
}
