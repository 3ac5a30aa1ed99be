//! The run's own deployment: PostgreSQL, Redis (and in Kafka mode a broker),
//! the local receivers and fault proxies, two instances and nginx; torn down in order.

use super::infra::{Broker, Postgres, Redis};
use super::monitor::Clock;
use super::plan::{kafka_mode, log, ChaosOptions, Fault};
use super::proxy;
use super::stub::Receiver;
use crate::base;
use crate::nginx;
use crate::procs::{self, Managed};
use crate::server_bin::ServerBinary;
use crate::setup::{self, Api};
use crate::stack::ServerEnv;
use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::Command;

/// The instances of a run: ports, processes, and how to start one again.
pub struct Instances {
    pub ports: Vec<u16>,
    pub procs: Vec<Option<Managed>>,
    starts: Vec<usize>,
    bin: PathBuf,
    pub(super) env: ServerEnv,
    webhook: String,
    run_dir: PathBuf,
}

impl Instances {
    pub fn bases(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect()
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs
            .get(i)
            .and_then(Option::as_ref)
            .and_then(Managed::pid)
    }

    /// Starts instance `i` (again) on its port; when it was ready.
    pub async fn start(&mut self, i: usize) -> Result<Instant> {
        let port = self.ports[i];
        let addr = format!("127.0.0.1:{port}");
        self.starts[i] += 1;
        let log_path = self.run_dir.join(if self.starts[i] == 1 {
            format!("server-{i}.log")
        } else {
            format!("server-{i}-start{}.log", self.starts[i])
        });
        let mut cmd = Command::new(&self.bin);
        self.env.apply(&mut cmd, &addr);
        // Alerts carry the instance in their path: /alerts/<i>.
        cmd.env(
            "COMMERCE__ALERTS__WEBHOOK_URL",
            format!("{}/{i}", self.webhook),
        );
        let mut m = Managed::spawn(
            &format!("commerce-server #{i}"),
            &mut cmd,
            &log_path,
            libc::SIGTERM,
        )?;
        let api = Api::new(vec![], String::new())?;
        let ready = api
            .wait_ready(
                &format!("http://{addr}"),
                Duration::from_secs(60),
                Some(&mut m),
            )
            .await;
        self.procs[i] = Some(m);
        ready.with_context(|| {
            format!(
                "commerce-server #{i} on {addr} is not ready:\n{}",
                procs::tail(&log_path, 30)
            )
        })?;
        Ok(Instant::now())
    }

    /// SIGKILL instance `i` and reap it.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut m) = self.procs.get_mut(i).and_then(Option::take) {
            if let Some(pid) = m.pid() {
                procs::signal(pid, libc::SIGKILL);
            }
            m.stop(Duration::from_secs(5)).await;
        }
    }

    pub async fn stop_all(&mut self) {
        for i in 0..self.procs.len() {
            if let Some(pid) = self.pid(i) {
                procs::signal(pid, libc::SIGCONT);
            }
            if let Some(mut m) = self.procs[i].take() {
                m.stop(Duration::from_secs(10)).await;
            }
        }
    }
}

/// Everything one run starts, torn down in order at the end (and by drop on
/// an error or Ctrl-C: processes are killed, the cluster stopped).
pub(super) struct Deployment {
    pub(super) pg: Postgres,
    pub(super) redis: Redis,
    /// Kafka mode's broker.
    pub(super) broker: Option<Broker>,
    pub(super) instances: Instances,
    pub(super) nginx: Option<Managed>,
    pub(super) front: String,
    pub(super) webhook: Receiver,
    pub(super) platform: Receiver,
    pub(super) redis_proxy: Option<proxy::ChaosProxy>,
    pub(super) pg_proxy: Option<proxy::ChaosProxy>,
    /// The runner's own URL of the run's database (not through a proxy).
    pub(super) db_url: String,
    /// Prometheus and Alertmanager (posting to `webhook` at /alertmanager),
    /// or why there are none.
    pub(super) monitoring: Result<crate::prom::Stack, String>,
}

impl Deployment {
    pub(super) async fn stop(mut self) {
        if let Ok(m) = self.monitoring.as_mut() {
            m.stop().await;
        }
        if let Some(mut n) = self.nginx.take() {
            n.stop(Duration::from_secs(5)).await;
        }
        self.instances.stop_all().await;
        self.redis.stop().await;
        if let Some(b) = self.broker.as_mut() {
            b.stop().await;
        }
        // The cluster stops and its folder goes when `pg` drops.
    }
}

async fn start_nginx(run_dir: &Path, ports: &[u16]) -> Result<(Managed, String)> {
    let bin = nginx::find()
        .ok_or_else(|| anyhow!("nginx is not installed (apt-get install -y nginx-light)"))?;
    nginx::start(&bin, run_dir, ports).await
}

