//! `loadtest chaos <fault>` and `loadtest chaos all`: one real fault under a
//! mixed load, against a deployment of the run's own (a disposable
//! PostgreSQL cluster and Redis on free loopback ports, in Kafka mode a
//! broker too, two instances, nginx), then every rule checked and an
//! incident timeline written. See
//! `loadtests/README.md`, section "Chaos".

mod all;
mod deploy;
mod faults;
mod infra;
mod monitor;
mod plan;
mod report;
pub(crate) mod stub;
mod timeline;

// The test kit's TCP fault proxy (latency for redis-slow and pg-slow).
#[path = "../../../testkit/src/chaos.rs"]
#[allow(dead_code)]
mod proxy;

use crate::base::{self, Paths};
use crate::server_bin::{self, ServerBinary};
use crate::setup::{self, Api};
use crate::{k6, procs, rules};
use all::Outcome;
use anyhow::{anyhow, bail, Context, Result};
use deploy::deploy;
use monitor::{Clock, Monitor};
use plan::{log, report_stem, Timing};
pub use plan::{ChaosOptions, Fault};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

pub const USAGE: &str = "\
usage: cargo run -p loadtest --release -- chaos <fault>|all [options]

Starts a deployment of its own (a disposable PostgreSQL cluster and Redis on free
loopback ports, in Kafka mode a tansu broker too, two commerce-server instances,
nginx, a local alert webhook and data-platform receiver), drives a mixed load
(product reads and order + payment at a constant rate; a coupon burst and a flash
sale when the fault lands), injects one real fault, lets it heal, checks every rule
and writes loadtests/reports/chaos-<fault>-<date>.md with a timeline (.svg). `all`
runs every fault in turn and ends with loadtests/reports/chaos-all-<date>.md.

faults:
  redis-kill          Redis SIGKILLed, restarted empty on the same port
  instance-kill       one instance SIGKILLed mid-payment, started again
  redis-stall         Redis frozen (SIGSTOP), then resumed (SIGCONT)
  redis-flush         every Redis key wiped (FLUSHALL)
  pg-restart          pg_ctl restart -m fast
  pg-connections      the service's PostgreSQL connections terminated, again and again
  data-platform-down  the data platform's receiver stops listening
  data-platform-slow  the data platform answers after 3 s (the service waits 2 s)
  redis-slow          250 ms added to every Redis read and write (TCP proxy)
  pg-slow             100 ms added to every PostgreSQL read and write (TCP proxy)
  lock-holder-stall   an instance holding payment locks frozen past the lease (13 s)
  broker-down         Kafka mode: the broker SIGKILLed, restarted on the same port and storage
  broker-stall        Kafka mode: the broker frozen (SIGSTOP), then resumed (SIGCONT)

options:
  --short             the CI form: 22 s of load, a 5 s fault, fewer users
  --kafka             Kafka mode for every fault: a broker of the run's own (tansu, from
                      TANSU_BIN, PATH or ~/.cargo/bin), events relayed through it; the
                      broker-* faults are always in Kafka mode (report: chaos-<fault>-kafka-…)
  --server-bin PATH   use this commerce-server binary instead of building one
  --set KEY=VALUE     server setting for every instance (as for scenarios)
  --label TEXT        report name: chaos-<fault>-<label>-<date>.md

exit codes: 0 every rule held, no 500, every acknowledged write in PostgreSQL, every
breaker closed at the end and within 3 s of its dependency's return (and, after a
broker fault, every event published and applied by every consumer group); 1 run
error; 2 usage; 5 any of those broke.";
/// `chaos <fault>` or `chaos all`: the exit code.
pub async fn main(opts: ChaosOptions, argv: Vec<String>) -> u8 {
    match main_inner(&opts, &argv).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("[loadtest] error: {e:#}");
            base::EXIT_ERROR
        }
    }
}

