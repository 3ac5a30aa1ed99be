//! The scenario's data: tokens, products, the coupon, the sale product and
//! pending orders, written to `data.json` for k6; and each later burst's
//! fresh data.

use crate::base::{log, write_json};
use crate::options::RunOptions;
use crate::report;
use crate::rules;
use crate::scenarios::{CouponQuantity, Scenario, Shape};
use crate::setup::{self, Api, OrderRef};
use crate::stack::OPENING_BALANCE;
use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

const CATALOG_STOCK: u64 = 50;

/// What the data stage leaves for the bursts and the report.
pub struct Data {
    /// Every user's token, for k6 (`TOKENS_FILE`).
    pub tokens_file: PathBuf,
    /// `data.json`: the first burst's data.
    pub file: PathBuf,
    /// Its content, the template of every later burst's data.
    pub map: serde_json::Map<String, Value>,
    /// The report's "data" line.
    pub text: String,
    /// The scenario's coupon units, when it has a coupon.
    pub coupon_quantity: Option<u64>,
    /// The sale product's units, when the scenario has one.
    pub sale_units: Option<u64>,
}

/// The data being made, with the products and tokens the orders need.
struct Making<'a> {
    api: &'a Api,
    shape: &'a Shape,
    data: Data,
    tokens: Vec<setup::TokenEntry>,
    products: Vec<Value>,
}

/// Tokens and the scenario's data; `db` (the connection that seeded the
/// users) is closed before the stock snapshot.
#[allow(clippy::too_many_arguments)]
pub async fn make(
    api: &Api,
    opts: &RunOptions,
    scenario: &Scenario,
    shape: &Shape,
    users: usize,
    run_dir: &Path,
    db_url: &str,
    db: tokio_postgres::Client,
) -> Result<Data> {
    let need = scenario.data;
    let mut m = Making {
        api,
        shape,
        data: Data {
            tokens_file: run_dir.join("tokens.json"),
            file: run_dir.join("data.json"),
            map: serde_json::Map::new(),
            text: format!(
                "{} users (opening balance {} each, one ledger row each)",
                report::int(users as f64),
                report::int(OPENING_BALANCE as f64)
            ),
            coupon_quantity: None,
            sale_units: None,
        },
        tokens: Vec::new(),
        products: Vec::new(),
    };
    if need.tokens || need.orders {
        m.tokens(users).await?;
    }
    if need.products || need.orders {
        m.products(opts.products).await?;
    }
    if need.contention_products {
        m.contention_products().await?;
    }
    if let Some(q) = need.coupon {
        m.coupon(q).await?;
    }
    if let Some(stock) = need.sale_product {
        m.sale_product(stock).await?;
    }
    // Stock before any order reserved some (the conservation rule's baseline).
    drop(db);
    if setup::snapshot_stock(&setup::connect(db_url).await?).await? {
        log("snapshot of the initial stock taken");
    }
    if need.orders {
        m.orders(users).await?;
    }
    let Making {
        mut data, products, ..
    } = m;
    if need.products {
        data.map.insert("products".into(), Value::Array(products));
    }
    write_json(&data.file, &Value::Object(data.map.clone()))?;
    let t0 = Instant::now();
    setup::settle(&setup::connect(db_url).await?).await?;
    log(format!(
        "VACUUM (ANALYZE) of the loaded tables and CHECKPOINT after the load in {:.1}s",
        t0.elapsed().as_secs_f64()
    ));
    Ok(data)
}

