//! Renders `loadtests/reports/<scenario>-<date>.md`: our figures, the
//! ceiling, the seed's figures and the ratios between them.

use crate::rules::{Outcome, RuleResult};
use crate::seeds::SeedFigures;
use crate::summary::{Summary, TrendStats};
use std::fmt::Write as _;

pub struct Setup {
    pub server: String,
    pub instances: usize,
    pub workers: usize,
    pub balancer: String,
    pub k6_version: String,
    pub machine: String,
    pub shape: String,
    pub vu_scale: f64,
    pub duration_scale: f64,
    pub think_scale: f64,
    pub data: String,
    /// `--set` overrides, e.g. "`catalog.detail_cache=false`", or "defaults".
    pub settings: String,
}

/// The Setup row for `--set` overrides.
pub fn settings_text(settings: &[(String, String)]) -> String {
    if settings.is_empty() {
        return "defaults".to_owned();
    }
    settings
        .iter()
        .map(|(k, v)| format!("`{k}={v}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub struct ReportInput<'a> {
    pub scenario: &'a str,
    pub seed_no: &'a str,
    pub what: &'a str,
    pub date: String,
    pub started: String,
    pub command: String,
    pub setup: Setup,
    pub ours: &'a Summary,
    pub ceiling: Option<&'a Summary>,
    pub seed: Option<SeedFigures>,
    pub rules: &'a [RuleResult],
    pub k6_exit: Option<i32>,
    pub artifacts: Vec<(String, String)>,
    /// The servers' own histograms (Markdown section, may be empty).
    pub inside: String,
    /// What the run's Prometheus saw (Markdown section, may be empty).
    pub prometheus: String,
    /// The p95 of every ceiling run (the `ceiling` summary is the median one).
    pub ceiling_p95s: Vec<f64>,
    /// The step whose p95 is the scenario's headline (`issue_duration`).
    pub headline: &'a str,
    /// Every burst of a repeated burst scenario (empty: it ran once); `ours`
    /// is the median one, `ceiling` the median ceiling.
    pub bursts: Vec<BurstRow>,
    /// The most k6 thresholds one run (burst) crossed.
    pub thresholds_crossed: usize,
}

/// One burst of a repeated burst scenario and the ceiling burst after it.
#[derive(Debug, Clone)]
pub struct BurstRow {
    /// The headline step's p95 (ms).
    pub p95: Option<f64>,
    pub ceiling_p95: Option<f64>,
    /// `coupon_issued`, when the scenario has a coupon.
    pub issued: Option<f64>,
    /// The order answers, when the scenario sells one product (flash-sale).
    pub orders: Option<OrderCounts>,
    pub thresholds_crossed: usize,
    pub k6_exit: Option<i32>,
}

/// How a flash sale's order requests were answered (the script's counters).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrderCounts {
    /// 201: an order (`order_created`).
    pub created: f64,
    /// 409 `out_of_stock` (`order_out_of_stock`).
    pub out_of_stock: f64,
    /// Anything else: 503 `db_busy`, other 4xx/5xx, timeouts (`order_other`).
    pub other: f64,
    /// The 503s among `other` (`order_unavailable`).
    pub unavailable: f64,
}

impl OrderCounts {
    pub fn of(s: &Summary) -> Self {
        Self {
            created: s.count("order_created"),
            out_of_stock: s.count("order_out_of_stock"),
            other: s.count("order_other"),
            unavailable: s.count("order_unavailable"),
        }
    }

    /// `other` as the cell shows it: `57 (57 × 503)`, or `0`.
    fn other_text(&self) -> String {
        if self.other > 0.0 {
            format!("**{}** ({} × 503)", int(self.other), int(self.unavailable))
        } else {
            int(self.other)
        }
    }
}

/// Whether the run passed, and why not.
pub fn verdict(input: &ReportInput<'_>) -> (bool, Vec<String>) {
    let mut why = Vec::new();
    let crossed = input
        .thresholds_crossed
        .max(input.ours.thresholds_crossed());
    if crossed > 0 {
        why.push(format!("{crossed} k6 threshold(s) crossed"));
    }
    let broken: Vec<&RuleResult> = input.rules.iter().filter(|r| r.failed()).collect();
    if !broken.is_empty() {
        why.push(format!("{} rule check(s) failed", broken.len()));
    }
    match input.k6_exit {
        Some(0) | Some(99) => {}
        Some(code) => why.push(format!("k6 exited with {code}")),
        None => why.push("k6 was stopped".to_owned()),
    }
    (why.is_empty(), why)
}

/// `1234.5` -> `1 234.5`; small values keep two decimals.
pub fn num(v: f64) -> String {
    grouped(v, if v.abs() >= 100.0 { 1 } else { 2 })
}

/// A count: `6110.0` -> `6 110`.
pub fn int(v: f64) -> String {
    grouped(v, 0)
}

fn grouped(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "–".to_owned();
    }
    let s = format!("{v:.decimals$}");
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    let (sign, digits) = int.strip_prefix('-').map(|d| ("-", d)).unwrap_or(("", int));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// Every burst beside the ceiling burst that followed it.
fn render_bursts(out: &mut String, input: &ReportInput<'_>) {
    let n = input.bursts.len();
    let _ = writeln!(
        out,
        "\n### Bursts\n\nThe scenario ran {n} times, each burst on fresh data and followed by a ceiling burst \
         (one burst's p95 swings with the scheduling of a shared machine). The rows above are the median \
         burst (by `{}` p95) and the median ceiling; burst 1 is the first after the warm-up, the cold start \
         a real opening meets. The HTML dashboard comes from one more burst after these, outside the \
         figures: feeding it costs k6 CPU mid-burst that the ceiling bursts would not pay.\n",
        input.headline
    );
    let coupon = input.bursts.iter().any(|b| b.issued.is_some());
    let orders = input.bursts.iter().any(|b| b.orders.is_some());
    let _ = writeln!(
        out,
        "| burst | `{}` p95 | ceiling p95 | ratio |{}{} thresholds crossed | k6 exit |",
        input.headline,
        if coupon { " issued |" } else { "" },
        if orders {
            " 201 | 409 out_of_stock | other |"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|{}{}---|---|",
        if coupon { "---|" } else { "" },
        if orders { "---|---|---|" } else { "" }
    );
    for (i, b) in input.bursts.iter().enumerate() {
        let mut issued = match b.issued {
            Some(v) if coupon => format!(" {} |", int(v)),
            _ if coupon => " – |".to_owned(),
            _ => String::new(),
        };
        match b.orders {
            Some(o) => {
                let _ = write!(
                    issued,
                    " {} | {} | {} |",
                    int(o.created),
                    int(o.out_of_stock),
                    o.other_text()
                );
            }
            None if orders => issued.push_str(" – | – | – |"),
            None => {}
        }
        let exit = b
            .k6_exit
            .map(|c| c.to_string())
            .unwrap_or_else(|| "stopped".into());
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |{issued} {} | {exit} |",
            i + 1,
            opt(b.p95),
            opt(b.ceiling_p95),
            ratio(b.p95, b.ceiling_p95),
            b.thresholds_crossed
        );
    }
    // Issue 9's bar for a burst (p95 within 2x of the ceiling burst after it),
    // counted per burst so one lucky median cannot hide the spread.
    let measured: Vec<f64> = input
        .bursts
        .iter()
        .filter_map(|b| match (b.p95, b.ceiling_p95) {
            (Some(a), Some(c)) if c > 0.0 => Some(a / c),
            _ => None,
        })
        .collect();
    if !measured.is_empty() {
        let within = measured.iter().filter(|r| **r <= 2.0).count();
        let _ = writeln!(
            out,
            "\n- bursts within 2× their ceiling: **{within} of {}**",
            measured.len()
        );
    }
    if let Some(line) = other_answers_line(&input.bursts) {
        let _ = writeln!(out, "{line}");
    }
}

/// A flash sale's answers that were neither 201 nor 409 `out_of_stock`,
/// summed over the bursts (None when no burst counted orders).
pub fn other_answers_line(bursts: &[BurstRow]) -> Option<String> {
    let counts: Vec<OrderCounts> = bursts.iter().filter_map(|b| b.orders).collect();
    if counts.is_empty() {
        return None;
    }
    let other: f64 = counts.iter().map(|c| c.other).sum();
    let unavailable: f64 = counts.iter().map(|c| c.unavailable).sum();
    Some(if other > 0.0 {
        format!(
            "- answers neither 201 nor 409 `out_of_stock`: **{} in {} of {}** ({} of them 503) — \
             a buyer told to retry instead of sold or refused",
            int(other),
            counts.iter().filter(|c| c.other > 0.0).count(),
            plural(counts.len(), "burst"),
            int(unavailable)
        )
    } else {
        format!(
            "- answers neither 201 nor 409 `out_of_stock`: **none** in {}",
            plural(counts.len(), "burst")
        )
    })
}

/// `1 burst`, `7 bursts`.
pub fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "–".to_owned())
}

fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{:.2} %", x * 100.0))
        .unwrap_or_else(|| "–".to_owned())
}

fn ratio(ours: Option<f64>, theirs: Option<f64>) -> String {
    match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 && a / b < 0.01 => format!("{:.4}×", a / b),
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".to_owned(),
    }
}

fn share(ours: Option<f64>, of: Option<f64>) -> String {
    match (ours, of) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.1} %", a / b * 100.0),
        _ => "–".to_owned(),
    }
}

fn failed_requests(s: &Summary) -> String {
    match (s.rate("http_req_failed"), s.rate_counts("http_req_failed")) {
        (Some(v), Some((failed, ok))) => {
            format!("{} ({} of {})", pct(Some(v)), failed, failed + ok)
        }
        (Some(v), None) => pct(Some(v)),
        _ => "–".to_owned(),
    }
}

fn checks_passed(s: &Summary) -> String {
    match (s.rate("checks"), s.rate_counts("checks")) {
        (Some(v), Some((passed, failed))) => {
            format!("{} ({} of {})", pct(Some(v)), passed, passed + failed)
        }
        (Some(v), None) => pct(Some(v)),
        _ => "–".to_owned(),
    }
}

fn trend_row(
    out: &mut String,
    label: &str,
    t: &TrendStats,
    seed: Option<(&str, Option<f64>, Option<f64>)>,
) {
    let (seed_name, seed_p50, seed_p95) = seed.unwrap_or(("", None, None));
    let _ = writeln!(
        out,
        "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        t.count.map(int).unwrap_or_else(|| "–".into()),
        opt(t.avg),
        opt(t.p50),
        opt(t.p90),
        opt(t.p95),
        opt(t.p99),
        opt(t.max),
        if seed_name.is_empty() {
            "–".to_owned()
        } else {
            format!("`{seed_name}`")
        },
        opt(seed_p50),
        opt(seed_p95),
        ratio(t.p95, seed_p95),
    );
}

