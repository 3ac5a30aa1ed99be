//! Wires the order path to the owners of the tables it touches: stock
//! (catalog), balances and the ledger (accounts), coupons (coupons). The
//! capability crates do not import each other; each exposes functions that
//! work inside a caller's transaction and the server connects them here.

use commerce_accounts::ledger::{self, Entry, Kind};
use commerce_catalog::stock;
use commerce_coupons::redeem;
use commerce_domain::{OrderId, ProductId, UserCouponId, UserId};
use commerce_orders::seams::{CouponBook, Debit, Reserved, Seams, Stock, Take, Unusable, Wallet};
use commerce_storage::StorageError;
use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::sync::Arc;

type Answer<'a, T> = BoxFuture<'a, Result<T, StorageError>>;

/// The seams an [`commerce_orders::Orders`] is built with.
pub fn order_seams() -> Seams {
    Seams {
        stock: Arc::new(CatalogStock),
        wallet: Arc::new(AccountsWallet),
        coupons: Arc::new(IssuedCoupons),
    }
}

struct CatalogStock;

impl Stock for CatalogStock {
    fn reserve<'a>(
        &'a self,
        c: &'a AsyncPgConnection,
        product: ProductId,
        units: i32,
    ) -> Answer<'a, Reserved> {
        stock::reserve_in(c, product, units).boxed()
    }

    fn prices<'a>(
        &'a self,
        c: &'a AsyncPgConnection,
        ids: &'a [i64],
    ) -> Answer<'a, Vec<(i64, i64)>> {
        stock::prices_in(c, ids).boxed()
    }

    fn take<'a>(&'a self, c: &'a AsyncPgConnection, takes: &'a [Take]) -> Answer<'a, ()> {
        stock::take_in(c, takes).boxed()
    }

    fn give_back<'a>(
        &'a self,
        c: &'a AsyncPgConnection,
        units: &'a [(i64, i32)],
    ) -> Answer<'a, ()> {
        stock::give_back_in(c, units).boxed()
    }

    fn committed<'a>(
        &'a self,
        c: &'a AsyncPgConnection,
        product: ProductId,
    ) -> Answer<'a, Option<i64>> {
        stock::committed_in(c, product).boxed()
    }
}

struct AccountsWallet;

impl Wallet for AccountsWallet {
    fn debit<'a>(
        &'a self,
        c: &'a AsyncPgConnection,
        user: UserId,
        payments: &'a [Debit],
    ) -> Answer<'a, Option<i64>> {
        let entries: Vec<Entry> = payments
            .iter()
            .map(|p| Entry {
                delta: -p.amount,
                reference: Some(format!("order:{}", p.order)),
            })
            .collect();
        async move { ledger::move_in(c, user, Kind::Payment, &entries).await }.boxed()
    }
}

struct IssuedCoupons;

impl CouponBook for IssuedCoupons {
    fn discount<'a>(
        &'a self,
        c: &'a AsyncPgConnection,
        user: UserId,
        uc: UserCouponId,
    ) -> Answer<'a, Result<i64, Unusable>> {
        redeem::discount_in(c, user, uc).boxed()
    }

    fn redeem<'a>(
        &'a self,
        c: &'a AsyncPgConnection,
        user: UserId,
        uc: UserCouponId,
        order: OrderId,
    ) -> Answer<'a, Result<(), Unusable>> {
        redeem::redeem_in(c, user, uc, order).boxed()
    }
}
