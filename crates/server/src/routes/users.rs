//! Sign-up and admin token minting.

use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use commerce_domain::{UserId, UserName};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/users", web::post().to(sign_up))
        .route("/api/v1/auth/token", web::post().to(mint_token));
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUp {
    /// Trimmed; no control characters.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
}

#[derive(Serialize, ToSchema)]
pub struct SignedUp {
    id: i64,
    name: String,
    token: String,
}

/// Sign up; the answer carries a bearer token.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = SignUp, operation_id = "signUp",
    responses((status = 201, body = SignedUp), (status = 422, body = ErrorBody, description = "invalid_name")))]
pub async fn sign_up(
    state: web::Data<AppState>,
    body: crate::json::Json<SignUp>,
) -> Result<HttpResponse, ApiError> {
    let name = UserName::parse(&body.name)?;
    let user = commerce_accounts::create_user(&state.db, &name).await?;
    state.known_users.remember(user.id).await;
    let token = state
        .tokens
        .issue(user.id)
        .map_err(|_| ApiError::internal())?;
    Ok(HttpResponse::Created().json(SignedUp {
        id: user.id.get(),
        name: user.name,
        token,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    #[serde(deserialize_with = "crate::json::int")]
    user_id: i64,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    token: String,
}

/// Mint a token for an existing user (admin; seeding and load tests).
#[utoipa::path(post, path = "/api/v1/auth/token", tag = "users", request_body = TokenRequest,
    security(("admin" = [])), operation_id = "mintToken",
    responses((status = 200, body = TokenResponse), (status = 404, body = ErrorBody, description = "user_not_found")))]
pub async fn mint_token(
    _admin: Admin,
    state: web::Data<AppState>,
    body: crate::json::Json<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = UserId::parse(body.user_id)?;
    if !commerce_accounts::user_exists(&state.db, user).await? {
        return Err(ApiError::new(ErrorCode::UserNotFound, "user not found"));
    }
    state.known_users.remember(user).await;
    let token = state.tokens.issue(user).map_err(|_| ApiError::internal())?;
    Ok(HttpResponse::Ok().json(TokenResponse { token }))
}
