//! PostgreSQL access for every capability: a bounded connection pool, embedded
//! migrations, the diesel schema, error mapping, and idempotency keys.

pub mod batch;
pub mod idempotency;
pub mod outbox;
pub mod schema;
pub mod sql;
pub mod tx;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::ConnectionError;
use diesel_async::pooled_connection::deadpool::{Object, Pool, PoolError};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use std::time::Duration;

pub type DbPool = Pool<AsyncPgConnection>;
pub type DbConn = Object<AsyncPgConnection>;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Storage failures, classified so the layers above can answer precisely.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// No connection could be had within the pool's wait: the database is busy.
    #[error("database pool exhausted")]
    PoolExhausted,
    /// The database could not be reached or the connection broke.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The statement ran past `statement_timeout` or `lock_timeout`.
    #[error("database statement timed out")]
    Timeout,
    #[error("unique constraint {0} violated")]
    UniqueViolation(String),
    #[error("check constraint {0} violated")]
    CheckViolation(String),
    #[error("foreign key {0} violated")]
    ForeignKeyViolation(String),
    #[error("serialization failure")]
    SerializationFailure,
    #[error("row not found")]
    NotFound,
    #[error("database error: {0}")]
    Other(String),
}

impl StorageError {
    /// Whether the failure is the infrastructure's (answer 503, retry later),
    /// as opposed to something about the request itself.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::PoolExhausted | Self::Unavailable(_) | Self::Timeout | Self::SerializationFailure
        )
    }
}

impl From<DieselError> for StorageError {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::NotFound => Self::NotFound,
            DieselError::DatabaseError(kind, info) => {
                let constraint = info.constraint_name().unwrap_or_default().to_owned();
                match kind {
                    DatabaseErrorKind::UniqueViolation => Self::UniqueViolation(constraint),
                    DatabaseErrorKind::CheckViolation => Self::CheckViolation(constraint),
                    DatabaseErrorKind::ForeignKeyViolation => Self::ForeignKeyViolation(constraint),
                    DatabaseErrorKind::SerializationFailure => Self::SerializationFailure,
                    // diesel-async reports an error with no SQLSTATE (the
                    // socket closed, "connection closed", a broken pipe) as
                    // UnableToSendCommand: the server went away.
                    DatabaseErrorKind::ClosedConnection
                    | DatabaseErrorKind::UnableToSendCommand => {
                        Self::Unavailable(info.message().to_owned())
                    }
                    _ => {
                        let msg = info.message();
                        // diesel does not expose SQLSTATE 57014/55P03; the messages are stable.
                        if msg.contains("statement timeout") || msg.contains("lock timeout") {
                            Self::Timeout
                        } else if msg.contains("terminating connection")
                            || msg.contains("the database system is")
                            || msg.contains("server closed the connection")
                        {
                            // 57P01-57P03: shut down, starting up, in recovery.
                            Self::Unavailable(msg.to_owned())
                        } else {
                            Self::Other(msg.to_owned())
                        }
                    }
                }
            }
            // A COMMIT that failed, then a ROLLBACK that failed too: the
            // commit's error says why (usually the connection is gone).
            DieselError::RollbackErrorOnCommit { commit_error, .. } => Self::from(*commit_error),
            DieselError::BrokenTransactionManager => Self::Unavailable("broken transaction".into()),
            other => Self::Other(other.to_string()),
        }
    }
}

impl From<PoolError> for StorageError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Timeout(_) => Self::PoolExhausted,
            PoolError::Backend(be) => Self::Unavailable(be.to_string()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl From<ConnectionError> for StorageError {
    fn from(e: ConnectionError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// Database settings. Every wait is bounded.
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub url: String,
    pub pool_size: usize,
    /// How long a request waits for a free connection before it gets a 503.
    pub pool_wait: Duration,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    /// Bounds row-lock waits (hot rows under contention).
    pub lock_timeout: Duration,
}

impl DbConfig {
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 16,
            pool_wait: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(3),
        }
    }
}

