//! Request authentication: bearer tokens for users, `X-Admin-Key` for admins.
//!
//! A token is checked in two steps: its signature and expiry (no I/O), then
//! that its user exists. The second step reads PostgreSQL once per user and
//! instance and is then answered from [`KnownUsers`] (users are never
//! deleted, so a positive answer stays true; it is still dropped after
//! `auth.user_cache_secs` so a database reset is noticed). A missing user is
//! a 401 `unknown_user`, never a 5xx or a retry hint.

use crate::error::ApiError;
use crate::state::{AppState, WorkerIo};
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use commerce_accounts::token::{TokenError, TokenSigner};
use commerce_domain::UserId;
use commerce_storage::batch::Batcher;
use futures::future::{ready, LocalBoxFuture, Ready};
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The authenticated caller (a valid token of a user that exists).
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub UserId);

fn state(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(ApiError::internal)
}

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
                    Ok(false) => Err(ApiError::unauthorized(
                        "unknown_user",
                        "the token's user does not exist",
                    )),
                    Err(e) => Err(ApiError::from(e)),
                }
            })
            .await
            .map_err(|e: Arc<ApiError>| (*e).clone())
    }
}

fn bearer(req: &HttpRequest) -> Result<UserId, ApiError> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::unauthorized("missing_token", "Authorization: Bearer <token> required")
        })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("invalid_token", "malformed Authorization header"))?;
    state(req)?.tokens.verify(token).map_err(|e| match e {
        TokenError::Expired => ApiError::unauthorized("token_expired", "token expired"),
        TokenError::Invalid => ApiError::unauthorized("invalid_token", "token invalid"),
    })
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let verified = bearer(req);
        let state = state(req).cloned();
        // The worker's own lookups where it has them (no other thread woken).
        let io = req.app_data::<web::Data<WorkerIo>>().cloned();
        Box::pin(async move {
            let user = verified?;
            let state = state?;
            let lookups = io.as_ref().map_or(&state.users, |io| &io.users);
            state.known_users.check(lookups, user).await?;
            crate::telemetry::record_on_request("user_id", user.get());
            Ok(AuthUser(user))
        })
    }
}

/// Proof that the request carried the admin key.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready((|| {
            let given = req.headers().get("x-admin-key").ok_or_else(|| {
                ApiError::unauthorized("missing_admin_key", "X-Admin-Key required")
            })?;
            let expected = state(req)?.admin_key.expose_secret().as_bytes();
            // Constant time in the key's content (`ct_eq` on slices of
            // different lengths answers false at once: the length leaks,
            // the content does not).
            if bool::from(given.as_bytes().ct_eq(expected)) {
                Ok(Admin)
            } else {
                Err(ApiError::unauthorized(
                    "invalid_admin_key",
                    "X-Admin-Key invalid",
                ))
            }
        })())
    }
}
