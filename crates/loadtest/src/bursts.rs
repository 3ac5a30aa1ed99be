//! The measured k6 runs: the warm-up, the scenario's bursts (each on fresh
//! data, each followed by a ceiling burst), the HTML dashboard's extra
//! burst, and the servers' histograms around them.

use crate::base::log;
use crate::data::{write_fresh_burst_data, Data};
use crate::options::RunOptions;
use crate::procs;
use crate::scenarios::{Scenario, Shape};
use crate::servermetrics;
use crate::setup::Api;
use crate::summary::Summary;
use crate::{k6, prom};
use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Runs of a burst scenario when `--bursts` does not say: on 2 shared cores
/// the first burst or two after the start are often the slowest, and the
/// median of 7 moves less with them than the median of 5.
const DEFAULT_BURSTS: usize = 7;

/// What the k6 stage needs of the earlier ones.
pub struct Inputs<'a> {
    pub opts: &'a RunOptions,
    pub scenario: &'a Scenario,
    pub k6: &'a Path,
    pub k6_dir: &'a Path,
    pub script: &'a Path,
    pub scale_vars: &'a [(String, String)],
    pub shape: &'a Shape,
    pub run_dir: &'a Path,
    pub api: &'a Api,
    pub db_url: &'a str,
    pub bases: &'a [String],
    pub front: &'a [String],
    pub data: &'a Data,
}

/// What the k6 stage measured.
pub struct Measured {
    /// Bursts of the scenario (one unless a burst scenario).
    pub bursts: usize,
    /// Each burst's summary and k6 exit code.
    pub runs: Vec<(Summary, Option<i32>)>,
    /// Each ceiling run's summary (None: it gave none).
    pub ceilings: Vec<Option<Summary>>,
    /// The HTML dashboard's burst of a burst scenario (not in the figures).
    pub dashboard_run: Option<(Summary, Option<i32>)>,
    /// The servers' histograms over the scenario's bursts.
    pub inside: servermetrics::Histograms,
    pub summary_path: PathBuf,
    pub dashboard: PathBuf,
    /// Unix seconds around the measured runs (for Prometheus).
    pub window: (f64, f64),
}

/// Warm-up: one GET /health/live per VU at the scenario's peak
/// concurrency (capped), unmeasured. It opens the proxy's upstream
/// keep-alive connections and wakes the servers' accept path, so the
/// scenario starts from the state the ceiling run (which comes after it)
/// finds; otherwise a burst scenario alone pays for connection set-up.
pub async fn warm_up(i: &Inputs<'_>) -> Result<()> {
    let warm_vus = i.shape.peak_vus().clamp(1, 1000);
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
        i.k6,
        i.k6_dir,
        i.front,
        &warm_shape,
        i.run_dir,
        "warmup",
        Duration::from_secs(120),
    )
    .await?;
    if !matches!(warm_code, Some(0)) {
        log(format!("warm-up exited {warm_code:?}; going on"));
    }
    Ok(())
}

/// Bursts. A burst of one iteration per VU is over in about a second and
/// its p95 swings from one burst to the next (scheduling on a shared
/// machine), so it runs several times, each on fresh data and each
/// followed by a ceiling burst: a pair shares the machine's state, the
/// medians stand for the run, and every burst is in the report.
/// (bursts, ceiling runs).
fn counts(opts: &RunOptions, scenario: &Scenario, shape: &Shape) -> (usize, usize) {
    let refreshable = !scenario.data.orders;
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
    (bursts, ceiling_runs)
}

