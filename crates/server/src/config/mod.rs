//! Layered configuration: built-in defaults, then an optional TOML file
//! (`COMMERCE_CONFIG=path`), then `COMMERCE__SECTION__KEY` environment
//! variables. Validated once at start with messages that name the bad key.
//!
//! Each setting lives in one place: a capability's section is that crate's
//! own config type (`[orders]` is `commerce_orders::OrderConfig`, with its
//! defaults and checks); the sections below are the server's own, each
//! with its `Default`. The README's table is checked against these
//! defaults by a test.

mod sections;

pub use sections::*;

use commerce_domain::setting::InvalidSetting;

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// Used when no admin key / token secret is configured (development only).
pub const DEV_ADMIN_KEY: &str = "dev-admin-key";
pub const DEV_TOKEN_SECRET: &str = "dev-token-secret-change-me";

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub kafka: KafkaSettings,
    pub auth: AuthSettings,
    pub data_platform: UrlSetting,
    pub notification: UrlSetting,
    pub events: EventSettings,
    pub alerts: AlertSettings,
    pub log: LogSettings,
    pub breaker: BreakerSettings,
    pub coupons: commerce_coupons::CouponConfig,
    pub catalog: commerce_catalog::CatalogConfig,
    pub orders: commerce_orders::OrderConfig,
    pub queue: commerce_queue::QueueConfig,
    pub rate_limit: RateLimitSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    /// A crate's own check of its section, its key named in full.
    fn section(section: &str, e: InvalidSetting) -> Self {
        Self::Invalid {
            key: format!("{section}.{}", e.key),
            message: e.message,
        }
    }
}

