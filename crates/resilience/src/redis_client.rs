//! A Redis client that never hangs a worker.
//!
//! The [`ConnectionManager`] is created lazily, so the server starts while
//! Redis is down; connect and response timeouts are short and reconnects are
//! bounded, and every call goes through the `redis` breaker with a timeout, so
//! an outage costs milliseconds per call, then microseconds once it opens.
//!
//! Keys are passed as they are: build them with [`RedisClient::key`], which
//! applies the configured prefix (scripts take keys the same way).
//!
//! One Redis or a Redis Cluster ([`RedisConfig::cluster_nodes`]): calls get a
//! [`RedisConn`] either way. On a cluster every script and multi-key command
//! must keep its keys in one hash slot (a `{tag}` in the key names), and the
//! client routes each command by its key; a failover shows as failed calls
//! on the lost master's slots until a replica takes over.
//!
//! Healing after Redis returns (killed and restarted, paused, cut): a
//! [`ConnectionManager`] reconnects only when a call finds its connection
//! broken, and its bounded reconnect resolves to an error it keeps handing
//! out until the next call starts another one. After an outage every idle
//! manager of the process (the shared one, each HTTP worker's) holds such a
//! stale error, and a half-open probe through one fails in microseconds
//! without reaching Redis, doubling the open period each time. So the first
//! call through a client after each opening of its breaker uses a new
//! manager (see [`Breaker::openings`]), and while the breaker is open a
//! recovery watch pings Redis on a fresh connection every
//! [`RECOVERY_PING_EVERY`] and closes the breaker as soon as Redis answers.

use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, ToRedisArgs,
    Value,
};

use crate::breaker::{Breaker, CallError};

/// How often an open `redis` breaker's recovery watch pings Redis.
pub const RECOVERY_PING_EVERY: Duration = Duration::from_millis(200);

/// Result of a Redis call through the breaker.
pub type RedisResult<T> = Result<T, CallError<RedisError>>;

/// Connection settings. Every wait is bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub url: String,
    /// A Redis Cluster's seed nodes (`redis://host:port` each). Empty: the
    /// single Redis at `url`.
    pub cluster_nodes: Vec<String>,
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
            cluster_nodes: Vec::new(),
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

    /// A Redis Cluster reached through these seed nodes.
    pub fn cluster(nodes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let cluster_nodes: Vec<String> = nodes.into_iter().map(Into::into).collect();
        Self {
            url: cluster_nodes.first().cloned().unwrap_or_default(),
            cluster_nodes,
            ..Self::default()
        }
    }

    pub fn is_cluster(&self) -> bool {
        !self.cluster_nodes.is_empty()
    }

    /// Where a subscriber can listen: any node of a cluster hears every
    /// PUBLISH (classic pub/sub is broadcast over the cluster bus).
    pub fn pubsub_urls(&self) -> Vec<String> {
        if self.is_cluster() {
            self.cluster_nodes.clone()
        } else {
            vec![self.url.clone()]
        }
    }
}

/// A connection to one Redis or to a Redis Cluster. Cheap to clone (both
/// are handles to one multiplexed connection task).
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// How new connections are made: one Redis, or a cluster.
enum Backend {
    Single {
        client: redis::Client,
        config: ConnectionManagerConfig,
        /// For the recovery watch's one-off connections.
        ping_config: AsyncConnectionConfig,
    },
    Cluster {
        client: ClusterClient,
        config: ClusterConfig,
    },
}

impl Backend {
    /// A connection that connects on first use, so the server starts while
    /// Redis is down.
    fn lazy(&self) -> Result<RedisConn, RedisError> {
        match self {
            Self::Single { client, config, .. } => Ok(RedisConn::Single(
                ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?,
            )),
            Self::Cluster { client, config } => Ok(RedisConn::Cluster(
                client.get_pending_async_connection_with_config(config.clone()),
            )),
        }
    }

    /// PING on a new connection, never a cached error. On a cluster the
    /// PING goes to every node of the current slot map: it answers once
    /// each slot has a live master again (after a failover).
    async fn ping_fresh(&self, connect_timeout: Duration, call_timeout: Duration) -> bool {
        match self {
            Self::Single {
                client,
                ping_config,
                ..
            } => {
                let connect = client.get_multiplexed_async_connection_with_config(ping_config);
                let Ok(Ok(mut c)) = tokio::time::timeout(connect_timeout, connect).await else {
                    return false;
                };
                let ping = redis::cmd("PING");
                let pong = tokio::time::timeout(call_timeout, ping.query_async::<String>(&mut c));
                matches!(pong.await, Ok(Ok(_)))
            }
            Self::Cluster { client, config } => {
                let mut c = client.get_pending_async_connection_with_config(config.clone());
                let ping = redis::cmd("PING");
                let pong = tokio::time::timeout(
                    connect_timeout + call_timeout,
                    ping.query_async::<Value>(&mut c),
                );
                matches!(pong.await, Ok(Ok(_)))
            }
        }
    }
}

/// Redis behind the `redis` breaker. Cheap to clone; clones share the
/// connection and the breaker.
#[derive(Clone)]
pub struct RedisClient {
    conn: Arc<Conn>,
    breaker: Breaker,
    prefix: Arc<str>,
}

