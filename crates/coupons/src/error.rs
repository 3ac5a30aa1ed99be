//! What issuing and reading coupons can answer besides success.

use chrono::{DateTime, Utc};
use commerce_domain::ParseError;
use commerce_storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum CouponError {
    #[error("coupon not found")]
    NotFound,
    #[error("coupon opens at {0}")]
    NotOpen(DateTime<Utc>),
    #[error("coupon expired")]
    Expired,
    #[error("coupon sold out")]
    SoldOut,
    #[error("coupon already issued to this user")]
    AlreadyIssued,
    /// Too many requests on the degraded path, or a winner's write failed
    /// and was given back: retry shortly.
    #[error("coupon issuing busy: {0}")]
    Busy(&'static str),
    #[error(transparent)]
    Invalid(#[from] ParseError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}
