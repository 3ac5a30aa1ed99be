//! The service a run measures: the database made fresh (dropped, migrated
//! by the server, users seeded), N commerce-server instances and nginx in
//! front of them. `procs::Children` stops them (main, on every way out).

use crate::base::log;
use crate::options::{self, Balancer, RunOptions};
use crate::procs::{self, Children, Managed};
use crate::scenarios::Scenario;
use crate::{nginx, setup};
use anyhow::{anyhow, bail, Result};
use setup::Api;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::Command;

/// Every user's opening balance (with its ledger row).
pub const OPENING_BALANCE: i64 = 1_000_000;

pub(crate) struct ServerEnv {
    pub(crate) db_url: String,
    pub(crate) redis_url: String,
    pub(crate) prefix: String,
    pub(crate) admin_key: String,
    pub(crate) token_secret: String,
    pub(crate) workers: usize,
    /// `--set` overrides, applied last so they win over the runner's own.
    pub(crate) settings: Vec<(String, String)>,
}

impl ServerEnv {
    pub(crate) fn apply(&self, cmd: &mut Command, addr: &str) {
        cmd.env("COMMERCE__DATABASE__URL", &self.db_url)
            .env("COMMERCE__HTTP__ADDR", addr)
            .env("COMMERCE__HTTP__WORKERS", self.workers.to_string())
            .env("COMMERCE__HTTP__SHUTDOWN_TIMEOUT_SECS", "5")
            .env("COMMERCE__REDIS__URL", &self.redis_url)
            .env("COMMERCE__REDIS__KEY_PREFIX", &self.prefix)
            .env("COMMERCE__AUTH__ADMIN_KEY", &self.admin_key)
            .env("COMMERCE__AUTH__TOKEN_SECRET", &self.token_secret)
            .env("COMMERCE__LOG__LEVEL", "warn")
            // Few users driven hard: per-user limits would throttle the run.
            .env("COMMERCE__RATE_LIMIT__ENABLED", "false");
        for (key, value) in &self.settings {
            cmd.env(options::env_name(key), value);
        }
    }
}

/// The running service of one scenario run.
pub struct Stack {
    /// Each instance's base URL.
    pub bases: Vec<String>,
    /// Where k6 sends requests: nginx, else every instance.
    pub front: Vec<String>,
    /// How the report describes the front.
    pub balancer_text: String,
    pub ports: Vec<u16>,
    pub env: ServerEnv,
    pub db_url: String,
    pub redis_url: String,
    pub workers: usize,
    pub cores: usize,
}

/// The front: nginx when asked or available, else k6 spreads the requests.
fn find_nginx(opts: &RunOptions) -> Result<Option<PathBuf>> {
    Ok(match opts.balancer {
        Balancer::K6 => None,
        Balancer::Nginx => Some(nginx::find().ok_or_else(|| {
            anyhow!("--balancer nginx, but nginx is not installed (apt-get install -y nginx-light)")
        })?),
        Balancer::Auto if opts.instances > 1 => {
            let found = nginx::find();
            if found.is_none() {
                log("nginx not installed (apt-get install -y nginx-light): k6 spreads requests over the instances");
            }
            found
        }
        Balancer::Auto => None,
    })
}

