//! Test kit: starts the real server on port 0 against a database of its own
//! (copied from a migrated template, dropped afterwards) and a Redis key
//! prefix of its own, so integration tests run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod broker;
pub mod chaos;
pub mod db;
pub mod fake_http;
pub mod pg_server;
pub mod redis_cluster;
pub mod redis_server;

use actix_web::dev::ServerHandle;
use actix_web::web;
use commerce_server::state::AppState;
use commerce_server::{Application, Settings};
use serde_json::Value;
use std::sync::Arc;
use uuid::Uuid;

pub use db::TestDb;

pub const ADMIN_KEY: &str = "test-admin-key";
pub const TOKEN_SECRET: &str = "test-token-secret";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Routes that refuse a request without an `Idempotency-Key` (400
/// `idempotency_key_required`): a naive retry there would move money or
/// stock twice.
pub const KEY_REQUIRED: &[&str] = &["/api/v1/orders", "/api/v1/me/balance/charge"];

/// Base settings for a test instance: port 0, the given database, a unique
/// Redis prefix, two workers, quiet logs.
pub fn test_settings(db_url: &str, redis_prefix: &str) -> Settings {
    let env = [
        ("COMMERCE__HTTP__ADDR", "127.0.0.1:0"),
        ("COMMERCE__HTTP__WORKERS", "2"),
        ("COMMERCE__HTTP__SHUTDOWN_TIMEOUT_SECS", "1"),
        ("COMMERCE__DATABASE__URL", db_url),
        ("COMMERCE__DATABASE__POOL_SIZE", "12"),
        // Generous waits: many instances share two cores during the suite;
        // tests that exercise a timeout set their own.
        ("COMMERCE__DATABASE__POOL_WAIT_MS", "5000"),
        ("COMMERCE__REDIS__RESPONSE_TIMEOUT_MS", "1500"),
        ("COMMERCE__REDIS__KEY_PREFIX", redis_prefix),
        ("COMMERCE__AUTH__ADMIN_KEY", ADMIN_KEY),
        ("COMMERCE__AUTH__TOKEN_SECRET", TOKEN_SECRET),
        ("COMMERCE__LOG__LEVEL", "warn"),
        // Tests drive single users hard; the limit's own test turns it on.
        ("COMMERCE__RATE_LIMIT__ENABLED", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    Settings::load_from(None, env).expect("test settings")
}

/// Polls `check` every 20 ms until it holds; how long that took. Fails the
/// test when `deadline` passes first.
pub async fn wait_until<F, Fut>(
    deadline: std::time::Duration,
    what: &str,
    mut check: F,
) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < deadline,
            "timed out waiting for {what} ({deadline:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// One running server instance.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub state: web::Data<AppState>,
    pub db: Arc<TestDb>,
    pub redis_prefix: String,
    handle: ServerHandle,
}

#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: i64,
    pub token: String,
}

impl TestApp {
    /// A fresh database, a fresh Redis prefix, default settings.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(customize: impl FnOnce(&mut Settings)) -> Self {
        let db = Arc::new(TestDb::create().await);
        let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
        Self::spawn_on(db, &prefix, customize).await
    }

    /// Another instance sharing this one's database and Redis prefix (a
    /// second replica behind the balancer).
    pub async fn sibling(&self, customize: impl FnOnce(&mut Settings)) -> Self {
        Self::spawn_on(self.db.clone(), &self.redis_prefix, customize).await
    }

    pub async fn spawn_on(
        db: Arc<TestDb>,
        prefix: &str,
        customize: impl FnOnce(&mut Settings),
    ) -> Self {
        init_test_tracing();
        let mut settings = test_settings(&db.url, prefix);
        customize(&mut settings);
        let app = Application::build(settings).await.expect("server builds");
        let port = app.port();
        let state = app.state();
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            // Well inside the server's keep-alive: a pooled connection is
            // never reused just as the server closes it.
            .pool_idle_timeout(std::time::Duration::from_secs(20))
            .build()
            .expect("client");
        Self {
            address: format!("http://127.0.0.1:{port}"),
            port,
            client,
            state,
            db,
            redis_prefix: prefix.to_owned(),
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn create_user(&self, name: &str) -> TestUser {
        let res = self
            .client
            .post(self.url("/api/v1/users"))
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .expect("sign up");
        assert_eq!(res.status(), 201, "sign up failed");
        let body: Value = res.json().await.expect("json");
        TestUser {
            id: body["id"].as_i64().expect("id"),
            token: body["token"].as_str().expect("token").to_owned(),
        }
    }

    /// GET with a bearer token; returns status and JSON body (Null if none).
    pub async fn get_json(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.expect("request");
        split(res).await
    }

    /// Charges `user`'s balance by `amount` (a test's setup: it must work).
    pub async fn charge(&self, user: &TestUser, amount: i64) {
        let (s, b) = self
            .post_json(
                "/api/v1/me/balance/charge",
                Some(&user.token),
                None,
                &serde_json::json!({ "amount": amount }),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }

    /// A product made through the admin API (its stock gate loaded).
    pub async fn create_product(&self, name: &str, stock: i64) -> i64 {
        let (s, body) = self
            .admin_post(
                "/admin/products",
                &serde_json::json!({ "name": name, "price": 100, "stock": stock, "description": "d" }),
            )
            .await;
        assert_eq!(s, 201, "{body}");
        body["id"].as_i64().expect("a product id")
    }

    /// A coupon created through the admin API: `quantity` of `discount`,
    /// opening `opens_in_secs` from now (negative: already open), expiring
    /// `expires_in_secs` from now (`None`: never).
    pub async fn create_coupon(
        &self,
        quantity: i64,
        discount: i64,
        opens_in_secs: i64,
        expires_in_secs: Option<i64>,
    ) -> i64 {
        let now = chrono::Utc::now();
        let (s, body) = self
            .admin_post(
                "/admin/coupons",
                &serde_json::json!({
                    "name": "flash",
                    "discount_amount": discount,
                    "quantity": quantity,
                    "opens_at": now + chrono::Duration::seconds(opens_in_secs),
                    "expires_at": expires_in_secs.map(|e| now + chrono::Duration::seconds(e)),
                }),
            )
            .await;
        assert_eq!(s, 201, "{body}");
        body["id"].as_i64().expect("a coupon id")
    }

    /// One unit of `product` ordered by `user` (a fresh idempotency key).
    pub async fn order_one(&self, user: &TestUser, product: i64) -> (u16, Value) {
        self.post_json(
            "/api/v1/orders",
            Some(&user.token),
            None,
            &serde_json::json!({ "items": [{ "product_id": product, "quantity": 1 }] }),
        )
        .await
    }

    /// POST JSON with optional bearer token and idempotency key. On the
    /// routes that require a key ([`KEY_REQUIRED`]) `None` sends a fresh
    /// one, as a client following the docs does; tests of the missing key
    /// build their request by hand.
    pub async fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let key = key.map(str::to_owned).or_else(|| {
            KEY_REQUIRED
                .contains(&path)
                .then(|| Uuid::new_v4().to_string())
        });
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        split(req.send().await.expect("request")).await
    }

    /// POST as admin.
    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let res = self
            .client
            .post(self.url(path))
            .header("X-Admin-Key", ADMIN_KEY)
            .json(body)
            .send()
            .await
            .expect("request");
        split(res).await
    }

    /// Inserts `n` users in one statement and signs their tokens locally
    /// (fast seeding for burst tests).
    pub async fn seed_users(&self, n: usize) -> Vec<TestUser> {
        #[derive(diesel::QueryableByName)]
        struct Id {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            id: i64,
        }
        let mut c = self.db.conn().await;
        let ids: Vec<Id> = diesel_async::RunQueryDsl::load(
            diesel::sql_query("INSERT INTO users (name) SELECT 'user' || g FROM generate_series(1, $1) g RETURNING id")
                .bind::<diesel::sql_types::Integer, _>(i32::try_from(n).expect("n")),
            &mut c,
        )
        .await
        .expect("seed users");
        let signer = commerce_accounts::token::TokenSigner::new(TOKEN_SECRET.as_bytes(), 3600);
        ids.into_iter()
            .map(|r| TestUser {
                id: r.id,
                token: signer
                    .issue(commerce_domain::UserId::from_db(r.id))
                    .expect("token"),
            })
            .collect()
    }

    /// The process's Prometheus text (`GET /metrics`).
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("metrics text")
    }

    /// POST with a bearer token and no body.
    pub async fn post_empty(&self, path: &str, token: &str) -> (u16, Value) {
        let res = self
            .client
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        split(res).await
    }

    /// A Redis connection for assertions and fault injection (keys under
    /// this app's prefix only: other tests share the server).
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(REDIS_URL)
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }

    /// Deletes every key under this app's prefix: the test-scoped
    /// equivalent of FLUSHALL (a real FLUSHALL would hit parallel tests).
    pub async fn flush_prefix(&self) -> usize {
        let mut c = self.redis().await;
        let pattern = format!("{}*", self.redis_prefix);
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .expect("scan");
            if !keys.is_empty() {
                deleted += redis::cmd("DEL")
                    .arg(&keys)
                    .query_async::<usize>(&mut c)
                    .await
                    .expect("del");
            }
            if next == 0 {
                return deleted;
            }
            cursor = next;
        }
    }

    /// GET as admin.
    pub async fn get_json_admin(&self, path: &str) -> (u16, Value) {
        let res = self
            .client
            .get(self.url(path))
            .header("X-Admin-Key", ADMIN_KEY)
            .send()
            .await
            .expect("request");
        split(res).await
    }

    /// Stops accepting, finishing in-flight requests.
    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        // Not awaited: the runtime may be shutting down with the test.
        drop(tokio::spawn(async move { handle.stop(false).await }));
    }
}

pub async fn split(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let bytes = res.bytes().await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

fn init_test_tracing() {
    let level = std::env::var("TEST_LOG").unwrap_or_else(|_| "error".into());
    commerce_server::telemetry::init_tracing("text", &level);
}
