//! Delivery to this process's consumers: each event to each consumer once
//! (its inbox), one key's events in order, retries with backoff, and the
//! last attempt parking the event in `dead_letters`.

use crate::{Consumer, Delivery, Dispatcher, Event, HandleError, RetryPolicy};
use chrono::Utc;
use commerce_storage::{conn, DbPool, StorageError};
use diesel::prelude::*;
use diesel::sql_types::{Integer, Jsonb, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, RunQueryDsl};
use std::sync::Arc;
use std::time::Duration;

/// Commit-to-effect lag of an event whose inbox row just committed.
fn record_lag(consumer: &dyn Consumer, event: &Event) {
    metrics::histogram!("events_lag_seconds", "consumer" => consumer.name())
        .record((Utc::now() - event.created_at).num_milliseconds().max(0) as f64 / 1000.0);
}

fn inbox_table(name: &str) -> Option<String> {
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .then(|| format!("inbox_{name}"))
}

impl Dispatcher {
    pub fn new(db: DbPool, consumers: Vec<Arc<dyn Consumer>>, policy: RetryPolicy) -> Self {
        Self {
            db,
            consumers: Arc::new(consumers),
            policy,
        }
    }

    pub fn consumers(&self) -> &[Arc<dyn Consumer>] {
        &self.consumers
    }

    pub fn consumer(&self, name: &str) -> Option<Arc<dyn Consumer>> {
        self.consumers.iter().find(|c| c.name() == name).cloned()
    }

