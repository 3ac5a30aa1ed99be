//! One scenario run, end to end.

use crate::options::{self, Balancer, RunOptions};
use crate::procs::{self, Children, Managed};
use crate::report::{self, OrderCounts, ReportInput, Setup};
use crate::rules::RuleResult;
use crate::scenarios::{self, CouponQuantity, Scenario, Shape};
use crate::seeds::SeedFigures;
use crate::setup::{self, Api, OrderRef};
use crate::summary::Summary;
use crate::{k6, nginx, probe, prom, rules, seeds, servermetrics};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_UNAVAILABLE: u8 = 3;
pub const EXIT_THRESHOLDS: u8 = 4;
pub const EXIT_RULES: u8 = 5;

/// Runs of a burst scenario when `--bursts` does not say: on 2 shared cores
/// the first burst or two after the start are often the slowest, and the
/// median of 7 moves less with them than the median of 5.
const DEFAULT_BURSTS: usize = 7;

/// Every user's opening balance (with its ledger row).
const OPENING_BALANCE: i64 = 1_000_000;
const CATALOG_STOCK: u64 = 50;

pub fn log(msg: impl AsRef<str>) {
    eprintln!("[loadtest] {}", msg.as_ref());
}

/// Paths of the repository (the runner is built from it).
pub struct Paths {
    pub root: PathBuf,
    pub k6_dir: PathBuf,
    pub results: PathBuf,
    pub reports: PathBuf,
}

impl Paths {
    /// The repository holding `loadtests/k6`: `LOADTEST_ROOT`, else the
    /// current folder or one above it, else where the runner was built from.
    pub fn locate() -> Result<Self> {
        let is_root = |p: &Path| p.join("loadtests/k6/lib/common.js").is_file();
        let from_env = std::env::var_os("LOADTEST_ROOT").map(PathBuf::from);
        let from_cwd = std::env::current_dir()
            .ok()
            .and_then(|cwd| cwd.ancestors().find(|p| is_root(p)).map(Path::to_path_buf));
        let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let root = from_env
            .or(from_cwd)
            .unwrap_or(built)
            .canonicalize()
            .context("locating the repository root")?;
        if !is_root(&root) {
            bail!(
                "{} has no loadtests/k6 (run from the repository, or set LOADTEST_ROOT)",
                root.display()
            );
        }
        Ok(Self {
            k6_dir: root.join("loadtests/k6"),
            results: root.join("loadtests/results"),
            reports: root.join("loadtests/reports"),
            root,
        })
    }
}

/// What a finished run leaves for `main` (servers stay up with --keep-running).
pub struct Finished {
    pub exit: u8,
    pub entry: Option<String>,
    /// The figures, when the run got as far as its report (`all`'s table).
    pub outcome: Option<Box<RunOutcome>>,
}

/// What `all`'s summary table needs from one run.
pub struct RunOutcome {
    pub ours: Summary,
    pub ceiling: Option<Summary>,
    pub seed: Option<SeedFigures>,
    pub rules: Vec<RuleResult>,
    pub report: PathBuf,
    pub label: Option<String>,
    pub settings: Vec<(String, String)>,
    /// The scenario's coupon units, when it has a coupon.
    pub coupon_quantity: Option<u64>,
    pub k6_exit: Option<i32>,
    /// The most k6 thresholds one burst crossed.
    pub thresholds_crossed: usize,
    /// `coupon_issued` of every burst, when the scenario has a coupon.
    pub issued_per_burst: Vec<f64>,
    /// The sale product's units, when the scenario has one.
    pub sale_units: Option<u64>,
    /// Each burst's order answers, for a flash-sale burst scenario.
    pub orders_per_burst: Vec<OrderCounts>,
}

/// The commerce-server binary of a run and how the report describes it;
/// `all` resolves it once and hands it to every entry, so the server is
/// built once.
#[derive(Debug, Clone)]
pub struct ServerBinary {
    pub path: PathBuf,
    pub text: String,
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf));
    if ok.is_err() {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(std::process::id());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(31);
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// `cargo` for a build of the workspace, without the variables `cargo run`
/// gave this binary (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, …): build scripts
/// such as ring's watch them, so inheriting them would rebuild those crates
/// on every run and again at the next `cargo run`.
fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let from_cargo_run = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_"]
            .iter()
            .any(|p| key.starts_with(p))
            || matches!(
                key,
                "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "OUT_DIR"
            );
        if from_cargo_run {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(root);
    cmd
}

async fn cargo_target_dir(root: &Path) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return Ok(if dir.is_absolute() {
            dir
        } else {
            root.join(dir)
        });
    }
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        cargo(root)
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow!("cargo metadata timed out"))??;
    let v: Value = serde_json::from_slice(&out.stdout).context("cargo metadata printed no JSON")?;
    v.get("target_directory")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("cargo metadata: no target_directory"))
}