/// Opens one connection with connect timeout and session timeouts applied.
pub async fn connect(cfg: &DbConfig) -> Result<AsyncPgConnection, StorageError> {
    let url = cfg.url.clone();
    let mut conn = tokio::time::timeout(cfg.connect_timeout, AsyncPgConnection::establish(&url))
        .await
        .map_err(|_| StorageError::Unavailable("connect timed out".into()))??;
    let setup = format!(
        "SET statement_timeout = {}; SET lock_timeout = {}; SET idle_in_transaction_session_timeout = {}",
        cfg.statement_timeout.as_millis(),
        cfg.lock_timeout.as_millis(),
        cfg.statement_timeout.as_millis().saturating_mul(2),
    );
    diesel_async::SimpleAsyncConnection::batch_execute(&mut conn, &setup).await?;
    Ok(conn)
}

/// Builds the pool once per process. Connections are created lazily, so this
/// succeeds while the database is down; requests then get 503s.
pub fn build_pool(cfg: &DbConfig) -> Result<DbPool, StorageError> {
    let setup_cfg = cfg.clone();
    let mut manager_config = ManagerConfig::default();
    manager_config.recycling_method = RecyclingMethod::Fast;
    manager_config.custom_setup = Box::new(move |_url| {
        let cfg = setup_cfg.clone();
        Box::pin(async move {
            connect(&cfg)
                .await
                .map_err(|e| ConnectionError::BadConnection(e.to_string()))
        })
    });
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        &cfg.url,
        manager_config,
    );
    Pool::builder(manager)
        .max_size(cfg.pool_size)
        // Most recently used first: a burst reuses the few connections whose
        // backends already hold warm catalog caches and plans, instead of
        // rotating through every cold one.
        .queue_mode(deadpool::managed::QueueMode::Lifo)
        .wait_timeout(Some(cfg.pool_wait))
        .create_timeout(Some(cfg.connect_timeout))
        .recycle_timeout(Some(cfg.connect_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| StorageError::Other(format!("pool build: {e}")))
}

/// Opens up to `n` connections ahead of traffic, so a peak that arrives in
/// the first second does not also pay for connecting. Failures are ignored
/// (the database may be down at start; the pool connects lazily then).
pub async fn warm_up(pool: &DbPool, n: usize) -> usize {
    let conns =
        futures::future::join_all((0..n.min(pool.status().max_size)).map(|_| pool.get())).await;
    conns.iter().filter(|c| c.is_ok()).count()
}

/// Checks a connection out of the pool, mapping a timeout to `PoolExhausted`.
pub async fn conn(pool: &DbPool) -> Result<DbConn, StorageError> {
    Ok(pool.get().await?)
}

/// Cheap round trip for readiness checks.
pub async fn ping(pool: &DbPool) -> Result<(), StorageError> {
    let mut c = conn(pool).await?;
    crate::sql::cached("SELECT 1").execute(&mut c).await?;
    Ok(())
}

/// Pool occupancy for metrics: (size, available, waiting).
pub fn pool_status(pool: &DbPool) -> (usize, usize, usize) {
    let s = pool.status();
    (s.size, s.available, s.waiting)
}

/// Splits a URL into (server URL with the maintenance database, database name).
fn split_database(url: &str) -> Result<(String, String), StorageError> {
    let mut parsed =
        url::Url::parse(url).map_err(|e| StorageError::Other(format!("bad database url: {e}")))?;
    let name = parsed.path().trim_start_matches('/').to_owned();
    if name.is_empty() {
        return Err(StorageError::Other("database url names no database".into()));
    }
    parsed.set_path("/postgres");
    Ok((parsed.to_string(), name))
}

