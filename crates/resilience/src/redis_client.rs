//! A Redis client that never hangs a worker.
//!
//! The [`ConnectionManager`] is created lazily, so the server starts while
//! Redis is down; connect and response timeouts are short and reconnects are
//! bounded, and every call goes through the `redis` breaker with a timeout, so
//! an outage costs milliseconds per call, then microseconds once it opens.
//!
//! Keys are passed as they are: build them with [`RedisClient::key`], which
//! applies the configured prefix (scripts take keys the same way).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, RedisError, ToRedisArgs};

use crate::breaker::{Breaker, CallError};

/// Result of a Redis call through the breaker.
pub type RedisResult<T> = Result<T, CallError<RedisError>>;

/// Connection settings. Every wait is bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub url: String,
    /// Prepended to every key built with [`RedisClient::key`], so several
    /// deployments (or tests) can share one Redis.
    pub key_prefix: String,
    pub connect_timeout: Duration,
    /// Socket-level bound; the breaker's call timeout is usually shorter.
    pub response_timeout: Duration,
    /// Reconnect attempts after a failed connect, before the call errors.
    pub reconnect_retries: usize,
    pub reconnect_min_delay: Duration,
    pub reconnect_max_delay: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            key_prefix: String::new(),
            connect_timeout: Duration::from_millis(250),
            response_timeout: Duration::from_millis(500),
            reconnect_retries: 1,
            reconnect_min_delay: Duration::from_millis(10),
            reconnect_max_delay: Duration::from_millis(100),
        }
    }
}

impl RedisConfig {
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }
}

/// Redis behind the `redis` breaker. Cheap to clone; clones share the
/// connection and the breaker.
#[derive(Clone)]
pub struct RedisClient {
    manager: ConnectionManager,
    breaker: Breaker,
    prefix: Arc<str>,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("prefix", &self.prefix)
            .field("breaker", &self.breaker)
            .finish()
    }
}

impl RedisClient {
    /// Builds the client without connecting. Fails only on a malformed URL.
    /// Must be called inside a tokio runtime (the manager spawns a task).
    pub fn new(config: &RedisConfig, breaker: Breaker) -> Result<Self, RedisError> {
        let client = redis::Client::open(config.url.as_str())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(config.reconnect_retries)
            .set_min_delay(config.reconnect_min_delay)
            .set_max_delay(config.reconnect_max_delay);
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        Ok(Self {
            manager,
            breaker,
            prefix: Arc::from(config.key_prefix.as_str()),
        })
    }

    /// `prefix + name`: every key this service writes goes through here.
    pub fn key(&self, name: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + name.len());
        k.push_str(&self.prefix);
        k.push_str(name);
        k
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The raw connection, bypassing the breaker (benchmarks, diagnostics).
    pub fn connection(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// Runs arbitrary commands on a connection handle through the breaker,
    /// with the breaker's default timeout.
    pub async fn run<T, F, Fut>(&self, f: F) -> RedisResult<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.breaker.call(None, f(self.manager.clone())).await
    }

    /// [`RedisClient::run`] with its own timeout.
    pub async fn run_with_timeout<T, F, Fut>(&self, timeout: Duration, f: F) -> RedisResult<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.breaker
            .call(Some(timeout), f(self.manager.clone()))
            .await
    }

    /// Sends one command and converts the reply.
    pub async fn query<T: FromRedisValue>(&self, cmd: redis::Cmd) -> RedisResult<T> {
        self.run(|mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    /// Invokes a Lua script (EVALSHA, loading it on NOSCRIPT), built the
    /// redis-rs way: `redis.invoke_script(script.key(&k).arg(5)).await`.
    pub async fn invoke_script<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        let mut conn = self.manager.clone();
        self.breaker
            .call(None, invocation.invoke_async(&mut conn))
            .await
    }

    pub async fn ping(&self) -> RedisResult<()> {
        self.run(|mut c| async move {
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map(|_| ())
        })
        .await
    }

    pub async fn get<T: FromRedisValue>(&self, key: &str) -> RedisResult<Option<T>> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.query(cmd).await
    }

    /// SET with an expiry, so nothing cached outlives its usefulness.
    pub async fn set_ex<V: ToRedisArgs>(
        &self,
        key: &str,
        value: V,
        ttl: Duration,
    ) -> RedisResult<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("PX").arg(millis(ttl));
        self.query::<()>(cmd).await
    }

    /// Deletes keys; returns how many existed.
    pub async fn del(&self, keys: &[&str]) -> RedisResult<u64> {
        let mut cmd = redis::cmd("DEL");
        for k in keys {
            cmd.arg(*k);
        }
        self.query(cmd).await
    }
}

/// Milliseconds for PX/PEXPIRE arguments, never 0 (Redis rejects it).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