/// `cargo build --release -p commerce-server`; the binary's path.
async fn build_server(root: &Path) -> Result<PathBuf> {
    log("building commerce-server (cargo build --release -p commerce-server)");
    let status = tokio::time::timeout(
        Duration::from_secs(3600),
        cargo(root)
            .args(["build", "--release", "-p", "commerce-server"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .status(),
    )
    .await
    .map_err(|_| anyhow!("building commerce-server took more than an hour"))??;
    if !status.success() {
        bail!("cargo build --release -p commerce-server failed");
    }
    let bin = cargo_target_dir(root)
        .await?
        .join("release/commerce-server");
    if !bin.is_file() {
        bail!("built, but {} is not there", bin.display());
    }
    Ok(bin)
}

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

pub(crate) fn write_json(path: &Path, v: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string(v)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// The message for a scenario whose routes have not landed.
pub fn unavailable_message(s: &Scenario, missing: &[scenarios::Endpoint]) -> String {
    let list: Vec<String> = missing
        .iter()
        .map(|e| format!("  {} {}", e.method, e.path))
        .collect();
    format!(
        "scenario `{}` is not available yet: the server does not list these routes in /openapi.json:\n{}\n\
         (they are in the HTTP contract, docs/api.md; run with --force to try anyway)",
        s.name,
        list.join("\n")
    )
}

/// `--server-bin`, else `cargo build --release -p commerce-server`.
pub async fn server_binary(opts: &RunOptions, root: &Path) -> Result<ServerBinary> {
    resolve_server(opts.server_bin.as_deref(), root).await
}

/// `server_bin`, else `cargo build --release -p commerce-server`.
pub async fn resolve_server(server_bin: Option<&Path>, root: &Path) -> Result<ServerBinary> {
    Ok(match server_bin {
        Some(p) => {
            let path = p
                .canonicalize()
                .with_context(|| format!("--server-bin {}", p.display()))?;
            let text = format!("`{}` (given with --server-bin)", path.display());
            ServerBinary { path, text }
        }
        None => {
            let path = build_server(root).await?;
            let text = format!(
                "`{}`, built from {}",
                rel(root, &path),
                git_revision(root).await
            );
            ServerBinary { path, text }
        }
    })
}

/// A copy of a built binary in `dir`, so that builds by others into the
/// shared target folder cannot swap it during a long `all`.
pub fn pin_binary(bin: ServerBinary, dir: &Path, root: &Path) -> ServerBinary {
    let copy = dir.join("commerce-server");
    let copied = std::fs::create_dir_all(dir).and_then(|()| std::fs::copy(&bin.path, &copy));
    match copied {
        Ok(_) => ServerBinary {
            text: format!("{}; run from the copy `{}`", bin.text, rel(root, &copy)),
            path: copy,
        },
        Err(e) => {
            log(format!(
                "could not copy {} to {} ({e}); using it in place",
                bin.path.display(),
                copy.display()
            ));
            bin
        }
    }
}

/// One run. `server` holds the binary once resolved: `None` resolves it
/// (building unless --server-bin) and keeps it there for the next run.
pub async fn run(
    opts: &RunOptions,
    argv: &[String],
    children: &mut Children,
    server: &mut Option<ServerBinary>,
) -> Result<Finished> {
    let started_at = chrono::Utc::now();
    let wall = Instant::now();
    let paths = Paths::locate()?;
    let scenario = scenarios::find(&opts.scenario).ok_or_else(|| {
        let names: Vec<&str> = scenarios::SCENARIOS.iter().map(|s| s.name).collect();
        anyhow!(
            "unknown scenario `{}`; one of: {}",
            opts.scenario,
            names.join(", ")
        )
    })?;
    procs::raise_nofile_limit();
    let load_start = loadavg();

    // Where this run's files go (git-ignored).
    let run_dir = paths.results.join(format!(
        "{}-{}",
        scenario.name,
        started_at.format("%Y%m%d-%H%M%S")
    ));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    log(format!("run folder {}", rel(&paths.root, &run_dir)));

    // k6 and the scenario's scaled shape.
    let k6 = k6::ensure().await?;
    let k6_version = format!("{} ({})", k6::version(&k6).await, k6::tuning_text());
    let script = paths.k6_dir.join(scenario.script);
    let scale_vars = vec![
        ("VU_SCALE".to_owned(), opts.vu_scale.to_string()),
        ("DURATION_SCALE".to_owned(), opts.duration_scale.to_string()),
        ("THINK_SCALE".to_owned(), opts.think_scale.to_string()),
    ];
    let shape = k6::inspect(&k6, &script, &scale_vars).await?;
    log(format!("shape: {}", shape.describe()));
    // At least one user per VU (scripts give each VU its own user).
    let users = opts
        .users
        .max(usize::try_from(shape.peak_vus()).unwrap_or(usize::MAX));

    // The server binary.
    let binary = match server {
        Some(b) => b.clone(),
        None => server
            .insert(server_binary(opts, &paths.root).await?)
            .clone(),
    };
    let (server_bin, server_text) = (binary.path, binary.text);

    // The front: nginx when asked or available, else k6 spreads the requests.
    let nginx_bin = match opts.balancer {
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
    };

    // Configuration shared by every instance.
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
        db_url: db_url.clone(),
        redis_url: redis_url.clone(),
        // The database in the prefix too: two runs of one scenario on
        // different databases (two people on one machine) keep their keys.
        prefix: if opts.database == "commerce_load" {
            format!("loadtest:{}:", scenario.name)
        } else {
            format!("loadtest:{}:{}:", opts.database, scenario.name)
        },
        admin_key: format!("loadtest-admin-{}", random_hex(16)),
        token_secret: random_hex(32),
        workers,
        settings: opts.settings.clone(),
    };

    // Fresh state: Redis prefix, database (migrated by the server), users.
    match setup::clear_redis(&redis_url, &env.prefix).await {
        Ok(n) => log(format!("cleared {n} Redis keys under {}", env.prefix)),
        Err(e) => log(format!(
            "could not clear Redis keys under {} ({e:#}); going on",
            env.prefix
        )),
    }
    log(format!("recreating database {}", opts.database));
    setup::drop_database(&admin_url, &opts.database).await?;
    let migrate_log = run_dir.join("migrate.log");
    let mut migrate = Command::new(&server_bin);
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
    let db = setup::connect(&db_url).await?;
    setup::seed_users(&db, users, OPENING_BALANCE).await?;
    log(format!(
        "seeded {} users by COPY (balance {OPENING_BALANCE} each, with ledger rows)",
        users
    ));

    // The instances.
    let mut bases = Vec::new();
    let mut ports = Vec::new();
    for i in 0..opts.instances {
        let port = procs::free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(&server_bin);
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
            "commerce-server #{i} ready on {addr} ({workers} worker(s))"
        ));
    }

    // nginx in front.
    let (front, balancer_text) = match &nginx_bin {
        Some(bin) => {
            let dir = run_dir.join("nginx");
            std::fs::create_dir_all(&dir)?;
            let port = procs::free_port()?;
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, nginx::config(&dir, port, &ports))?;
            let mut cmd = Command::new(bin);
            cmd.arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.join("nginx-error.log"));
            children.push(Managed::spawn(
                "nginx",
                &mut cmd,
                &dir.join("nginx.out"),
                libc::SIGQUIT,
            )?);
            let front = format!("http://127.0.0.1:{port}");
            let api = Api::new(vec![front.clone()], String::new())?;
            api.wait_ready(&front, Duration::from_secs(15), None)
                .await
                .with_context(|| {
                    format!(
                        "nginx did not answer:\n{}",
                        procs::tail(&dir.join("nginx-error.log"), 20)
                    )
                })?;
            log(format!(
                "nginx on {front} in front of {} instance(s)",
                ports.len()
            ));
            (
                vec![front],
                format!("behind nginx ({}, upstream keepalive)", bin.display()),
            )
        }
        None if bases.len() > 1 => (
            bases.clone(),
            "no proxy: k6 spreads requests over the instances (BASE_URLS)".to_owned(),
        ),
        None => (bases.clone(), "one instance, no proxy".to_owned()),
    };

    // Prometheus (and Alertmanager) scraping every instance; a run
    // without them says so in its report.
    let monitor = prom::LoadMonitor::start(&paths.root, &run_dir, &ports, children).await;

    // Are the scenario's routes there?
    let api = Api::new(bases.clone(), env.admin_key.clone())?;
    let openapi = api
        .get_json("/openapi.json")
        .await
        .context("GET /openapi.json")?;
    let missing = probe::missing(scenario.needs, &probe::routes(&openapi));
    if !missing.is_empty() {
        if opts.force {
            log(format!(
                "--force: going on without {} route(s)",
                missing.len()
            ));
        } else {
            eprintln!("{}", unavailable_message(scenario, &missing));
            return Ok(Finished {
                exit: EXIT_UNAVAILABLE,
                entry: Some(front.join(",")),
                outcome: None,
            });
        }
    }

    // Tokens and the scenario's data.
    let need = scenario.data;
    let tokens_file = run_dir.join("tokens.json");
    let mut tokens = Vec::new();
    if need.tokens || need.orders {
        let t0 = Instant::now();
        tokens = api.mint_tokens(users).await.context("minting tokens")?;
        write_json(&tokens_file, &tokens)?;
        log(format!(
            "minted {} tokens in {:.1}s",
            tokens.len(),
            t0.elapsed().as_secs_f64()
        ));
    }
    let mut data = serde_json::Map::new();
    let mut data_text = format!(
        "{} users (opening balance {} each, one ledger row each)",
        report::int(users as f64),
        report::int(OPENING_BALANCE as f64)
    );
    let mut products: Vec<Value> = Vec::new();
    if need.products || need.orders {
        let t0 = Instant::now();
        products = api
            .create_products(opts.products, CATALOG_STOCK, "load product")
            .await
            .context("creating products")?;
        log(format!(
            "created {} products in {:.1}s",
            products.len(),
            t0.elapsed().as_secs_f64()
        ));
        data.insert("product_count".into(), json!(products.len()));
        data_text.push_str(&format!(
            "; {} products × {CATALOG_STOCK} units",
            products.len()
        ));
    }
    if need.contention_products {
        let n = shape.peak_vus().div_ceil(2).max(1) as usize;
        let ids = api
            .create_products(n, 1, "last unit")
            .await
            .context("creating contention products")?;
        log(format!("created {n} products with one unit each"));
        data.insert("contention_products".into(), Value::Array(ids));
        data_text.push_str(&format!("; {n} products × 1 unit (one per pair of VUs)"));
    }
    let mut coupon_quantity = None;
    if let Some(q) = need.coupon {
        let quantity = match q {
            CouponQuantity::HalfOfVus => shape.peak_vus().div_ceil(2).max(1),
            CouponQuantity::Fixed(n) => n,
        };
        let id = api
            .create_coupon(quantity)
            .await
            .context("creating the coupon")?;
        data.insert("coupon".into(), json!({ "id": id, "quantity": quantity }));
        coupon_quantity = Some(quantity);
        data_text.push_str(&format!("; one coupon, {quantity} units, open now"));
    }
    let mut sale_units = None;
    if let Some(stock) = need.sale_product {
        let units = stock.units(shape.peak_vus(), shape.expected_iterations());
        let sells_out = stock.sells_out();
        let id = create_sale_product(&api, units, sells_out).await?;
        log(format!("created the sale product {id} with {units} units"));
        data.insert(
            "sale_product".into(),
            json!({ "id": id, "units": units, "sells_out": sells_out }),
        );
        sale_units = Some(units);
        data_text.push_str(&format!(
            "; one sale product, {} units{}",
            report::int(units as f64),
            if shape.is_burst() {
                " (a fresh one for each burst)"
            } else {
                ""
            }
        ));
    }
    // Stock before any order reserved some (the conservation rule's baseline).
    drop(db);
    if setup::snapshot_stock(&setup::connect(&db_url).await?).await? {
        log("snapshot of the initial stock taken");
    }
    if need.orders {
        let count = shape
            .expected_iterations()
            .map(|n| (n as f64 * 1.05).ceil() as usize + 10)
            .unwrap_or(users);
        let t0 = Instant::now();
        let orders: Vec<OrderRef> = api
            .create_orders(&tokens, &products, count)
            .await
            .context("creating pending orders")?;
        log(format!(
            "created {} pending orders in {:.1}s",
            orders.len(),
            t0.elapsed().as_secs_f64()
        ));
        data.insert("orders".into(), serde_json::to_value(&orders)?);
        data_text.push_str(&format!(
            "; {} pending orders",
            report::int(orders.len() as f64)
        ));
    }
    if need.products {
        data.insert("products".into(), Value::Array(products));
    }
    let data_file = run_dir.join("data.json");
    write_json(&data_file, &Value::Object(data.clone()))?;
    let t0 = Instant::now();
    setup::settle(&setup::connect(&db_url).await?).await?;
    log(format!(
        "VACUUM (ANALYZE) of the loaded tables and CHECKPOINT after the load in {:.1}s",
        t0.elapsed().as_secs_f64()
    ));

    // Warm-up: one GET /health/live per VU at the scenario's peak
    // concurrency (capped), unmeasured. It opens the proxy's upstream
    // keep-alive connections and wakes the servers' accept path, so the
    // scenario starts from the state the ceiling run (which comes after it)
    // finds; otherwise a burst scenario alone pays for connection set-up.
    let warm_vus = shape.peak_vus().clamp(1, 1000);
    let warm_shape = json!({
        "executor": "per-vu-iterations",
        "vus": warm_vus,
        "iterations": 1,
        "maxDuration": "60s",
        "exec": "default",
    });
    log(format!(
        "warm-up: {warm_vus} VUs × GET /health/live (not measured)"
    ));
    let warm_code = run_live(
        &k6,
        &paths.k6_dir,
        &front,
        &warm_shape,
        &run_dir,
        "warmup",
        Duration::from_secs(120),
    )
    .await?;
    if !matches!(warm_code, Some(0)) {
        log(format!("warm-up exited {warm_code:?}; going on"));
    }

    // Bursts. A burst of one iteration per VU is over in about a second and
    // its p95 swings from one burst to the next (scheduling on a shared
    // machine), so it runs several times, each on fresh data and each
    // followed by a ceiling burst: a pair shares the machine's state, the
    // medians stand for the run, and every burst is in the report.
    let refreshable = !need.orders;
    let bursts = match (shape.is_burst(), refreshable) {
        (true, true) => opts.bursts.unwrap_or(DEFAULT_BURSTS),
        (true, false) => {
            if opts.bursts.is_some_and(|b| b > 1) {
                log("--bursts: this scenario's data (pending orders) is used up by one burst; running once");
            }
            1
        }
        (false, _) => 1,
    };
    let ceiling_runs = if opts.ceiling {
        opts.ceiling_runs.unwrap_or(bursts)
    } else {
        0
    };
    let mut ceiling_shape = shape.scenario.clone();
    if let Some(obj) = ceiling_shape.as_object_mut() {
        obj.insert("exec".into(), json!("default"));
    }

    // The servers' histograms before the scenario, so the report shows the
    // scenario's requests only (the ceilings' /health/live is left out of it).
    let (metrics_before, _) = servermetrics::scrape(&bases).await;
    let window_start = prom::unix_now();

    let mut vars = scale_vars.clone();
    vars.push(("BASE_URLS".into(), front.join(",")));
    vars.push(("TOKENS_FILE".into(), tokens_file.display().to_string()));
    // A burst is over in seconds, whatever its maxDuration: with a longer
    // period k6 has too few to draw and skips the dashboard.
    let period = if bursts > 1 {
        Duration::from_secs(1)
    } else {
        Duration::from_secs((shape.total.as_secs() / 60).clamp(1, 10))
    };
    let limit = shape.total + Duration::from_secs(300);
    let summary_path = run_dir.join("summary.json");
    let dashboard = run_dir.join("dashboard.html");
    let mut runs: Vec<(Summary, Option<i32>)> = Vec::new();
    let mut measured = Vec::new();
    let run = ScenarioRun {
        k6: &k6,
        script: &script,
        vars: &vars,
        run_dir: &run_dir,
        period,
        limit,
    };
    for n in 1..=bursts.max(ceiling_runs) {
        let suffix = if n == 1 {
            String::new()
        } else {
            format!("-{n}")
        };
        if n <= bursts {
            let data_path = if n == 1 {
                data_file.clone()
            } else {
                let path = run_dir.join(format!("data{suffix}.json"));
                write_fresh_burst_data(&api, &db_url, &data, &path).await?;
                path
            };
            let what = if bursts > 1 {
                format!(", burst {n} of {bursts}")
            } else {
                String::new()
            };
            log(format!(
                "k6 run {}{what} (bounded to {}s)",
                scenario.script,
                limit.as_secs()
            ));
            // A burst's measured runs go without the dashboard: see below.
            let (code, summary, out, err) = run
                .start(
                    &suffix,
                    &data_path,
                    &[],
                    (bursts == 1).then_some(dashboard.as_path()),
                )
                .await?;
            print!("{}", std::fs::read_to_string(&out).unwrap_or_default());
            let parsed = Summary::parse(&std::fs::read_to_string(&summary).with_context(|| {
                format!(
                    "k6 wrote no summary (exit {code:?}):\n{}",
                    procs::tail(&err, 30)
                )
            })?)
            .map_err(|e| anyhow!(e))?;
            runs.push((parsed, code));
        }
        if n <= ceiling_runs {
            log(format!(
                "k6 run ceiling.js (GET /health/live, same VU shape), {n} of {ceiling_runs}"
            ));
            let stem = format!("ceiling{suffix}");
            let code = run_live(
                &k6,
                &paths.k6_dir,
                &front,
                &ceiling_shape,
                &run_dir,
                &stem,
                limit,
            )
            .await?;
            let path = run_dir.join(format!("{stem}-summary.json"));
            match std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| Summary::parse(&t))
            {
                Ok(s) => measured.push(Some(s)),
                Err(e) => {
                    log(format!("ceiling run gave no summary (exit {code:?}): {e}"));
                    measured.push(None);
                }
            }
        }
    }
    let (metrics_after, scrape_errors) = servermetrics::scrape(&bases).await;
    for e in &scrape_errors {
        log(format!("could not read the server's metrics: {e}"));
    }
    let inside = servermetrics::delta(&metrics_after, &metrics_before);

    // The HTML dashboard takes k6 CPU in the middle of a burst (every sample
    // goes through it), which the ceiling bursts do not pay: a burst scenario
    // gets its dashboard from one more burst, on fresh data, after the
    // measured ones and outside the figures; its thresholds still count.
    let mut dashboard_run: Option<(Summary, Option<i32>)> = None;
    if bursts > 1 {
        let data_path = run_dir.join("data-dashboard.json");
        write_fresh_burst_data(&api, &db_url, &data, &data_path).await?;
        log(format!(
            "k6 run {}, one more burst for the HTML dashboard (not in the figures)",
            scenario.script
        ));
        let (code, summary, _, _) = run
            .start(
                "-dashboard",
                &data_path,
                // k6 draws no dashboard for a run of a few seconds: this
                // burst's VUs think 4× as long (after their issue, so the
                // burst itself is the same).
                &[(
                    "THINK_SCALE",
                    (opts.think_scale.max(0.25) * 4.0).to_string(),
                )],
                Some(dashboard.as_path()),
            )
            .await?;
        match std::fs::read_to_string(&summary)
            .map_err(|e| e.to_string())
            .and_then(|t| Summary::parse(&t))
        {
            Ok(s) => {
                if need.coupon.is_some() {
                    log(format!(
                        "dashboard burst: {} issued",
                        s.count("coupon_issued")
                    ));
                }
                dashboard_run = Some((s, code));
            }
            Err(e) => log(format!(
                "dashboard burst gave no summary (exit {code:?}): {e}"
            )),
        }
    }

    let window_end = prom::unix_now();
    let prometheus = monitor.section(&paths.root, window_start, window_end).await;

    let headline_p95 = |s: &Summary| {
        s.trend(scenario.headline)
            .or_else(|| s.trend("http_req_duration"))
            .and_then(|t| t.p95)
    };
    let live_p95 = |s: &Summary| s.trend("live_duration").and_then(|t| t.p95);
    let burst_rows: Vec<report::BurstRow> = runs
        .iter()
        .enumerate()
        .map(|(i, (s, code))| report::BurstRow {
            p95: headline_p95(s),
            ceiling_p95: measured.get(i).and_then(Option::as_ref).and_then(live_p95),
            issued: need.coupon.map(|_| s.count("coupon_issued")),
            orders: need.sale_product.map(|_| OrderCounts::of(s)),
            thresholds_crossed: s.thresholds_crossed(),
            k6_exit: *code,
        })
        .collect();
    // Any burst's threshold or k6 failure is the run's.
    let thresholds_crossed = runs
        .iter()
        .chain(dashboard_run.iter())
        .map(|(s, _)| s.thresholds_crossed())
        .max()
        .unwrap_or(0);
    let k6_exit = runs
        .iter()
        .chain(dashboard_run.iter())
        .map(|(_, c)| *c)
        .find(|c| !matches!(c, Some(0) | Some(99)))
        .unwrap_or(Some(0));
    let ours = median_by(runs, |(s, _)| headline_p95(s).unwrap_or(f64::INFINITY))
        .map(|(s, _)| s)
        .ok_or_else(|| anyhow!("no scenario run"))?;
    let measured: Vec<Summary> = measured.into_iter().flatten().collect();
    let ceiling_p95s: Vec<f64> = measured.iter().filter_map(live_p95).collect();
    let ceiling = median_by(measured, |s| live_p95(s).unwrap_or(f64::INFINITY));

    // The rules, on a fresh connection (an idle one may have been cut during the run).
    let load_end = loadavg();
    let rule_results = match setup::connect(&db_url).await {
        Ok(db) => rules::check_all(&db).await,
        Err(e) => rules::RULES
            .iter()
            .map(|r| rules::RuleResult {
                name: r.name.to_owned(),
                design_rule: r.design_rule,
                outcome: rules::Outcome::Error(format!("{e:#}")),
            })
            .collect(),
    };
    for r in &rule_results {
        log(format!("rule {}: {:?}", r.name, r.outcome));
    }

    // The report.
    let date = started_at.format("%Y-%m-%d").to_string();
    let name = match &opts.label {
        Some(l) => format!("{}-{l}-{date}.md", scenario.name),
        None => format!("{}-{date}.md", scenario.name),
    };
    std::fs::create_dir_all(&paths.reports)?;
    let report_path = paths.reports.join(name);
    let mut artifacts = vec![
        (
            "k6 summary export".to_owned(),
            rel(&paths.root, &summary_path),
        ),
        (
            "k6 end-of-test output".to_owned(),
            rel(&paths.root, &run_dir.join("k6.out")),
        ),
        (
            "k6 log".to_owned(),
            rel(&paths.root, &run_dir.join("k6.log")),
        ),
        (
            "server logs".to_owned(),
            rel(&paths.root, &run_dir.join("server-*.log")),
        ),
        (
            "Prometheus and Alertmanager (configs, scaled rules, logs, data)".to_owned(),
            rel(&paths.root, &run_dir.join("prometheus")),
        ),
    ];
    if dashboard.is_file() {
        artifacts.insert(
            1,
            ("k6 HTML dashboard".to_owned(), rel(&paths.root, &dashboard)),
        );
    }
    if ceiling.is_some() {
        artifacts.push((
            "ceiling summary".to_owned(),
            rel(&paths.root, &run_dir.join("ceiling-summary.json")),
        ));
    }
    let issued_per_burst: Vec<f64> = burst_rows.iter().filter_map(|b| b.issued).collect();
    let orders_per_burst: Vec<OrderCounts> = if bursts > 1 {
        burst_rows.iter().filter_map(|b| b.orders).collect()
    } else {
        Vec::new()
    };
    let input = ReportInput {
        scenario: scenario.name,
        seed_no: scenario.seed,
        what: scenario.what,
        date,
        started: started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        command: format!("cargo run -p loadtest --release -- {}", argv.join(" ")),
        setup: Setup {
            server: server_text,
            instances: opts.instances,
            workers,
            balancer: balancer_text,
            k6_version,
            machine: format!(
                "{cores} cores; load average {} before the run, {} after k6",
                load_start.as_deref().unwrap_or("?"),
                load_end.as_deref().unwrap_or("?")
            ),
            shape: shape_line(&shape),
            vu_scale: opts.vu_scale,
            duration_scale: opts.duration_scale,
            think_scale: opts.think_scale,
            data: data_text,
            settings: report::settings_text(&opts.settings),
        },
        ours: &ours,
        ceiling: ceiling.as_ref(),
        seed: seeds::for_scenario(scenario.name),
        rules: &rule_results,
        k6_exit,
        artifacts,
        inside: servermetrics::render(&inside),
        prometheus,
        ceiling_p95s,
        headline: scenario.headline,
        bursts: if burst_rows.len() > 1 {
            burst_rows
        } else {
            Vec::new()
        },
        thresholds_crossed,
    };
    std::fs::write(&report_path, report::render(&input))
        .with_context(|| format!("writing {}", report_path.display()))?;
    let (passed, why) = report::verdict(&input);
    log(format!(
        "report {} ({}) after {:.0}s",
        rel(&paths.root, &report_path),
        if passed {
            "PASS".to_owned()
        } else {
            format!("FAIL: {}", why.join("; "))
        },
        wall.elapsed().as_secs_f64()
    ));
    if let (Some(o), Some(c)) = (
        ours.rate_per_s("http_reqs"),
        ceiling.as_ref().and_then(|c| c.rate_per_s("http_reqs")),
    ) {
        log(format!(
            "requests/s: ours {o:.1}, ceiling {c:.1} ({:.1} %)",
            o / c * 100.0
        ));
    }

    let exit = if rule_results.iter().any(|r| r.failed()) {
        EXIT_RULES
    } else if thresholds_crossed > 0 {
        EXIT_THRESHOLDS
    } else if !matches!(k6_exit, Some(0) | Some(99)) {
        EXIT_ERROR
    } else {
        EXIT_OK
    };
    if !opts.keep_running {
        if let Err(e) = setup::clear_redis(&redis_url, &env.prefix).await {
            log(format!(
                "could not clear Redis keys under {}: {e:#}",
                env.prefix
            ));
        }
    }
    let seed = input.seed;
    Ok(Finished {
        exit,
        entry: Some(front.join(",")),
        outcome: Some(Box::new(RunOutcome {
            ours,
            ceiling,
            seed,
            rules: rule_results,
            report: report_path,
            label: opts.label.clone(),
            settings: opts.settings.clone(),
            coupon_quantity,
            k6_exit,
            thresholds_crossed,
            issued_per_burst,
            sale_units,
            orders_per_burst,
        })),
    })
}

