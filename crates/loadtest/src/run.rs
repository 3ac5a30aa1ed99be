//! One scenario run, end to end: the stages in order (plan, stack, data,
//! bursts, outcome, report), each in its own file.

use crate::base::{log, rel, Paths, EXIT_UNAVAILABLE};
use crate::bursts::{self, Inputs};
use crate::options::RunOptions;
use crate::outcome::{self, Finished, RunOutcome};
use crate::plan::Plan;
use crate::procs::{self, Children};
use crate::report::{self, OrderCounts, Setup};
use crate::run_report::{self, About};
use crate::server_bin::{server_binary, ServerBinary};
use crate::setup::{self, Api};
use crate::stack::{self, Stack};
use crate::{data, prom, servermetrics};
use anyhow::{Context, Result};
use std::time::Instant;

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
    let scenario = crate::plan::scenario(&opts.scenario)?;
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

    let plan = Plan::make(opts, scenario, &paths).await?;
    let binary = match server {
        Some(b) => b.clone(),
        None => server
            .insert(server_binary(opts, &paths.root).await?)
            .clone(),
    };
    let (stack, db) =
        stack::start(opts, scenario, &binary.path, &run_dir, plan.users, children).await?;

    // Prometheus (and Alertmanager) scraping every instance; a run
    // without them says so in its report.
    let monitor = prom::LoadMonitor::start(&paths.root, &run_dir, &stack.ports, children).await;

    let api = Api::new(stack.bases.clone(), stack.env.admin_key.clone())?;
    if !crate::plan::routes_there(&api, scenario, opts.force).await? {
        return Ok(Finished {
            exit: EXIT_UNAVAILABLE,
            entry: Some(stack.front.join(",")),
            outcome: None,
        });
    }

    let data = data::make(
        &api,
        opts,
        scenario,
        &plan.shape,
        plan.users,
        &run_dir,
        &stack.db_url,
        db,
    )
    .await?;

    let inputs = Inputs {
        opts,
        scenario,
        k6: &plan.k6,
        k6_dir: &paths.k6_dir,
        script: &plan.script,
        scale_vars: &plan.scale_vars,
        shape: &plan.shape,
        run_dir: &run_dir,
        api: &api,
        db_url: &stack.db_url,
        bases: &stack.bases,
        front: &stack.front,
        data: &data,
    };
    bursts::warm_up(&inputs).await?;
    let measured = bursts::measure(&inputs).await?;
    let burst_count = measured.bursts;
    let (window_start, window_end) = measured.window;
    let prometheus = monitor.section(&paths.root, window_start, window_end).await;
    let inside = servermetrics::render(&measured.inside);
    let summary_path = measured.summary_path.clone();
    let dashboard = measured.dashboard.clone();
    let figures = outcome::figures(scenario, measured)?;

    let load_end = loadavg();
    let rule_results = outcome::check_rules(&stack.db_url).await;

    let setup = setup_row(
        opts,
        &binary,
        &stack,
        &plan,
        &data.text,
        (load_start, load_end),
    );
    let about = About {
        scenario,
        started_at,
        argv,
        label: opts.label.as_deref(),
        setup,
        run_dir: &run_dir,
        summary_path: &summary_path,
        dashboard: &dashboard,
        inside,
        prometheus,
        wall,
    };
    let (report_path, seed) = run_report::write(&paths, about, &figures, &rule_results)?;

    let issued_per_burst: Vec<f64> = figures.burst_rows.iter().filter_map(|b| b.issued).collect();
    let orders_per_burst: Vec<OrderCounts> = if burst_count > 1 {
        figures.burst_rows.iter().filter_map(|b| b.orders).collect()
    } else {
        Vec::new()
    };
    let exit = outcome::exit_code(&rule_results, figures.thresholds_crossed, figures.k6_exit);
    if !opts.keep_running {
        if let Err(e) = setup::clear_redis(&stack.redis_url, &stack.env.prefix).await {
            log(format!(
                "could not clear Redis keys under {}: {e:#}",
                stack.env.prefix
            ));
        }
    }
    Ok(Finished {
        exit,
        entry: Some(stack.front.join(",")),
        outcome: Some(Box::new(RunOutcome {
            ours: figures.ours,
            ceiling: figures.ceiling,
            seed,
            rules: rule_results,
            report: report_path,
            label: opts.label.clone(),
            settings: opts.settings.clone(),
            coupon_quantity: data.coupon_quantity,
            k6_exit: figures.k6_exit,
            thresholds_crossed: figures.thresholds_crossed,
            issued_per_burst,
            sale_units: data.sale_units,
            orders_per_burst,
        })),
    })
}

/// The report's Setup table: how the service and k6 ran.
fn setup_row(
    opts: &RunOptions,
    binary: &ServerBinary,
    stack: &Stack,
    plan: &Plan,
    data_text: &str,
    (load_start, load_end): (Option<String>, Option<String>),
) -> Setup {
    Setup {
        server: binary.text.clone(),
        instances: opts.instances,
        workers: stack.workers,
        balancer: stack.balancer_text.clone(),
        k6_version: plan.k6_version.clone(),
        machine: format!(
            "{} cores; load average {} before the run, {} after k6",
            stack.cores,
            load_start.as_deref().unwrap_or("?"),
            load_end.as_deref().unwrap_or("?")
        ),
        shape: run_report::shape_line(&plan.shape),
        vu_scale: opts.vu_scale,
        duration_scale: opts.duration_scale,
        think_scale: opts.think_scale,
        data: data_text.to_owned(),
        settings: report::settings_text(&opts.settings),
    }
}

/// The 1- and 5-minute load averages (other work on the machine skews figures).
fn loadavg() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let f: Vec<&str> = text.split_whitespace().take(2).collect();
    Some(format!("{} (1 min) / {} (5 min)", f.first()?, f.get(1)?))
}