    /// Every event type some consumer wants (topics to create and relay).
    pub fn event_types(&self) -> Vec<&'static str> {
        let mut types: Vec<&'static str> = self
            .consumers
            .iter()
            .flat_map(|c| c.event_types().iter().copied())
            .collect();
        types.sort_unstable();
        types.dedup();
        types
    }

    /// Applies `event` to `consumer` once: retries with backoff, parks after
    /// `max_attempts` real failures, defers while the dependency is down.
    pub async fn deliver(&self, consumer: &dyn Consumer, event: &Event) -> Delivery {
        let Some(table) = inbox_table(consumer.name()) else {
            return self.park(consumer, event, "invalid consumer name", 0).await;
        };
        let delivery = self
            .with_retries(consumer, event, || self.attempt(consumer, &table, event))
            .await;
        if delivery == Delivery::Processed {
            self.processed(consumer, event).await;
        }
        delivery
    }

    /// Delivers a batch (the relay's pass) to every interested consumer and
    /// answers, per event, the longest deferral (`None`: settled; an event is
    /// settled when every consumer is). Consumers are independent: a slow or
    /// failing one does not hold the others back. A non-transactional
    /// consumer's inbox is read and written once for the whole batch: a
    /// peak's events then cost two statements per consumer, not two per
    /// event, and leave PostgreSQL to the requests that made them.
    pub async fn deliver_many(
        &self,
        events: &[Event],
        concurrency: usize,
    ) -> Vec<Option<Duration>> {
        let per_consumer = futures::future::join_all(
            self.consumers
                .iter()
                .map(|c| self.deliver_to(c.as_ref(), events, concurrency.max(1))),
        )
        .await;
        (0..events.len())
            .map(|i| {
                per_consumer
                    .iter()
                    .filter_map(|d| match d[i] {
                        Some(Delivery::Deferred(w)) => Some(w),
                        _ => None,
                    })
                    .max()
            })
            .collect()
    }

    /// Delivers a batch to one consumer (a Kafka consumer's poll) and
    /// answers per event: `None` for an event it does not want. Same rules
    /// as [`Dispatcher::deliver_many`]: a transactional consumer applies the
    /// batch in one inbox transaction, any other reads and writes its inbox
    /// once for the batch; an event repeated inside the batch counts once.
    /// One key's events are applied in batch order (partition order).
    pub async fn deliver_batch(
        &self,
        consumer: &dyn Consumer,
        events: &[Event],
        concurrency: usize,
    ) -> Vec<Option<Delivery>> {
        self.deliver_to(consumer, events, concurrency.max(1)).await
    }

    /// One consumer's part of [`Dispatcher::deliver_many`]: `None` for an
    /// event it does not want.
    async fn deliver_to(
        &self,
        consumer: &dyn Consumer,
        events: &[Event],
        concurrency: usize,
    ) -> Vec<Option<Delivery>> {
        let wanted = |e: &Event| consumer.event_types().contains(&e.event_type.as_str());
        let mut out: Vec<Option<Delivery>> = vec![None; events.len()];
        // An event id twice in one batch (a redelivery that caught up with
        // the first copy) is delivered once; the later copies are
        // duplicates, whatever becomes of the first.
        let mut first_of: std::collections::HashMap<uuid::Uuid, usize> = Default::default();
        let mut picked: Vec<usize> = Vec::new();
        let mut copies: Vec<(usize, usize)> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if !wanted(e) {
                continue;
            }
            match first_of.entry(e.id) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    copies.push((i, *first.get()));
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(i);
                    picked.push(i);
                }
            }
        }
        if picked.is_empty() {
            return out;
        }
        self.deliver_picked(consumer, events, &picked, concurrency, &mut out)
            .await;
        for (copy, first) in copies {
            out[copy] = Some(match out[first] {
                // Not settled yet: neither is its copy (the offset or the
                // outbox row must not move past it).
                Some(Delivery::Deferred(w)) => Delivery::Deferred(w),
                _ => Delivery::Duplicate,
            });
            if out[copy] == Some(Delivery::Duplicate) {
                metrics::counter!("events_consumed_total", "consumer" => consumer.name(), "outcome" => "duplicate").increment(1);
            }
        }
        out
    }

    /// [`Dispatcher::deliver_to`] for the wanted events `picked` (distinct
    /// ids), filling `out`.
    async fn deliver_picked(
        &self,
        consumer: &dyn Consumer,
        events: &[Event],
        picked: &[usize],
        concurrency: usize,
        out: &mut [Option<Delivery>],
    ) {
        let picked = picked.to_vec();
        let table = inbox_table(consumer.name());
        if let (Some(t), true) = (&table, consumer.transactional() && picked.len() > 1) {
            self.deliver_in_transactions(consumer, t, events, &picked, concurrency, out)
                .await;
            return;
        }
        let seen = match &table {
            Some(t) if !consumer.transactional() => {
                let ids: Vec<uuid::Uuid> = picked.iter().map(|&i| events[i].id).collect();
                self.seen(t, &ids).await.ok()
            }
            _ => None,
        };
        let (Some(table), Some(seen)) = (table, seen) else {
            // Transactional (its effect shares the inbox transaction), or
            // the batched read failed: one event at a time.
            let done = in_key_order(events, &picked, concurrency, |i| {
                self.deliver(consumer, &events[i])
            })
            .await;
            for (i, d) in done {
                out[i] = Some(d);
            }
            return;
        };
        let fresh: Vec<usize> = picked
            .into_iter()
            .filter(|&i| {
                let dup = seen.contains(&events[i].id);
                if dup {
                    out[i] = Some(Delivery::Duplicate);
                    metrics::counter!("events_consumed_total", "consumer" => consumer.name(), "outcome" => "duplicate").increment(1);
                }
                !dup
            })
            .collect();
        let handled = in_key_order(events, &fresh, concurrency, |i| async move {
            let e = &events[i];
            self.with_retries(consumer, e, || async {
                consumer.handle(None, e).await.map(|()| Delivery::Processed)
            })
            .await
        })
        .await;
        let processed: Vec<usize> = handled
            .iter()
            .filter(|(_, d)| *d == Delivery::Processed)
            .map(|(i, _)| *i)
            .collect();
        let recorded = if processed.is_empty() {
            true
        } else {
            let ids: Vec<uuid::Uuid> = processed.iter().map(|&i| events[i].id).collect();
            self.record(&table, &ids).await.is_ok()
        };
        for (i, d) in handled {
            out[i] = Some(match d {
                // Handled but not recorded: deliver again later (the peer
                // drops the duplicate by event id), never lose it.
                Delivery::Processed if !recorded => Delivery::Deferred(Duration::from_secs(1)),
                other => other,
            });
        }
        if recorded {
            for i in processed {
                self.processed(consumer, &events[i]).await;
            }
        }
    }

    /// A transactional consumer's part of a batch: the whole batch in one
    /// inbox transaction. When that fails for another reason than an
    /// unavailable database (a poison event, a failed write), nothing of it
    /// committed, and it is split in halves, each again in one transaction:
    /// a poison event costs about two transactions per halving, not one
    /// transaction per event of the batch, and an event failing alone goes
    /// through [`Dispatcher::deliver`] (retries, then dead letters).
    async fn deliver_in_transactions(
        &self,
        consumer: &dyn Consumer,
        table: &str,
        events: &[Event],
        picked: &[usize],
        concurrency: usize,
        out: &mut [Option<Delivery>],
    ) {
        let mut applied: Vec<&Event> = Vec::new();
        let mut alone: Vec<usize> = Vec::new();
        // Parts still to apply, the next one last.
        let mut parts: Vec<&[usize]> = vec![picked];
        while let Some(part) = parts.pop() {
            if let [i] = part {
                alone.push(*i);
                continue;
            }
            let batch: Vec<&Event> = part.iter().map(|&i| &events[i]).collect();
            match self.apply_in_one_transaction(consumer, table, &batch).await {
                Ok(fresh) => {
                    let ids: std::collections::HashSet<uuid::Uuid> =
                        fresh.iter().map(|e| e.id).collect();
                    for &i in part {
                        let (d, kind) = if ids.contains(&events[i].id) {
                            (Delivery::Processed, "processed")
                        } else {
                            (Delivery::Duplicate, "duplicate")
                        };
                        metrics::counter!("events_consumed_total", "consumer" => consumer.name(), "outcome" => kind).increment(1);
                        out[i] = Some(d);
                    }
                    applied.extend(fresh);
                }
                // The database is down: the rest of the batch would fail
                // alike; all of it waits.
                Err(HandleError::Unavailable(wait)) => {
                    metrics::counter!("events_consumed_total", "consumer" => consumer.name(), "outcome" => "deferred").increment(1);
                    for &i in part {
                        out[i] = Some(Delivery::Deferred(wait));
                    }
                    for rest in parts.drain(..) {
                        for &i in rest {
                            out[i] = Some(Delivery::Deferred(wait));
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(consumer = consumer.name(), events = part.len(), error = %e, "batched transactional delivery failed; splitting the batch");
                    let (first, second) = part.split_at(part.len() / 2);
                    parts.push(second);
                    parts.push(first);
                }
            }
        }
        for e in &applied {
            record_lag(consumer, e);
        }
        if !applied.is_empty() {
            consumer.after_commit_many(&applied, concurrency).await;
        }
        let done = in_key_order(events, &alone, concurrency, |i| {
            self.deliver(consumer, &events[i])
        })
        .await;
        for (i, d) in done {
            out[i] = Some(d);
        }
    }

    /// Applies `events` to a transactional consumer in one transaction (one
    /// commit for the lot): inbox rows first, then the effect of each event
    /// the inbox did not hold yet. Returns the events applied; on any error
    /// nothing is applied.
    async fn apply_in_one_transaction<'e>(
        &self,
        consumer: &dyn Consumer,
        table: &str,
        events: &[&'e Event],
    ) -> Result<Vec<&'e Event>, HandleError> {
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = SqlUuid)]
            event_id: uuid::Uuid,
        }
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
        let insert = format!(
            "INSERT INTO {table} (event_id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id"
        );
        let mut c = conn(&self.db).await?;
        c.transaction(async |tx| {
            let fresh: std::collections::HashSet<uuid::Uuid> =
                commerce_storage::sql::cached(&insert)
                    .bind::<diesel::sql_types::Array<SqlUuid>, _>(&ids)
                    .load::<Id>(tx)
                    .await?
                    .into_iter()
                    .map(|r| r.event_id)
                    .collect();
            let applied: Vec<&Event> = events
                .iter()
                .copied()
                .filter(|e| fresh.contains(&e.id))
                .collect();
            if !applied.is_empty() {
                consumer.handle_many(tx, &applied).await?;
            }
            Ok(applied)
        })
        .await
    }

    /// Which of `ids` the inbox `table` already holds.
    async fn seen(
        &self,
        table: &str,
        ids: &[uuid::Uuid],
    ) -> Result<std::collections::HashSet<uuid::Uuid>, StorageError> {
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = SqlUuid)]
            event_id: uuid::Uuid,
        }
        let mut c = conn(&self.db).await?;
        let rows: Vec<Id> = commerce_storage::sql::cached(&format!(
            "SELECT event_id FROM {table} WHERE event_id = ANY($1)"
        ))
        .bind::<diesel::sql_types::Array<SqlUuid>, _>(ids)
        .load(&mut c)
        .await?;
        Ok(rows.into_iter().map(|r| r.event_id).collect())
    }

    /// Writes `ids` into the inbox `table` in one statement.
    async fn record(&self, table: &str, ids: &[uuid::Uuid]) -> Result<(), StorageError> {
        let mut c = conn(&self.db).await?;
        commerce_storage::sql::cached(&format!(
            "INSERT INTO {table} (event_id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING"
        ))
        .bind::<diesel::sql_types::Array<SqlUuid>, _>(ids)
        .execute(&mut c)
        .await?;
        Ok(())
    }

    /// After an event's inbox row committed: its lag, then the consumer's hook.
    async fn processed(&self, consumer: &dyn Consumer, event: &Event) {
        record_lag(consumer, event);
        consumer.after_commit(event).await;
    }

    /// Runs `attempt` until it settles: retries with backoff, parks after
    /// `max_attempts` real failures, defers while the dependency is down.
    async fn with_retries<F, Fut>(
        &self,
        consumer: &dyn Consumer,
        event: &Event,
        attempt: F,
    ) -> Delivery
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Delivery, HandleError>>,
    {
        let mut backoff = self.policy.first_backoff;
        let mut last_error = String::new();
        for n in 1..=self.policy.max_attempts {
            let outcome = attempt().await;
            let kind = match &outcome {
                Ok(Delivery::Duplicate) => "duplicate",
                Ok(_) => "processed",
                Err(HandleError::Unavailable(_)) => "deferred",
                Err(HandleError::Retryable(_)) => "retry",
                Err(HandleError::Permanent(_)) => "permanent",
            };
            metrics::counter!("events_consumed_total", "consumer" => consumer.name(), "outcome" => kind).increment(1);
            match outcome {
                Ok(d) => return d,
                Err(HandleError::Unavailable(d)) => return Delivery::Deferred(d),
                Err(HandleError::Permanent(e)) => return self.park(consumer, event, &e, n).await,
                Err(HandleError::Retryable(e)) => {
                    tracing::debug!(consumer = consumer.name(), event = %event.id, attempt = n, error = %e, "consumer failed, retrying");
                    last_error = e;
                    if n < self.policy.max_attempts {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(self.policy.max_backoff);
                    }
                }
            }
        }
        self.park(consumer, event, &last_error, self.policy.max_attempts)
            .await
    }

    async fn attempt(
        &self,
        consumer: &dyn Consumer,
        table: &str,
        event: &Event,
    ) -> Result<Delivery, HandleError> {
        let insert = format!("INSERT INTO {table} (event_id) VALUES ($1) ON CONFLICT DO NOTHING");
        if consumer.transactional() {
            let mut c = conn(&self.db).await?;
            return c
                .transaction(async |tx| {
                    let fresh = commerce_storage::sql::cached(&insert)
                        .bind::<SqlUuid, _>(event.id)
                        .execute(tx)
                        .await?;
                    if fresh == 0 {
                        return Ok(Delivery::Duplicate);
                    }
                    consumer.handle(Some(tx), event).await?;
                    Ok(Delivery::Processed)
                })
                .await;
        }
        #[derive(QueryableByName)]
        struct Seen {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            seen: bool,
        }
        let seen: Seen = {
            let mut c = conn(&self.db).await?;
            commerce_storage::sql::cached(&format!(
                "SELECT EXISTS (SELECT 1 FROM {table} WHERE event_id = $1) AS seen"
            ))
            .bind::<SqlUuid, _>(event.id)
            .get_result(&mut c)
            .await?
        };
        if seen.seen {
            return Ok(Delivery::Duplicate);
        }
        consumer.handle(None, event).await?;
        let mut c = conn(&self.db).await?;
        commerce_storage::sql::cached(&insert)
            .bind::<SqlUuid, _>(event.id)
            .execute(&mut c)
            .await?;
        Ok(Delivery::Processed)
    }

    async fn park(
        &self,
        consumer: &dyn Consumer,
        event: &Event,
        error: &str,
        attempts: u32,
    ) -> Delivery {
        tracing::warn!(consumer = consumer.name(), event = %event.id, error, "event parked in dead letters");
        metrics::counter!("events_dead_lettered_total", "consumer" => consumer.name()).increment(1);
        let saved = async {
            let mut c = conn(&self.db).await?;
            commerce_storage::sql::cached(
                "INSERT INTO dead_letters (consumer, event_id, event_type, aggregate_key, payload, event_created_at, error, attempts) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (consumer, event_id) DO UPDATE SET error = EXCLUDED.error, \
                 attempts = dead_letters.attempts + EXCLUDED.attempts, redriven_at = NULL",
            )
            .bind::<Text, _>(consumer.name())
            .bind::<SqlUuid, _>(event.id)
            .bind::<Text, _>(&event.event_type)
            .bind::<Text, _>(&event.key)
            .bind::<Jsonb, _>(&event.payload)
            .bind::<Timestamptz, _>(event.created_at)
            .bind::<Text, _>(error)
            .bind::<Integer, _>(i32::try_from(attempts).unwrap_or(i32::MAX))
            .execute(&mut c)
            .await?;
            Ok::<_, StorageError>(())
        }
        .await;
        match saved {
            Ok(()) => Delivery::Parked,
            // Could not even park: try the event again later.
            Err(_) => Delivery::Deferred(Duration::from_secs(1)),
        }
    }
}