/// The next burst's data: what a burst uses up made anew (a coupon of the
/// same quantity; last-unit products, added to the stock snapshot so the
/// conservation rule covers them), the rest as it was.
/// What every k6 run of one scenario shares.
struct ScenarioRun<'a> {
    k6: &'a Path,
    script: &'a Path,
    vars: &'a [(String, String)],
    run_dir: &'a Path,
    period: Duration,
    limit: Duration,
}

impl ScenarioRun<'_> {
    /// One k6 run on `data`, its files named with `suffix`, `overrides` set
    /// over the shared variables: k6's exit code and the paths of its
    /// summary, output and log.
    async fn start(
        &self,
        suffix: &str,
        data: &Path,
        overrides: &[(&str, String)],
        dashboard: Option<&Path>,
    ) -> Result<(Option<i32>, PathBuf, PathBuf, PathBuf)> {
        let mut vars: Vec<(String, String)> = self
            .vars
            .iter()
            .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
            .cloned()
            .collect();
        vars.extend(overrides.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        vars.push(("DATA_FILE".into(), data.display().to_string()));
        let summary = self.run_dir.join(format!("summary{suffix}.json"));
        let out = self.run_dir.join(format!("k6{suffix}.out"));
        let err = self.run_dir.join(format!("k6{suffix}.log"));
        let code = k6::run(
            self.k6,
            &k6::RunSpec {
                script: self.script,
                vars,
                summary: &summary,
                dashboard,
                dashboard_period: self.period,
                stdout: &out,
                stderr: &err,
                limit: self.limit,
                env: Vec::new(),
            },
        )
        .await?;
        Ok((code, summary, out, err))
    }
}

