//! What an order needs done to tables other crates own: stock (catalog),
//! balances and their ledger (accounts), coupons (coupons). Each is done by
//! its owner's function inside the order's own transaction, so it commits
//! or rolls back with the order. Capability crates do not import each
//! other: the server implements these traits with the owners' functions
//! and hands them to [`crate::Orders::new`].
//!
//! Every method takes a shared connection reference: the order path
//! pipelines these statements with its own (futures polled together are
//! sent in one round trip, in poll order).

use commerce_domain::{OrderId, ProductId, UserCouponId, UserId};
use commerce_storage::StorageError;
use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use std::sync::Arc;

type Answer<'a, T> = BoxFuture<'a, Result<T, StorageError>>;

pub use commerce_domain::{
    CouponUnusable as Unusable, StockReserved as Reserved, StockTake as Take,
};

/// Product stock (owned by the catalog).
pub trait Stock: Send + Sync {
    /// Takes `units` of `product`, guarded (never below zero), holding the
    /// row's lock until the transaction ends.
    fn reserve<'a>(
        &'a self,
        c: &'a AsyncPgConnection,
        product: ProductId,
        units: i32,
    ) -> Answer<'a, Reserved>;
    /// Current prices of `ids` (no lock); a missing product is left out.
    fn prices<'a>(
        &'a self,
        c: &'a AsyncPgConnection,
        ids: &'a [i64],
    ) -> Answer<'a, Vec<(i64, i64)>>;
    /// Takes each product's units if that many are left and its price is
    /// still the one given, in one statement; otherwise fails with
    /// [`StorageError::CheckViolation`], which aborts the transaction (so a
    /// `COMMIT` may follow it in the same round trip).
    fn take<'a>(&'a self, c: &'a AsyncPgConnection, takes: &'a [Take]) -> Answer<'a, ()>;
    /// Gives (product, units) back; the caller makes this exactly once.
    fn give_back<'a>(&'a self, c: &'a AsyncPgConnection, units: &'a [(i64, i32)])
        -> Answer<'a, ()>;
    /// Committed stock (`None`: no such product).
    fn committed<'a>(
        &'a self,
        c: &'a AsyncPgConnection,
        product: ProductId,
    ) -> Answer<'a, Option<i64>>;
}

/// One payment of a batch debit: amount (positive) and the order paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Debit {
    pub amount: i64,
    pub order: OrderId,
}

/// Balances and their ledger (owned by accounts).
pub trait Wallet: Send + Sync {
    /// Debits `user` once for the sum of `payments`, guarded (never below
    /// zero), with one ledger row per payment in order. The final balance;
    /// `None`: the balance is short and nothing changed.
    fn debit<'a>(
        &'a self,
        c: &'a AsyncPgConnection,
        user: UserId,
        payments: &'a [Debit],
    ) -> Answer<'a, Option<i64>>;
}

/// Issued coupons (owned by coupons).
pub trait CouponBook: Send + Sync {
    /// The discount `uc` gives `user` now (no lock).
    fn discount<'a>(
        &'a self,
        c: &'a AsyncPgConnection,
        user: UserId,
        uc: UserCouponId,
    ) -> Answer<'a, Result<i64, Unusable>>;
    /// Marks `uc` used by `order`, guarded: issued, the user's, unexpired.
    fn redeem<'a>(
        &'a self,
        c: &'a AsyncPgConnection,
        user: UserId,
        uc: UserCouponId,
        order: OrderId,
    ) -> Answer<'a, Result<(), Unusable>>;
}

/// The owners' functions an [`crate::Orders`] works with.
#[derive(Clone)]
pub struct Seams {
    pub stock: Arc<dyn Stock>,
    pub wallet: Arc<dyn Wallet>,
    pub coupons: Arc<dyn CouponBook>,
}
