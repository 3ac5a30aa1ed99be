//! Request authentication: bearer tokens for users, `X-Admin-Key` for admins.

use crate::error::ApiError;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use commerce_accounts::token::TokenError;
use commerce_domain::UserId;
use futures::future::{ready, Ready};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

/// The authenticated caller.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub UserId);

fn state(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(ApiError::internal)
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready((|| {
            let header = req
                .headers()
                .get(actix_web::http::header::AUTHORIZATION)
                .ok_or_else(|| {
                    ApiError::unauthorized(
                        "missing_token",
                        "Authorization: Bearer <token> required",
                    )
                })?;
            let token = header
                .to_str()
                .ok()
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    ApiError::unauthorized("invalid_token", "malformed Authorization header")
                })?;
            let user = state(req)?.tokens.verify(token).map_err(|e| match e {
                TokenError::Expired => ApiError::unauthorized("token_expired", "token expired"),
                TokenError::Invalid => ApiError::unauthorized("invalid_token", "token invalid"),
            })?;
            Ok(AuthUser(user))
        })())
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