/// [`fresh_burst_data`], written to `path` for k6.
async fn write_fresh_burst_data(
    api: &Api,
    db_url: &str,
    data: &serde_json::Map<String, Value>,
    path: &Path,
) -> Result<()> {
    let fresh = fresh_burst_data(api, db_url, data).await?;
    write_json(path, &Value::Object(fresh))
}

async fn fresh_burst_data(
    api: &Api,
    db_url: &str,
    data: &serde_json::Map<String, Value>,
) -> Result<serde_json::Map<String, Value>> {
    let mut fresh = data.clone();
    let quantity = data
        .get("coupon")
        .and_then(|c| c.get("quantity"))
        .and_then(Value::as_u64);
    if let Some(q) = quantity {
        let id = api
            .create_coupon(q)
            .await
            .context("creating the next burst's coupon")?;
        fresh.insert("coupon".into(), json!({ "id": id, "quantity": q }));
    }
    let products = data
        .get("contention_products")
        .and_then(Value::as_array)
        .map(Vec::len);
    if let Some(n) = products {
        let ids = api
            .create_products(n, 1, "last unit")
            .await
            .context("creating the next burst's products")?;
        setup::snapshot_new_stock(&setup::connect(db_url).await?).await?;
        fresh.insert("contention_products".into(), Value::Array(ids));
    }
    if let Some(sale) = data.get("sale_product") {
        let units = sale
            .get("units")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("sale_product without units: {sale}"))?;
        let sells_out = sale
            .get("sells_out")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let id = create_sale_product(api, units, sells_out).await?;
        setup::snapshot_new_stock(&setup::connect(db_url).await?).await?;
        fresh.insert(
            "sale_product".into(),
            json!({ "id": id, "units": units, "sells_out": sells_out }),
        );
    }
    Ok(fresh)
}

