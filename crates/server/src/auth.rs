//! Request authentication: bearer tokens for users, `X-Admin-Key` for admins.
//!
//! A token is checked in two steps: its signature and expiry (no I/O), then
//! that its user exists. The second step reads PostgreSQL once per user and
//! instance and is then answered from [`crate::tokens::KnownUsers`] (users are never
//! deleted, so a positive answer stays true; it is still dropped after
//! `auth.user_cache_secs` so a database reset is noticed). A missing user is
//! a 401 `unknown_user`, never a 5xx or a retry hint.

use crate::error::{ApiError, ErrorCode};
use crate::state::{AppState, WorkerIo};
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use commerce_accounts::token::TokenError;
use commerce_domain::UserId;
use futures::future::{ready, LocalBoxFuture, Ready};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

/// The authenticated caller (a valid token of a user that exists).
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub UserId);

fn state(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(ApiError::internal)
}

fn bearer(req: &HttpRequest) -> Result<UserId, ApiError> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingToken,
                "Authorization: Bearer <token> required",
            )
        })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidToken, "malformed Authorization header"))?;
    state(req)?.tokens.verify(token).map_err(|e| match e {
        TokenError::Expired => ApiError::new(ErrorCode::TokenExpired, "token expired"),
        TokenError::Invalid => ApiError::new(ErrorCode::InvalidToken, "token invalid"),
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
            let given = req
                .headers()
                .get("x-admin-key")
                .ok_or_else(|| ApiError::new(ErrorCode::MissingAdminKey, "X-Admin-Key required"))?;
            let expected = state(req)?.admin_key.expose_secret().as_bytes();
            // Constant time in the key's content (`ct_eq` on slices of
            // different lengths answers false at once: the length leaks,
            // the content does not).
            if bool::from(given.as_bytes().ct_eq(expected)) {
                Ok(Admin)
            } else {
                Err(ApiError::new(
                    ErrorCode::InvalidAdminKey,
                    "X-Admin-Key invalid",
                ))
            }
        })())
    }
}
