//! Builds the application once (pool, state, background tasks) and runs the
//! HTTP server with graceful shutdown.

use crate::config::{Settings, DEV_ADMIN_KEY, DEV_TOKEN_SECRET};
use crate::error::{self, ApiError, ErrorCode};
use crate::state::{AppState, WorkerIo};
use crate::{routes, telemetry};
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use commerce_accounts::token::TokenSigner;
use commerce_coupons::Coupons;
use commerce_resilience::{AlertSink, BreakerRegistry, LockConfig, LockManager, RedisClient};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing_actix_web::TracingLogger;

/// Connections the kernel holds for the server before it accepts them
/// (capped by `net.core.somaxconn`).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Longest wait for the Kafka producer's queue on shutdown.
pub const FLUSH_BOUND: Duration = Duration::from_secs(2);

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
}

/// Creates the database if missing and applies migrations.
pub async fn migrate(settings: &Settings) -> anyhow::Result<Vec<String>> {
    let cfg = settings.db_config();
    commerce_storage::ensure_database(&cfg).await?;
    let applied = commerce_storage::run_migrations(&cfg).await?;
    Ok(applied)
}

/// What an HTTP worker issues coupons, takes orders and payments through.
/// Called on the worker's thread (the app factory): the clients made here
/// connect from this worker (its Redis connection right away, warming up),
/// so their tasks and batch writers run on its runtime.
fn worker_io(state: &AppState) -> WorkerIo {
    let settings = &state.settings;
    let shared = || WorkerIo {
        coupons: state.coupons.clone(),
        orders: state.orders.clone(),
        limits: state.limits.through(state.redis.clone()),
        refusals: state.refusals.clone(),
        users: state.users.clone(),
    };
    if !settings.coupons.worker_io && !settings.orders.worker_io {
        return shared();
    }
    // One Redis connection per worker, shared by what this worker serves.
    let redis = match RedisClient::new(&settings.redis_config(), state.breakers.redis()) {
        Ok(redis) => redis,
        Err(e) => {
            tracing::warn!(error = %e, "worker Redis client not built: serving through the shared one");
            return shared();
        }
    };
    let mut io = shared();
    if settings.coupons.worker_io {
        match commerce_storage::build_pool(
            &settings.worker_db_config(settings.coupons.worker_pool_size),
        ) {
            Ok(db) => {
                state.register_pool(&db);
                io.coupons = state.coupons.on_this_thread(db, redis.clone());
                // On this worker's runtime, so the connection is driven here.
                let warm = io.coupons.clone();
                tokio::spawn(async move { warm.warm_up().await });
            }
            Err(e) => {
                tracing::warn!(error = %e, "worker pool not built: issuing through the shared one")
            }
        }
    }
    if settings.orders.worker_io {
        match commerce_storage::build_pool(
            &settings.worker_db_config(settings.orders.worker_pool_size),
        ) {
            Ok(db) => {
                state.register_pool(&db);
                // Locks fall back to PostgreSQL while Redis is out: on the shared
                // pool, so lock holders cannot take every connection of this
                // small one and leave the payment writers none.
                let locks = state.locks.through(redis.clone(), state.db.clone());
                io.orders = state.orders.on_this_thread(db.clone(), locks);
                io.limits = state.limits.through(redis.clone());
                io.refusals = refusal_writer(db.clone(), settings);
                io.users = user_lookups(db.clone(), settings);
                let warm = io.orders.clone();
                // The writers' connections, opened before the first sale's
                // crowd rather than by it (on this runtime, which drives them).
                let writers = settings.orders.writers + settings.orders.pay_writers;
                tokio::spawn(async move {
                    warm.warm_up().await;
                    commerce_storage::warm_up(&db, writers).await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "worker order pool not built: ordering through the shared one")
            }
        }
    }
    io
}

/// Where the catalog's lag-tolerant reads go: the replica through its own
/// breaker when one is configured (its pool warmed like the primary's; a
/// replica that is down only means reads from the primary), else the primary.
async fn catalog_reads(
    settings: &Settings,
    db: &commerce_storage::DbPool,
    breakers: &BreakerRegistry,
) -> anyhow::Result<commerce_resilience::ReadReplica> {
    use commerce_resilience::breaker::DB_REPLICA;
    let Some(cfg) = settings.replica_db_config() else {
        return Ok(commerce_resilience::ReadReplica::primary_only(db.clone()));
    };
    let breaker = breakers.register(DB_REPLICA, settings.breaker_config(DB_REPLICA));
    let reads = commerce_resilience::ReadReplica::new(db.clone(), &cfg, breaker)?;
    if let Some(pool) = reads.replica_pool() {
        let warm = commerce_storage::warm_up(pool, cfg.pool_size / 2).await;
        if warm == 0 {
            tracing::warn!("read replica unavailable at start: catalog reads go to the primary");
        }
    }
    Ok(reads)
}

/// First-sight user checks (a token signed elsewhere), many to one query.
fn user_lookups(
    db: commerce_storage::DbPool,
    settings: &Settings,
) -> commerce_storage::batch::Batcher<commerce_accounts::lookup::UserLookups> {
    commerce_storage::batch::Batcher::start(
        db,
        commerce_accounts::lookup::UserLookups,
        commerce_storage::batch::BatchConfig {
            writers: 2,
            max_batch: 500,
            timeout: Duration::from_millis(
                settings.database.pool_wait_ms + settings.database.statement_timeout_ms,
            ),
        },
    )
}

/// Sold-out answers recorded under their keys, many to one insert.
fn refusal_writer(
    db: commerce_storage::DbPool,
    settings: &Settings,
) -> commerce_storage::batch::Batcher<commerce_storage::idempotency::RefusalBatch> {
    commerce_storage::batch::Batcher::start(
        db,
        commerce_storage::idempotency::RefusalBatch,
        commerce_storage::batch::BatchConfig {
            writers: 2,
            max_batch: 500,
            timeout: Duration::from_millis(settings.database.pool_wait_ms.saturating_mul(2)),
        },
    )
}

impl Application {
    /// Migrates, builds the shared state and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let applied = migrate(&settings).await?;
        if !applied.is_empty() {
            tracing::info!(?applied, "applied migrations");
        }
        let db = commerce_storage::build_pool(&settings.db_config())?;
        let warm = commerce_storage::warm_up(&db, settings.database.pool_size / 2).await;
        tracing::debug!(connections = warm, "database pool warmed up");
        let (admin_key, tokens) = credentials(&settings);
        let known_users = crate::tokens::KnownUsers::new(
            Duration::from_secs(settings.auth.user_cache_secs),
            200_000,
        );
        let breakers =
            BreakerRegistry::new(AlertSink::from_url(settings.alerts.webhook_url.as_deref()));
        for name in commerce_resilience::breaker::STANDARD {
            breakers.register(name, settings.breaker_config(name));
        }
        // Lazy: the server starts (degraded) while Redis is down.
        let redis = RedisClient::new(&settings.redis_config(), breakers.redis())?;
        // Connect ahead of traffic; Redis down only means degraded.
        if let Err(e) = redis.ping().await {
            tracing::warn!(error = %e, "redis unavailable at start: serving degraded");
        }
        let locks = LockManager::new(redis.clone(), db.clone(), LockConfig::default());
        let coupons = Coupons::new(
            db.clone(),
            redis.clone(),
            locks.clone(),
            settings.coupon_config(),
        );
        if !settings.catalog.detail_cache {
            tracing::warn!(
                "catalog.detail_cache = false: every product page is read from PostgreSQL"
            );
        }
        let catalog = commerce_catalog::Catalog::new(
            catalog_reads(&settings, &db, &breakers).await?,
            redis.clone(),
            &settings.redis_config(),
            settings.catalog.clone(),
        )?;
        let orders = commerce_orders::Orders::new(
            db.clone(),
            locks.clone(),
            settings.orders.clone(),
            crate::seams::order_seams(),
        );
        orders.warm_up().await;
        let queue = commerce_queue::WaitingRoom::new(
            redis.clone(),
            breakers.clone(),
            db.clone(),
            settings.queue.clone(),
        );
        let (dispatcher, relay) = event_pipeline(&settings, &db, &breakers, &catalog)?;
        let refusals = refusal_writer(db.clone(), &settings);
        let users = user_lookups(db.clone(), &settings);
        let limits = crate::ratelimit::RateLimiter::new(settings.rate_limit.clone(), redis.clone());
        let state = web::Data::new(AppState {
            known_users,
            limits,
            refusals,
            users,
            worker_pools: std::sync::Mutex::default(),
            events: dispatcher,
            relay,
            orders,
            queue,
            breakers,
            redis,
            locks,
            coupons,
            catalog,
            db,
            tokens,
            admin_key,
            metrics: telemetry::metrics_handle(),
            shutdown: CancellationToken::new(),
            settings,
        });

        let (port, server) = http_server(&state)?;
        spawn_background(&state);
        Ok(Self {
            port,
            server,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT or a stop through the handle; in-flight
    /// requests get `shutdown_timeout_secs` to finish. Then background work
    /// stops, and the Kafka producer gets at most [`FLUSH_BOUND`] (and half
    /// the shutdown timeout) to deliver what it holds (the outbox keeps every row not marked
    /// published: a broker that does not answer costs a later redelivery,
    /// never a process that will not stop). The binary then exits without
    /// destroying its Kafka clients, which can wait on such a broker.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.state.shutdown.cancel();
        if let commerce_events::relay::Sink::Kafka(publisher) = self.state.relay.sink() {
            // Within the shutdown timeout, which the binary's watchdog
            // enforces: at most half of it.
            let half = Duration::from_secs(self.state.settings.http.shutdown_timeout_secs) / 2;
            publisher.flush(FLUSH_BOUND.min(half)).await;
        }
        result
    }
}

/// The admin key and the token signers, the public development ones (with
/// a warning) where none is set.
fn credentials(settings: &Settings) -> (SecretString, crate::tokens::Tokens) {
    let admin_key = settings.auth.admin_key.clone().unwrap_or_else(|| {
        tracing::warn!(
            "COMMERCE__AUTH__ADMIN_KEY not set: admin routes take the public development key \
             `X-Admin-Key: {DEV_ADMIN_KEY}` (set your own; COMMERCE__AUTH__PRODUCTION=true refuses this one)"
        );
        SecretString::from(DEV_ADMIN_KEY)
    });
    let token_secret = settings.auth.token_secret.clone().unwrap_or_else(|| {
        tracing::warn!(
            "COMMERCE__AUTH__TOKEN_SECRET not set: bearer tokens are signed with the public \
             development secret, so anyone can forge them (set your own, 32+ characters)"
        );
        SecretString::from(DEV_TOKEN_SECRET)
    });
    let tokens = crate::tokens::Tokens {
        current: TokenSigner::new(
            token_secret.expose_secret().as_bytes(),
            settings.auth.token_ttl_secs,
        ),
        previous: settings
            .auth
            .previous_token_secret
            .as_ref()
            .zip(settings.previous_secret_until())
            .map(|(old, until)| {
                (
                    TokenSigner::new(old.expose_secret().as_bytes(), settings.auth.token_ttl_secs),
                    until,
                )
            }),
    };
    (admin_key, tokens)
}

/// The consumers of this process and the relay that feeds them (in
/// process, or through Kafka when brokers are set).
fn event_pipeline(
    settings: &Settings,
    db: &commerce_storage::DbPool,
    breakers: &BreakerRegistry,
    catalog: &commerce_catalog::Catalog,
) -> anyhow::Result<(commerce_events::Dispatcher, commerce_events::relay::Relay)> {
    let dispatcher = commerce_events::Dispatcher::new(
        db.clone(),
        crate::events::consumers(settings, breakers, catalog),
        commerce_events::RetryPolicy {
            max_attempts: settings.events.max_attempts,
            ..Default::default()
        },
    );
    let sink = match settings.kafka_config() {
        Some(k) => commerce_events::relay::Sink::Kafka(commerce_events::kafka::Publisher::new(
            &k,
            breakers.kafka(),
        )?),
        None => commerce_events::relay::Sink::InProcess(dispatcher.clone()),
    };
    let defaults = commerce_events::relay::RelayConfig::default();
    // To a broker a pass is bounded by one publish (the delivery
    // timeout, plus a second): twice that holds a pass, and the rows a
    // killed instance had claimed (and the newer events of their keys)
    // wait no longer than that.
    let lease = settings.kafka_config().map_or(defaults.lease, |k| {
        (k.delivery_timeout + Duration::from_secs(1)) * 2
    });
    let relay = commerce_events::relay::Relay::new(
        db.clone(),
        sink,
        breakers.kafka(),
        commerce_events::relay::RelayConfig {
            batch: settings.events.relay_batch,
            idle: Duration::from_millis(settings.events.relay_idle_ms),
            lull: Duration::from_millis(settings.events.relay_lull_ms),
            max_delay: Duration::from_millis(settings.events.relay_max_delay_ms),
            lease,
            ..defaults
        },
    );
    Ok((dispatcher, relay))
}

/// Binds the listener and builds the HTTP server over `state`: its port
/// (the configured one, or the one the OS chose for port 0) and the server.
fn http_server(state: &web::Data<AppState>) -> anyhow::Result<(u16, Server)> {
    let workers = match state.settings.http.workers {
        0 => std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(2),
        n => n,
    };
    let shared = state.clone();
    let body_limit = state.settings.http.body_limit_bytes;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(worker_io(&shared)))
            .app_data(shared.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(body_limit)
                    .error_handler(error::json_error),
            )
            .app_data(web::PayloadConfig::default().limit(body_limit))
            .app_data(web::PathConfig::default().error_handler(error::path_error))
            .app_data(web::QueryConfig::default().error_handler(error::query_error))
            .wrap(from_fn(error::json_errors))
            .wrap(from_fn(telemetry::observe))
            .wrap(TracingLogger::<telemetry::RootSpan>::new())
            .configure(routes::configure)
            .default_service(web::to(no_route))
    })
    .workers(workers)
    // A sale's opening brings thousands of new connections in one second;
    // an accept queue shorter than that drops the overflow's handshakes,
    // and each dropped one waits out a 1 s SYN retransmit. actix applies
    // the backlog only to sockets it binds itself (a listener bound
    // beforehand by std keeps std's 128), hence `bind` below.
    .backlog(LISTEN_BACKLOG)
    .shutdown_timeout(state.settings.http.shutdown_timeout_secs)
    .keep_alive(std::time::Duration::from_secs(
        state.settings.http.keep_alive_secs,
    ))
    .client_request_timeout(std::time::Duration::from_millis(
        state.settings.http.client_request_timeout_ms,
    ))
    .bind(&state.settings.http.addr)?;
    // The bound port (the OS picks one for port 0).
    let port = server
        .addrs()
        .first()
        .map(std::net::SocketAddr::port)
        .ok_or_else(|| anyhow::anyhow!("{} bound no address", state.settings.http.addr))?;
    Ok((port, server.run()))
}

