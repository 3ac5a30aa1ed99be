//! PostgreSQL side of the catalog: the truth behind every cache.
//!
//! The statements hot routes run are public constants so a test can check
//! their plans (`EXPLAIN EXECUTE`) on a realistic table: each one is served
//! by a primary-key index.

use crate::error::CatalogError;
use crate::model::{NewProduct, Product, ProductDetail, ProductPatch, ProductSummary};
use chrono::{DateTime, NaiveDate, Utc};
use commerce_domain::ProductId;
use commerce_storage::schema::products;
use commerce_storage::{conn, DbPool, StorageError};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Date, Integer, Text, Timestamptz};
use diesel_async::RunQueryDsl;

/// Product page by id: `products_pkey`.
pub const DETAIL_SQL: &str =
    "SELECT id, name, description, price, stock, updated_at FROM products WHERE id = $1";

/// One page of the list in id order: walks `products_pkey` (`$1` = limit,
/// `$2` = offset), never a sort of the whole table.
pub const PAGE_SQL: &str =
    "SELECT id, name, price, stock, updated_at FROM products ORDER BY id LIMIT $1 OFFSET $2";

/// The list's `total`. An exact count visits every row (a sequential or
/// index-only scan), so it is run at most once per `count_ttl` per instance
/// and shared by every request meanwhile; see `Catalog::list`.
pub const COUNT_SQL: &str = "SELECT COUNT(*) AS n FROM products";

/// Units sold per product over a day range, best first, ties by product id:
/// a range scan of `product_sales_daily_pkey` (`day` leads the key).
pub const TOP_SALES_SQL: &str =
    "SELECT product_id, SUM(units)::BIGINT AS units FROM product_sales_daily \
     WHERE day BETWEEN $1 AND $2 GROUP BY product_id ORDER BY units DESC, product_id ASC LIMIT $3";

/// Every product's units on one day (rebuilding a day's Redis ranking).
pub const DAY_SALES_SQL: &str = "SELECT product_id, units FROM product_sales_daily WHERE day = $1";

/// Adds units to (day, product) rows and returns each row's new total, so
/// Redis can be given absolute values (see `popular::record`). Rows come
/// sorted by product id, so concurrent upserts lock in the same order.
const UPSERT_SALES_SQL: &str = "INSERT INTO product_sales_daily (day, product_id, units) \
     SELECT $1, p, u FROM unnest($2::BIGINT[], $3::BIGINT[]) AS t(p, u) \
     ON CONFLICT (day, product_id) DO UPDATE SET units = product_sales_daily.units + EXCLUDED.units \
     RETURNING product_id, units";

#[derive(QueryableByName)]
struct DetailRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    description: String,
    #[diesel(sql_type = BigInt)]
    price: i64,
    #[diesel(sql_type = Integer)]
    stock: i32,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct SummaryRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    price: i64,
    #[diesel(sql_type = Integer)]
    stock: i32,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Units {
    #[diesel(sql_type = BigInt)]
    product_id: i64,
    #[diesel(sql_type = BigInt)]
    units: i64,
}

type ProductRow = (i64, String, String, i64, i32, DateTime<Utc>, DateTime<Utc>);

const PRODUCT_COLUMNS: (
    products::id,
    products::name,
    products::description,
    products::price,
    products::stock,
    products::created_at,
    products::updated_at,
) = (
    products::id,
    products::name,
    products::description,
    products::price,
    products::stock,
    products::created_at,
    products::updated_at,
);

fn to_product(r: ProductRow) -> Product {
    Product {
        id: ProductId::from_db(r.0),
        name: r.1,
        description: r.2,
        price: r.3,
        stock: r.4,
        created_at: r.5,
        updated_at: r.6,
    }
}

pub(crate) async fn insert(pool: &DbPool, new: &NewProduct) -> Result<Product, CatalogError> {
    let mut c = conn(pool).await?;
    let row: ProductRow = diesel::insert_into(products::table)
        .values((
            products::name.eq(new.name.as_str()),
            products::description.eq(new.description.as_str()),
            products::price.eq(new.price.get()),
            products::stock.eq(new.stock.get()),
        ))
        .returning(PRODUCT_COLUMNS)
        .get_result(&mut c)
        .await
        .map_err(StorageError::from)?;
    Ok(to_product(row))
}

#[derive(AsChangeset)]
#[diesel(table_name = products)]
struct Changes<'a> {
    name: Option<&'a str>,
    description: Option<&'a str>,
    price: Option<i64>,
    stock: Option<i32>,
}

/// Applies a patch. `updated_at` moves strictly forward even for two changes
/// in one microsecond, because caches order copies by it.
pub(crate) async fn update(
    pool: &DbPool,
    id: ProductId,
    patch: &ProductPatch,
) -> Result<Product, CatalogError> {
    let mut c = conn(pool).await?;
    let changes = Changes {
        name: patch.name.as_ref().map(|n| n.as_str()),
        description: patch.description.as_ref().map(|d| d.as_str()),
        price: patch.price.map(|p| p.get()),
        stock: patch.stock.map(|s| s.get()),
    };
    let row: Option<ProductRow> = diesel::update(products::table.find(id.get()))
        .set((
            changes,
            products::updated_at.eq(diesel::dsl::sql::<Timestamptz>(
                "GREATEST(now(), products.updated_at + interval '1 microsecond')",
            )),
        ))
        .returning(PRODUCT_COLUMNS)
        .get_result(&mut c)
        .await
        .optional()
        .map_err(StorageError::from)?;
    row.map(to_product).ok_or(CatalogError::NotFound)
}