/// Delivers the events `picked` (indices into `events`, in batch order),
/// `concurrency` aggregate keys at a time and one key's events one after
/// the other, in batch order: a key's effects happen in the order its
/// partition (or the outbox) gave them. Once one of a key's events is
/// deferred, the later ones are deferred with it, untried, so none
/// overtakes it.
async fn in_key_order<F, Fut>(
    events: &[Event],
    picked: &[usize],
    concurrency: usize,
    deliver: F,
) -> Vec<(usize, Delivery)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Delivery>,
{
    use futures::StreamExt;
    let mut chain_of: std::collections::HashMap<(&str, &str), usize> = Default::default();
    let mut chains: Vec<Vec<usize>> = Vec::new();
    for &i in picked {
        let e = &events[i];
        let n = *chain_of
            .entry((e.event_type.as_str(), e.key.as_str()))
            .or_insert_with(|| {
                chains.push(Vec::new());
                chains.len() - 1
            });
        chains[n].push(i);
    }
    let deliver = &deliver;
    let done: Vec<Vec<(usize, Delivery)>> = futures::stream::iter(chains)
        .map(|chain| async move {
            let mut done = Vec::with_capacity(chain.len());
            let mut deferred = None;
            for i in chain {
                let d = match deferred {
                    Some(wait) => Delivery::Deferred(wait),
                    None => deliver(i).await,
                };
                if let Delivery::Deferred(wait) = d {
                    deferred = Some(wait);
                }
                done.push((i, d));
            }
            done
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    done.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, n: u32) -> Event {
        Event {
            id: uuid::Uuid::new_v4(),
            event_type: "order_paid".into(),
            key: key.into(),
            payload: serde_json::json!({ "n": n }),
            created_at: Utc::now(),
        }
    }

    /// One key's events are delivered one after the other in batch order
    /// (the later ones slower, so running them side by side would reverse
    /// them), keys side by side; after a deferral the rest of its key
    /// waits untried.
    #[tokio::test]
    async fn a_batch_is_delivered_in_key_order() {
        let events: Vec<Event> = (0..6u32)
            .map(|n| event(if n % 2 == 0 { "a" } else { "b" }, n))
            .collect();
        let order = std::sync::Mutex::new(Vec::new());
        let picked: Vec<usize> = (0..events.len()).collect();
        let done = in_key_order(&events, &picked, 8, |i| {
            let order = &order;
            async move {
                // Later events finish sooner if started together.
                tokio::time::sleep(Duration::from_millis(30 - 5 * i as u64)).await;
                order
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(i);
                if i == 3 {
                    Delivery::Deferred(Duration::from_secs(1))
                } else {
                    Delivery::Processed
                }
            }
        })
        .await;
        let order = order
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let a: Vec<usize> = order.iter().copied().filter(|i| i % 2 == 0).collect();
        assert_eq!(a, vec![0, 2, 4], "key a in batch order");
        assert_eq!(
            order
                .iter()
                .copied()
                .filter(|i| i % 2 == 1)
                .collect::<Vec<_>>(),
            vec![1, 3],
            "key b stops at its deferred event"
        );
        let outcome: std::collections::HashMap<usize, Delivery> = done.into_iter().collect();
        assert_eq!(outcome.len(), 6);
        assert_eq!(outcome[&5], Delivery::Deferred(Duration::from_secs(1)));
        assert_eq!(outcome[&4], Delivery::Processed);
    }

    #[test]
    fn inbox_names_are_checked() {
        assert_eq!(inbox_table("ranking").as_deref(), Some("inbox_ranking"));
        assert_eq!(
            inbox_table("data_platform").as_deref(),
            Some("inbox_data_platform")
        );
        assert!(inbox_table("x; DROP TABLE y").is_none());
        assert!(inbox_table("").is_none());
    }
}
