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
}

/// Adds one event row; returns its id.
pub async fn enqueue(
    conn: &mut AsyncPgConnection,
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
        .execute(conn)
        .await?;
    Ok(id)
}
