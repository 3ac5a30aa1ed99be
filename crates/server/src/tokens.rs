//! What authentication keeps between requests: the token signers (current
//! and, during a rotation, previous) and the users known to exist. Held in
//! the [`crate::state::AppState`]; the extractors in [`crate::auth`] use them.

use crate::error::{ApiError, ErrorCode};
use commerce_accounts::token::{TokenError, TokenSigner};
use commerce_domain::UserId;
use commerce_storage::batch::Batcher;
use std::sync::Arc;
use std::time::Duration;

/// The signers a token may be verified with: the current secret, and the
/// previous one until the end of its rotation window.
pub struct Tokens {
    pub current: TokenSigner,
    pub previous: Option<(TokenSigner, chrono::DateTime<chrono::Utc>)>,
}

impl Tokens {
    pub fn issue(&self, user: UserId) -> Result<String, TokenError> {
        self.current.issue(user)
    }

    pub fn verify(&self, token: &str) -> Result<UserId, TokenError> {
        match self.current.verify(token) {
            Err(TokenError::Invalid) => match &self.previous {
                Some((old, until)) if chrono::Utc::now() < *until => old.verify(token),
                _ => Err(TokenError::Invalid),
            },
            other => other,
        }
    }
}

/// Users known to exist, per instance, for `ttl`.
pub struct KnownUsers {
    cache: moka::future::Cache<i64, ()>,
}

impl KnownUsers {
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        Self {
            cache: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Remembers a user just created or looked up elsewhere.
    pub async fn remember(&self, user: UserId) {
        self.cache.insert(user.get(), ()).await;
    }

    /// Ok when the user exists; concurrent first looks at one user share
    /// one lookup, and lookups of many users share a query.
    pub async fn check(
        &self,
        lookups: &Batcher<commerce_accounts::lookup::UserLookups>,
        user: UserId,
    ) -> Result<(), ApiError> {
        if self.cache.contains_key(&user.get()) {
            return Ok(());
        }
        self.cache
            .try_get_with(user.get(), async {
                match commerce_accounts::lookup::exists(lookups, user).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(ApiError::new(
                        ErrorCode::UnknownUser,
                        "the token's user does not exist",
                    )),
                    Err(e) => Err(ApiError::from(e)),
                }
            })
            .await
            .map_err(|e: Arc<ApiError>| (*e).clone())
    }
}