/// The report, section by section.
pub fn render(input: &ReportInput<'_>) -> String {
    let mut out = String::new();
    header(&mut out, input);
    setup(&mut out, input);
    throughput(&mut out, input);
    latency(&mut out, input);
    thresholds(&mut out, input);
    checks_and_counters(&mut out, input);
    rules(&mut out, input);
    seed_run(&mut out, input);
    artifacts(&mut out, input);
    out
}

/// The title, the seed, the command and the verdict.
fn header(out: &mut String, input: &ReportInput<'_>) {
    let (passed, why) = verdict(input);

    let _ = writeln!(out, "# {} — {}\n", input.scenario, input.date);
    let seed_label = if input.seed_no == "-" {
        "No seed".to_owned()
    } else {
        format!("Seed {}", input.seed_no)
    };
    let _ = writeln!(out, "{seed_label}: {}.  ", input.what);
    let _ = writeln!(out, "Run started {}: `{}`\n", input.started, input.command);
    if passed {
        let _ = writeln!(
            out,
            "**Verdict: PASS** — no threshold crossed, no rule broken.\n"
        );
    } else {
        let _ = writeln!(out, "**Verdict: FAIL** — {}.\n", why.join("; "));
    }
}

/// The Setup table.
fn setup(out: &mut String, input: &ReportInput<'_>) {
    let s = &input.setup;
    let _ = writeln!(out, "## Setup\n\n| | |\n|---|---|");
    let _ = writeln!(
        out,
        "| servers | {} × commerce-server (release, {} worker(s) each), {} |",
        s.instances, s.workers, s.balancer
    );
    let _ = writeln!(out, "| server binary | {} |", s.server);
    let _ = writeln!(out, "| server settings | {} |", s.settings);
    let _ = writeln!(
        out,
        "| load | k6 {} on the same machine ({}) |",
        s.k6_version, s.machine
    );
    let _ = writeln!(
        out,
        "| shape | {} (VU ×{}, duration ×{}, think time ×{}) |",
        s.shape, s.vu_scale, s.duration_scale, s.think_scale
    );
    let _ = writeln!(out, "| data | {} |\n", s.data);
}

