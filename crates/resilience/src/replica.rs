//! Reads a streaming replica may serve, behind a breaker of its own
//! (`db_replica`), with the primary as the fallback.
//!
//! Only reads that tolerate the replica's lag go through [`ReadReplica`]:
//! product pages and the product list on a cache miss, the popular board's
//! ranking when Redis cannot give it. Nothing a money or stock decision
//! depends on (orders, payments, balances, coupons, the stock gate) reads
//! here: those crates are given the primary's pool only.
//!
//! Any error of the replica falls back to the primary, so a replica that is
//! down, lagging into conflicts or wrongly set up costs a little latency,
//! never an answer. Its breaker opens after consecutive failures, and then
//! reads go straight to the primary; while it is open a recovery watch
//! tries a fresh connection every [`RECOVERY_CHECK_EVERY`] and closes it
//! once the replica answers (its open period doubles on every failed probe,
//! which alone could keep reads off a healed replica for many seconds).
//!
//! A replica this crate cannot see lag on is trusted as it is: PostgreSQL's
//! own streaming keeps it milliseconds behind in normal operation.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use commerce_storage::{DbConfig, DbPool, StorageError};
use diesel_async::RunQueryDsl;

use crate::breaker::Breaker;

/// How often an open `db_replica` breaker's recovery watch tries the replica.
pub const RECOVERY_CHECK_EVERY: Duration = Duration::from_millis(250);

/// Where a read was served (the `target` label of `db_reads_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Replica,
    Primary,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replica => "replica",
            Self::Primary => "primary",
        }
    }
}

/// The primary, and the replica when one is configured. Cheap to clone.
#[derive(Clone)]
pub struct ReadReplica {
    primary: DbPool,
    replica: Option<Arc<Replica>>,
}

struct Replica {
    pool: DbPool,
    /// For the recovery watch's one-off connections.
    config: DbConfig,
    breaker: Breaker,
}

impl ReadReplica {
    /// No replica: every read goes to the primary.
    pub fn primary_only(primary: DbPool) -> Self {
        Self {
            primary,
            replica: None,
        }
    }

    /// Reads go to a replica reached with `config` (its own bounded pool,
    /// connected lazily, so this succeeds while the replica is down) through
    /// `breaker`, falling back to `primary`.
    pub fn new(primary: DbPool, config: &DbConfig, breaker: Breaker) -> Result<Self, StorageError> {
        let pool = commerce_storage::build_pool(config)?;
        Ok(Self {
            primary,
            replica: Some(Arc::new(Replica {
                pool,
                config: config.clone(),
                breaker,
            })),
        })
    }

    /// The primary, for writes and for reads that must see the latest commit.
    pub fn primary(&self) -> &DbPool {
        &self.primary
    }

    /// The replica's pool, if one is configured.
    pub fn replica_pool(&self) -> Option<&DbPool> {
        self.replica.as_ref().map(|r| &r.pool)
    }

    /// Runs `read` on the replica through its breaker; on any error there,
    /// or while the breaker is open, on the primary. Only for reads that
    /// tolerate the replica's lag.
    pub async fn read<T, F, Fut>(&self, read: F) -> Result<T, StorageError>
    where
        F: Fn(DbPool) -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        self.read_confirming(read, |_| false).await
    }

    /// [`ReadReplica::read`], asking the primary again when `confirm` says
    /// the replica's answer may only be lag (a row not there yet: a product
    /// created a moment ago must not be "not found").
    pub async fn read_confirming<T, F, Fut, C>(
        &self,
        read: F,
        confirm: C,
    ) -> Result<T, StorageError>
    where
        F: Fn(DbPool) -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
        C: FnOnce(&T) -> bool,
    {
        if let Some(replica) = &self.replica {
            // Every error counts against the replica: the same read on the
            // primary would have answered, so the replica is what failed.
            let answer = replica
                .breaker
                .call_classified(None, async { read(replica.pool.clone()).await }, |_| true)
                .await;
            match answer {
                Ok(v) if !confirm(&v) => {
                    count(Target::Replica);
                    return Ok(v);
                }
                Ok(_) => {}
                Err(e) => {
                    if replica.breaker.is_recovering() {
                        watch_recovery(replica);
                    }
                    tracing::debug!(error = %e, "replica read failed: reading the primary");
                }
            }
        }
        count(Target::Primary);
        read(self.primary.clone()).await
    }
}

fn count(target: Target) {
    metrics::counter!("db_reads_total", "target" => target.as_str()).increment(1);
}