impl Making<'_> {
    async fn tokens(&mut self, users: usize) -> Result<()> {
        let t0 = Instant::now();
        self.tokens = self
            .api
            .mint_tokens(users)
            .await
            .context("minting tokens")?;
        write_json(&self.data.tokens_file, &self.tokens)?;
        log(format!(
            "minted {} tokens in {:.1}s",
            self.tokens.len(),
            t0.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    async fn products(&mut self, count: usize) -> Result<()> {
        let t0 = Instant::now();
        self.products = self
            .api
            .create_products(count, CATALOG_STOCK, "load product")
            .await
            .context("creating products")?;
        log(format!(
            "created {} products in {:.1}s",
            self.products.len(),
            t0.elapsed().as_secs_f64()
        ));
        self.data
            .map
            .insert("product_count".into(), json!(self.products.len()));
        self.data.text.push_str(&format!(
            "; {} products × {CATALOG_STOCK} units",
            self.products.len()
        ));
        Ok(())
    }

    async fn contention_products(&mut self) -> Result<()> {
        let n = self.shape.peak_vus().div_ceil(2).max(1) as usize;
        let ids = self
            .api
            .create_products(n, 1, "last unit")
            .await
            .context("creating contention products")?;
        log(format!("created {n} products with one unit each"));
        self.data
            .map
            .insert("contention_products".into(), Value::Array(ids));
        self.data
            .text
            .push_str(&format!("; {n} products × 1 unit (one per pair of VUs)"));
        Ok(())
    }

    async fn coupon(&mut self, q: CouponQuantity) -> Result<()> {
        let quantity = match q {
            CouponQuantity::HalfOfVus => self.shape.peak_vus().div_ceil(2).max(1),
            CouponQuantity::Fixed(n) => n,
        };
        let id = self
            .api
            .create_coupon(quantity)
            .await
            .context("creating the coupon")?;
        self.data
            .map
            .insert("coupon".into(), json!({ "id": id, "quantity": quantity }));
        self.data.coupon_quantity = Some(quantity);
        self.data
            .text
            .push_str(&format!("; one coupon, {quantity} units, open now"));
        Ok(())
    }

    async fn sale_product(&mut self, stock: crate::scenarios::SaleStock) -> Result<()> {
        let shape = self.shape;
        let units = stock.units(shape.peak_vus(), shape.expected_iterations());
        let sells_out = stock.sells_out();
        let id = create_sale_product(self.api, units, sells_out).await?;
        log(format!("created the sale product {id} with {units} units"));
        self.data.map.insert(
            "sale_product".into(),
            json!({ "id": id, "units": units, "sells_out": sells_out }),
        );
        self.data.sale_units = Some(units);
        self.data.text.push_str(&format!(
            "; one sale product, {} units{}",
            report::int(units as f64),
            if shape.is_burst() {
                " (a fresh one for each burst)"
            } else {
                ""
            }
        ));
        Ok(())
    }

    async fn orders(&mut self, users: usize) -> Result<()> {
        let count = self
            .shape
            .expected_iterations()
            .map(|n| (n as f64 * 1.05).ceil() as usize + 10)
            .unwrap_or(users);
        let t0 = Instant::now();
        let orders: Vec<OrderRef> = self
            .api
            .create_orders(&self.tokens, &self.products, count)
            .await
            .context("creating pending orders")?;
        log(format!(
            "created {} pending orders in {:.1}s",
            orders.len(),
            t0.elapsed().as_secs_f64()
        ));
        self.data
            .map
            .insert("orders".into(), serde_json::to_value(&orders)?);
        self.data.text.push_str(&format!(
            "; {} pending orders",
            report::int(orders.len() as f64)
        ));
        Ok(())
    }
}

/// [`fresh_burst_data`], written to `path` for k6.
pub async fn write_fresh_burst_data(
    api: &Api,
    db_url: &str,
    data: &serde_json::Map<String, Value>,
    path: &Path,
) -> Result<()> {
    let fresh = fresh_burst_data(api, db_url, data).await?;
    write_json(path, &Value::Object(fresh))
}

/// The next burst's data: what a burst uses up made anew (a coupon of the
/// same quantity; last-unit products, added to the stock snapshot so the
/// conservation rule covers them), the rest as it was.
async fn fresh_burst_data(
    api: &Api,
    db_url: &str,
    data: &serde_json::Map<String, Value>,
) -> Result<serde_json::Map<String, Value>> {
    let mut fresh = data.clone();
    let quantity = data
        .get("coupon")
        .and_then(|c| c.get("quantity"))
        .and_then(Value::as_u64);
    if let Some(q) = quantity {
        let id = api
            .create_coupon(q)
            .await
            .context("creating the next burst's coupon")?;
        fresh.insert("coupon".into(), json!({ "id": id, "quantity": q }));
    }
    let products = data
        .get("contention_products")
        .and_then(Value::as_array)
        .map(Vec::len);
    if let Some(n) = products {
        let ids = api
            .create_products(n, 1, "last unit")
            .await
            .context("creating the next burst's products")?;
        setup::snapshot_new_stock(&setup::connect(db_url).await?).await?;
        fresh.insert("contention_products".into(), Value::Array(ids));
    }
    if let Some(sale) = data.get("sale_product") {
        let units = sale
            .get("units")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("sale_product without units: {sale}"))?;
        let sells_out = sale
            .get("sells_out")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let id = create_sale_product(api, units, sells_out).await?;
        setup::snapshot_new_stock(&setup::connect(db_url).await?).await?;
        fresh.insert(
            "sale_product".into(),
            json!({ "id": id, "units": units, "sells_out": sells_out }),
        );
    }
    Ok(fresh)
}

/// One sale product of `units` units; its id. One the sale is meant to sell
/// out is named with [`rules::SOLD_OUT_PRODUCT_PREFIX`], which the rule
/// "sold exactly its units" selects.
async fn create_sale_product(api: &Api, units: u64, sells_out: bool) -> Result<Value> {
    let prefix = if sells_out {
        rules::SOLD_OUT_PRODUCT_PREFIX
    } else {
        "sale product"
    };
    api.create_products(1, units, prefix)
        .await
        .context("creating the sale product")?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("POST /admin/products gave no id for the sale product"))
}
