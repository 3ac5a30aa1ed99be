//! Fresh data for a run: the database (dropped, recreated and migrated by
//! the server), 10 000 users by COPY with their opening-balance ledger rows,
//! the run's Redis prefix cleared, tokens minted through the admin API, and
//! products, coupons and orders created through the HTTP contract.

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures::{stream, SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

const DB_TIMEOUT: Duration = Duration::from_secs(120);
/// Concurrent requests while seeding over HTTP.
const SEED_CONCURRENCY: usize = 48;

/// `base` (any postgres URL) with its database replaced by `db`.
pub fn with_database(base: &str, db: &str) -> Result<String> {
    let mut u = url::Url::parse(base).with_context(|| format!("not a URL: {base}"))?;
    if u.scheme() != "postgres" && u.scheme() != "postgresql" {
        bail!("not a postgres:// URL: {base}");
    }
    u.set_path(&format!("/{db}"));
    Ok(u.to_string())
}

pub async fn connect(url: &str) -> Result<Client> {
    let (client, conn) =
        tokio::time::timeout(Duration::from_secs(10), tokio_postgres::connect(url, NoTls))
            .await
            .map_err(|_| anyhow!("connecting to {url} timed out"))?
            .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("[loadtest] database connection closed: {e}");
        }
    });
    Ok(client)
}

async fn exec(db: &Client, sql: &str) -> Result<()> {
    tokio::time::timeout(DB_TIMEOUT, db.batch_execute(sql))
        .await
        .map_err(|_| anyhow!("timed out: {sql}"))?
        .with_context(|| format!("running: {sql}"))
}

/// Drops the load database (the server recreates and migrates it).
pub async fn drop_database(admin_url: &str, db: &str) -> Result<()> {
    let admin = connect(admin_url).await?;
    exec(
        &admin,
        &format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"),
    )
    .await
}

/// `n` users (ids 1..=n) by COPY, each with `balance` and, when it is not
/// zero, the ledger row that explains it (rule 3: ledger sum = balance).
pub async fn seed_users(db: &Client, n: usize, balance: i64) -> Result<()> {
    let mut buf = String::with_capacity(n * 32);
    for id in 1..=n {
        buf.push_str(&format!("{id}\tload-user-{id:05}\t{balance}\n"));
    }
    let sink = tokio::time::timeout(
        DB_TIMEOUT,
        db.copy_in::<_, Bytes>("COPY users (id, name, balance) FROM STDIN"),
    )
    .await
    .map_err(|_| anyhow!("COPY users timed out"))?
    .context("COPY users")?;
    futures::pin_mut!(sink);
    tokio::time::timeout(DB_TIMEOUT, async {
        sink.send(Bytes::from(buf)).await?;
        sink.as_mut().finish().await
    })
    .await
    .map_err(|_| anyhow!("COPY users timed out"))?
    .context("COPY users")?;
    exec(
        db,
        "SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users))",
    )
    .await?;
    if balance != 0 {
        exec(
            db,
            "INSERT INTO balance_ledger (user_id, delta, balance_after, kind)
             SELECT id, balance, balance, 'charge' FROM users WHERE balance <> 0",
        )
        .await?;
    }
    exec(db, "ANALYZE users; ANALYZE balance_ledger").await
}

pub async fn table_exists(db: &Client, table: &str) -> Result<bool> {
    let row = tokio::time::timeout(
        DB_TIMEOUT,
        db.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]),
    )
    .await
    .map_err(|_| anyhow!("to_regclass timed out"))??;
    Ok(row.get(0))
}

/// After the bulk load: fresh statistics and a checkpoint now, so neither
/// autovacuum's first pass over the new rows nor a checkpoint's flush of
/// them lands in the measured run (a live database is not freshly loaded).
///
/// Only tables that hold rows are vacuumed. A table vacuumed while empty is
/// recorded as known to be empty, and a plan made early in the run (a
/// foreign-key check on `orders`, say) then scans the whole table on every
/// use as it grows, until an ANALYZE replans it: on a machine without
/// autovacuum, for the rest of the run. A live shop's tables are neither
/// empty nor known to be; one never vacuumed is estimated at ten pages at
/// least, which plans by index as a live table would.
pub async fn settle(db: &Client) -> Result<()> {
    let tables = tokio::time::timeout(
        DB_TIMEOUT,
        db.query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname = 'public'",
            &[],
        ),
    )
    .await
    .map_err(|_| anyhow!("listing tables timed out"))??;
    for row in tables {
        let table: String = row.get(0);
        let found = tokio::time::timeout(
            DB_TIMEOUT,
            db.query_one(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), &[]),
        )
        .await
        .map_err(|_| anyhow!("reading {table} timed out"))??;
        if found.get::<_, bool>(0) {
            let sql = format!("VACUUM (ANALYZE) {table}");
            tokio::time::timeout(Duration::from_secs(120), db.batch_execute(&sql))
                .await
                .map_err(|_| anyhow!("{sql} timed out"))?
                .with_context(|| sql.clone())?;
        }
    }
    for sql in ["CHECKPOINT"] {
        tokio::time::timeout(Duration::from_secs(120), db.batch_execute(sql))
            .await
            .map_err(|_| anyhow!("{sql} timed out"))?
            .with_context(|| sql.to_owned())?;
    }
    Ok(())
}