/// Ours beside the ceiling and the seed: requests/s and the rest.
fn throughput(out: &mut String, input: &ReportInput<'_>) {
    let ours = input.ours;
    let seed = input.seed.as_ref();
    let ceiling = input.ceiling;
    let _ = writeln!(out, "## Throughput\n");
    let _ = writeln!(
        out,
        "| | ours | ceiling (`GET /health/live`, same VU shape) | seed |\n|---|---|---|---|"
    );
    let _ = writeln!(
        out,
        "| requests/s | {} | {} | {} |",
        opt(ours.rate_per_s("http_reqs")),
        opt(ceiling.and_then(|c| c.rate_per_s("http_reqs"))),
        opt(seed.and_then(|f| f.reqs_per_s))
    );
    let _ = writeln!(
        out,
        "| iterations/s | {} | {} | {} |",
        opt(ours.rate_per_s("iterations")),
        opt(ceiling.and_then(|c| c.rate_per_s("iterations"))),
        opt(seed.and_then(|f| f.iterations_per_s))
    );
    let _ = writeln!(
        out,
        "| requests | {} | {} | |",
        int(ours.count("http_reqs")),
        ceiling
            .map(|c| int(c.count("http_reqs")))
            .unwrap_or_else(|| "–".into())
    );
    let _ = writeln!(
        out,
        "| failed requests | {} | {} | {} |",
        failed_requests(ours),
        ceiling.map(failed_requests).unwrap_or_else(|| "–".into()),
        pct(seed.and_then(|f| f.error_rate))
    );
    let _ = writeln!(
        out,
        "| checks passed | {} | {} | {} |",
        checks_passed(ours),
        ceiling.map(checks_passed).unwrap_or_else(|| "–".into()),
        pct(seed.and_then(|f| f.checks))
    );
    let dropped = ours.count("dropped_iterations");
    if dropped > 0.0 {
        let _ = writeln!(out, "| dropped iterations | {} | | |", int(dropped));
    }
    let ours_rps = ours.rate_per_s("http_reqs");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "- ours / ceiling requests/s: **{}**",
        share(ours_rps, ceiling.and_then(|c| c.rate_per_s("http_reqs")))
    );
    let _ = writeln!(
        out,
        "- ours / seed requests/s: **{}**",
        ratio(ours_rps, seed.and_then(|f| f.reqs_per_s))
    );
    let _ = writeln!(
        out,
        "\nThe ceiling runs the same executor and VUs with one `GET /health/live` per iteration and no \
         think time: the most k6, the proxy and the servers push through on this machine at that \
         concurrency. Where the scenario has think time, its requests/s follow the sleeps, not the \
         server: compare latencies, or run again with `--think-scale 0`. Before the scenario, an unmeasured \
         warm-up (one `GET /health/live` per VU at the scenario's peak concurrency, at most 1 000) opens \
         the proxy's upstream connections, so the scenario and the ceiling start from the same state.\n"
    );
}