/// Quotes an identifier for DDL that cannot take bind parameters.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates the database named in `url` if it does not exist.
pub async fn ensure_database(cfg: &DbConfig) -> Result<(), StorageError> {
    let (admin_url, name) = split_database(&cfg.url)?;
    let admin = DbConfig {
        url: admin_url,
        ..cfg.clone()
    };
    let mut conn = connect(&admin).await?;
    #[derive(diesel::QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        exists: bool,
    }
    let row: Exists =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
            .bind::<diesel::sql_types::Text, _>(&name)
            .get_result(&mut conn)
            .await?;
    if !row.exists {
        match diesel::sql_query(format!("CREATE DATABASE {}", quote_ident(&name)))
            .execute(&mut conn)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another instance created it at the same moment.
            Err(e) if e.to_string().contains("already exists") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Applies pending migrations and returns the versions applied. Safe when
/// several instances start together: they serialise on an advisory lock.
pub async fn run_migrations(cfg: &DbConfig) -> Result<Vec<String>, StorageError> {
    use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
    use diesel_migrations::MigrationHarness;

    let url = cfg.url.clone();
    // The sync wrapper drives its own runtime; a thread of its own keeps it
    // away from any current-thread runtime (where block_in_place panics).
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| -> Result<Vec<String>, StorageError> {
            let mut conn: AsyncConnectionWrapper<AsyncPgConnection> =
                diesel::Connection::establish(&url).map_err(StorageError::from)?;
            diesel::RunQueryDsl::execute(
                diesel::sql_query("SELECT pg_advisory_lock(7231001)"),
                &mut conn,
            )?;
            let applied = conn
                .run_pending_migrations(MIGRATIONS)
                .map(|v| v.iter().map(|m| m.to_string()).collect::<Vec<_>>())
                .map_err(|e| StorageError::Other(format!("migration failed: {e}")));
            let _ = diesel::RunQueryDsl::execute(
                diesel::sql_query("SELECT pg_advisory_unlock(7231001)"),
                &mut conn,
            );
            applied
        })();
        let _ = tx.send(result);
    });
    rx.await
        .map_err(|_| StorageError::Other("migration thread panicked".into()))?
}

/// Help text of this crate's metrics, for `/metrics` (call once, after
/// the recorder is installed).
pub fn describe_metrics() {
    use metrics::{describe_histogram, Unit};
    describe_histogram!("write_batch_size", "Jobs per batched write, by kind.");
    describe_histogram!(
        "write_batch_queue_seconds",
        Unit::Seconds,
        "Time a job waited for a batch writer, by kind."
    );
    describe_histogram!(
        "write_batch_seconds",
        Unit::Seconds,
        "Time of one batched write, by kind."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_database_from_url() {
        let (admin, name) =
            split_database("postgres://postgres@127.0.0.1:5432/commerce?connect_timeout=3")
                .unwrap_or_default();
        assert_eq!(name, "commerce");
        assert_eq!(
            admin,
            "postgres://postgres@127.0.0.1:5432/postgres?connect_timeout=3"
        );
        assert!(split_database("postgres://h:5432").is_err());
    }

    fn db_error(kind: DatabaseErrorKind, message: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(message.to_owned()))
    }

    #[test]
    fn a_database_going_away_is_unavailable_never_other() {
        use DatabaseErrorKind::{ClosedConnection, UnableToSendCommand, Unknown};
        let cases = [
            // What diesel-async gives for a backend terminated by a fast
            // shutdown, mid-transaction or idle in the pool (no SQLSTATE).
            db_error(UnableToSendCommand, "connection closed"),
            db_error(
                UnableToSendCommand,
                "error communicating with the server: Broken pipe (os error 32)",
            ),
            db_error(
                ClosedConnection,
                "server closed the connection unexpectedly",
            ),
            db_error(
                Unknown,
                "terminating connection due to administrator command",
            ),
            db_error(Unknown, "the database system is shutting down"),
            db_error(Unknown, "the database system is starting up"),
            db_error(Unknown, "the database system is in recovery mode"),
            DieselError::RollbackErrorOnCommit {
                rollback_error: Box::new(db_error(UnableToSendCommand, "connection closed")),
                commit_error: Box::new(db_error(
                    Unknown,
                    "terminating connection due to administrator command",
                )),
            },
            DieselError::BrokenTransactionManager,
        ];
        for e in cases {
            let shown = format!("{e:?}");
            let mapped = StorageError::from(e);
            assert!(
                matches!(mapped, StorageError::Unavailable(_)),
                "{shown} -> {mapped:?}"
            );
        }
    }

    #[test]
    fn request_and_timeout_errors_keep_their_mapping() {
        use DatabaseErrorKind::{UniqueViolation, Unknown};
        assert!(matches!(
            StorageError::from(db_error(
                Unknown,
                "canceling statement due to statement timeout"
            )),
            StorageError::Timeout
        ));
        assert!(matches!(
            StorageError::from(db_error(UniqueViolation, "duplicate key")),
            StorageError::UniqueViolation(_)
        ));
        assert!(matches!(
            StorageError::from(db_error(Unknown, "division by zero")),
            StorageError::Other(_)
        ));
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