/// No route took the request: 405 with `Allow` when the path is known (for
/// other methods), else 404.
async fn no_route(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    let allowed = routes::allowed_methods(req.path());
    if allowed.is_empty() {
        return Err(ApiError::new(ErrorCode::NotFound, "no such route"));
    }
    let allow = allowed.join(", ");
    let mut res = actix_web::HttpResponse::MethodNotAllowed();
    res.insert_header((actix_web::http::header::ALLOW, allow.clone()));
    Ok(res.json(
        ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{} is not served here; allowed: {allow}", req.method()),
        )
        .body(),
    ))
}

/// Periodic upkeep. Each task ends when the server stops.
fn spawn_background(state: &web::Data<AppState>) {
    spawn_events(state);
    let st = state.clone();
    tokio::spawn(async move {
        // Catalog invalidation listener (reconnects on its own) and upkeep.
        tokio::select! {
            _ = st.shutdown.cancelled() => {}
            _ = st.catalog.run_background() => {}
        }
    });
    let st = state.clone();
    tokio::spawn(async move {
        // Waiting-room admission: every instance ticks, one admits per interval.
        tokio::select! {
            _ = st.shutdown.cancelled() => {}
            _ = st.queue.run_admission() => {}
        }
    });
    let st = state.clone();
    tokio::spawn(async move {
        // Every instance sweeps; the guarded transition makes that safe.
        let mut tick = tokio::time::interval(st.settings.orders.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = st.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            // Gates that missed a give-back while Redis was out reload.
            st.orders.heal_gates().await;
            loop {
                match st.orders.expire_overdue(500).await {
                    Ok(n) if n > 0 => {
                        tracing::info!(expired = n, "overdue orders expired, stock returned")
                    }
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "order sweep failed");
                        break;
                    }
                }
            }
        }
    });
    let st = state.clone();
    tokio::spawn(async move {
        let every = st.settings.coupons.reconcile_interval;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = st.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            match st.coupons.reconcile_open().await {
                Ok(fixed) if !fixed.is_empty() => tracing::warn!(?fixed, "coupon gates repaired"),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "coupon reconciliation skipped"),
            }
        }
    });
    let st = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(300));
        loop {
            tokio::select! {
                _ = st.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let purged = async {
                let mut c = commerce_storage::conn(&st.db).await?;
                commerce_storage::idempotency::purge_expired(&mut c, 10_000).await
            }
            .await;
            match purged {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "expired idempotency keys removed"),
                Err(e) => tracing::warn!(error = %e, "idempotency purge failed"),
            }
        }
    });
}