/// Every step's latency beside the seed's, the bursts, the servers' own figures.
fn latency(out: &mut String, input: &ReportInput<'_>) {
    let ours = input.ours;
    let seed = input.seed.as_ref();
    let ceiling = input.ceiling;
    let _ = writeln!(out, "## Latency per step (ms)\n");
    let _ = writeln!(
        out,
        "| step | count | avg | p50 | p90 | p95 | p99 | max | seed metric | seed p50 | seed p95 | p95 ours / seed |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let seed_for = |name: &str| {
        seed.and_then(|f| f.steps.iter().find(|s| s.ours == name))
            .map(|s| (s.seed, s.p50, s.p95))
    };
    for name in ours.step_trends() {
        if let Some(t) = ours.trend(&name) {
            trend_row(out, &format!("`{name}`"), &t, seed_for(&name));
        }
    }
    if let Some(t) = ours.trend("http_req_duration") {
        trend_row(out, "all requests", &t, seed_for("http_req_duration"));
    }
    if let Some(t) = ceiling.and_then(|c| c.trend("live_duration")) {
        trend_row(out, "ceiling `GET /health/live`", &t, None);
    }
    let headline_p95 = ours.trend(input.headline).and_then(|t| t.p95);
    let ceiling_p95 = ceiling
        .and_then(|c| c.trend("live_duration"))
        .and_then(|t| t.p95);
    if let (Some(h), Some(c)) = (headline_p95, ceiling_p95) {
        let _ = writeln!(
            out,
            "\n- `{}` p95 / ceiling p95: **{}**",
            input.headline,
            ratio(Some(h), Some(c))
        );
    }
    if !input.bursts.is_empty() {
        render_bursts(out, input);
    } else if input.ceiling_p95s.len() > 1 {
        let each: Vec<String> = input.ceiling_p95s.iter().map(|v| num(*v)).collect();
        let _ = writeln!(
            out,
            "- the ceiling was measured {} times (p95 of each: {} ms); the row above is the median run",
            input.ceiling_p95s.len(),
            each.join(", ")
        );
    }
    if let Some(f) = seed {
        let missing: Vec<String> = f
            .steps
            .iter()
            .filter(|s| ours.trend(s.ours).is_none())
            .map(|s| {
                format!(
                    "`{}` (seed `{}`: p50 {}, p95 {})",
                    s.ours,
                    s.seed,
                    opt(s.p50),
                    opt(s.p95)
                )
            })
            .collect();
        if !missing.is_empty() {
            let _ = writeln!(out, "\nNot measured in this run: {}.", missing.join("; "));
        }
    }
    out.push_str(&input.inside);
    out.push_str(&input.prometheus);
    let _ = writeln!(out);
}

/// k6's thresholds and whether they held.
fn thresholds(out: &mut String, input: &ReportInput<'_>) {
    let ours = input.ours;
    let thresholds = ours.thresholds();
    if !thresholds.is_empty() {
        let _ = writeln!(
            out,
            "## Thresholds\n\n| metric | threshold | result |\n|---|---|---|"
        );
        for t in &thresholds {
            let _ = writeln!(
                out,
                "| `{}` | `{}` | {} |",
                t.metric,
                t.expression,
                if t.crossed { "**crossed**" } else { "held" }
            );
        }
        let _ = writeln!(out);
    }
}

/// k6's checks and the scripts' own counters.
fn checks_and_counters(out: &mut String, input: &ReportInput<'_>) {
    let ours = input.ours;
    if !ours.checks.is_empty() {
        let _ = writeln!(
            out,
            "## Checks\n\n| check | passed | failed |\n|---|---|---|"
        );
        for c in &ours.checks {
            let _ = writeln!(out, "| {} | {} | {} |", c.name, c.passes, c.fails);
        }
        let _ = writeln!(out);
    }
    let counters = ours.custom_counters();
    if !counters.is_empty() {
        let _ = writeln!(out, "## Counters\n\n| counter | count |\n|---|---|");
        for (name, count) in counters {
            let _ = writeln!(out, "| `{name}` | {} |", int(count));
        }
        let _ = writeln!(out);
    }
}

/// The rules checked in SQL.
fn rules(out: &mut String, input: &ReportInput<'_>) {
    let _ = writeln!(
        out,
        "## Rules checked in SQL after the run\n\n| rule | DESIGN rule | result |\n|---|---|---|"
    );
    for r in input.rules {
        let result = match &r.outcome {
            Outcome::Held => "held".to_owned(),
            Outcome::Broken { violations, sample } => {
                format!("**BROKEN**: {violations} violation(s): {sample}")
            }
            Outcome::Skipped { missing } => format!("skipped (no table {})", missing.join(", ")),
            Outcome::Error(e) => format!("**ERROR**: {}", e.replace('|', "\\|").replace('\n', " ")),
        };
        let _ = writeln!(out, "| {} | {} | {} |", r.name, r.design_rule, result);
    }
    let _ = writeln!(out);
}