/// One sale product of `units` units; its id. One the sale is meant to sell
/// out is named with [`rules::SOLD_OUT_PRODUCT_PREFIX`], which the rule
/// "sold exactly its units" selects.
async fn create_sale_product(api: &Api, units: u64, sells_out: bool) -> Result<Value> {
    let prefix = if sells_out {
        rules::SOLD_OUT_PRODUCT_PREFIX
    } else {
        "sale product"
    };
    api.create_products(1, units, prefix)
        .await
        .context("creating the sale product")?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("POST /admin/products gave no id for the sale product"))
}

/// `commit abc1234` or `commit abc1234 + uncommitted changes` of the workspace.
pub(crate) async fn git_revision(root: &Path) -> String {
    async fn git(root: &Path, args: &[&str]) -> Option<String> {
        let mut cmd = Command::new("git");
        cmd.args(args)
            .current_dir(root)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        match tokio::time::timeout(Duration::from_secs(30), cmd.output()).await {
            Ok(Ok(out)) if out.status.success() => {
                Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
            }
            _ => None,
        }
    }
    match git(root, &["rev-parse", "--short", "HEAD"]).await {
        None => "an unknown revision (no git)".to_owned(),
        Some(rev) => match git(root, &["status", "--porcelain", "--untracked-files=no"]).await {
            Some(changes) if !changes.is_empty() => format!("commit {rev} + uncommitted changes"),
            _ => format!("commit {rev}"),
        },
    }
}

