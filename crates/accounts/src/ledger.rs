//! The one way a balance moves: a guarded update of the user's row and its
//! ledger rows, in one statement inside the caller's transaction, so the
//! ledger always sums to the balance and the balance stays within
//! `0..=MAX_BALANCE` (rule 3). Charges (here) and payments (orders, wired
//! by the server) both go through [`move_in`].

use commerce_domain::{UserId, MAX_BALANCE};
use commerce_storage::StorageError;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// What a ledger row says moved the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Charge,
    Payment,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Charge => "charge",
            Self::Payment => "payment",
        }
    }
}

/// One movement: a signed delta (a payment is negative) and what it was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub delta: i64,
    pub reference: Option<String>,
}

#[derive(QueryableByName)]
struct Moved {
    #[diesel(sql_type = BigInt)]
    balance: i64,
}

/// Moves `user`'s balance by the sum of `entries` at once, only if the
/// result stays within `0..=MAX_BALANCE`, and writes one ledger row per
/// non-zero entry, in order, each with the balance right after it (so
/// several payments of one user in a batch read as if made one after
/// another). Answers the final balance; `None` when the guard refused
/// (balance short or over the limit) or the user does not exist, and then
/// nothing changed.
///
/// Takes a shared reference so the caller can pipeline it with its own
/// statements.
pub async fn move_in(
    c: &AsyncPgConnection,
    user: UserId,
    kind: Kind,
    entries: &[Entry],
) -> Result<Option<i64>, StorageError> {
    let total = entries
        .iter()
        .try_fold(0i64, |sum, e| sum.checked_add(e.delta))
        .ok_or_else(|| StorageError::Other("balance movement overflows".into()))?;
    // Each row's balance is the final one minus what came after it.
    let mut later = Vec::with_capacity(entries.len());
    let mut after = 0i64;
    for e in entries.iter().rev() {
        later.push(after);
        after = after.saturating_add(e.delta);
    }
    later.reverse();
    let deltas: Vec<i64> = entries.iter().map(|e| e.delta).collect();
    let references: Vec<Option<&str>> = entries.iter().map(|e| e.reference.as_deref()).collect();
    let moved: Option<Moved> = commerce_storage::sql::cached(
        "WITH moved AS ( \
           UPDATE users SET balance = balance + $2, updated_at = now() \
           WHERE id = $1 AND balance + $2 >= 0 AND balance + $2 <= $3 \
           RETURNING balance), \
         ledger AS ( \
           INSERT INTO balance_ledger (user_id, delta, balance_after, kind, reference) \
           SELECT $1, e.delta, moved.balance - e.later, $4, e.reference \
           FROM moved, unnest($5::bigint[], $6::bigint[], $7::text[]) \
                WITH ORDINALITY AS e(delta, later, reference, n) \
           WHERE e.delta <> 0 ORDER BY e.n) \
         SELECT balance FROM moved",
    )
    .bind::<BigInt, _>(user.get())
    .bind::<BigInt, _>(total)
    .bind::<BigInt, _>(MAX_BALANCE)
    .bind::<Text, _>(kind.as_str())
    .bind::<Array<BigInt>, _>(&deltas)
    .bind::<Array<BigInt>, _>(&later)
    .bind::<Array<Nullable<Text>>, _>(&references)
    .get_result(&mut &*c)
    .await
    .optional()?;
    Ok(moved.map(|m| m.balance))
}