/// The seed's own run and figures.
fn seed_run(out: &mut String, input: &ReportInput<'_>) {
    let seed = input.seed.as_ref();
    if let Some(f) = seed {
        let _ = writeln!(out, "## The seed's run\n");
        let _ = writeln!(out, "- source: {}", f.source);
        let _ = writeln!(out, "- run: {}", f.run);
        if !f.notes.is_empty() {
            let _ = writeln!(out, "- notes: {}", f.notes);
        }
        if !f.steps.is_empty() {
            let _ = writeln!(
                out,
                "\n| seed metric (ms) | compared with | avg | p50 | p90 | p95 | max |\n|---|---|---|---|---|---|---|"
            );
            for st in f.steps {
                let _ = writeln!(
                    out,
                    "| `{}` | `{}` | {} | {} | {} | {} | {} |",
                    st.seed,
                    st.ours,
                    opt(st.avg),
                    opt(st.p50),
                    opt(st.p90),
                    opt(st.p95),
                    opt(st.max)
                );
            }
        }
        let _ = writeln!(out);
    }
}

/// The run's files.
fn artifacts(out: &mut String, input: &ReportInput<'_>) {
    if !input.artifacts.is_empty() {
        let _ = writeln!(out, "## Artifacts (not committed)\n");
        for (what, path) in &input.artifacts {
            let _ = writeln!(out, "- {what}: `{path}`");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds;
    use crate::summary::tests::SAMPLE;

    fn setup() -> Setup {
        Setup {
            server: "target/release/commerce-server".into(),
            instances: 2,
            workers: 1,
            balancer: "behind nginx".into(),
            k6_version: "v1.1.0".into(),
            machine: "2 cores".into(),
            shape: "constant-vus: 100 VUs for 20.4s".into(),
            vu_scale: 1.0,
            duration_scale: 0.17,
            think_scale: 1.0,
            data: "10 000 users".into(),
            settings: settings_text(&[("catalog.detail_cache".into(), "false".into())]),
        }
    }

    /// A report input with nothing but `ours` (no ceiling, seed, rules).
    fn bare<'a>(scenario: &'a str, headline: &'a str, ours: &'a Summary) -> ReportInput<'a> {
        ReportInput {
            scenario,
            seed_no: "000",
            what: "",
            date: String::new(),
            started: String::new(),
            command: String::new(),
            setup: setup(),
            ours,
            ceiling: None,
            seed: None,
            rules: &[],
            k6_exit: Some(0),
            artifacts: vec![],
            inside: String::new(),
            prometheus: String::new(),
            ceiling_p95s: vec![],
            headline,
            bursts: vec![],
            thresholds_crossed: 0,
        }
    }

    const CEILING: &str = r#"{"metrics": {
        "http_reqs": {"count": 200000, "rate": 10000.0},
        "iterations": {"count": 200000, "rate": 10000.0},
        "live_duration": {"avg": 0.9, "min": 0.1, "med": 0.8, "max": 20.0, "p(90)": 1.5, "p(95)": 2.0, "p(99)": 4.0, "count": 200000},
        "http_req_failed": {"passes": 0, "fails": 200000, "value": 0}
    }, "root_group": {"checks": {}}}"#;

    #[test]
    fn renders_ours_beside_ceiling_and_seed() {
        let ours = Summary::parse(SAMPLE).unwrap();
        let ceiling = Summary::parse(CEILING).unwrap();
        let rules = vec![
            RuleResult {
                name: "balance never below zero".into(),
                design_rule: 3,
                outcome: Outcome::Held,
            },
            RuleResult {
                name: "stock never below zero".into(),
                design_rule: 2,
                outcome: Outcome::Skipped {
                    missing: vec!["products".into()],
                },
            },
        ];
        let input = ReportInput {
            scenario: "charge",
            seed_no: "003",
            what: "100 VUs: charge then read balance, 2 min",
            date: "2026-11-22".into(),
            started: "2026-11-22T02:00:00Z".into(),
            command: "cargo run -p loadtest --release -- charge --duration-scale 0.17".into(),
            setup: setup(),
            ours: &ours,
            ceiling: Some(&ceiling),
            seed: seeds::for_scenario("charge"),
            rules: &rules,
            k6_exit: Some(99),
            artifacts: vec![("summary".into(), "loadtests/results/x/summary.json".into())],
            inside: String::new(),
            prometheus: String::new(),
            ceiling_p95s: vec![1.0, 2.0, 3.0],
            headline: "charge_duration",
            bursts: vec![],
            thresholds_crossed: 0,
        };
        let md = render(&input);
        assert!(md.starts_with("# charge — 2026-11-22"));
        // One threshold in SAMPLE is crossed.
        assert!(
            md.contains("**Verdict: FAIL** — 1 k6 threshold(s) crossed"),
            "{md}"
        );
        assert!(
            md.contains("| requests/s | 305.5 | 10 000.0 | 49.60 |"),
            "{md}"
        );
        assert!(
            md.contains("- ours / ceiling requests/s: **3.1 %**"),
            "{md}"
        );
        assert!(md.contains("- ours / seed requests/s: **6.16×**"), "{md}");
        // Step rows with the seed's p50/p95 and the p95 ratio (5.1 / 9.12313).
        assert!(
            md.contains("| `charge_duration` | 3 055 | 3.00 | 2.80 | 4.50 | 5.10 | 11.00 | 30.20 | `charge_response_time` | 7.47 | 9.12 | 0.56× |"),
            "{md}"
        );
        assert!(
            md.contains("| ceiling `GET /health/live` | 200 000 |"),
            "{md}"
        );
        assert!(
            md.contains("- `charge_duration` p95 / ceiling p95: **2.55×**"),
            "{md}"
        );
        assert!(
            md.contains("measured 3 times (p95 of each: 1.00, 2.00, 3.00 ms)"),
            "{md}"
        );
        assert!(
            md.contains("| failed requests | 0.05 % (3 of 6110) |"),
            "{md}"
        );
        assert!(md.contains("| `coupon_issued` | `count<=250` | **crossed** |"));
        assert!(md.contains("| stock never below zero | 2 | skipped (no table products) |"));
        assert!(md.contains("| charge 200 with the new balance | 3054 | 1 |"));
        assert!(md.contains("- source: seed 003"));
        assert!(md.contains("| server settings | `catalog.detail_cache=false` |"));
        assert!(md.contains("`loadtests/results/x/summary.json`"));
    }

    #[test]
    fn verdict_passes_only_when_everything_held() {
        let clean = SAMPLE.replace(r#""count<=250": true"#, r#""count<=250": false"#);
        let ours = Summary::parse(&clean).unwrap();
        let mut input = bare("charge", "charge_duration", &ours);
        assert!(verdict(&input).0);
        assert!(render(&input).contains("**Verdict: PASS**"));
        input.k6_exit = Some(107);
        assert!(!verdict(&input).0);
        let broken = vec![RuleResult {
            name: "x".into(),
            design_rule: 3,
            outcome: Outcome::Broken {
                violations: 2,
                sample: "user 1".into(),
            },
        }];
        input.k6_exit = Some(0);
        input.rules = &broken;
        let (ok, why) = verdict(&input);
        assert!(!ok);
        assert_eq!(why, vec!["1 rule check(s) failed".to_owned()]);
        assert!(render(&input).contains("**BROKEN**: 2 violation(s): user 1"));
        // A threshold another burst crossed fails the run, not only the median's.
        input.rules = &[];
        input.thresholds_crossed = 1;
        assert_eq!(
            verdict(&input).1,
            vec!["1 k6 threshold(s) crossed".to_owned()]
        );
    }

    #[test]
    fn repeated_bursts_are_listed_beside_their_ceilings() {
        let ours = Summary::parse(SAMPLE).unwrap();
        let ceiling = Summary::parse(CEILING).unwrap();
        let row = |p95, c, issued| BurstRow {
            p95: Some(p95),
            ceiling_p95: c,
            issued: Some(issued),
            orders: None,
            thresholds_crossed: 0,
            k6_exit: Some(0),
        };
        let input = ReportInput {
            ceiling: Some(&ceiling),
            ceiling_p95s: vec![30.0, 40.0],
            bursts: vec![
                row(120.0, Some(30.0), 250.0),
                row(60.0, Some(40.0), 250.0),
                row(70.0, None, 249.0),
            ],
            ..bare("coupon-peak", "issue_duration", &ours)
        };
        let md = render(&input);
        assert!(md.contains("The scenario ran 3 times"), "{md}");
        assert!(md.contains("| burst | `issue_duration` p95 | ceiling p95 | ratio | issued | thresholds crossed | k6 exit |"), "{md}");
        assert!(
            md.contains("| 1 | 120.0 | 30.00 | 4.00× | 250 | 0 | 0 |"),
            "{md}"
        );
        assert!(md.contains("| 3 | 70.00 | – | – | 249 | 0 | 0 |"), "{md}");
        assert!(
            md.contains("- bursts within 2× their ceiling: **1 of 2**"),
            "{md}"
        );
        // The per-ceiling line is replaced by the table.
        assert!(!md.contains("the ceiling was measured"), "{md}");
    }

    #[test]
    fn flash_sale_bursts_count_every_answer() {
        let ours = Summary::parse(SAMPLE).unwrap();
        let row = |p95, created, other| BurstRow {
            p95: Some(p95),
            ceiling_p95: Some(300.0),
            issued: None,
            orders: Some(OrderCounts {
                created,
                out_of_stock: 2000.0 - created - other,
                other,
                unavailable: other,
            }),
            thresholds_crossed: usize::from(other > 0.0),
            k6_exit: Some(if other > 0.0 { 99 } else { 0 }),
        };
        let mut input = ReportInput {
            bursts: vec![row(3100.0, 500.0, 57.0), row(450.0, 500.0, 0.0)],
            ..bare("flash-sale", "order_duration", &ours)
        };
        let md = render(&input);
        assert!(md.contains("| burst | `order_duration` p95 | ceiling p95 | ratio | 201 | 409 out_of_stock | other | thresholds crossed | k6 exit |"), "{md}");
        assert!(md.contains("|---|---|---|---|---|---|---|---|---|"), "{md}");
        assert!(
            md.contains(
                "| 1 | 3 100.0 | 300.0 | 10.33× | 500 | 1 443 | **57** (57 × 503) | 1 | 99 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 2 | 450.0 | 300.0 | 1.50× | 500 | 1 500 | 0 | 0 | 0 |"),
            "{md}"
        );
        assert!(
            md.contains("**57 in 1 of 2 bursts** (57 of them 503)"),
            "{md}"
        );
        input.bursts = vec![row(450.0, 500.0, 0.0)];
        assert_eq!(
            other_answers_line(&input.bursts).unwrap(),
            "- answers neither 201 nor 409 `out_of_stock`: **none** in 1 burst"
        );
        assert_eq!(other_answers_line(&[]), None);
    }

    #[test]
    fn order_counts_come_from_the_scripts_counters() {
        let s = Summary::parse(
            r#"{"metrics": {
                "order_created": {"count": 500, "rate": 250.0},
                "order_out_of_stock": {"count": 1443, "rate": 700.0},
                "order_other": {"count": 57, "rate": 20.0},
                "order_unavailable": {"count": 50, "rate": 20.0}
            }, "root_group": {"checks": {}}}"#,
        )
        .unwrap();
        assert_eq!(
            OrderCounts::of(&s),
            OrderCounts {
                created: 500.0,
                out_of_stock: 1443.0,
                other: 57.0,
                unavailable: 50.0
            }
        );
        let none = Summary::parse(r#"{"metrics": {}, "root_group": {"checks": {}}}"#).unwrap();
        assert_eq!(OrderCounts::of(&none).other, 0.0);
    }

    #[test]
    fn numbers() {
        assert_eq!(num(1234567.891), "1 234 567.9");
        assert_eq!(num(12.345), "12.35");
        assert_eq!(num(100.0), "100.0");
        assert_eq!(num(-1234.5), "-1 234.5");
        assert_eq!(num(f64::NAN), "–");
        assert_eq!(int(6110.0), "6 110");
        assert_eq!(int(999.0), "999");
        assert_eq!(ratio(Some(5.0), Some(10.0)), "0.50×");
        assert_eq!(ratio(Some(5.0), None), "–");
        assert_eq!(ratio(Some(1.0), Some(760.0)), "0.0013×");
        assert_eq!(share(Some(1.0), Some(4.0)), "25.0 %");
        assert_eq!(settings_text(&[]), "defaults");
        assert_eq!(
            settings_text(&[("a.b".into(), "1".into()), ("c".into(), "x".into())]),
            "`a.b=1`, `c=x`"
        );
    }
}
