//! Users, bearer tokens and balances. Every balance change is a guarded
//! update plus a ledger row in one transaction, so the ledger always sums to
//! the balance and the balance never goes below zero (rule 3).

pub mod ledger;
pub mod lookup;
pub mod token;

use commerce_domain::{ChargeAmount, UserId, UserName};
use commerce_storage::idempotency::SaveAnswer;
use commerce_storage::schema::users;
use commerce_storage::{conn, DbPool, StorageError};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("user not found")]
    UserNotFound,
    #[error("the balance would exceed its limit")]
    BalanceLimit,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: String,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Balance {
    pub user_id: UserId,
    pub balance: i64,
}

pub async fn create_user(pool: &DbPool, name: &UserName) -> Result<User, AccountsError> {
    let mut c = conn(pool).await?;
    let id: i64 = diesel::insert_into(users::table)
        .values(users::name.eq(name.as_str()))
        .returning(users::id)
        .get_result(&mut c)
        .await
        .map_err(StorageError::from)?;
    Ok(User {
        id: UserId::from_db(id),
        name: name.as_str().to_owned(),
    })
}

pub async fn user_exists(pool: &DbPool, user: UserId) -> Result<bool, AccountsError> {
    let mut c = conn(pool).await?;
    let found: Option<i64> = users::table
        .find(user.get())
        .select(users::id)
        .first(&mut c)
        .await
        .optional()
        .map_err(StorageError::from)?;
    Ok(found.is_some())
}

pub async fn balance(pool: &DbPool, user: UserId) -> Result<Balance, AccountsError> {
    let mut c = conn(pool).await?;
    let amount: Option<i64> = users::table
        .find(user.get())
        .select(users::balance)
        .first(&mut c)
        .await
        .optional()
        .map_err(StorageError::from)?;
    amount
        .map(|balance| Balance {
            user_id: user,
            balance,
        })
        .ok_or(AccountsError::UserNotFound)
}

/// Adds `amount` to the balance. `answer`, when given, is stored in the same
/// transaction so an idempotent retry replays exactly this result.
pub async fn charge(
    pool: &DbPool,
    user: UserId,
    amount: ChargeAmount,
    answer: Option<SaveAnswer<Balance>>,
) -> Result<Balance, AccountsError> {
    let mut c = conn(pool).await?;
    c.transaction(async |tx| {
        let moved = ledger::move_in(
            tx,
            user,
            ledger::Kind::Charge,
            &[ledger::Entry {
                delta: amount.get(),
                reference: None,
            }],
        )
        .await?;
        let Some(new_balance) = moved else {
            let exists: Option<i64> = users::table
                .find(user.get())
                .select(users::id)
                .first(tx)
                .await
                .optional()
                .map_err(StorageError::from)?;
            return Err(if exists.is_some() {
                AccountsError::BalanceLimit
            } else {
                AccountsError::UserNotFound
            });
        };
        let result = Balance {
            user_id: user,
            balance: new_balance,
        };
        commerce_storage::outbox::enqueue(
            tx,
            commerce_storage::outbox::event::BALANCE_CHARGED,
            &user.to_string(),
            &serde_json::json!({ "user_id": user, "amount": amount.get(), "balance": new_balance }),
        )
        .await?;
        if let Some(answer) = answer {
            answer.save(tx, &result).await?;
        }
        Ok(result)
    })
    .await
}

impl From<diesel::result::Error> for AccountsError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Storage(e.into())
    }
}