/// Snapshot of every product's stock, for the conservation rule.
pub async fn snapshot_stock(db: &Client) -> Result<bool> {
    if !table_exists(db, "products").await? {
        return Ok(false);
    }
    exec(db, crate::rules::SNAPSHOT_STOCK_SQL).await?;
    Ok(true)
}

/// Adds products created after the snapshot (with their stock, before any
/// order) to it.
pub async fn snapshot_new_stock(db: &Client) -> Result<()> {
    exec(db, crate::rules::SNAPSHOT_NEW_STOCK_SQL).await
}

/// Deletes every Redis key under `prefix` (SCAN + UNLINK); returns how many.
pub async fn clear_redis(url: &str, prefix: &str) -> Result<u64> {
    let client = redis::Client::open(url).with_context(|| format!("redis URL {url}"))?;
    let mut con = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| anyhow!("connecting to Redis at {url} timed out"))??;
    let pattern = format!("{prefix}*");
    let mut cursor: u64 = 0;
    let mut deleted = 0u64;
    for _ in 0..100_000 {
        let (next, keys): (u64, Vec<String>) = tokio::time::timeout(
            Duration::from_secs(10),
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut con),
        )
        .await
        .map_err(|_| anyhow!("Redis SCAN timed out"))??;
        if !keys.is_empty() {
            let n: u64 = tokio::time::timeout(
                Duration::from_secs(10),
                redis::cmd("UNLINK").arg(&keys).query_async(&mut con),
            )
            .await
            .map_err(|_| anyhow!("Redis UNLINK timed out"))??;
            deleted += n;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(deleted);
        }
    }
    bail!("Redis SCAN did not finish")
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenEntry {
    pub user_id: i64,
    pub token: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct OrderRef {
    pub id: Value,
    /// Index into the tokens file of the order's owner.
    pub u: usize,
}

/// The HTTP contract as the seeding sees it.
pub struct Api {
    client: reqwest::Client,
    bases: Vec<String>,
    admin_key: String,
}

impl Api {
    pub fn new(bases: Vec<String>, admin_key: String) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(SEED_CONCURRENCY)
            .build()?;
        Ok(Self {
            client,
            bases,
            admin_key,
        })
    }

    fn url(&self, i: usize, path: &str) -> String {
        let base = &self.bases[i % self.bases.len().max(1)];
        format!("{base}{path}")
    }

    /// Polls `GET {base}/health/ready` until 200 or `limit`; gives up early
    /// when `child` (the process that should answer) has exited.
    pub async fn wait_ready(
        &self,
        base: &str,
        limit: Duration,
        mut child: Option<&mut crate::procs::Managed>,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut last = String::from("no answer");
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = child.as_mut().and_then(|c| c.exited()) {
                bail!("the process exited ({status}) before it was ready");
            }
            match self
                .client
                .get(format!("{base}/health/ready"))
                .timeout(Duration::from_secs(3))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("{base}/health/ready not 200 within {limit:?} (last: {last})")
    }

    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let r = self
            .client
            .get(self.url(0, path))
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = r.status();
        if !status.is_success() {
            bail!("GET {path}: {status}");
        }
        r.json()
            .await
            .with_context(|| format!("GET {path}: not JSON"))
    }

    /// POST with retries on 503 and connection errors (bounded).
    async fn post(
        &self,
        i: usize,
        path: &str,
        body: &Value,
        token: Option<&str>,
        admin: bool,
        idem: bool,
    ) -> Result<Value> {
        let mut last = String::new();
        for attempt in 0..5u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            let mut req = self
                .client
                .post(self.url(i + attempt as usize, path))
                .json(body);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if admin {
                req = req.header("X-Admin-Key", &self.admin_key);
            }
            if idem {
                req = req.header("Idempotency-Key", format!("loadtest-seed-{i}-{path}"));
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    return r
                        .json()
                        .await
                        .with_context(|| format!("POST {path}: answer is not JSON"));
                }
                Ok(r) if r.status().as_u16() == 503 => {
                    last = format!("503 {}", r.text().await.unwrap_or_default())
                }
                Ok(r) => {
                    let status = r.status();
                    bail!(
                        "POST {path}: {status} {}",
                        r.text().await.unwrap_or_default()
                    );
                }
                Err(e) => last = e.to_string(),
            }
        }
        bail!("POST {path}: gave up after 5 attempts (last: {last})")
    }

    /// A token for each of users 1..=n, through `POST /api/v1/auth/token`.
    pub async fn mint_tokens(&self, n: usize) -> Result<Vec<TokenEntry>> {
        let results: Vec<Result<TokenEntry>> = stream::iter(1..=n)
            .map(|id| async move {
                let v = self
                    .post(
                        id,
                        "/api/v1/auth/token",
                        &json!({ "user_id": id }),
                        None,
                        true,
                        false,
                    )
                    .await?;
                let token = v
                    .get("token")
                    .and_then(Value::as_str)
                    .ok_or_else(|| anyhow!("POST /api/v1/auth/token: no token in {v}"))?;
                Ok(TokenEntry {
                    user_id: id as i64,
                    token: token.to_owned(),
                })
            })
            .buffer_unordered(SEED_CONCURRENCY)
            .collect()
            .await;
        let mut tokens = results.into_iter().collect::<Result<Vec<_>>>()?;
        tokens.sort_by_key(|t| t.user_id);
        Ok(tokens)
    }

    /// `count` products through `POST /admin/products`; their ids.
    pub async fn create_products(
        &self,
        count: usize,
        stock: u64,
        prefix: &str,
    ) -> Result<Vec<Value>> {
        let results: Vec<Result<Value>> = stream::iter(0..count)
            .map(|i| async move {
                let body = json!({
                    "name": format!("{prefix} {i:05}"),
                    "price": 1000 + (i % 50) as i64 * 100,
                    "stock": stock,
                    "description": "seeded by the load-test runner",
                });
                let v = self
                    .post(i, "/admin/products", &body, None, true, false)
                    .await?;
                v.get("id")
                    .cloned()
                    .ok_or_else(|| anyhow!("POST /admin/products: no id in {v}"))
            })
            .buffered(SEED_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// One coupon, open now, through `POST /admin/coupons`; its id.
    pub async fn create_coupon(&self, quantity: u64) -> Result<Value> {
        let now = chrono::Utc::now();
        let body = json!({
            "name": "load-test first-come coupon",
            "discount_amount": 1000,
            "quantity": quantity,
            "opens_at": (now - chrono::Duration::minutes(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "expires_at": (now + chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        let v = self
            .post(0, "/admin/coupons", &body, None, true, false)
            .await?;
        v.get("id")
            .cloned()
            .ok_or_else(|| anyhow!("POST /admin/coupons: no id in {v}"))
    }

    /// `count` pending orders (one unit of a product each), owners spread
    /// over the users, through `POST /api/v1/orders`.
    pub async fn create_orders(
        &self,
        tokens: &[TokenEntry],
        products: &[Value],
        count: usize,
    ) -> Result<Vec<OrderRef>> {
        if tokens.is_empty() || products.is_empty() {
            bail!("orders need users and products");
        }
        let results: Vec<Result<OrderRef>> = stream::iter(0..count)
            .map(|i| async move {
                let u = i % tokens.len();
                let product = &products[(i * 7919) % products.len()];
                let body = json!({ "items": [{ "product_id": product, "quantity": 1 }] });
                let v = self
                    .post(
                        i,
                        "/api/v1/orders",
                        &body,
                        Some(&tokens[u].token),
                        false,
                        true,
                    )
                    .await?;
                let id = v
                    .get("id")
                    .cloned()
                    .ok_or_else(|| anyhow!("POST /api/v1/orders: no id in {v}"))?;
                Ok(OrderRef { id, u })
            })
            .buffer_unordered(SEED_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            with_database(
                "postgres://postgres@127.0.0.1:5432/postgres",
                "commerce_load"
            )
            .unwrap(),
            "postgres://postgres@127.0.0.1:5432/commerce_load"
        );
        assert_eq!(
            with_database("postgres://u:p@db:5433/x?connect_timeout=5", "y").unwrap(),
            "postgres://u:p@db:5433/y?connect_timeout=5"
        );
        assert!(with_database("redis://x", "y").is_err());
    }
}