/// Configuration shared by every instance: (admin URL, environment, cores).
fn configure(opts: &RunOptions, scenario: &Scenario) -> Result<(String, ServerEnv, usize)> {
    let pg_base = std::env::var("LOADTEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let admin_url = setup::with_database(&pg_base, "postgres")?;
    let db_url = setup::with_database(&pg_base, &opts.database)?;
    let redis_url = std::env::var("COMMERCE__REDIS__URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let workers = opts
        .workers
        .unwrap_or_else(|| (cores / opts.instances).max(1));
    let env = ServerEnv {
        db_url,
        redis_url,
        // The database in the prefix too: two runs of one scenario on
        // different databases (two people on one machine) keep their keys.
        prefix: if opts.database == "commerce_load" {
            format!("loadtest:{}:", scenario.name)
        } else {
            format!("loadtest:{}:{}:", opts.database, scenario.name)
        },
        admin_key: format!("loadtest-admin-{}", crate::base::random_hex(16)),
        token_secret: crate::base::random_hex(32),
        workers,
        settings: opts.settings.clone(),
    };
    Ok((admin_url, env, cores))
}

/// Fresh state: Redis prefix, database (migrated by the server), users.
async fn fresh_state(
    opts: &RunOptions,
    env: &ServerEnv,
    admin_url: &str,
    server_bin: &Path,
    run_dir: &Path,
    users: usize,
) -> Result<tokio_postgres::Client> {
    match setup::clear_redis(&env.redis_url, &env.prefix).await {
        Ok(n) => log(format!("cleared {n} Redis keys under {}", env.prefix)),
        Err(e) => log(format!(
            "could not clear Redis keys under {} ({e:#}); going on",
            env.prefix
        )),
    }
    log(format!("recreating database {}", opts.database));
    setup::drop_database(admin_url, &opts.database).await?;
    migrate(server_bin, env, run_dir).await?;
    let db = setup::connect(&env.db_url).await?;
    setup::seed_users(&db, users, OPENING_BALANCE).await?;
    log(format!(
        "seeded {} users by COPY (balance {OPENING_BALANCE} each, with ledger rows)",
        users
    ));
    Ok(db)
}
/// The schema, by the server itself (`commerce-server migrate`, bounded).
pub(crate) async fn migrate(server_bin: &Path, env: &ServerEnv, run_dir: &Path) -> Result<()> {
    let migrate_log = run_dir.join("migrate.log");
    let mut migrate = Command::new(server_bin);
    migrate.arg("migrate");
    env.apply(&mut migrate, "127.0.0.1:0");
    let mut m = Managed::spawn(
        "commerce-server migrate",
        &mut migrate,
        &migrate_log,
        libc::SIGTERM,
    )?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = m.exited() {
            break s;
        }
        if Instant::now() > deadline {
            m.stop(Duration::from_secs(5)).await;
            bail!("commerce-server migrate did not finish within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if !status.success() {
        bail!(
            "commerce-server migrate failed:\n{}",
            procs::tail(&migrate_log, 20)
        );
    }
    Ok(())
}

/// The instances, each waited on until ready: (base URLs, ports).
async fn start_instances(
    opts: &RunOptions,
    env: &ServerEnv,
    server_bin: &Path,
    run_dir: &Path,
    children: &mut Children,
) -> Result<(Vec<String>, Vec<u16>)> {
    let mut bases = Vec::new();
    let mut ports = Vec::new();
    for i in 0..opts.instances {
        let port = procs::free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(server_bin);
        env.apply(&mut cmd, &addr);
        let log_path = run_dir.join(format!("server-{i}.log"));
        let idx = children.push(Managed::spawn(
            &format!("commerce-server #{i}"),
            &mut cmd,
            &log_path,
            libc::SIGTERM,
        )?);
        bases.push(format!("http://{addr}"));
        ports.push(port);
        let api = Api::new(vec![], String::new())?;
        let ready = api
            .wait_ready(
                &format!("http://{addr}"),
                Duration::from_secs(60),
                children.get_mut(idx),
            )
            .await;
        if let Err(e) = ready {
            bail!(
                "commerce-server #{i} on {addr} is not ready: {e:#}\n{}",
                procs::tail(&log_path, 30)
            );
        }
        log(format!(
            "commerce-server #{i} ready on {addr} ({} worker(s))",
            env.workers
        ));
    }
    Ok((bases, ports))
}

/// nginx in front of the instances: (its URL, how the report says it).
async fn start_nginx(
    bin: &Path,
    run_dir: &Path,
    ports: &[u16],
    children: &mut Children,
) -> Result<(String, String)> {
    let (m, front) = nginx::start(bin, run_dir, ports).await?;
    children.push(m);
    log(format!(
        "nginx on {front} in front of {} instance(s)",
        ports.len()
    ));
    Ok((
        front,
        format!("behind nginx ({}, upstream keepalive)", bin.display()),
    ))
}

/// The whole service of a run, from a fresh database to the front; and
/// the connection that seeded the users (the data stage closes it before
/// the stock snapshot).
pub async fn start(
    opts: &RunOptions,
    scenario: &Scenario,
    server_bin: &Path,
    run_dir: &Path,
    users: usize,
    children: &mut Children,
) -> Result<(Stack, tokio_postgres::Client)> {
    let nginx_bin = find_nginx(opts)?;
    let (admin_url, env, cores) = configure(opts, scenario)?;
    let db = fresh_state(opts, &env, &admin_url, server_bin, run_dir, users).await?;
    let (bases, ports) = start_instances(opts, &env, server_bin, run_dir, children).await?;
    let (front, balancer_text) = match &nginx_bin {
        Some(bin) => {
            let (front, text) = start_nginx(bin, run_dir, &ports, children).await?;
            (vec![front], text)
        }
        None if bases.len() > 1 => (
            bases.clone(),
            "no proxy: k6 spreads requests over the instances (BASE_URLS)".to_owned(),
        ),
        None => (bases.clone(), "one instance, no proxy".to_owned()),
    };
    let stack = Stack {
        bases,
        front,
        balancer_text,
        ports,
        db_url: env.db_url.clone(),
        redis_url: env.redis_url.clone(),
        workers: env.workers,
        env,
        cores,
    };
    Ok((stack, db))
}
