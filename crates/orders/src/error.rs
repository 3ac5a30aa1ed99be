//! What creating, paying and cancelling orders can answer besides success.

use commerce_domain::{ParseError, ProductId};
use commerce_storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("order not found")]
    NotFound,
    #[error("product {0} does not exist")]
    UnknownProduct(ProductId),
    #[error("not enough stock for product {0}")]
    OutOfStock(ProductId),
    #[error("coupon cannot be used: {0}")]
    InvalidCoupon(&'static str),
    #[error("order already paid")]
    AlreadyPaid,
    #[error("order expired")]
    Expired,
    #[error("order cancelled")]
    Cancelled,
    #[error("insufficient balance")]
    InsufficientBalance,
    #[error("coupon already used")]
    CouponAlreadyUsed,
    #[error("coupon expired")]
    CouponExpired,
    #[error("the order is being paid by another request")]
    Busy,
    /// Redis is out and the PostgreSQL-only path is at its limit.
    #[error("ordering is degraded and busy")]
    Degraded,
    /// [`Orders::create_claiming`] did not write the order: its key was
    /// used before (or the batch fell back to writing one by one). Its
    /// units were given back; the caller settles the key the usual way.
    #[error("the order's Idempotency-Key was not claimed")]
    NotClaimed,
    #[error(transparent)]
    Invalid(#[from] ParseError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<diesel::result::Error> for OrderError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Storage(e.into())
    }
}
