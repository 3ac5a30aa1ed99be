//! Signed bearer tokens: HS256 JWTs carrying the user id and an expiry.

use commerce_domain::UserId;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token invalid")]
    Invalid,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    iat: i64,
}

#[derive(Clone)]
pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: i64,
}

impl TokenSigner {
    pub fn new(secret: &[u8], ttl_secs: i64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs,
        }
    }

    pub fn issue(&self, user: UserId) -> Result<String, TokenError> {
        self.issue_with_ttl(user, self.ttl_secs)
    }

    pub fn issue_with_ttl(&self, user: UserId, ttl_secs: i64) -> Result<String, TokenError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user.get().to_string(),
            iat: now,
            exp: now.saturating_add(ttl_secs),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| TokenError::Invalid)
    }

    pub fn verify(&self, token: &str) -> Result<UserId, TokenError> {
        let data =
            decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                    _ => TokenError::Invalid,
                }
            })?;
        let id: i64 = data.claims.sub.parse().map_err(|_| TokenError::Invalid)?;
        UserId::parse(id).map_err(|_| TokenError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let signer = TokenSigner::new(b"secret-one", 60);
        let user = UserId::parse(42).unwrap();
        let token = signer.issue(user).unwrap();
        assert_eq!(signer.verify(&token), Ok(user));

        let other = TokenSigner::new(b"secret-two", 60);
        assert_eq!(other.verify(&token), Err(TokenError::Invalid));

        let expired = signer.issue_with_ttl(user, -10).unwrap();
        assert_eq!(signer.verify(&expired), Err(TokenError::Expired));

        assert_eq!(signer.verify("garbage"), Err(TokenError::Invalid));
        let mut tampered = token.clone();
        tampered.push('x');
        assert_eq!(signer.verify(&tampered), Err(TokenError::Invalid));
    }
}
