//! Writing events into the transactional outbox. Capabilities call
//! [`enqueue`] inside the transaction of the change the event describes;
//! the events crate relays the rows.

use crate::schema::outbox;
use crate::StorageError;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// Event type names (stable: consumers and topics key on them).
pub mod event {
    pub const ORDER_PAID: &str = "order_paid";
    pub const ORDER_CANCELLED: &str = "order_cancelled";
    pub const ORDER_EXPIRED: &str = "order_expired";
    pub const COUPON_ISSUED: &str = "coupon_issued";
    pub const BALANCE_CHARGED: &str = "balance_charged";
    /// Every type the outbox holds. In Kafka mode each is a topic, made
    /// at start-up whether or not a consumer of ours wants it (the relay
    /// publishes every row; a type without a topic never leaves).
    pub const ALL: [&str; 5] = [
        ORDER_PAID,
        ORDER_CANCELLED,
        ORDER_EXPIRED,
        COUPON_ISSUED,
        BALANCE_CHARGED,
    ];
}

/// Bumped whenever this process writes outbox rows: the relays of this
/// process wait on it instead of polling an empty outbox.
static WRITTEN: std::sync::LazyLock<tokio::sync::watch::Sender<u64>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::channel(0).0);

/// Tells this process's relays that outbox rows were written. Called as
/// the rows are written, possibly before their transaction commits: a
/// relay waits for the writes to settle, and polls anyway now and then.
pub fn written() {
    WRITTEN.send_modify(|n| *n = n.wrapping_add(1));
}

/// Sees every [`written`] after this call.
pub fn subscribe() -> tokio::sync::watch::Receiver<u64> {
    WRITTEN.subscribe()
}

/// Adds one event row; returns its id.
/// Takes a shared reference: polled together with other statements on the
/// same connection, it goes out in the same round trip (pipelined;
/// PostgreSQL still runs them in order).
pub async fn enqueue(
    conn: &AsyncPgConnection,
    event_type: &str,
    aggregate_key: &str,
    payload: &serde_json::Value,
) -> Result<uuid::Uuid, StorageError> {
    let id = uuid::Uuid::now_v7();
    diesel::insert_into(outbox::table)
        .values((
            outbox::id.eq(id),
            outbox::event_type.eq(event_type),
            outbox::aggregate_key.eq(aggregate_key),
            outbox::payload.eq(payload),
        ))
        .execute(&mut &*conn)
        .await?;
    written();
    Ok(id)
}

/// Adds several event rows in one statement (a batch of changes that
/// commit together); `(event_type, aggregate_key, payload)` each.
pub async fn enqueue_many(
    conn: &AsyncPgConnection,
    events: &[(&str, String, serde_json::Value)],
) -> Result<(), StorageError> {
    if events.is_empty() {
        return Ok(());
    }
    use diesel::sql_types::{Array, Jsonb, Text, Uuid};
    let ids: Vec<uuid::Uuid> = events.iter().map(|_| uuid::Uuid::now_v7()).collect();
    let types: Vec<&str> = events.iter().map(|(t, _, _)| *t).collect();
    let keys: Vec<&str> = events.iter().map(|(_, k, _)| k.as_str()).collect();
    let payloads: Vec<&serde_json::Value> = events.iter().map(|(_, _, p)| p).collect();
    // Arrays, not one VALUES row per event: the text stays the same whatever
    // the batch size, so the connection prepares it once.
    crate::sql::cached(
        "INSERT INTO outbox (id, event_type, aggregate_key, payload) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[])",
    )
    .bind::<Array<Uuid>, _>(ids)
    .bind::<Array<Text>, _>(types)
    .bind::<Array<Text>, _>(keys)
    .bind::<Array<Jsonb>, _>(payloads)
    .execute(&mut &*conn)
    .await?;
    written();
    Ok(())
}
