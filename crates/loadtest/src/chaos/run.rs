//! One chaos run, stage by stage: its deployment and data, the load with
//! the fault landing in it, the settling, the checks and the report.

use super::all::Outcome;
use super::checks::{self, AckCheck, DeliveryCheck};
use super::deploy::{deploy, Deployment};
use super::faults::{self, FaultWindow};
use super::figures::{self, Input};
use super::monitor::{self, Clock, Monitor, Recorded};
use super::plan::{log, report_stem, ChaosOptions, Fault, Timing};
use super::report;
use super::stub::Received;
use super::timeline::{self, Answer};
use crate::base::{self, Paths};
use crate::procs;
use crate::rules::{self, RuleResult};
use crate::server_bin::ServerBinary;
use crate::setup::{self, Api};
use crate::{k6, prom};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// One run of `fault`: deploy, seed, load, inject, settle, check, report.
pub(super) async fn run_one(
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
    let (tokens_file, data_file) = seed(&dep, &timing, &run_dir).await?;

    // Watch, then load.
    let mut monitor = Monitor::start(
        clock,
        dep.instances.bases(),
        dep.instances.env.admin_key.clone(),
        dep.db_url.clone(),
    );
    let console = run_dir.join("k6-console.log");
    let spec_vars = load_vars(&dep.front, &tokens_file, &data_file, &timing);
    let script = paths.k6_dir.join("chaos.js");
    let k6_task = spawn_k6(&k6, &script, &run_dir, &console, spec_vars, &timing);
    log(format!(
        "k6 chaos.js: {} s of load, the fault at {} s for {} s",
        timing.total_s, timing.fault_at_s, timing.fault_for_s
    ));
    let fault_run = fault_under_load(
        fault, &mut dep, &clock, &timing, &console, &k6_task, &run_dir,
    );
    let (origin_ms, window) = match fault_run.await {
        Ok(x) => x,
        Err(e) => {
            k6_task.abort();
            dep.stop().await;
            return Err(e);
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
    let delivered_after_s = settle(fault, &dep, &monitor, &clock, &timing, load_end_ms).await;
    let recorded = stop_watching(&mut monitor).await?;
    let (prometheus, prom_events, seen) = what_prometheus_saw(&dep, paths, &clock, origin_ms).await;
    let Checks {
        answers,
        rule_results,
        acks,
        delivery,
        leased,
        alerts,
        platform_received,
    } = check(fault, &dep, &console, &clock).await?;

    let input = Input {
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
    write_report(fault, opts, paths, &started_at, &input, seen)
}

/// The run's data: tokens, products, the burst's coupon and the sale's
/// product; the tokens' and the data's files (k6 reads them).
async fn seed(dep: &Deployment, timing: &Timing, run_dir: &Path) -> Result<(PathBuf, PathBuf)> {
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
    Ok((tokens_file, data_file))
}

/// The script variables of `loadtests/k6/chaos.js`.
fn load_vars(
    front: &str,
    tokens_file: &Path,
    data_file: &Path,
    timing: &Timing,
) -> Vec<(String, String)> {
    vec![
        ("BASE_URLS".into(), front.to_owned()),
        ("TOKENS_FILE".into(), tokens_file.display().to_string()),
        ("DATA_FILE".into(), data_file.display().to_string()),
        ("TOTAL".into(), timing.total_s.to_string()),
        ("FAULT_AT".into(), timing.fault_at_s.to_string()),
        ("READ_RATE".into(), timing.read_rate.to_string()),
        ("ORDER_RATE".into(), timing.order_rate.to_string()),
        ("BURST_VUS".into(), timing.burst_vus.to_string()),
        ("SALE_VUS".into(), timing.sale_vus.to_string()),
    ]
}

/// k6 running `script` in a task of its own (the fault lands while it runs).
fn spawn_k6(
    k6: &Path,
    script: &Path,
    run_dir: &Path,
    console: &Path,
    spec_vars: Vec<(String, String)>,
    timing: &Timing,
) -> JoinHandle<Result<Option<i32>>> {
    let (k6, script, run_dir, console) = (
        k6.to_owned(),
        script.to_owned(),
        run_dir.to_owned(),
        console.to_owned(),
    );
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
}

/// From the load's first answer to the fault healed: the load's start on the
/// run's clock and the fault's window.
async fn fault_under_load<T>(
    fault: Fault,
    dep: &mut Deployment,
    clock: &Clock,
    timing: &Timing,
    console: &Path,
    k6_task: &JoinHandle<T>,
    run_dir: &Path,
) -> Result<(f64, FaultWindow)> {
    let origin_ms = wait_first_answer(
        console,
        clock,
        Duration::from_secs(120),
        k6_task,
        &run_dir.join("k6.log"),
    )
    .await?;
    sleep_until(clock, origin_ms + timing.fault_at_s * 1000.0).await;
    let window = faults::inject(fault, dep, clock, timing)
        .await
        .map_err(|e| e.context(format!("injecting {}", fault.name())))?;
    Ok((origin_ms, window))
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

/// Settle: the backlog drained and every breaker closed, bounded. After
/// a broker fault, also every event applied by every consumer group (when,
/// in seconds after the load ended).
async fn settle(
    fault: Fault,
    dep: &Deployment,
    monitor: &Monitor,
    clock: &Clock,
    timing: &Timing,
    load_end_ms: f64,
) -> Option<f64> {
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
                let done = checks::check_delivery(db).await.iter().all(|d| !d.failed());
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
    delivered_after_s
}

/// A last look at both, then stop watching: what the monitor recorded.
async fn stop_watching(monitor: &mut Monitor) -> Result<Recorded> {
    tokio::time::sleep(Duration::from_millis(600)).await;
    monitor.stop();
    let recorded = std::mem::take(
        &mut *monitor
            .data
            .lock()
            .map_err(|_| anyhow!("monitor data poisoned"))?,
    );
    Ok(recorded)
}

/// What Prometheus saw, once its alerts resolved (bounded).
async fn what_prometheus_saw(
    dep: &Deployment,
    paths: &Paths,
    clock: &Clock,
    origin_ms: f64,
) -> (String, Vec<(f64, String)>, prom::Seen) {
    match &dep.monitoring {
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
            prom::chaos_section(
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
            prom::Seen::default(),
        ),
    }
}

/// What the checks at the end found.
struct Checks {
    answers: Vec<Answer>,
    rule_results: Vec<RuleResult>,
    acks: Vec<AckCheck>,
    delivery: Vec<DeliveryCheck>,
    leased: Option<(i64, f64)>,
    alerts: Vec<Received>,
    platform_received: usize,
}

/// The checks: the rules, every acknowledged write, the events' delivery
/// (broker faults), the relays' leases, the alerts.
async fn check(fault: Fault, dep: &Deployment, console: &Path, clock: &Clock) -> Result<Checks> {
    let answers = timeline::parse(&std::fs::read_to_string(console).unwrap_or_default(), clock);
    let db = setup::connect(&dep.db_url).await?;
    let rule_results = rules::check_all(&db).await;
    let acks = checks::check_acks(&db, &answers).await;
    let delivery = if fault.needs_broker() {
        checks::check_delivery(&db).await
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
    Ok(Checks {
        answers,
        rule_results,
        acks,
        delivery,
        leased,
        alerts,
        platform_received,
    })
}

/// The report (Markdown) and its timeline (SVG), and the verdict's log lines.
fn write_report(
    fault: Fault,
    opts: &ChaosOptions,
    paths: &Paths,
    started_at: &chrono::DateTime<chrono::Utc>,
    input: &Input,
    seen: prom::Seen,
) -> Result<Outcome> {
    let date = started_at.format("%Y-%m-%d").to_string();
    let stem = report_stem(fault, opts, &date);
    std::fs::create_dir_all(&paths.reports)?;
    let svg = paths.reports.join(format!("{stem}.svg"));
    let md = paths.reports.join(format!("{stem}.md"));
    let summary = figures::summarise(input);
    input.chart(&summary).draw(&svg)?;
    let text = report::render(input, &summary, &format!("{stem}.svg"));
    std::fs::write(&md, text).with_context(|| format!("writing {}", md.display()))?;
    for line in figures::verdict_lines(&summary) {
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
