//! Product stock, moved inside a caller's transaction. The catalog owns the
//! `products` table; orders reserve and give back stock through these
//! functions (wired by the server), in their own transaction, so a
//! reservation commits or rolls back with its order.
//!
//! Every function takes a shared connection reference: statements of one
//! transaction can then be pipelined (sent in one round trip) by polling
//! their futures together.

use commerce_domain::ProductId;
use commerce_storage::schema::products;
use commerce_storage::StorageError;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

pub use commerce_domain::{StockReserved as Reserved, StockTake as Take};

/// Takes `units` of `product`, guarded (stock never below zero): the
/// conditional update is both the reservation and the guard, and it holds
/// the row's lock until the caller's transaction ends.
pub async fn reserve_in(
    c: &AsyncPgConnection,
    product: ProductId,
    units: i32,
) -> Result<Reserved, StorageError> {
    let price: Option<i64> = diesel::update(
        products::table
            .filter(products::id.eq(product.get()))
            .filter(products::stock.ge(units)),
    )
    .set((
        products::stock.eq(products::stock - units),
        products::updated_at.eq(diesel::dsl::now),
    ))
    .returning(products::price)
    .get_result(&mut &*c)
    .await
    .optional()?;
    if let Some(price) = price {
        return Ok(Reserved::Taken { price });
    }
    let exists: Option<i64> = products::table
        .find(product.get())
        .select(products::id)
        .first(&mut &*c)
        .await
        .optional()?;
    Ok(if exists.is_some() {
        Reserved::Short
    } else {
        Reserved::Unknown
    })
}

/// The current prices of `ids` (no lock; a product missing is left out).
pub async fn prices_in(
    c: &AsyncPgConnection,
    ids: &[i64],
) -> Result<Vec<(i64, i64)>, StorageError> {
    Ok(products::table
        .filter(products::id.eq_any(ids))
        .select((products::id, products::price))
        .load::<(i64, i64)>(&mut &*c)
        .await?)
}

/// Takes each product's `units` if that many are left **and** its price is
/// still `price` (a batch priced its orders before taking the stock: a
/// price changed meanwhile must not be sold at the old one), in one
/// statement for the whole batch. Otherwise the statement fails with
/// [`StorageError::CheckViolation`] on [`STOCK_CHECK`] (a changed price
/// sets the stock to -1, which the same check refuses), so the caller's
/// transaction is aborted by PostgreSQL itself: a batch can send its
/// `COMMIT` right behind this statement, in the same round trip, and hold
/// the products' row locks for no longer than the commit.
///
/// `takes` are sorted by product here: rows are then locked in id order
/// whatever plan PostgreSQL picks (the index scan of `= ANY` walks its
/// keys sorted, a join keeps its outer side's order), so two batches
/// sharing products cannot deadlock. Each product appears once in `takes`
/// (a batch sums its orders' units per product first).
pub async fn take_in(c: &AsyncPgConnection, takes: &[Take]) -> Result<(), StorageError> {
    if takes.is_empty() {
        return Ok(());
    }
    let mut sorted = takes.to_vec();
    sorted.sort_unstable_by_key(|t| t.product);
    let ids: Vec<i64> = sorted.iter().map(|t| t.product).collect();
    let units: Vec<i32> = sorted.iter().map(|t| t.units).collect();
    let prices: Vec<i64> = sorted.iter().map(|t| t.price).collect();
    commerce_storage::sql::cached(
        "UPDATE products p \
         SET stock = CASE WHEN p.price = v.price THEN p.stock - v.n ELSE -1 END, \
             updated_at = now() \
         FROM unnest($1::bigint[], $2::int[], $3::bigint[]) AS v(id, n, price) \
         WHERE p.id = ANY($1) AND p.id = v.id",
    )
    .bind::<Array<BigInt>, _>(&ids)
    .bind::<Array<Integer>, _>(&units)
    .bind::<Array<BigInt>, _>(&prices)
    .execute(&mut &*c)
    .await?;
    Ok(())
}

/// The constraint that keeps stock at zero or above (`stock >= 0`).
pub const STOCK_CHECK: &str = "products_stock_check";

/// Gives `units` (product, units) back to the stock. The caller makes this
/// exactly once (it moved the orders out of `pending` in the same
/// transaction).
pub async fn give_back_in(c: &AsyncPgConnection, units: &[(i64, i32)]) -> Result<(), StorageError> {
    if units.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = units.iter().map(|(p, _)| *p).collect();
    let counts: Vec<i32> = units.iter().map(|(_, n)| *n).collect();
    // `p.id = ANY($1)` finds the rows by primary key.
    commerce_storage::sql::cached(
        "UPDATE products p SET stock = p.stock + v.n, updated_at = now() \
         FROM unnest($1::bigint[], $2::int[]) AS v(id, n) \
         WHERE p.id = ANY($1) AND p.id = v.id",
    )
    .bind::<Array<BigInt>, _>(&ids)
    .bind::<Array<Integer>, _>(&counts)
    .execute(&mut &*c)
    .await?;
    Ok(())
}

/// The committed stock of `product` (`None`: no such product).
pub async fn committed_in(
    c: &AsyncPgConnection,
    product: ProductId,
) -> Result<Option<i64>, StorageError> {
    let stock: Option<i32> = products::table
        .find(product.get())
        .select(products::stock)
        .first(&mut &*c)
        .await
        .optional()?;
    Ok(stock.map(i64::from))
}
