//! Layered configuration: built-in defaults, then an optional TOML file
//! (`COMMERCE_CONFIG=path`), then `COMMERCE__SECTION__KEY` environment
//! variables. Validated once at start with messages that name the bad key.

use secrecy::SecretString;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// Used when no admin key / token secret is configured (development only).
pub const DEV_ADMIN_KEY: &str = "dev-admin-key";
pub const DEV_TOKEN_SECRET: &str = "dev-token-secret-change-me";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub kafka: KafkaSettings,
    pub auth: AuthSettings,
    pub data_platform: UrlSetting,
    pub alerts: AlertSettings,
    pub log: LogSettings,
    pub breaker: BreakerSettings,
    pub coupons: CouponSettings,
}

/// Circuit breaker policy, shared by every dependency's breaker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    /// Consecutive failures that open a breaker.
    pub failure_threshold: u32,
    /// First open period; doubles on each failed probe up to `max_open_ms`.
    pub open_ms: u64,
    pub max_open_ms: u64,
    /// Calls let through at once while half-open.
    pub half_open_probes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponSettings {
    /// Concurrent PostgreSQL-only issues per instance while Redis is out.
    pub fallback_concurrency: usize,
    pub fallback_wait_ms: u64,
    /// How often open coupons' Redis gates are checked against PostgreSQL.
    pub reconcile_interval_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub addr: String,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Seconds in-flight requests get to finish on SIGTERM.
    pub shutdown_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub pool_size: usize,
    pub pool_wait_ms: u64,
    pub connect_timeout_ms: u64,
    pub statement_timeout_ms: u64,
    pub lock_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: String,
    pub key_prefix: String,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub admin_key: Option<SecretString>,
    pub token_secret: Option<SecretString>,
    pub token_ttl_secs: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlSetting {
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    pub webhook_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `commerce_server=debug,info`.
    pub level: String,
}

const DEFAULTS: &str = r#"
[http]
addr = "127.0.0.1:8080"
workers = 0
shutdown_timeout_secs = 30

[database]
url = "postgres://postgres@127.0.0.1:5432/commerce"
pool_size = 32
pool_wait_ms = 2000
connect_timeout_ms = 3000
statement_timeout_ms = 5000
lock_timeout_ms = 3000

[redis]
url = "redis://127.0.0.1:6379"
key_prefix = ""
connect_timeout_ms = 500
response_timeout_ms = 500

[kafka]

[auth]
token_ttl_secs = 86400

[data_platform]

[alerts]

[log]
format = "text"
level = "info"

[breaker]
failure_threshold = 5
open_ms = 2000
max_open_ms = 30000
half_open_probes = 1

[coupons]
fallback_concurrency = 8
fallback_wait_ms = 5000
reconcile_interval_secs = 30
"#;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
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
        let mut builder =
            config::Config::builder().add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
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
        let bad = |key, message: String| Err(ConfigError::Invalid { key, message });
        if self.http.addr.parse::<SocketAddr>().is_err() {
            return bad("http.addr", format!("`{}` is not host:port", self.http.addr));
        }
        match url::Url::parse(&self.database.url) {
            Ok(u) if u.scheme() == "postgres" || u.scheme() == "postgresql" => {}
            _ => return bad("database.url", "must be a postgres:// URL".into()),
        }
        if self.database.pool_size == 0 {
            return bad("database.pool_size", "must be at least 1".into());
        }
        for (key, v) in [
            ("database.pool_wait_ms", self.database.pool_wait_ms),
            ("database.connect_timeout_ms", self.database.connect_timeout_ms),
            ("database.statement_timeout_ms", self.database.statement_timeout_ms),
            ("database.lock_timeout_ms", self.database.lock_timeout_ms),
            ("redis.connect_timeout_ms", self.redis.connect_timeout_ms),
            ("redis.response_timeout_ms", self.redis.response_timeout_ms),
            ("breaker.open_ms", self.breaker.open_ms),
            ("breaker.max_open_ms", self.breaker.max_open_ms),
            ("coupons.fallback_wait_ms", self.coupons.fallback_wait_ms),
            ("coupons.reconcile_interval_secs", self.coupons.reconcile_interval_secs),
        ] {
            if v == 0 {
                return bad(key, "must be greater than 0 (every wait is bounded)".into());
            }
        }
        match url::Url::parse(&self.redis.url) {
            Ok(u) if u.scheme() == "redis" || u.scheme() == "rediss" => {}
            _ => return bad("redis.url", "must be a redis:// URL".into()),
        }
        for (key, v) in [
            ("data_platform.url", &self.data_platform.url),
            ("alerts.webhook_url", &self.alerts.webhook_url),
        ] {
            if let Some(u) = v {
                if !matches!(url::Url::parse(u), Ok(p) if p.scheme() == "http" || p.scheme() == "https") {
                    return bad(key, format!("`{u}` is not an http(s) URL"));
                }
            }
        }
        if self.breaker.failure_threshold == 0 {
            return bad("breaker.failure_threshold", "must be at least 1".into());
        }
        if self.breaker.half_open_probes == 0 {
            return bad("breaker.half_open_probes", "must be at least 1".into());
        }
        if self.coupons.fallback_concurrency == 0 {
            return bad("coupons.fallback_concurrency", "must be at least 1".into());
        }
        if self.auth.token_ttl_secs <= 0 {
            return bad("auth.token_ttl_secs", "must be positive".into());
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return bad("log.format", "must be `text` or `json`".into());
        }
        Ok(())
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
        let mut cfg = commerce_resilience::RedisConfig::with_url(&self.redis.url).key_prefix(&self.redis.key_prefix);
        cfg.connect_timeout = Duration::from_millis(self.redis.connect_timeout_ms);
        cfg.response_timeout = Duration::from_millis(self.redis.response_timeout_ms);
        cfg
    }

    pub fn coupon_config(&self) -> commerce_coupons::CouponConfig {
        commerce_coupons::CouponConfig {
            fallback_concurrency: self.coupons.fallback_concurrency,
            fallback_wait: Duration::from_millis(self.coupons.fallback_wait_ms),
            ..Default::default()
        }
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
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_need_no_configuration() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.http.addr, "127.0.0.1:8080");
        assert_eq!(s.database.url, "postgres://postgres@127.0.0.1:5432/commerce");
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
            ]),
        )
        .unwrap();
        assert_eq!(s.http.addr, "0.0.0.0:9000");
        assert_eq!(s.redis.key_prefix, "t1:");
        assert_eq!(s.database.pool_size, 4);
        assert_eq!(s.kafka.brokers.as_deref(), Some("127.0.0.1:9092"));
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
}