/// The client's connection manager, replaced after each opening of the
/// breaker.
struct Conn {
    backend: Backend,
    connect_timeout: Duration,
    /// The runtime the client was built on: new managers spawn their tasks
    /// there, as the first one did (an HTTP worker's stay on its thread).
    runtime: tokio::runtime::Handle,
    /// The manager and the breaker's [`Breaker::openings`] when it was made.
    current: RwLock<(u64, RedisConn)>,
}

impl Conn {
    /// The manager to use now: a new one if the breaker opened since the
    /// current one was made.
    fn manager(&self, openings: u64) -> Result<RedisConn, RedisError> {
        {
            let cur = self.current.read().unwrap_or_else(PoisonError::into_inner);
            if cur.0 == openings {
                return Ok(cur.1.clone());
            }
        }
        let mut cur = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if cur.0 != openings {
            let _on = self.runtime.enter();
            let fresh = self.backend.lazy()?;
            *cur = (openings, fresh);
        }
        Ok(cur.1.clone())
    }
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
        let backend = if config.is_cluster() {
            // Redirects (MOVED/ASK after a failover or resharding) and a
            // topology refresh each take a retry; the breaker's timeout
            // still bounds the whole call.
            let client = ClusterClient::builder(config.cluster_nodes.iter().map(String::as_str))
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.response_timeout)
                .retries(u32::try_from(config.reconnect_retries).unwrap_or(1).max(2))
                .min_retry_wait(millis(config.reconnect_min_delay))
                .max_retry_wait(millis(config.reconnect_max_delay))
                .build()?;
            let config = ClusterConfig::new()
                .set_connection_timeout(config.connect_timeout)
                .set_response_timeout(config.response_timeout);
            Backend::Cluster { client, config }
        } else {
            let client = redis::Client::open(config.url.as_str())?;
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.response_timeout))
                .set_number_of_retries(config.reconnect_retries)
                .set_min_delay(config.reconnect_min_delay)
                .set_max_delay(config.reconnect_max_delay);
            let ping_config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.response_timeout));
            Backend::Single {
                client,
                config: manager_config,
                ping_config,
            }
        };
        let first = backend.lazy()?;
        Ok(Self {
            conn: Arc::new(Conn {
                backend,
                connect_timeout: config.connect_timeout,
                runtime: tokio::runtime::Handle::current(),
                current: RwLock::new((breaker.openings(), first)),
            }),
            breaker,
            prefix: Arc::from(config.key_prefix.as_str()),
        })
    }

    /// The manager for a call the breaker admitted.
    fn manager(&self) -> Result<RedisConn, RedisError> {
        self.conn.manager(self.breaker.openings())
    }

    /// Runs `f` on the current manager through the breaker; while the
    /// breaker is open, makes sure a recovery watch runs.
    async fn call<T, F, Fut>(&self, timeout: Option<Duration>, f: F) -> RedisResult<T>
    where
        F: FnOnce(RedisConn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        // The manager is picked once admitted: a probe never goes through a
        // manager made before the latest opening.
        let result = self
            .breaker
            .call(timeout, async {
                let manager = self.manager()?;
                f(manager).await
            })
            .await;
        if result.is_err() && self.breaker.is_recovering() {
            self.watch_recovery();
        }
        result
    }

    /// Starts this breaker's recovery watch unless one runs: every
    /// [`RECOVERY_PING_EVERY`], a PING on a new connection (never a cached
    /// error); the first PONG closes the breaker. Ends once the breaker is
    /// closed (or forced) by any means.
    fn watch_recovery(&self) {
        let Some(watch) = self.breaker.claim_recovery_watch() else {
            return;
        };
        let conn = self.conn.clone();
        let breaker = self.breaker.clone();
        // The PING must answer as fast as a call must, or the breaker
        // would close only to open again (a slow Redis).
        let call_timeout = breaker.config().call_timeout;
        self.conn.runtime.spawn(async move {
            let _watch = watch;
            while breaker.is_recovering() {
                tokio::time::sleep(RECOVERY_PING_EVERY).await;
                if conn
                    .backend
                    .ping_fresh(conn.connect_timeout, call_timeout)
                    .await
                {
                    if breaker.close_after_health_check() {
                        tracing::info!(breaker = breaker.name(), "redis answers again");
                    }
                    return;
                }
            }
        });
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
    pub fn connection(&self) -> RedisConn {
        let cur = self
            .conn
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        cur.1.clone()
    }

    /// Runs arbitrary commands on a connection handle through the breaker,
    /// with the breaker's default timeout.
    pub async fn run<T, F, Fut>(&self, f: F) -> RedisResult<T>
    where
        F: FnOnce(RedisConn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.call(None, f).await
    }

    /// [`RedisClient::run`] with its own timeout.
    pub async fn run_with_timeout<T, F, Fut>(&self, timeout: Duration, f: F) -> RedisResult<T>
    where
        F: FnOnce(RedisConn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.call(Some(timeout), f).await
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
        self.call(None, |mut conn| async move {
            invocation.invoke_async(&mut conn).await
        })
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