/// The outbox relay and, with a broker, the broker watch (the `kafka`
/// breaker's probe while idle) and one Kafka consumer per group.
fn spawn_events(state: &web::Data<AppState>) {
    if let commerce_events::relay::Sink::Kafka(publisher) = state.relay.sink() {
        // From the start, whatever topic creation does: a broker that is
        // not there shows in the breaker and readiness within seconds.
        let publisher = publisher.clone();
        let shutdown = state.shutdown.clone();
        tokio::spawn(async move { publisher.watch(shutdown).await });
    }
    let st = state.clone();
    tokio::spawn(async move {
        if let commerce_events::relay::Sink::Kafka(publisher) = st.relay.sink() {
            let kafka = publisher.config().clone();
            let errors = publisher.errors().clone();
            // Every type the outbox holds, not only those our consumers
            // want: the relay publishes every row (issue 25: charges'
            // `balance_charged` had no topic, timed out, and as the oldest
            // row blocked the breaker's probe for good).
            let mut types = st.events.event_types();
            types.extend(commerce_storage::outbox::event::ALL);
            types.sort_unstable();
            types.dedup();
            // Topics before consumers subscribe and before the relay
            // publishes (the broker may be down: retry until it answers).
            loop {
                if publisher.ensure_topics(&types).await.is_ok() {
                    break;
                }
                tokio::select! {
                    _ = st.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
            for consumer in st.events.consumers() {
                tokio::spawn(commerce_events::kafka::consume(
                    kafka.clone(),
                    st.events.clone(),
                    consumer.clone(),
                    errors.clone(),
                    st.shutdown.clone(),
                ));
            }
        }
        st.relay.run(st.shutdown.clone()).await;
    });
}
