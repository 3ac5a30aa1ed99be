//! The run's report, `loadtests/reports/<scenario>[-<label>]-<date>.md`:
//! its input gathered from the stages, written, and its verdict logged.

use crate::base::{log, rel, Paths};
use crate::outcome::Figures;
use crate::report::{self, ReportInput, Setup};
use crate::rules::RuleResult;
use crate::scenarios::{Scenario, Shape};
use crate::seeds::{self, SeedFigures};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What the report says besides the figures and the rules.
pub struct About<'a> {
    pub scenario: &'a Scenario,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub argv: &'a [String],
    pub label: Option<&'a str>,
    pub setup: Setup,
    pub run_dir: &'a Path,
    pub summary_path: &'a Path,
    pub dashboard: &'a Path,
    /// The servers' own histograms (Markdown).
    pub inside: String,
    /// What the run's Prometheus saw (Markdown).
    pub prometheus: String,
    pub wall: Instant,
}

/// The report's list of the run's files.
fn artifacts(paths: &Paths, a: &About<'_>, with_ceiling: bool) -> Vec<(String, String)> {
    let run_dir = a.run_dir;
    let mut artifacts = vec![
        (
            "k6 summary export".to_owned(),
            rel(&paths.root, a.summary_path),
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
    if a.dashboard.is_file() {
        artifacts.insert(
            1,
            (
                "k6 HTML dashboard".to_owned(),
                rel(&paths.root, a.dashboard),
            ),
        );
    }
    if with_ceiling {
        artifacts.push((
            "ceiling summary".to_owned(),
            rel(&paths.root, &run_dir.join("ceiling-summary.json")),
        ));
    }
    artifacts
}

/// Writes the report; its path and the seed's figures it quoted.
pub fn write(
    paths: &Paths,
    a: About<'_>,
    f: &Figures,
    rule_results: &[RuleResult],
) -> Result<(PathBuf, Option<SeedFigures>)> {
    let scenario = a.scenario;
    let date = a.started_at.format("%Y-%m-%d").to_string();
    let name = match a.label {
        Some(l) => format!("{}-{l}-{date}.md", scenario.name),
        None => format!("{}-{date}.md", scenario.name),
    };
    std::fs::create_dir_all(&paths.reports)?;
    let report_path = paths.reports.join(name);
    let artifacts = artifacts(paths, &a, f.ceiling.is_some());
    let input = ReportInput {
        scenario: scenario.name,
        seed_no: scenario.seed,
        what: scenario.what,
        date,
        started: a
            .started_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        command: format!("cargo run -p loadtest --release -- {}", a.argv.join(" ")),
        setup: a.setup,
        ours: &f.ours,
        ceiling: f.ceiling.as_ref(),
        seed: seeds::for_scenario(scenario.name),
        rules: rule_results,
        k6_exit: f.k6_exit,
        artifacts,
        inside: a.inside,
        prometheus: a.prometheus,
        ceiling_p95s: f.ceiling_p95s.clone(),
        headline: scenario.headline,
        bursts: if f.burst_rows.len() > 1 {
            f.burst_rows.clone()
        } else {
            Vec::new()
        },
        thresholds_crossed: f.thresholds_crossed,
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
        a.wall.elapsed().as_secs_f64()
    ));
    if let (Some(o), Some(c)) = (
        f.ours.rate_per_s("http_reqs"),
        f.ceiling.as_ref().and_then(|c| c.rate_per_s("http_reqs")),
    ) {
        log(format!(
            "requests/s: ours {o:.1}, ceiling {c:.1} ({:.1} %)",
            o / c * 100.0
        ));
    }
    Ok((report_path, input.seed))
}

pub fn shape_line(shape: &Shape) -> String {
    format!(
        "{} — k6 total with graceful stop {}s",
        shape.describe(),
        shape.total.as_secs()
    )
}