/// Starts the replica breaker's recovery watch unless one runs: every
/// [`RECOVERY_CHECK_EVERY`], `SELECT 1` on a new connection (the pool's may
/// be from before the outage); the first answer closes the breaker. Ends
/// once the breaker is closed (or forced) by any means.
fn watch_recovery(replica: &Arc<Replica>) {
    let Some(watch) = replica.breaker.claim_recovery_watch() else {
        return;
    };
    let replica = replica.clone();
    tokio::spawn(async move {
        let _watch = watch;
        // As fast as a read must answer, or the breaker would close only
        // to open again (a replica that is up but too slow).
        let bound = replica.config.connect_timeout + replica.breaker.config().call_timeout;
        while replica.breaker.is_recovering() {
            tokio::time::sleep(RECOVERY_CHECK_EVERY).await;
            let check = async {
                let mut c = commerce_storage::connect(&replica.config).await?;
                commerce_storage::sql::cached("SELECT 1")
                    .execute(&mut c)
                    .await?;
                Ok::<_, StorageError>(())
            };
            if let Ok(Ok(())) = tokio::time::timeout(bound, check).await {
                if replica.breaker.close_after_health_check() {
                    tracing::info!(breaker = replica.breaker.name(), "replica answers again");
                }
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    // Not `super::*`: diesel's `RunQueryDsl::load` would shadow the atomics'.
    use super::{DbConfig, DbPool, Duration, ReadReplica, StorageError};
    use crate::{AlertSink, BreakerConfig, BreakerState};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn pool(url: &str) -> DbPool {
        let mut cfg = DbConfig::with_url(url);
        cfg.connect_timeout = Duration::from_millis(300);
        cfg.pool_wait = Duration::from_millis(300);
        commerce_storage::build_pool(&cfg).unwrap()
    }

    /// A loopback port nothing listens on.
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn a_dead_replica_falls_back_to_the_primary_and_opens_its_breaker() {
        let dead = format!("postgres://postgres@127.0.0.1:{}/x", closed_port());
        let mut cfg = DbConfig::with_url(&dead);
        cfg.connect_timeout = Duration::from_millis(300);
        // Told apart by size: the replica's pool has 3 connections.
        cfg.pool_size = 3;
        let breaker = crate::Breaker::new(
            "db_replica",
            BreakerConfig {
                failure_threshold: 2,
                open_for: Duration::from_secs(60),
                ..BreakerConfig::default()
            },
            AlertSink::log_only(),
        );
        // The "primary" is never connected to: the read below answers alone.
        let reads = ReadReplica::new(pool(&dead), &cfg, breaker.clone()).unwrap();
        let replica_tries = AtomicUsize::new(0);
        let read = |db: DbPool| {
            let on_replica = db.status().max_size == 3;
            if on_replica {
                replica_tries.fetch_add(1, Ordering::SeqCst);
            }
            async move {
                if on_replica {
                    commerce_storage::conn(&db).await.map(|_| 0)
                } else {
                    Ok(7)
                }
            }
        };
        for _ in 0..2 {
            assert_eq!(reads.read(read).await.unwrap(), 7);
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(replica_tries.load(Ordering::SeqCst), 2);
        // Open: the replica is not tried at all.
        assert_eq!(reads.read(read).await.unwrap(), 7);
        assert_eq!(replica_tries.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn without_a_replica_reads_go_to_the_primary_and_confirm_is_not_asked() {
        let reads = ReadReplica::primary_only(pool("postgres://postgres@127.0.0.1:1/x"));
        assert!(reads.replica_pool().is_none());
        let v = reads
            .read_confirming(
                |_| async { Ok::<_, StorageError>(None::<i32>) },
                |_| panic!("no replica answer to confirm"),
            )
            .await;
        assert_eq!(v.unwrap(), None);
    }

    #[tokio::test]
    async fn an_answer_to_confirm_is_asked_of_the_primary() {
        let dead = format!("postgres://postgres@127.0.0.1:{}/x", closed_port());
        let cfg = DbConfig::with_url(&dead);
        let breaker = crate::Breaker::new("r", BreakerConfig::default(), AlertSink::log_only());
        let reads = ReadReplica::new(pool(&dead), &cfg, breaker.clone()).unwrap();
        let calls = AtomicUsize::new(0);
        let v = reads
            .read_confirming(
                |_| {
                    // First call: the replica, which does not have the row yet.
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    async move { Ok::<_, StorageError>((n > 0).then_some(5)) }
                },
                Option::is_none,
            )
            .await;
        assert_eq!(v.unwrap(), Some(5));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(breaker.state(), BreakerState::Closed, "lag is no failure");
    }
}