/// The 1- and 5-minute load averages (other work on the machine skews figures).
fn loadavg() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let f: Vec<&str> = text.split_whitespace().take(2).collect();
    Some(format!("{} (1 min) / {} (5 min)", f.first()?, f.get(1)?))
}

fn shape_line(shape: &Shape) -> String {
    format!(
        "{} — k6 total with graceful stop {}s",
        shape.describe(),
        shape.total.as_secs()
    )
}

/// `k6/ceiling.js` (`GET /health/live`) with the k6 scenario `shape`; its
/// files are `<stem>-summary.json`, `<stem>.out` and `<stem>.log`.
async fn run_live(
    k6: &Path,
    k6_dir: &Path,
    front: &[String],
    shape: &Value,
    run_dir: &Path,
    stem: &str,
    limit: Duration,
) -> Result<Option<i32>> {
    k6::run(
        k6,
        &k6::RunSpec {
            script: &k6_dir.join("ceiling.js"),
            vars: vec![
                ("BASE_URLS".to_owned(), front.join(",")),
                ("CEILING_SCENARIO".to_owned(), shape.to_string()),
            ],
            summary: &run_dir.join(format!("{stem}-summary.json")),
            dashboard: None,
            dashboard_period: Duration::from_secs(1),
            stdout: &run_dir.join(format!("{stem}.out")),
            stderr: &run_dir.join(format!("{stem}.log")),
            limit,
            env: Vec::new(),
        },
    )
    .await
}

