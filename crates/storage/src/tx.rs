//! Transactions whose `BEGIN` and `COMMIT` travel with their statements.
//!
//! diesel's `transaction` spends a round trip on `BEGIN` and another on
//! `COMMIT`, and a row locked inside stays locked across the second one.
//! A batch that knows its last statements can instead send [`begin`] with
//! its first ones and [`commit`] right behind its last ones (futures polled
//! together go out in poll order: the connection's statement cache is a
//! fair lock, so a statement still being prepared keeps its place). Any
//! statement that fails aborts the transaction, and PostgreSQL then turns
//! the `COMMIT` into a rollback, so guards must fail (a constraint, an
//! error), not merely match no row, for this to be safe. A caller that
//! decides not to commit after [`begin`] calls [`roll_back`].

use crate::StorageError;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// `BEGIN`, to be polled with (before) the transaction's first statements.
pub async fn begin(db: &AsyncPgConnection) -> Result<(), StorageError> {
    crate::sql::cached("BEGIN").execute(&mut &*db).await?;
    Ok(())
}

/// `COMMIT`, to be polled with (after) the transaction's last statements.
/// `Ok` does not say the transaction committed if one of them failed (it
/// was rolled back): look at their results first.
pub async fn commit(db: &AsyncPgConnection) -> Result<(), StorageError> {
    crate::sql::cached("COMMIT").execute(&mut &*db).await?;
    Ok(())
}

/// Ends a transaction that will not be committed. A failure here means the
/// connection is broken, and the pool drops it.
pub async fn roll_back(db: &AsyncPgConnection) {
    if let Err(e) = crate::sql::cached("ROLLBACK").execute(&mut &*db).await {
        tracing::debug!(error = %e, "rollback failed");
    }
}
