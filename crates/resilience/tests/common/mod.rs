//! Shared helpers for the integration tests: real Redis and PostgreSQL,
//! faults through the chaos proxy, a key prefix and database per test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../testkit/src/chaos.rs"]
pub mod chaos;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use commerce_resilience::{AlertSink, Breaker, BreakerConfig, RedisClient, RedisConfig};
use commerce_storage::{DbConfig, DbPool};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};

pub const REDIS_ADDR: &str = "127.0.0.1:6379";
pub const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

pub fn redis_upstream() -> SocketAddr {
    REDIS_ADDR.parse().unwrap()
}

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("res_test:{}:", uuid::Uuid::new_v4().simple())
}

pub fn breaker_config(
    threshold: u32,
    open_for: Duration,
    probes: usize,
    timeout: Duration,
) -> BreakerConfig {
    BreakerConfig {
        failure_threshold: threshold,
        open_for,
        max_open_for: open_for,
        half_open_max_probes: probes,
        call_timeout: timeout,
    }
}

/// A client with its own breaker talking to Redis at `addr`.
pub fn client(addr: SocketAddr, prefix: &str, config: BreakerConfig) -> RedisClient {
    let breaker = Breaker::new("redis", config, AlertSink::log_only());
    let cfg = RedisConfig::with_url(format!("redis://{addr}")).key_prefix(prefix);
    RedisClient::new(&cfg, breaker).unwrap()
}

/// Waits until the raw connection (outside the breaker) answers again, so
/// a test measures the breaker rather than the reconnect.
pub async fn wait_for_raw_connection(client: &RedisClient) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = client.connection();
        let ok = tokio::time::timeout(
            Duration::from_millis(500),
            redis::cmd("PING").query_async::<String>(&mut c),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "redis connection did not come back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deletes every key under `prefix` (bypassing any breaker).
pub async fn cleanup_redis(prefix: &str) {
    let Ok(client) = redis::Client::open(format!("redis://{REDIS_ADDR}")) else {
        return;
    };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut c)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut c).await;
    }
}

/// A database of the test's own, dropped by [`TestDb::drop_db`].
pub struct TestDb {
    pub name: String,
    pub config: DbConfig,
}

impl TestDb {
    pub async fn create() -> Self {
        let name = format!("res_test_{}", uuid::Uuid::new_v4().simple());
        let config = DbConfig::with_url(format!("{PG_SERVER}/{name}"));
        commerce_storage::ensure_database(&config).await.unwrap();
        Self { name, config }
    }

    pub fn pool(&self, size: usize) -> DbPool {
        let mut cfg = self.config.clone();
        cfg.pool_size = size;
        cfg.pool_wait = Duration::from_secs(10);
        commerce_storage::build_pool(&cfg).unwrap()
    }

    pub async fn batch(&self, sql: &str) {
        let mut conn = commerce_storage::connect(&self.config).await.unwrap();
        conn.batch_execute(sql).await.unwrap();
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct V {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            v: i64,
        }
        let mut conn = commerce_storage::connect(&self.config).await.unwrap();
        diesel::sql_query(sql)
            .get_result::<V>(&mut conn)
            .await
            .unwrap()
            .v
    }

    pub async fn drop_db(self) {
        drop(self);
    }
}

/// Drops the database even when the test panicked, on a thread of its own
/// (Drop cannot await, and the test's runtime may be shutting down).
impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let dropper = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let admin = DbConfig::with_url(format!("{PG_SERVER}/postgres"));
                let mut conn = commerce_storage::connect(&admin).await.unwrap();
                let sql = format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    commerce_storage::quote_ident(&name)
                );
                conn.batch_execute(&sql).await.unwrap();
            });
        });
        let _ = dropper.join();
    }
}