/// The middle element by `key` (the upper one of an even count).
fn median_by<T>(mut items: Vec<T>, key: impl Fn(&T) -> f64) -> Option<T> {
    if items.is_empty() {
        return None;
    }
    items.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let mid = items.len() / 2;
    Some(items.swap_remove(mid))
}

#[cfg(test)]
mod tests {
    use super::{cargo, median_by};

    /// `cargo test` gives this test binary the variables `cargo run` gives
    /// the runner; a build the runner starts must not see them.
    #[test]
    fn builds_do_not_inherit_what_cargo_run_set() {
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
        let cmd = cargo(std::path::Path::new("."));
        let removed: Vec<String> = cmd
            .as_std()
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        for key in [
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_MANIFEST_DIR",
        ] {
            assert!(
                removed.iter().any(|k| k == key),
                "{key} not removed: {removed:?}"
            );
        }
        assert!(!removed
            .iter()
            .any(|k| k == "CARGO_HOME" || k == "CARGO_TARGET_DIR"));
    }

    #[test]
    fn median_run_is_the_middle_one() {
        assert_eq!(median_by(vec![149.0, 33.0, 66.0], |v| *v), Some(66.0));
        assert_eq!(median_by(vec![2.0, 1.0], |v| *v), Some(2.0));
        assert_eq!(median_by(Vec::<f64>::new(), |v| *v), None);
    }
}