impl Settings {
    /// Loads from the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var("COMMERCE_CONFIG").ok();
        Self::load_from(file.as_deref(), std::env::vars())
    }

    /// Loads from an optional file and the given environment (testable).
    pub fn load_from(
        file: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("COMMERCE__"))
            .collect();
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(config::File::with_name(path).required(true));
        }
        let settings: Settings = builder
            .add_source(
                config::Environment::with_prefix("COMMERCE")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(env)),
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_addresses()?;
        self.validate_waits()?;
        self.validate_counts()?;
        self.coupons
            .validate()
            .map_err(|e| ConfigError::section("coupons", e))?;
        self.orders
            .validate()
            .map_err(|e| ConfigError::section("orders", e))?;
        self.catalog
            .validate()
            .map_err(|e| ConfigError::section("catalog", e))?;
        self.queue
            .validate()
            .map_err(|e| ConfigError::section("queue", e))?;
        self.validate_auth()?;
        self.validate_limits()
    }

    /// Every address: listen, stores, peers.
    fn validate_addresses(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                message,
            })
        };
        if self.http.addr.parse::<SocketAddr>().is_err() {
            return bad(
                "http.addr",
                format!("`{}` is not host:port", self.http.addr),
            );
        }
        match url::Url::parse(&self.database.url) {
            Ok(u) if u.scheme() == "postgres" || u.scheme() == "postgresql" => {}
            _ => return bad("database.url", "must be a postgres:// URL".into()),
        }
        if self.database.pool_size == 0 {
            return bad("database.pool_size", "must be at least 1".into());
        }
        for node in self.redis.cluster_node_urls() {
            if redis::Client::open(node.as_str()).is_err() {
                return bad(
                    "redis.cluster_nodes",
                    format!("`{node}` is not a Redis address"),
                );
            }
        }
        // A brace in the prefix would take over every key's hash tag (the
        // first `{…}` of a key picks its Cluster slot).
        if self.redis.key_prefix.contains(['{', '}']) {
            return bad("redis.key_prefix", "must not contain `{` or `}`".into());
        }
        if let Some(replica) = &self.database.replica_url {
            match url::Url::parse(replica) {
                Ok(u) if u.scheme() == "postgres" || u.scheme() == "postgresql" => {}
                _ => return bad("database.replica_url", "must be a postgres:// URL".into()),
            }
            if self.database.replica_pool_size == 0 {
                return bad("database.replica_pool_size", "must be at least 1".into());
            }
        }
        match url::Url::parse(&self.redis.url) {
            Ok(u) if u.scheme() == "redis" || u.scheme() == "rediss" => {}
            _ => return bad("redis.url", "must be a redis:// URL".into()),
        }
        for (key, v) in [
            ("data_platform.url", &self.data_platform.url),
            ("notification.url", &self.notification.url),
            ("alerts.webhook_url", &self.alerts.webhook_url),
        ] {
            if let Some(u) = v {
                if !matches!(url::Url::parse(u), Ok(p) if p.scheme() == "http" || p.scheme() == "https")
                {
                    return bad(key, format!("`{u}` is not an http(s) URL"));
                }
            }
        }
        Ok(())
    }

    /// Every wait is bounded: none may be zero.
    fn validate_waits(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                message,
            })
        };
        for (key, v) in [
            ("database.pool_wait_ms", self.database.pool_wait_ms),
            (
                "database.connect_timeout_ms",
                self.database.connect_timeout_ms,
            ),
            (
                "database.statement_timeout_ms",
                self.database.statement_timeout_ms,
            ),
            ("database.lock_timeout_ms", self.database.lock_timeout_ms),
            ("redis.connect_timeout_ms", self.redis.connect_timeout_ms),
            ("redis.response_timeout_ms", self.redis.response_timeout_ms),
            ("breaker.open_ms", self.breaker.open_ms),
            ("breaker.max_open_ms", self.breaker.max_open_ms),
            ("kafka.delivery_timeout_ms", self.kafka.delivery_timeout_ms),
            ("kafka.probe_interval_ms", self.kafka.probe_interval_ms),
            ("kafka.session_timeout_ms", self.kafka.session_timeout_ms),
            (
                "events.outbox_degraded_age_secs",
                self.events.outbox_degraded_age_secs,
            ),
            ("events.http_timeout_ms", self.events.http_timeout_ms),
            ("events.relay_idle_ms", self.events.relay_idle_ms),
            ("events.relay_max_delay_ms", self.events.relay_max_delay_ms),
        ] {
            if v == 0 {
                return bad(key, "must be greater than 0 (every wait is bounded)".into());
            }
        }
        Ok(())
    }

    /// Counts of the events, Kafka and breaker sections.
    fn validate_counts(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                message,
            })
        };
        if self.events.max_attempts == 0 {
            return bad("events.max_attempts", "must be at least 1".into());
        }
        if self.events.relay_batch <= 0 {
            return bad("events.relay_batch", "must be positive".into());
        }
        if self.kafka.partitions <= 0 {
            return bad("kafka.partitions", "must be positive".into());
        }
        if self
            .kafka
            .brokers
            .as_deref()
            .is_some_and(|b| b.trim().is_empty())
        {
            return bad("kafka.brokers", "must not be empty when set".into());
        }
        if self.breaker.failure_threshold == 0 {
            return bad("breaker.failure_threshold", "must be at least 1".into());
        }
        if self.breaker.half_open_probes == 0 {
            return bad("breaker.half_open_probes", "must be at least 1".into());
        }
        Ok(())
    }

    /// Request limits, body size, log format.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                message,
            })
        };
        let r = &self.rate_limit;
        if r.enabled {
            for (key, v) in [
                ("rate_limit.window_secs", r.window_secs),
                ("rate_limit.money", u64::from(r.money)),
                ("rate_limit.stock", u64::from(r.stock)),
                ("rate_limit.queue", u64::from(r.queue)),
                ("rate_limit.rooms", u64::from(r.rooms)),
                ("rate_limit.rooms_window_secs", r.rooms_window_secs),
            ] {
                if v == 0 {
                    return bad(
                        key,
                        "must be at least 1 (or rate_limit.enabled = false)".into(),
                    );
                }
            }
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.http.body_limit_bytes) {
            return bad(
                "http.body_limit_bytes",
                "must be between 1024 and 16777216".into(),
            );
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return bad("log.format", "must be `text` or `json`".into());
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        use secrecy::ExposeSecret;
        let bad = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                message: message.to_owned(),
            })
        };
        let a = &self.auth;
        if a.token_ttl_secs <= 0 {
            return bad("auth.token_ttl_secs", "must be positive");
        }
        if a.production {
            match &a.admin_key {
                Some(k) if k.expose_secret() != DEV_ADMIN_KEY && k.expose_secret().len() >= 16 => {}
                _ => return bad(
                    "auth.admin_key",
                    "auth.production is set: give an admin key of your own, 16 characters or more",
                ),
            }
            match &a.token_secret {
                Some(k)
                    if k.expose_secret() != DEV_TOKEN_SECRET && k.expose_secret().len() >= 32 => {}
                _ => {
                    return bad(
                        "auth.token_secret",
                        "auth.production is set: give a token secret of your own, 32 characters or more",
                    )
                }
            }
        }
        match (&a.previous_token_secret, &a.previous_token_secret_until) {
            (None, None) => {}
            (Some(_), Some(until)) => {
                if chrono::DateTime::parse_from_rfc3339(until).is_err() {
                    return bad(
                        "auth.previous_token_secret_until",
                        "must be an RFC 3339 time",
                    );
                }
            }
            _ => {
                return bad(
                    "auth.previous_token_secret_until",
                    "set together with auth.previous_token_secret",
                )
            }
        }
        if a.user_cache_secs == 0 {
            return bad("auth.user_cache_secs", "must be at least 1");
        }
        Ok(())
    }

    /// The end of the previous token secret's rotation window, if any.
    pub fn previous_secret_until(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.auth
            .previous_token_secret_until
            .as_deref()
            .and_then(|u| chrono::DateTime::parse_from_rfc3339(u).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    }

    pub fn breaker_config(&self, name: &str) -> commerce_resilience::BreakerConfig {
        let b = &self.breaker;
        let mut cfg = commerce_resilience::BreakerConfig::for_dependency(name);
        cfg.failure_threshold = b.failure_threshold;
        cfg.open_for = Duration::from_millis(b.open_ms);
        cfg.max_open_for = Duration::from_millis(b.max_open_ms.max(b.open_ms));
        cfg.half_open_max_probes = b.half_open_probes;
        if name == commerce_resilience::breaker::REDIS {
            cfg.call_timeout = Duration::from_millis(self.redis.response_timeout_ms);
        }
        cfg
    }

    pub fn redis_config(&self) -> commerce_resilience::RedisConfig {
        let nodes = self.redis.cluster_node_urls();
        let mut cfg = if nodes.is_empty() {
            commerce_resilience::RedisConfig::with_url(&self.redis.url)
        } else {
            commerce_resilience::RedisConfig::cluster(nodes)
        }
        .key_prefix(&self.redis.key_prefix);
        cfg.connect_timeout = Duration::from_millis(self.redis.connect_timeout_ms);
        cfg.response_timeout = Duration::from_millis(self.redis.response_timeout_ms);
        cfg
    }

    pub fn kafka_config(&self) -> Option<commerce_events::kafka::KafkaConfig> {
        let k = &self.kafka;
        k.brokers
            .as_ref()
            .map(|brokers| commerce_events::kafka::KafkaConfig {
                brokers: brokers.clone(),
                topic_prefix: k.topic_prefix.clone(),
                group_prefix: k.group_prefix.clone(),
                delivery_timeout: Duration::from_millis(k.delivery_timeout_ms),
                partitions: k.partitions,
                idempotence: k.idempotence,
                probe_interval: Duration::from_millis(k.probe_interval_ms),
                session_timeout: Duration::from_millis(k.session_timeout_ms),
            })
    }

    /// The `[coupons]` section with the bound on a winner's write, which
    /// follows the database's waits.
    pub fn coupon_config(&self) -> commerce_coupons::CouponConfig {
        commerce_coupons::CouponConfig {
            // Queue, pool checkout and the statement itself, each bounded.
            write_timeout: Duration::from_millis(
                self.database.pool_wait_ms + self.database.statement_timeout_ms + 1000,
            ),
            ..self.coupons.clone()
        }
    }

    /// A pool of one HTTP worker's own (`coupons.worker_io`,
    /// `orders.worker_io`): the database settings with its own size.
    pub fn worker_db_config(&self, pool_size: usize) -> commerce_storage::DbConfig {
        commerce_storage::DbConfig {
            pool_size,
            ..self.db_config()
        }
    }

    /// The read replica's pool: the database settings with its own URL and
    /// size. `None` when no replica is configured.
    pub fn replica_db_config(&self) -> Option<commerce_storage::DbConfig> {
        let url = self.database.replica_url.clone()?;
        Some(commerce_storage::DbConfig {
            url,
            pool_size: self.database.replica_pool_size,
            ..self.db_config()
        })
    }

    pub fn db_config(&self) -> commerce_storage::DbConfig {
        let d = &self.database;
        commerce_storage::DbConfig {
            url: d.url.clone(),
            pool_size: d.pool_size,
            pool_wait: Duration::from_millis(d.pool_wait_ms),
            connect_timeout: Duration::from_millis(d.connect_timeout_ms),
            statement_timeout: Duration::from_millis(d.statement_timeout_ms),
            lock_timeout: Duration::from_millis(d.lock_timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_configuration() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.http.addr, "127.0.0.1:8080");
        assert_eq!(
            s.database.url,
            "postgres://postgres@127.0.0.1:5432/commerce"
        );
        assert_eq!(s.redis.url, "redis://127.0.0.1:6379");
        assert_eq!(s.redis.key_prefix, "");
        assert!(s.kafka.brokers.is_none());
        assert!(s.auth.admin_key.is_none());
    }

    #[test]
    fn environment_overrides() {
        let s = Settings::load_from(
            None,
            env(&[
                ("COMMERCE__HTTP__ADDR", "0.0.0.0:9000"),
                ("COMMERCE__REDIS__KEY_PREFIX", "t1:"),
                ("COMMERCE__DATABASE__POOL_SIZE", "4"),
                ("COMMERCE__KAFKA__BROKERS", "127.0.0.1:9092"),
                // A capability's own section, its durations under their keys.
                ("COMMERCE__ORDERS__TTL_SECS", "7"),
                ("COMMERCE__CATALOG__L1_TTL_MS", "250"),
                ("COMMERCE__QUEUE__FALLBACK_RATE_PER_SEC", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(s.orders.ttl, Duration::from_secs(7));
        assert_eq!(s.catalog.l1_ttl, Duration::from_millis(250));
        assert_eq!(s.queue.fallback_rate_per_sec, 3.0);
        assert_eq!(s.http.addr, "0.0.0.0:9000");
        assert_eq!(s.redis.key_prefix, "t1:");
        assert_eq!(s.database.pool_size, 4);
        assert_eq!(s.kafka.brokers.as_deref(), Some("127.0.0.1:9092"));
    }

    #[test]
    fn replica_is_optional_and_checked() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert!(s.database.replica_url.is_none());
        assert!(s.replica_db_config().is_none());
        let s = Settings::load_from(
            None,
            env(&[
                (
                    "COMMERCE__DATABASE__REPLICA_URL",
                    "postgres://postgres@127.0.0.1:5433/commerce",
                ),
                ("COMMERCE__DATABASE__REPLICA_POOL_SIZE", "4"),
                ("COMMERCE__DATABASE__STATEMENT_TIMEOUT_MS", "1234"),
            ]),
        )
        .unwrap();
        let r = s.replica_db_config().unwrap();
        assert_eq!(r.url, "postgres://postgres@127.0.0.1:5433/commerce");
        assert_eq!(r.pool_size, 4);
        assert_eq!(r.statement_timeout, Duration::from_millis(1234));
        assert_eq!(
            s.db_config().url,
            "postgres://postgres@127.0.0.1:5432/commerce"
        );
        for (key, value) in [
            ("COMMERCE__DATABASE__REPLICA_URL", "redis://x"),
            ("COMMERCE__DATABASE__REPLICA_POOL_SIZE", "0"),
        ] {
            let mut vars = vec![(key, value)];
            if !key.ends_with("REPLICA_URL") {
                vars.push(("COMMERCE__DATABASE__REPLICA_URL", "postgres://h/db"));
            }
            let err = Settings::load_from(None, env(&vars))
                .unwrap_err()
                .to_string();
            let named = if key.ends_with("REPLICA_URL") {
                "database.replica_url"
            } else {
                "database.replica_pool_size"
            };
            assert!(err.contains(named), "{err}");
        }
    }

    #[test]
    fn queue_section_defaults_and_checks() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        let q = s.queue.clone();
        assert_eq!(
            (q.admit_per_tick, q.tick, q.admitter),
            (100, Duration::from_secs(1), true)
        );
        assert!(!q.protect_coupon_issue && !q.protect_order_create);
        assert_eq!(q.coupon_room, commerce_queue::CouponRoom::Store);
        let s = Settings::load_from(
            None,
            env(&[
                ("COMMERCE__QUEUE__PROTECT_ORDER_CREATE", "true"),
                ("COMMERCE__QUEUE__COUPON_ROOM", "coupon"),
            ]),
        )
        .unwrap();
        assert!(s.queue.protect_order_create);
        assert_eq!(s.queue.coupon_room, commerce_queue::CouponRoom::PerCoupon);
        for (key, value, named) in [
            (
                "COMMERCE__QUEUE__ADMIT_PER_TICK",
                "0",
                "queue.admit_per_tick",
            ),
            ("COMMERCE__QUEUE__COUPON_ROOM", "sale", "queue.coupon_room"),
            (
                "COMMERCE__QUEUE__WAITING_IDLE_SECS",
                "60",
                "queue.waiting_idle_secs",
            ),
            (
                "COMMERCE__QUEUE__FALLBACK_RATE_PER_SEC",
                "0",
                "queue.fallback_rate_per_sec",
            ),
        ] {
            let err = Settings::load_from(None, env(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{err}");
        }
    }

    #[test]
    fn production_refuses_development_secrets() {
        let err = Settings::load_from(None, env(&[("COMMERCE__AUTH__PRODUCTION", "true")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.admin_key"), "{err}");
        let err = Settings::load_from(
            None,
            env(&[
                ("COMMERCE__AUTH__PRODUCTION", "true"),
                ("COMMERCE__AUTH__ADMIN_KEY", "a-real-admin-key-of-ours"),
                ("COMMERCE__AUTH__TOKEN_SECRET", DEV_TOKEN_SECRET),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("auth.token_secret"), "{err}");
        let ok = Settings::load_from(
            None,
            env(&[
                ("COMMERCE__AUTH__PRODUCTION", "true"),
                ("COMMERCE__AUTH__ADMIN_KEY", "a-real-admin-key-of-ours"),
                (
                    "COMMERCE__AUTH__TOKEN_SECRET",
                    "0123456789abcdef0123456789abcdef",
                ),
            ]),
        );
        assert!(ok.is_ok());
        let err = Settings::load_from(
            None,
            env(&[("COMMERCE__AUTH__PREVIOUS_TOKEN_SECRET", "old")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("previous_token_secret_until"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = Settings::load_from(None, env(&[("COMMERCE__HTTP__ADDR", "nope")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.addr"), "{err}");
        let err = Settings::load_from(None, env(&[("COMMERCE__DATABASE__POOL_SIZE", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pool_size"), "{err}");
        let err = Settings::load_from(None, env(&[("COMMERCE__DATABASE__POOL_WAIT_MS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.pool_wait_ms"), "{err}");
    }

    /// Every setting has one row in the README's table, and the default
    /// the README states is the one the code uses.
    #[test]
    fn readme_table_matches_the_defaults() {
        let readme = include_str!("../../../../README.md");
        let rows: std::collections::BTreeMap<String, String> = readme
            .lines()
            .filter_map(|line| {
                let mut cells = line.split('|').map(str::trim).skip(1);
                let var = cells
                    .next()?
                    .strip_prefix("`COMMERCE__")?
                    .strip_suffix('`')?;
                Some((var.to_owned(), cells.next()?.to_owned()))
            })
            .collect();
        let defaults = serde_json::to_value(Settings::default()).unwrap();
        let mut keys = std::collections::BTreeSet::new();
        for (section, fields) in defaults.as_object().unwrap() {
            for (key, value) in fields.as_object().unwrap() {
                let var = format!("{section}__{key}").to_uppercase();
                let cell = rows
                    .get(&var)
                    .unwrap_or_else(|| panic!("README has no row for COMMERCE__{var}"));
                let stated = cell.strip_prefix('`').and_then(|c| c.split('`').next());
                let agrees = match (value, stated) {
                    (serde_json::Value::Null, _) if cell.starts_with("unset") => true,
                    // The development fallbacks the start-up warning names.
                    (serde_json::Value::Null, Some(v)) => {
                        var == "AUTH__ADMIN_KEY" && v == DEV_ADMIN_KEY
                    }
                    (serde_json::Value::Null, None) => {
                        var == "AUTH__TOKEN_SECRET" && cell.contains("development secret")
                    }
                    (serde_json::Value::String(v), _) if v.is_empty() => cell.starts_with("empty"),
                    (serde_json::Value::String(v), Some(s)) => v == s,
                    (serde_json::Value::Number(n), Some(s)) => n.as_f64() == s.parse::<f64>().ok(),
                    (serde_json::Value::Bool(b), Some(s)) => b.to_string() == s,
                    _ => false,
                };
                assert!(
                    agrees,
                    "COMMERCE__{var}: the README says {cell:?}, the default is {value}"
                );
                keys.insert(var);
            }
        }
        let extra: Vec<_> = rows.keys().filter(|k| !keys.contains(*k)).collect();
        assert!(extra.is_empty(), "README rows for no setting: {extra:?}");
    }
}
