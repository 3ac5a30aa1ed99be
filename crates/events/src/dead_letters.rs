//! Parked events: listing them to admins, re-driving one, and the gauge of
//! those not yet re-driven.

use crate::{Delivery, Dispatcher, Event};
use chrono::{DateTime, Utc};
use commerce_storage::{conn, StorageError};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use serde::Serialize;

/// A parked event, as listed to admins.
#[derive(Debug, Clone, Serialize, QueryableByName)]
pub struct DeadLetter {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub consumer: String,
    #[diesel(sql_type = SqlUuid)]
    pub event_id: uuid::Uuid,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = Text)]
    pub aggregate_key: String,
    #[diesel(sql_type = Jsonb)]
    pub payload: serde_json::Value,
    #[diesel(sql_type = Timestamptz)]
    pub event_created_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub error: String,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub redriven_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("dead letter not found")]
    NotFound,
    #[error("consumer {0} is not running here")]
    UnknownConsumer(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Dispatcher {
    /// Sets `events_dead_letters{consumer}` to the parked events not yet
    /// re-driven, 0 for a consumer with none (so an alert resolves after a
    /// redrive). Read at scrape time: one indexed count, not on a hot path.
    pub async fn publish_dead_letter_gauge(&self) -> Result<(), StorageError> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = Text)]
            consumer: String,
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let mut c = conn(&self.db).await?;
        let rows: Vec<Row> = commerce_storage::sql::cached(
            "SELECT consumer, COUNT(*) AS n FROM dead_letters WHERE redriven_at IS NULL GROUP BY consumer",
        )
        .load(&mut c)
        .await?;
        for consumer in self.consumers.iter() {
            let n = rows
                .iter()
                .find(|r| r.consumer == consumer.name())
                .map_or(0, |r| r.n);
            metrics::gauge!("events_dead_letters", "consumer" => consumer.name()).set(n as f64);
        }
        Ok(())
    }

    /// Parked events not yet re-driven, oldest first.
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let mut c = conn(&self.db).await?;
        Ok(commerce_storage::sql::cached(
            "SELECT * FROM dead_letters WHERE redriven_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind::<BigInt, _>(limit)
        .load(&mut c)
        .await
        .map_err(StorageError::from)?)
    }

    /// Delivers a parked event again (inbox dedup still applies).
    pub async fn redrive(&self, id: i64) -> Result<(DeadLetter, Delivery), DeadLetterError> {
        let letter: DeadLetter = {
            let mut c = conn(&self.db).await?;
            commerce_storage::sql::cached("SELECT * FROM dead_letters WHERE id = $1")
                .bind::<BigInt, _>(id)
                .get_result(&mut c)
                .await
                .optional()
                .map_err(StorageError::from)?
                .ok_or(DeadLetterError::NotFound)?
        };
        let consumer = self
            .consumer(&letter.consumer)
            .ok_or_else(|| DeadLetterError::UnknownConsumer(letter.consumer.clone()))?;
        let event = Event {
            id: letter.event_id,
            event_type: letter.event_type.clone(),
            key: letter.aggregate_key.clone(),
            payload: letter.payload.clone(),
            created_at: letter.event_created_at,
        };
        let delivery = self.deliver(consumer.as_ref(), &event).await;
        if matches!(delivery, Delivery::Processed | Delivery::Duplicate) {
            let mut c = conn(&self.db).await?;
            commerce_storage::sql::cached(
                "UPDATE dead_letters SET redriven_at = now() WHERE id = $1",
            )
            .bind::<BigInt, _>(id)
            .execute(&mut c)
            .await
            .map_err(StorageError::from)?;
        }
        Ok((letter, delivery))
    }
}