pub(crate) async fn detail(
    pool: &DbPool,
    id: ProductId,
) -> Result<Option<ProductDetail>, StorageError> {
    let mut c = conn(pool).await?;
    let row: Option<DetailRow> = commerce_storage::sql::cached(DETAIL_SQL)
        .bind::<BigInt, _>(id.get())
        .get_result(&mut c)
        .await
        .optional()?;
    Ok(row.map(|r| ProductDetail {
        id: ProductId::from_db(r.id),
        name: r.name,
        description: r.description,
        price: r.price,
        stock: r.stock,
        updated_at: r.updated_at,
    }))
}

pub(crate) async fn page(
    pool: &DbPool,
    limit: i64,
    offset: i64,
) -> Result<Vec<ProductSummary>, StorageError> {
    let mut c = conn(pool).await?;
    let rows: Vec<SummaryRow> = commerce_storage::sql::cached(PAGE_SQL)
        .bind::<BigInt, _>(limit)
        .bind::<BigInt, _>(offset)
        .load(&mut c)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ProductSummary {
            id: ProductId::from_db(r.id),
            name: r.name,
            price: r.price,
            stock: r.stock,
            updated_at: r.updated_at,
        })
        .collect())
}

pub(crate) async fn count(pool: &DbPool) -> Result<i64, StorageError> {
    let mut c = conn(pool).await?;
    let row: Count = commerce_storage::sql::cached(COUNT_SQL)
        .get_result(&mut c)
        .await?;
    Ok(row.n)
}

/// Adds `(product, units)` (distinct products, sorted) to `day`; returns
/// each product's new total for that day.
pub(crate) async fn add_sales(
    pool: &DbPool,
    day: NaiveDate,
    sales: &[(i64, i64)],
) -> Result<Vec<(i64, i64)>, StorageError> {
    let mut c = conn(pool).await?;
    add_sales_on(&mut c, day, sales).await
}

/// [`add_sales`] on a given connection (inside a caller's transaction).
pub(crate) async fn add_sales_on(
    c: &mut diesel_async::AsyncPgConnection,
    day: NaiveDate,
    sales: &[(i64, i64)],
) -> Result<Vec<(i64, i64)>, StorageError> {
    let (ids, units): (Vec<i64>, Vec<i64>) = sales.iter().copied().unzip();
    let rows: Vec<Units> = commerce_storage::sql::cached(UPSERT_SALES_SQL)
        .bind::<Date, _>(day)
        .bind::<Array<BigInt>, _>(ids)
        .bind::<Array<BigInt>, _>(units)
        .load(c)
        .await?;
    Ok(rows.into_iter().map(|r| (r.product_id, r.units)).collect())
}

/// Today's totals of some products (to publish after a caller's commit).
pub(crate) async fn totals_of(
    pool: &DbPool,
    day: NaiveDate,
    ids: &[i64],
) -> Result<Vec<(i64, i64)>, StorageError> {
    let mut c = conn(pool).await?;
    let rows: Vec<Units> = commerce_storage::sql::cached(
        "SELECT product_id, units FROM product_sales_daily WHERE day = $1 AND product_id = ANY($2)",
    )
    .bind::<Date, _>(day)
    .bind::<Array<BigInt>, _>(ids)
    .load(&mut c)
    .await?;
    Ok(rows.into_iter().map(|r| (r.product_id, r.units)).collect())
}

pub(crate) async fn day_sales(
    pool: &DbPool,
    day: NaiveDate,
) -> Result<Vec<(i64, i64)>, StorageError> {
    let mut c = conn(pool).await?;
    let rows: Vec<Units> = commerce_storage::sql::cached(DAY_SALES_SQL)
        .bind::<Date, _>(day)
        .load(&mut c)
        .await?;
    Ok(rows.into_iter().map(|r| (r.product_id, r.units)).collect())
}

pub(crate) async fn top_sales(
    pool: &DbPool,
    from: NaiveDate,
    to: NaiveDate,
    limit: i64,
) -> Result<Vec<(i64, i64)>, StorageError> {
    let mut c = conn(pool).await?;
    let rows: Vec<Units> = commerce_storage::sql::cached(TOP_SALES_SQL)
        .bind::<Date, _>(from)
        .bind::<Date, _>(to)
        .bind::<BigInt, _>(limit)
        .load(&mut c)
        .await?;
    Ok(rows.into_iter().map(|r| (r.product_id, r.units)).collect())
}

/// Current stock of `ids` (a missing product is left out).
pub(crate) async fn stock_of(pool: &DbPool, ids: &[i64]) -> Result<Vec<(i64, i32)>, StorageError> {
    let mut c = conn(pool).await?;
    Ok(products::table
        .filter(products::id.eq_any(ids))
        .select((products::id, products::stock))
        .load(&mut c)
        .await?)
}