/// Every measured run, in order: burst n, then ceiling n.
pub async fn measure(i: &Inputs<'_>) -> Result<Measured> {
    let (bursts, ceiling_runs) = counts(i.opts, i.scenario, i.shape);
    let mut ceiling_shape = i.shape.scenario.clone();
    if let Some(obj) = ceiling_shape.as_object_mut() {
        obj.insert("exec".into(), json!("default"));
    }

    // The servers' histograms before the scenario, so the report shows the
    // scenario's requests only (the ceilings' /health/live is left out of it).
    let (metrics_before, _) = servermetrics::scrape(i.bases).await;
    let window_start = prom::unix_now();

    let mut vars = i.scale_vars.to_vec();
    vars.push(("BASE_URLS".into(), i.front.join(",")));
    vars.push((
        "TOKENS_FILE".into(),
        i.data.tokens_file.display().to_string(),
    ));
    // A burst is over in seconds, whatever its maxDuration: with a longer
    // period k6 has too few to draw and skips the dashboard.
    let period = if bursts > 1 {
        Duration::from_secs(1)
    } else {
        Duration::from_secs((i.shape.total.as_secs() / 60).clamp(1, 10))
    };
    let limit = i.shape.total + Duration::from_secs(300);
    let run = ScenarioRun {
        k6: i.k6,
        script: i.script,
        vars: &vars,
        run_dir: i.run_dir,
        period,
        limit,
    };
    let mut m = Measured {
        bursts,
        runs: Vec::new(),
        ceilings: Vec::new(),
        dashboard_run: None,
        inside: Default::default(),
        summary_path: i.run_dir.join("summary.json"),
        dashboard: i.run_dir.join("dashboard.html"),
        window: (window_start, window_start),
    };
    for n in 1..=bursts.max(ceiling_runs) {
        let suffix = if n == 1 {
            String::new()
        } else {
            format!("-{n}")
        };
        if n <= bursts {
            let burst = burst(i, &run, &m, n, &suffix).await?;
            m.runs.push(burst);
        }
        if n <= ceiling_runs {
            let ceiling = ceiling(i, &ceiling_shape, limit, n, ceiling_runs, &suffix).await?;
            m.ceilings.push(ceiling);
        }
    }
    let (metrics_after, scrape_errors) = servermetrics::scrape(i.bases).await;
    for e in &scrape_errors {
        log(format!("could not read the server's metrics: {e}"));
    }
    m.inside = servermetrics::delta(&metrics_after, &metrics_before);
    if bursts > 1 {
        m.dashboard_run = dashboard_burst(i, &run, &m.dashboard).await?;
    }
    m.window.1 = prom::unix_now();
    Ok(m)
}

/// Burst `n` of the scenario: its summary and k6's exit code.
async fn burst(
    i: &Inputs<'_>,
    run: &ScenarioRun<'_>,
    m: &Measured,
    n: usize,
    suffix: &str,
) -> Result<(Summary, Option<i32>)> {
    let bursts = m.bursts;
    let data_path = if n == 1 {
        i.data.file.clone()
    } else {
        let path = i.run_dir.join(format!("data{suffix}.json"));
        write_fresh_burst_data(i.api, i.db_url, &i.data.map, &path).await?;
        path
    };
    let what = if bursts > 1 {
        format!(", burst {n} of {bursts}")
    } else {
        String::new()
    };
    log(format!(
        "k6 run {}{what} (bounded to {}s)",
        i.scenario.script,
        run.limit.as_secs()
    ));
    // A burst's measured runs go without the dashboard: see dashboard_burst.
    let (code, summary, out, err) = run
        .start(
            suffix,
            &data_path,
            &[],
            (bursts == 1).then_some(m.dashboard.as_path()),
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
    Ok((parsed, code))
}

/// Ceiling run `n` (`GET /health/live` with the scenario's VU shape).
async fn ceiling(
    i: &Inputs<'_>,
    ceiling_shape: &Value,
    limit: Duration,
    n: usize,
    ceiling_runs: usize,
    suffix: &str,
) -> Result<Option<Summary>> {
    log(format!(
        "k6 run ceiling.js (GET /health/live, same VU shape), {n} of {ceiling_runs}"
    ));
    let stem = format!("ceiling{suffix}");
    let code = run_live(
        i.k6,
        i.k6_dir,
        i.front,
        ceiling_shape,
        i.run_dir,
        &stem,
        limit,
    )
    .await?;
    let path = i.run_dir.join(format!("{stem}-summary.json"));
    Ok(
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| Summary::parse(&t))
        {
            Ok(s) => Some(s),
            Err(e) => {
                log(format!("ceiling run gave no summary (exit {code:?}): {e}"));
                None
            }
        },
    )
}

/// The HTML dashboard takes k6 CPU in the middle of a burst (every sample
/// goes through it), which the ceiling bursts do not pay: a burst scenario
/// gets its dashboard from one more burst, on fresh data, after the
/// measured ones and outside the figures; its thresholds still count.
async fn dashboard_burst(
    i: &Inputs<'_>,
    run: &ScenarioRun<'_>,
    dashboard: &Path,
) -> Result<Option<(Summary, Option<i32>)>> {
    let data_path = i.run_dir.join("data-dashboard.json");
    write_fresh_burst_data(i.api, i.db_url, &i.data.map, &data_path).await?;
    log(format!(
        "k6 run {}, one more burst for the HTML dashboard (not in the figures)",
        i.scenario.script
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
                (i.opts.think_scale.max(0.25) * 4.0).to_string(),
            )],
            Some(dashboard),
        )
        .await?;
    Ok(
        match std::fs::read_to_string(&summary)
            .map_err(|e| e.to_string())
            .and_then(|t| Summary::parse(&t))
        {
            Ok(s) => {
                if i.scenario.data.coupon.is_some() {
                    log(format!(
                        "dashboard burst: {} issued",
                        s.count("coupon_issued")
                    ));
                }
                Some((s, code))
            }
            Err(e) => {
                log(format!(
                    "dashboard burst gave no summary (exit {code:?}): {e}"
                ));
                None
            }
        },
    )
}

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