async fn main_inner(opts: &ChaosOptions, argv: &[String]) -> Result<u8> {
    let started = chrono::Utc::now();
    let paths = Paths::locate()?;
    procs::raise_nofile_limit();
    let binary = server_bin::resolve_server(opts.server_bin.as_deref(), &paths.root).await?;
    let binary = if opts.all && opts.server_bin.is_none() {
        let dir = paths
            .results
            .join(format!("chaos-all-{}", started.format("%Y%m%d-%H%M%S")));
        server_bin::pin_binary(binary, &dir, &paths.root)
    } else {
        binary
    };
    let mut outcomes = Vec::new();
    let mut errors = Vec::new();
    for fault in &opts.faults {
        log(format!("=== {} ===", fault.name()));
        match run_one(*fault, opts, argv, &binary, &paths).await {
            Ok(o) => {
                log(format!(
                    "{}: {} ({})",
                    fault.name(),
                    if o.passed { "PASS" } else { "FAIL" },
                    base::rel(&paths.root, &o.report)
                ));
                outcomes.push(o);
            }
            Err(e) => {
                eprintln!("[loadtest] chaos {}: error: {e:#}", fault.name());
                errors.push((*fault, format!("{e:#}")));
            }
        }
    }
    let failed = outcomes.iter().any(|o| !o.passed);
    let run_errors = !errors.is_empty();
    if opts.all {
        let date = started.format("%Y-%m-%d").to_string();
        let name = match &opts.label {
            Some(l) => format!("chaos-all-{l}-{date}.md"),
            None => format!("chaos-all-{date}.md"),
        };
        let path = paths.reports.join(name);
        let text = all::render_all(
            &outcomes,
            &errors,
            &format!("cargo run -p loadtest --release -- {}", argv.join(" ")),
            &started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            &binary.text,
            &paths.root,
        );
        std::fs::create_dir_all(&paths.reports)?;
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        println!("\n{}", all::table(&outcomes, &errors, &paths.root));
        log(format!("summary {}", base::rel(&paths.root, &path)));
    }
    Ok(if failed {
        base::EXIT_RULES
    } else if run_errors {
        base::EXIT_ERROR
    } else {
        base::EXIT_OK
    })
}
/// The load's first answer on the run's clock, read from k6's console file
/// (k6 initialises its VUs before the first request).
async fn wait_first_answer<T>(
    console: &Path,
    clock: &Clock,
    limit: Duration,
    k6: &tokio::task::JoinHandle<T>,
    k6_log: &Path,
) -> Result<f64> {
    let deadline = Instant::now() + limit;
    loop {
        if k6.is_finished() {
            bail!(
                "k6 stopped before its first answer:\n{}",
                procs::tail(k6_log, 20)
            );
        }
        if let Ok(text) = std::fs::read_to_string(console) {
            if let Some(a) = timeline::parse(&text, clock).first() {
                return Ok(a.at_ms - a.duration_ms);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "k6 logged no answer within {limit:?} (see {})",
                console.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn sleep_until(clock: &Clock, at_ms: f64) {
    let now = clock.now_ms();
    if at_ms > now {
        tokio::time::sleep(Duration::from_secs_f64((at_ms - now) / 1000.0)).await;
    }
}

async fn run_one(
    fault: Fault,
    opts: &ChaosOptions,
    argv: &[String],
    binary: &ServerBinary,
    paths: &Paths,
) -> Result<Outcome> {
    let started_at = chrono::Utc::now();
    let wall = Instant::now();
    let timing = Timing::new(opts.short, fault);
    let run_dir = paths.results.join(format!(
        "chaos-{}-{}",
        fault.name(),
        started_at.format("%Y%m%d-%H%M%S")
    ));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    log(format!("run folder {}", base::rel(&paths.root, &run_dir)));
    let k6 = k6::ensure().await?;
    let clock = Clock::start();
    let mut dep = deploy(
        fault,
        opts,
        binary,
        &run_dir,
        clock,
        timing.users,
        &paths.root,
    )
    .await?;

    // Data: tokens, products, the burst's coupon and the sale's product.
    let api = Api::new(dep.instances.bases(), dep.instances.env.admin_key.clone())?;
    let tokens = api
        .mint_tokens(timing.users)
        .await
        .context("minting tokens")?;
    let tokens_file = run_dir.join("tokens.json");
    base::write_json(&tokens_file, &tokens)?;
    let products = api
        .create_products(timing.products, 50, "load product")
        .await
        .context("creating products")?;
    let coupon_qty = timing.burst_vus / 2;
    let coupon = api.create_coupon(coupon_qty).await?;
    let sale_units = (timing.sale_vus / 3).max(1);
    let sale = api
        .create_products(1, sale_units, rules::SOLD_OUT_PRODUCT_PREFIX)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no sale product"))?;
    setup::snapshot_stock(&setup::connect(&dep.db_url).await?).await?;
    let data_file = run_dir.join("data.json");
    base::write_json(
        &data_file,
        &json!({
            "products": products,
            "coupon": {"id": coupon, "quantity": coupon_qty},
            "sale_product": {"id": sale, "units": sale_units},
        }),
    )?;
    log(format!(
        "seeded {} users, {} products × 50, a coupon of {coupon_qty}, a sale product of {sale_units} units",
        timing.users, timing.products
    ));

    // Watch, then load.
    let mut monitor = Monitor::start(
        clock,
        dep.instances.bases(),
        dep.instances.env.admin_key.clone(),
        dep.db_url.clone(),
    );
    let console = run_dir.join("k6-console.log");
    let spec_vars: Vec<(String, String)> = vec![
        ("BASE_URLS".into(), dep.front.clone()),
        ("TOKENS_FILE".into(), tokens_file.display().to_string()),
        ("DATA_FILE".into(), data_file.display().to_string()),
        ("TOTAL".into(), timing.total_s.to_string()),
        ("FAULT_AT".into(), timing.fault_at_s.to_string()),
        ("READ_RATE".into(), timing.read_rate.to_string()),
        ("ORDER_RATE".into(), timing.order_rate.to_string()),
        ("BURST_VUS".into(), timing.burst_vus.to_string()),
        ("SALE_VUS".into(), timing.sale_vus.to_string()),
    ];
    let script = paths.k6_dir.join("chaos.js");
    let k6_task = {
        let (k6, script, run_dir, console) =
            (k6.clone(), script.clone(), run_dir.clone(), console.clone());
        let limit = Duration::from_secs_f64(timing.total_s + 90.0);
        tokio::spawn(async move {
            k6::run(
                &k6,
                &k6::RunSpec {
                    script: &script,
                    vars: spec_vars,
                    summary: &run_dir.join("summary.json"),
                    dashboard: None,
                    dashboard_period: Duration::from_secs(1),
                    stdout: &run_dir.join("k6.out"),
                    stderr: &run_dir.join("k6.log"),
                    limit,
                    env: vec![
                        ("K6_CONSOLE_OUTPUT".into(), console.display().to_string()),
                        ("K6_LOG_FORMAT".into(), "raw".into()),
                    ],
                },
            )
            .await
        })
    };
    log(format!(
        "k6 chaos.js: {} s of load, the fault at {} s for {} s",
        timing.total_s, timing.fault_at_s, timing.fault_for_s
    ));
    let origin_ms = match wait_first_answer(
        &console,
        &clock,
        Duration::from_secs(120),
        &k6_task,
        &run_dir.join("k6.log"),
    )
    .await
    {
        Ok(t) => t,
        Err(e) => {
            k6_task.abort();
            dep.stop().await;
            return Err(e);
        }
    };
    sleep_until(&clock, origin_ms + timing.fault_at_s * 1000.0).await;
    let window = match faults::inject(fault, &mut dep, &clock, &timing).await {
        Ok(w) => w,
        Err(e) => {
            k6_task.abort();
            dep.stop().await;
            return Err(e.context(format!("injecting {}", fault.name())));
        }
    };
    for (at, step) in &window.steps {
        log(format!("t+{:.2}s {step}", (at - origin_ms) / 1000.0));
    }
    let k6_code = k6_task
        .await
        .map_err(|e| anyhow!("k6 task: {e}"))
        .and_then(|r| r)?;
    let load_end_ms = clock.now_ms();
    log(format!(
        "k6 finished (exit {k6_code:?}); waiting for the backlog and the breakers"
    ));

    // Settle: the backlog drained and every breaker closed, bounded. After
    // a broker fault, also every event applied by every consumer group.
    let deadline = Instant::now() + Duration::from_secs_f64(timing.settle_s);
    let checker = if fault.needs_broker() {
        monitor::connect(&dep.db_url).await
    } else {
        None
    };
    let mut delivered_after_s = None;
    loop {
        let drained = monitor
            .last_backlog()
            .is_some_and(|b| b.unpublished == 0 && b.data_platform == 0);
        let delivered = match &checker {
            Some(db) if delivered_after_s.is_none() => {
                let done = report::check_delivery(db).await.iter().all(|d| !d.failed());
                if done {
                    delivered_after_s = Some((clock.now_ms() - load_end_ms) / 1000.0);
                }
                done
            }
            _ => true,
        };
        if drained && delivered && monitor.all_closed(2) {
            break;
        }
        if Instant::now() > deadline {
            log("settle time over: the backlog or a breaker had not settled");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A last look at both, then stop watching.
    tokio::time::sleep(Duration::from_millis(600)).await;
    monitor.stop();
    let recorded = std::mem::take(
        &mut *monitor
            .data
            .lock()
            .map_err(|_| anyhow!("monitor data poisoned"))?,
    );

    // What Prometheus saw, once its alerts resolved (bounded).
    let (prometheus, prom_events, seen) = match &dep.monitoring {
        Ok(stack) => {
            log("waiting for Prometheus's alerts to resolve (at most 25 s)");
            let webhook = &dep.webhook;
            let notes = || {
                webhook
                    .received()
                    .into_iter()
                    .filter(|r| r.path.starts_with("/alertmanager"))
                    .map(|r| (r.at.as_secs_f64() * 1000.0, r.body))
                    .collect()
            };
            crate::prom::chaos_section(
                &paths.root,
                stack,
                clock.unix0_ms,
                origin_ms,
                Duration::from_secs(25),
                &notes,
            )
            .await
        }
        Err(e) => (
            format!("\n## What Prometheus saw\n\nNo Prometheus in this run: {e}.\n"),
            Vec::new(),
            crate::prom::Seen::default(),
        ),
    };

    // Checks.
    let answers = timeline::parse(
        &std::fs::read_to_string(&console).unwrap_or_default(),
        &clock,
    );
    let db = setup::connect(&dep.db_url).await?;
    let rule_results = rules::check_all(&db).await;
    let acks = report::check_acks(&db, &answers).await;
    let delivery = if fault.needs_broker() {
        report::check_delivery(&db).await
    } else {
        Vec::new()
    };
    // Unpublished rows still leased by a relay (a killed instance's claim
    // waits for its lease to run out before another instance takes it).
    let leased = db
        .query_one(
            "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM max(claimed_until) - now())::float8, 0)
             FROM outbox WHERE published_at IS NULL AND claimed_until > now()",
            &[],
        )
        .await
        .ok()
        .and_then(|r| Some((r.try_get::<_, i64>(0).ok()?, r.try_get::<_, f64>(1).ok()?)));
    drop(db);
    // The instances' own breaker alerts (Alertmanager's are quoted above).
    let alerts: Vec<_> = dep
        .webhook
        .received()
        .into_iter()
        .filter(|r| !r.path.starts_with("/alertmanager"))
        .collect();
    let platform_received = dep.platform.received().len();

    let input = report::Input {
        fault,
        timing,
        short: opts.short,
        started: started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        command: format!("cargo run -p loadtest --release -- {}", argv.join(" ")),
        server: binary.text.clone(),
        pg_version: dep.pg.version.clone(),
        origin_ms,
        load_end_ms,
        window,
        answers,
        recorded,
        rules: rule_results,
        acks,
        leased,
        broker: dep.broker.as_ref().map(|b| {
            format!(
                "a Kafka-compatible broker of the run's own (tansu, SQLite storage) on {}",
                b.address()
            )
        }),
        delivery,
        delivered_after_s,
        alerts,
        prometheus,
        prom_events,
        platform_received,
        k6_exit: k6_code,
        run_dir: base::rel(&paths.root, &run_dir),
        minutes: 0.0,
    };
    dep.stop().await;
    let mut input = input;
    input.minutes = wall.elapsed().as_secs_f64() / 60.0;

    let date = started_at.format("%Y-%m-%d").to_string();
    let stem = report_stem(fault, opts, &date);
    std::fs::create_dir_all(&paths.reports)?;
    let svg = paths.reports.join(format!("{stem}.svg"));
    let md = paths.reports.join(format!("{stem}.md"));
    let summary = report::summarise(&input);
    input.chart(&summary).draw(&svg)?;
    let text = report::render(&input, &summary, &format!("{stem}.svg"));
    std::fs::write(&md, text).with_context(|| format!("writing {}", md.display()))?;
    for line in report::verdict_lines(&summary) {
        log(line);
    }
    Ok(Outcome {
        fault,
        seen,
        passed: summary.passed(),
        summary,
        report: md,
    })
}
