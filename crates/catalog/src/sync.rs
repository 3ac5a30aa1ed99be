//! Background work: the invalidation listener and the upkeep loop.
//!
//! The listener holds a dedicated pub/sub connection to
//! `<prefix>catalog:invalidate`. It connects from the background (startup
//! never waits for Redis), through the `redis` breaker with a timeout, and
//! reconnects on its own with capped backoff after a drop or an outage. On
//! every (re)connect it drops all L1 copies, since announcements sent while it
//! was away are lost; a ping every few seconds detects a dead link that never
//! closed.

use crate::Catalog;
use commerce_domain::ProductId;
use commerce_resilience::BreakerState;
use futures::StreamExt;
use std::time::{Duration, Instant};

const PING_EVERY: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const UPKEEP_EVERY: Duration = Duration::from_millis(250);

impl Catalog {
    /// Runs the listener and the upkeep until the future is dropped. Spawn it
    /// once per process (the server ends it on shutdown).
    pub async fn run_background(&self) {
        tokio::join!(self.listen(), self.upkeep());
    }

    async fn listen(&self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.subscribe().await {
                Ok(pubsub) => {
                    tracing::debug!("catalog invalidation listener subscribed");
                    backoff = Duration::from_millis(100);
                    self.drop_all_local();
                    self.consume(pubsub).await;
                    tracing::info!(
                        "catalog invalidation listener lost its connection; reconnecting"
                    );
                }
                Err(e) => {
                    tracing::debug!(error = %e, "catalog invalidation listener cannot subscribe yet")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn subscribe(
        &self,
    ) -> Result<redis::aio::PubSub, commerce_resilience::CallError<redis::RedisError>> {
        // Each attempt takes the next node: after a drop, the node that
        // served the listener may be the one that died (a cluster).
        let turn = self
            .inner
            .next_subscriber
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(client) = self
            .inner
            .subscribers
            .get(turn % self.inner.subscribers.len().max(1))
            .cloned()
        else {
            return Err(commerce_resilience::CallError::Inner(
                redis::RedisError::from((redis::ErrorKind::Client, "no Redis to subscribe to")),
            ));
        };
        let channel = self.channel();
        self.inner
            .redis
            .breaker()
            .call(Some(self.inner.subscribe_timeout), async move {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok(pubsub)
            })
            .await
    }

    /// Applies announcements until the connection ends or stops answering.
    async fn consume(&self, pubsub: redis::aio::PubSub) {
        let (mut sink, mut stream) = pubsub.split();
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { return };
                    let payload: String = msg.get_payload().unwrap_or_default();
                    self.apply_announcement(&payload).await;
                }
                _ = ping.tick() => {
                    let alive = self
                        .inner
                        .redis
                        .breaker()
                        .call(Some(PING_TIMEOUT), sink.ping::<redis::Value>())
                        .await;
                    // A rejected ping (breaker open) says nothing about this link.
                    if alive.as_ref().is_err_and(|e| !e.is_rejected()) {
                        return;
                    }
                }
            }
        }
    }

    /// `<origin hex>:<id>,<id>…`; this instance's own are skipped.
    async fn apply_announcement(&self, payload: &str) {
        let Some((origin, ids)) = payload.split_once(':') else {
            return;
        };
        if u64::from_str_radix(origin, 16).ok() == Some(self.inner.origin) {
            return;
        }
        for id in ids.split(',').filter_map(|p| p.trim().parse::<i64>().ok()) {
            if let Ok(id) = ProductId::parse(id) {
                self.drop_local(id).await;
            }
        }
    }

    /// Re-sends changes Redis missed, rebuilds ranking days marked dirty, and
    /// re-checks the whole ranking window every `ranking_rebuild_every`.
    async fn upkeep(&self) {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_full: Option<Instant> = None;
        loop {
            tick.tick().await;
            // Rejected at once while the breaker is open; after the open
            // period this is a probe like any other call.
            self.flush_pending().await;
            if self.inner.redis.breaker().state() == BreakerState::Open {
                continue;
            }
            if last_full.is_none_or(|t| t.elapsed() >= self.inner.config.ranking_rebuild_every) {
                self.mark_window_dirty();
                last_full = Some(Instant::now());
            }
            self.rebuild_dirty_days().await;
        }
    }
}
