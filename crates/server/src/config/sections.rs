//! The server's own sections of the configuration (a capability's section
//! is its crate's config type): each setting once, with its default.

use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};
use std::time::Duration;

/// Per-user request limits (`[rate_limit]`) on the routes that move money
/// (charge, payment), stock (order create and cancel, coupon issue) and on
/// waiting-room entry. Counted in Redis (one window per user and class,
/// shared by every instance); while Redis is out, by this instance alone.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Off: no limit at all (load tests that drive few users hard).
    pub enabled: bool,
    /// The window the counts below are per.
    pub window_secs: u64,
    /// Charges and payments per user per window.
    pub money: u32,
    /// Order creations and cancellations and coupon issues per user per window.
    pub stock: u32,
    /// Waiting-room entries per user per window.
    pub queue: u32,
    /// Entries into coupon or sale rooms per user per `rooms_window_secs`:
    /// one user cannot open the room slots (`queue.max_rooms`) others need.
    pub rooms: u32,
    pub rooms_window_secs: u64,
}

/// Circuit breaker policy, shared by every dependency's breaker.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Consecutive failures that open a breaker.
    pub failure_threshold: u32,
    /// First open period; doubles on each failed probe up to `max_open_ms`.
    pub open_ms: u64,
    pub max_open_ms: u64,
    /// Calls let through at once while half-open.
    pub half_open_probes: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    pub addr: String,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Seconds in-flight requests get to finish on SIGTERM.
    pub shutdown_timeout_secs: u64,
    /// Seconds an idle client connection is kept open. Longer than the
    /// balancer's upstream idle timeout, so the balancer always closes first
    /// and never sends a request down a connection the server is closing.
    pub keep_alive_secs: u64,
    /// Milliseconds a new connection gets to send its request head before
    /// a 408. actix's 5 s default turns a burst's queue (thousands of
    /// connections accepted in one second, read in turn) into 408s for
    /// clients that did nothing wrong; nginx allows 60 s.
    pub client_request_timeout_ms: u64,
    /// Largest request body accepted; beyond it a 413 `payload_too_large`.
    pub body_limit_bytes: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub pool_size: usize,
    pub pool_wait_ms: u64,
    pub connect_timeout_ms: u64,
    pub statement_timeout_ms: u64,
    pub lock_timeout_ms: u64,
    /// A streaming replica for catalog reads (product pages and list on a
    /// cache miss, the popular ranking's fallback), behind the `db_replica`
    /// breaker with the primary as fallback. Unset: every read goes to `url`.
    pub replica_url: Option<String>,
    /// Connections of the replica's pool (the waits and timeouts are the
    /// primary's).
    pub replica_pool_size: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    pub url: String,
    /// A Redis Cluster's seed nodes, comma-separated (`host:port` or
    /// `redis://host:port`); empty: the single Redis at `url`.
    pub cluster_nodes: String,
    pub key_prefix: String,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
}

impl RedisSettings {
    /// `cluster_nodes` as URLs (`host:port` gets `redis://`).
    pub fn cluster_node_urls(&self) -> Vec<String> {
        self.cluster_nodes
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| {
                if n.contains("://") {
                    n.to_owned()
                } else {
                    format!("redis://{n}")
                }
            })
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Unset: events are delivered to the consumers in process.
    pub brokers: Option<String>,
    /// Topics are `<topic_prefix><event_type>`.
    pub topic_prefix: String,
    /// Consumer groups are `<group_prefix><consumer>`.
    pub group_prefix: String,
    pub delivery_timeout_ms: u64,
    pub partitions: i32,
    /// librdkafka's idempotent producer (off: see the README's broker
    /// requirements).
    pub idempotence: bool,
    /// How often an idle instance probes the broker (its metadata).
    pub probe_interval_ms: u64,
    /// How long a consumer group waits on a member it no longer hears from
    /// (a killed instance) before its partitions go to the others. Longer
    /// than the broker stalls to ride out: a stall past it expires every
    /// member (tansu 0.6 then never deals the group's partitions again).
    pub session_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventSettings {
    /// Attempts of a consumer before an event is parked in dead letters.
    pub max_attempts: u32,
    /// Bound on each external call of a consumer.
    pub http_timeout_ms: u64,
    pub relay_batch: i64,
    pub relay_idle_ms: u64,
    pub relay_lull_ms: u64,
    pub relay_max_delay_ms: u64,
    /// Readiness says `degraded` once the oldest unpublished outbox row is
    /// older than this.
    pub outbox_degraded_age_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    #[serde(serialize_with = "redacted")]
    pub admin_key: Option<SecretString>,
    #[serde(serialize_with = "redacted")]
    pub token_secret: Option<SecretString>,
    pub token_ttl_secs: i64,
    /// Production: refuse to start without an admin key and token secret of
    /// one's own (the development ones are public).
    pub production: bool,
    /// The secret tokens were signed with before the current one; accepted
    /// (verification only) until `previous_token_secret_until`.
    #[serde(serialize_with = "redacted")]
    pub previous_token_secret: Option<SecretString>,
    /// RFC 3339 end of the rotation window; required with the previous secret.
    pub previous_token_secret_until: Option<String>,
    /// How long an instance remembers that a token's user exists.
    pub user_cache_secs: u64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UrlSetting {
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertSettings {
    pub webhook_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `commerce_server=debug,info`.
    pub level: String,
}

/// Whole milliseconds of a library default, for a `_ms` setting.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".to_owned(),
            workers: 0,
            shutdown_timeout_secs: 30,
            keep_alive_secs: 75,
            client_request_timeout_ms: 30_000,
            body_limit_bytes: 64 * 1024,
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/commerce".to_owned(),
            pool_size: 32,
            pool_wait_ms: 2000,
            connect_timeout_ms: 3000,
            statement_timeout_ms: 5000,
            lock_timeout_ms: 3000,
            replica_url: None,
            replica_pool_size: 16,
        }
    }
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            cluster_nodes: String::new(),
            key_prefix: String::new(),
            connect_timeout_ms: 500,
            response_timeout_ms: 500,
        }
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: None,
            topic_prefix: "commerce.".to_owned(),
            group_prefix: "commerce.".to_owned(),
            delivery_timeout_ms: 5000,
            partitions: 3,
            idempotence: false,
            probe_interval_ms: 1000,
            session_timeout_ms: 10_000,
        }
    }
}

impl Default for EventSettings {
    /// The relay's and the consumers' own defaults.
    fn default() -> Self {
        let relay = commerce_events::relay::RelayConfig::default();
        Self {
            max_attempts: commerce_events::RetryPolicy::default().max_attempts,
            http_timeout_ms: 2000,
            relay_batch: relay.batch,
            relay_idle_ms: ms(relay.idle),
            relay_lull_ms: ms(relay.lull),
            relay_max_delay_ms: ms(relay.max_delay),
            outbox_degraded_age_secs: 30,
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            admin_key: None,
            token_secret: None,
            token_ttl_secs: 86_400,
            production: false,
            previous_token_secret: None,
            previous_token_secret_until: None,
            user_cache_secs: 300,
        }
    }
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            window_secs: 1,
            money: 20,
            stock: 20,
            queue: 10,
            rooms: 20,
            rooms_window_secs: 600,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: "text".to_owned(),
            level: "info".to_owned(),
        }
    }
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_ms: 2000,
            max_open_ms: 30_000,
            half_open_probes: 1,
        }
    }
}

/// Secrets are never written out (the README test serialises the defaults).
fn redacted<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("(set)"),
        None => s.serialize_none(),
    }
}