pub(super) async fn deploy(
    fault: Fault,
    opts: &ChaosOptions,
    binary: &ServerBinary,
    run_dir: &Path,
    clock: Clock,
    users: usize,
    root: &Path,
) -> Result<Deployment> {
    let (pg, redis, broker) = start_stores(fault, opts, run_dir).await?;
    let webhook = Receiver::start(clock.t0).await?;
    let platform = Receiver::start(clock.t0).await?;
    let (redis_proxy, pg_proxy) = start_proxies(fault, &redis, &pg).await?;
    let redis_url = match &redis_proxy {
        Some(p) => format!("redis://{}", p.addr()),
        None => redis.url(),
    };
    let db_url = pg.url("commerce");
    let service_db_url = match &pg_proxy {
        Some(p) => format!("postgres://postgres@{}/commerce", p.addr()),
        None => db_url.clone(),
    };
    let env = server_env(opts, service_db_url, redis_url, &platform, broker.as_ref());

    crate::stack::migrate(&binary.path, &env, run_dir).await?;
    let db = setup::connect(&db_url).await?;
    setup::seed_users(&db, users, 1_000_000).await?;
    drop(db);

    let mut instances = Instances {
        ports: vec![procs::free_port()?, procs::free_port()?],
        procs: vec![None, None],
        starts: vec![0, 0],
        bin: binary.path.clone(),
        env,
        webhook: webhook.url("/alerts"),
        run_dir: run_dir.to_owned(),
    };
    for i in 0..2 {
        instances.start(i).await?;
        log(format!(
            "commerce-server #{i} ready on 127.0.0.1:{}",
            instances.ports[i]
        ));
    }
    let (nginx, front) = start_nginx(run_dir, &instances.ports).await?;
    log(format!("nginx on {front}"));
    let monitoring = start_monitoring(root, run_dir, &instances.ports, &webhook).await;
    Ok(Deployment {
        monitoring,
        pg,
        redis,
        broker,
        instances,
        nginx: Some(nginx),
        front,
        webhook,
        platform,
        redis_proxy,
        pg_proxy,
        db_url,
    })
}

/// PostgreSQL and Redis of the run's own and, in Kafka mode, a broker.
async fn start_stores(
    fault: Fault,
    opts: &ChaosOptions,
    run_dir: &Path,
) -> Result<(Postgres, Redis, Option<Broker>)> {
    let pg = Postgres::start(run_dir).await?;
    log(format!(
        "{} on 127.0.0.1:{} ({})",
        pg.version,
        pg.port,
        pg.data().display()
    ));
    let redis = Redis::start(run_dir).await?;
    log(format!("Redis on 127.0.0.1:{}", redis.port));
    let broker = if kafka_mode(fault, opts) {
        let b = Broker::start(run_dir).await?;
        log(format!(
            "Kafka broker (tansu) on {} (storage {})",
            b.address(),
            run_dir.join("tansu").display()
        ));
        Some(b)
    } else {
        None
    };
    Ok((pg, redis, broker))
}

/// The TCP fault proxies the slow faults need: in front of Redis
/// (redis-slow), in front of PostgreSQL (pg-slow).
async fn start_proxies(
    fault: Fault,
    redis: &Redis,
    pg: &Postgres,
) -> Result<(Option<proxy::ChaosProxy>, Option<proxy::ChaosProxy>)> {
    let loopback = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let redis_proxy = match fault {
        Fault::RedisSlow => Some(proxy::ChaosProxy::start(loopback(redis.port)).await?),
        _ => None,
    };
    let pg_proxy = match fault {
        Fault::PgSlow => Some(proxy::ChaosProxy::start(loopback(pg.port)).await?),
        _ => None,
    };
    Ok((redis_proxy, pg_proxy))
}

/// Every instance's settings: the service's own URLs (through a proxy, if
/// any), the data platform's receiver, the broker, then `--set`.
fn server_env(
    opts: &ChaosOptions,
    service_db_url: String,
    redis_url: String,
    platform: &Receiver,
    broker: Option<&Broker>,
) -> ServerEnv {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let mut settings = vec![("data_platform.url".to_owned(), platform.url("/events"))];
    if let Some(b) = broker {
        // Kafka mode: the relay publishes to the broker, each consumer
        // group reads from it (topics made by the instances at start-up).
        settings.push(("kafka.brokers".to_owned(), b.address()));
    }
    settings.extend(opts.settings.iter().cloned());
    ServerEnv {
        db_url: service_db_url,
        redis_url,
        prefix: "chaos:".to_owned(),
        admin_key: format!("chaos-admin-{}", base::random_hex(16)),
        token_secret: base::random_hex(32),
        workers: (cores / 2).max(1),
        settings,
    }
}

/// Prometheus and Alertmanager watching the instances, or why there are
/// none (the run goes on without them).
async fn start_monitoring(
    root: &Path,
    run_dir: &Path,
    ports: &[u16],
    webhook: &Receiver,
) -> Result<crate::prom::Stack, String> {
    let targets: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let hook = webhook.url("/alertmanager");
    match crate::prom::Stack::start(root, &run_dir.join("prometheus"), &targets, Some(&hook)).await
    {
        Ok(m) => {
            if let Err(e) = m.wait_ready_to_watch(Duration::from_secs(20)).await {
                log(format!("Prometheus: {e:#}"));
            }
            log(format!("Prometheus on {}", m.prometheus_url));
            Ok(m)
        }
        Err(e) => {
            log(format!("no Prometheus for this run: {e:#}"));
            Err(format!("{e:#}"))
        }
    }
}
