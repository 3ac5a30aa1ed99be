//! `loadtest all`'s summary: each entry's row, the exit code of the whole,
//! and the table of `loadtests/reports/all-<date>.md`.

use crate::all_plan::Entry;
use crate::base::{EXIT_OK, EXIT_RULES, EXIT_THRESHOLDS};
use crate::outcome::RunOutcome;
use crate::report::{int, num, OrderCounts};
use crate::scenarios::Scenario;
use std::fmt::Write as _;

pub enum RowResult {
    /// The run returned (exit 0, 3, 4 or 5; 1 when k6 itself failed).
    Done {
        exit: u8,
        outcome: Option<Box<RunOutcome>>,
    },
    /// The run stopped on an error (exit 1).
    Error(String),
    /// Ctrl-C came first.
    NotRun,
}

pub struct Row {
    pub entry: Entry,
    pub result: RowResult,
}

/// 5 if a rule broke, else 1 if an entry failed to run, else 4 if a
/// threshold was crossed, else 0.
pub fn exit_code(rows: &[Row]) -> u8 {
    let (mut rules, mut error, mut thresholds) = (false, false, false);
    for r in rows {
        match &r.result {
            RowResult::Done { exit, .. } => match *exit {
                EXIT_OK => {}
                EXIT_RULES => rules = true,
                EXIT_THRESHOLDS => thresholds = true,
                _ => error = true,
            },
            RowResult::Error(_) => error = true,
            RowResult::NotRun => {}
        }
    }
    if rules {
        EXIT_RULES
    } else if error {
        crate::base::EXIT_ERROR
    } else if thresholds {
        EXIT_THRESHOLDS
    } else {
        EXIT_OK
    }
}

/// `all-<date>.md` or `all-<label>-<date>.md`.
pub fn file_name(label: Option<&str>, date: &str) -> String {
    match label {
        Some(l) => format!("all-{l}-{date}.md"),
        None => format!("all-{date}.md"),
    }
}

const DASH: &str = "–";

/// A markdown cell: no pipes, no line breaks, bounded.
fn cell(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    let mut s: String = line.chars().take(200).collect();
    if line.chars().count() > 200 {
        s.push('…');
    }
    s.replace('|', "\\|")
}

/// `3.1×` under 10, `38×` above (ratios across machines are rough).
fn times(x: f64) -> String {
    if x >= 10.0 {
        format!("{}×", int(x))
    } else {
        format!("{x:.1}×")
    }
}

fn ms(v: Option<f64>) -> String {
    v.map(|x| format!("{} ms", num(x)))
        .unwrap_or_else(|| DASH.to_owned())
}

fn rps(v: Option<f64>) -> String {
    v.map(|x| format!("{} req/s", num(x)))
        .unwrap_or_else(|| DASH.to_owned())
}

/// The figures of one finished row.
struct Figures {
    seed_rps: Option<f64>,
    /// The seed step compared: (our metric it matches, its p95).
    seed_step: Option<(&'static str, f64)>,
    ceiling_rps: Option<f64>,
    ceiling_p95: Option<f64>,
    ours_rps: Option<f64>,
    ours_p95: Option<f64>,
    /// Our p95 of the seed step's metric.
    ours_p95_vs_seed: Option<f64>,
}

impl Figures {
    fn of(o: &RunOutcome, headline: &str) -> Self {
        let steps = o.seed.map(|f| f.steps).unwrap_or(&[]);
        let with_p95 = |name: &str| {
            steps
                .iter()
                .find(|s| s.ours == name)
                .and_then(|s| s.p95.map(|p| (s.ours, p)))
        };
        let seed_step = with_p95(headline).or_else(|| with_p95("http_req_duration"));
        let p95 = |name: &str| o.ours.trend(name).and_then(|t| t.p95);
        Self {
            seed_rps: o.seed.and_then(|f| f.reqs_per_s),
            seed_step,
            ceiling_rps: o.ceiling.as_ref().and_then(|c| c.rate_per_s("http_reqs")),
            ceiling_p95: o
                .ceiling
                .as_ref()
                .and_then(|c| c.trend("live_duration"))
                .and_then(|t| t.p95),
            ours_rps: o.ours.rate_per_s("http_reqs"),
            ours_p95: p95(headline),
            ours_p95_vs_seed: seed_step.and_then(|(name, _)| p95(name)),
        }
    }

    fn seed(&self, headline: &str) -> String {
        let mut parts = Vec::new();
        if self.seed_rps.is_some() {
            parts.push(rps(self.seed_rps));
        }
        if let Some((name, p95)) = self.seed_step {
            let mut s = format!("p95 {}", ms(Some(p95)));
            if name != headline {
                s.push_str(" (all requests)");
            }
            parts.push(s);
        }
        if parts.is_empty() {
            DASH.to_owned()
        } else {
            parts.join(", ")
        }
    }

    fn ceiling(&self) -> String {
        if self.ceiling_rps.is_none() && self.ceiling_p95.is_none() {
            return DASH.to_owned();
        }
        format!("{}, p95 {}", rps(self.ceiling_rps), ms(self.ceiling_p95))
    }

    fn ours(&self, headline: &str) -> String {
        format!(
            "{}, `{headline}` p95 {}",
            rps(self.ours_rps),
            ms(self.ours_p95)
        )
    }

    fn vs_ceiling(&self) -> String {
        let share = match (self.ours_rps, self.ceiling_rps) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.1} %", a / b * 100.0),
            _ => DASH.to_owned(),
        };
        let slower = match (self.ours_p95, self.ceiling_p95) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.1}×", a / b),
            _ => DASH.to_owned(),
        };
        if share == DASH && slower == DASH {
            return DASH.to_owned();
        }
        format!("{share}, p95 {slower}")
    }

    fn vs_seed(&self) -> String {
        let mut parts = Vec::new();
        if let (Some((_, seed)), Some(ours)) = (self.seed_step, self.ours_p95_vs_seed) {
            if ours > 0.0 && seed > 0.0 {
                parts.push(if seed >= ours {
                    format!("{} faster", times(seed / ours))
                } else {
                    format!("{} slower", times(ours / seed))
                });
            }
        }
        if let (Some(ours), Some(seed)) = (self.ours_rps, self.seed_rps) {
            if seed > 0.0 {
                parts.push(format!("req/s {:.2}×", ours / seed));
            }
        }
        if parts.is_empty() {
            DASH.to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// Rules, the counters that matter for the scenario, thresholds.
fn outcome_parts(scenario: &Scenario, o: &RunOutcome) -> Vec<String> {
    let mut parts = Vec::new();
    let broken: Vec<String> = o
        .rules
        .iter()
        .filter(|r| r.failed())
        .map(|r| match r.outcome {
            crate::rules::Outcome::Error(_) => format!("{} (query error)", r.name),
            _ => r.name.clone(),
        })
        .collect();
    if broken.is_empty() {
        parts.push("rules held".to_owned());
    } else {
        parts.push(format!("**broken**: {}", broken.join("; ")));
    }
    let ours = &o.ours;
    if let Some(q) = o.coupon_quantity {
        let each: Vec<String> = o.issued_per_burst.iter().map(|v| int(*v)).collect();
        let q = int(q as f64);
        parts.push(match each.len() {
            0 | 1 => format!("{}/{q} issued", int(ours.count("coupon_issued"))),
            n if each.iter().all(|e| *e == each[0]) => {
                format!("{}/{q} issued in each of {n} bursts", each[0])
            }
            n => format!("{} of {q} issued in the {n} bursts", each.join(", ")),
        });
    }
    if scenario.data.contention_products {
        parts.push(format!(
            "{} won / {} lost",
            int(ours.count("order_won")),
            int(ours.count("order_lost"))
        ));
    }
    if let (Some(stock), Some(units)) = (scenario.data.sale_product, o.sale_units) {
        parts.push(sale_outcome(stock.sells_out(), units, o));
    }
    if scenario.is_flow() {
        parts.push(format!(
            "{} flows completed",
            int(ours.count("flow_completed"))
        ));
    }
    match o.thresholds_crossed.max(ours.thresholds_crossed()) {
        0 => parts.push("thresholds held".to_owned()),
        n => parts.push(format!("**{n} threshold(s) crossed**")),
    }
    match o.k6_exit {
        Some(0) | Some(99) => {}
        Some(code) => parts.push(format!("k6 exit {code}")),
        None => parts.push("k6 stopped".to_owned()),
    }
    parts
}

/// A flash sale's orders: sold of the units, 409 out_of_stock and other
/// answers, per burst when the scenario ran several; or, for a sale that
/// does not sell out (flash-sale-pay), orders paid and dropped iterations.
fn sale_outcome(sells_out: bool, units: u64, o: &RunOutcome) -> String {
    let ours = &o.ours;
    let u = int(units as f64);
    if !sells_out {
        let dropped = ours.count("dropped_iterations");
        return format!(
            "{} orders paid; {} dropped iteration(s)",
            int(ours.count("order_paid")),
            int(dropped)
        );
    }
    let counts: Vec<OrderCounts> = if o.orders_per_burst.is_empty() {
        vec![OrderCounts::of(ours)]
    } else {
        o.orders_per_burst.clone()
    };
    let other: f64 = counts.iter().map(|c| c.other).sum();
    let other_text = if other > 0.0 {
        format!("**{} other answers** (not 201 / 409)", int(other))
    } else {
        "no other answers".to_owned()
    };
    let first = counts[0];
    if counts.len() > 1 && counts.iter().all(|c| c.created == first.created) {
        return format!(
            "{}/{u} sold in each of {} bursts; {other_text}",
            int(first.created),
            counts.len()
        );
    }
    let each: Vec<String> = counts.iter().map(|c| int(c.created)).collect();
    format!("{} of {u} sold; {other_text}", each.join(", "))
}

fn row_line(row: &Row) -> String {
    let s = row.entry.scenario;
    let headline = s.headline;
    let (label, settings) = match &row.result {
        RowResult::Done {
            outcome: Some(o), ..
        } => (o.label.clone(), o.settings.clone()),
        _ => (
            row.entry.label.map(str::to_owned),
            row.entry.settings.clone(),
        ),
    };
    let mut name = s.name.to_owned();
    if let Some(l) = &label {
        name.push(' ');
        name.push_str(l);
    }
    let mut scenario = match &row.result {
        RowResult::Done {
            outcome: Some(o), ..
        } => match o.report.file_name() {
            // The per-run reports sit beside the table's file.
            Some(f) => format!("[{name}]({})", f.to_string_lossy()),
            None => name,
        },
        _ => name,
    };
    if !settings.is_empty() {
        let list: Vec<String> = settings.iter().map(|(k, v)| format!("`{k}={v}`")).collect();
        let _ = write!(scenario, " ({})", list.join(", "));
    }
    let cells: [String; 6] = match &row.result {
        RowResult::Done {
            exit,
            outcome: Some(o),
        } => {
            let f = Figures::of(o, headline);
            let mut parts = outcome_parts(s, o);
            if *exit != EXIT_OK {
                parts.push(format!("exit {exit}"));
            }
            [
                f.seed(headline),
                f.ceiling(),
                f.ours(headline),
                f.vs_ceiling(),
                f.vs_seed(),
                parts.join("; "),
            ]
        }
        RowResult::Done {
            exit,
            outcome: None,
        } => {
            let why = if *exit == crate::base::EXIT_UNAVAILABLE {
                "not available: the server lacks its routes"
            } else {
                "no figures"
            };
            blank(format!("{why}; exit {exit}"))
        }
        RowResult::Error(e) => blank(format!("**error**: {}; exit 1", cell(e))),
        RowResult::NotRun => blank("not run (stopped)".to_owned()),
    };
    format!("| {scenario} | {} |", cells.join(" | "))
}

fn blank(outcome: String) -> [String; 6] {
    [
        DASH.to_owned(),
        DASH.to_owned(),
        DASH.to_owned(),
        DASH.to_owned(),
        DASH.to_owned(),
        outcome,
    ]
}

/// The markdown table, one row per entry.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | seed | ceiling | ours | ours / ceiling | ours vs seed | outcome |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&row_line(r));
        out.push('\n');
    }
    out
}

const LEGEND: &str = "\
- **scenario**: the entry, linked to its own report (setup, every step, thresholds, checks, \
rules, the seed's figures); its label and `--set` settings when it has them. `product-detail \
nocache` is issue 5's baseline: the same run with `catalog.detail_cache=false`.
- **seed**: the seed report's requests/s and its p95 of the scenario's headline step; \
\"(all requests)\" when the seed gives only `http_req_duration`; – when the seed has no such figure.
- **ceiling**: the same run's `GET /health/live` with the scenario's VU shape and no think time: \
requests/s and `live_duration` p95, the most k6, nginx and the servers push through this machine \
at that concurrency.
- **ours**: requests/s and the p95 of the headline Trend, the scenario's main step \
(`http_req_duration` for the 001 flows).
- **ours / ceiling**: our requests/s as a share of the ceiling's, and our headline p95 ÷ the \
ceiling's p95 (how many times a trivial endpoint's latency). Scenarios with think time are paced \
by their sleeps, not the server: their share is low by design.
- **ours vs seed**: the seed's p95 ÷ ours (of the metric the seed figure is), as N× faster or \
slower, and our requests/s ÷ the seed's when it gives them. The seeds ran on other machines, some \
with other shapes (product-detail: 100 VUs for 20 s against the seed's 100 × 1 000 iterations): \
read it as an order of magnitude.
- **outcome**: the SQL rules (held, or the broken ones), the counters that matter (coupons issued \
of the coupon's units, contention's won / lost orders, completed flows), whether a k6 threshold \
was crossed, and the entry's exit code when not 0 (3 not available, 4 thresholds, 5 rules, \
1 error).";

/// What the table's file says around the table.
pub struct Meta {
    pub date: String,
    pub started: String,
    pub finished: String,
    pub minutes: f64,
    pub command: String,
    pub server: Option<String>,
    pub exit: u8,
    pub stopped: bool,
}

/// The whole `all-<date>.md`.
pub fn render(rows: &[Row], meta: &Meta) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# All scenarios — {}\n", meta.date);
    let _ = writeln!(
        out,
        "Started {}, finished {} ({:.0} min); entries: {}{}.  ",
        meta.started,
        meta.finished,
        meta.minutes,
        rows.len(),
        if meta.stopped {
            "; stopped by a signal"
        } else {
            ""
        }
    );
    if let Some(server) = &meta.server {
        let _ = writeln!(out, "Server binary (the same for every entry): {server}.");
    }
    let _ = writeln!(out, "\n{}", table(rows));
    let _ = writeln!(out, "{LEGEND}\n");
    let _ = writeln!(out, "Command: `{}`  ", meta.command);
    let _ = writeln!(
        out,
        "Exit code {}{}.",
        meta.exit,
        match meta.exit {
            EXIT_OK => " (every entry passed)",
            EXIT_RULES => " (a rule broke)",
            EXIT_THRESHOLDS => " (a k6 threshold was crossed)",
            130 => " (stopped)",
            _ => " (an entry failed to run)",
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Outcome, RuleResult};
    use crate::scenarios::find;
    use crate::seeds;
    use crate::summary::Summary;
    use std::path::PathBuf;

    fn summary(text: &str) -> Summary {
        Summary::parse(text).unwrap()
    }

    const CEILING: &str = r#"{"metrics": {
        "http_reqs": {"count": 200000, "rate": 10000.0},
        "live_duration": {"avg": 0.9, "min": 0.1, "med": 0.8, "max": 20.0, "p(90)": 1.5, "p(95)": 2.0, "p(99)": 4.0, "count": 200000}
    }}"#;

    const PRODUCT: &str = r#"{"metrics": {
        "http_reqs": {"count": 100000, "rate": 5000.0},
        "http_req_duration": {"avg": 3.0, "min": 0.2, "med": 2.0, "max": 90.0, "p(90)": 5.0, "p(95)": 6.0, "p(99)": 12.0, "count": 100000},
        "product_duration": {"avg": 3.0, "min": 0.2, "med": 2.0, "max": 90.0, "p(90)": 5.0, "p(95)": 6.14, "p(99)": 12.0, "count": 100000,
                             "thresholds": {"p(95)<18.42": false}}
    }}"#;

    const COUPON: &str = r#"{"metrics": {
        "http_reqs": {"count": 1000, "rate": 80.0},
        "http_req_duration": {"avg": 30.0, "min": 1.0, "med": 20.0, "max": 900.0, "p(90)": 80.0, "p(95)": 90.0, "p(99)": 300.0, "count": 1000},
        "issue_duration": {"avg": 40.0, "min": 1.0, "med": 30.0, "max": 900.0, "p(90)": 100.0, "p(95)": 120.0, "p(99)": 300.0, "count": 500,
                           "thresholds": {"p(95)<500": true}},
        "coupon_issued": {"count": 250, "rate": 20.0}
    }}"#;

    fn held() -> Vec<RuleResult> {
        vec![RuleResult {
            name: "stock never below zero".into(),
            design_rule: 2,
            outcome: Outcome::Held,
        }]
    }

    fn outcome(
        scenario: &str,
        ours: &str,
        label: Option<&str>,
        settings: &[(&str, &str)],
    ) -> Box<RunOutcome> {
        let file = match label {
            Some(l) => format!("{scenario}-{l}-2026-11-22.md"),
            None => format!("{scenario}-2026-11-22.md"),
        };
        Box::new(RunOutcome {
            ours: summary(ours),
            ceiling: Some(summary(CEILING)),
            seed: seeds::for_scenario(scenario),
            rules: held(),
            report: PathBuf::from("/repo/loadtests/reports").join(file),
            label: label.map(str::to_owned),
            settings: settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            coupon_quantity: None,
            k6_exit: Some(0),
            thresholds_crossed: 0,
            issued_per_burst: vec![],
            sale_units: None,
            orders_per_burst: vec![],
        })
    }

    use crate::all_plan::test_entry as entry;

    #[test]
    fn a_product_row_sets_ours_beside_ceiling_and_seed() {
        let rows = vec![
            Row {
                entry: entry("product-detail", None),
                result: RowResult::Done {
                    exit: 0,
                    outcome: Some(outcome("product-detail", PRODUCT, None, &[])),
                },
            },
            Row {
                entry: entry("product-detail", Some("nocache")),
                result: RowResult::Done {
                    exit: 0,
                    outcome: Some(outcome(
                        "product-detail",
                        PRODUCT,
                        Some("nocache"),
                        &[("catalog.detail_cache", "false")],
                    )),
                },
            },
        ];
        let t = table(&rows);
        // 5 000 / 10 000 req/s = 50 %; 6.14 / 2.0 = 3.1×; 18.42 / 6.14 = 3.0× faster;
        // 5 000 / 17 506.4 = 0.29.
        assert!(
            t.contains(
                "| [product-detail](product-detail-2026-11-22.md) \
                 | 17 506.4 req/s, p95 18.42 ms \
                 | 10 000.0 req/s, p95 2.00 ms \
                 | 5 000.0 req/s, `product_duration` p95 6.14 ms \
                 | 50.0 %, p95 3.1× \
                 | 3.0× faster, req/s 0.29× \
                 | rules held; thresholds held |"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "| [product-detail nocache](product-detail-nocache-2026-11-22.md) \
                 (`catalog.detail_cache=false`) |"
            ),
            "{t}"
        );
        assert_eq!(exit_code(&rows), 0);
    }

    #[test]
    fn repeated_bursts_show_every_bursts_issued_count() {
        let parts = |issued: Vec<f64>| {
            let mut o = outcome("coupon-peak", COUPON, None, &[]);
            o.coupon_quantity = Some(250);
            o.issued_per_burst = issued;
            outcome_parts(find("coupon-peak").unwrap(), &o).join("; ")
        };
        assert!(parts(vec![250.0; 5]).contains("250/250 issued in each of 5 bursts"));
        assert!(parts(vec![250.0, 249.0]).contains("250, 249 of 250 issued in the 2 bursts"));
    }

    #[test]
    fn a_coupon_row_counts_issued_and_falls_back_to_all_requests() {
        let mut o = outcome("coupon-peak", COUPON, None, &[]);
        o.coupon_quantity = Some(250);
        let rows = vec![Row {
            entry: entry("coupon-peak", None),
            result: RowResult::Done {
                exit: 4,
                outcome: Some(o),
            },
        }];
        let t = table(&rows);
        // The seed gives only http_req_duration (p95 45 s): compared with our
        // http_req_duration p95 (90 ms), 500× faster.
        assert!(t.contains("| p95 45 000.0 ms (all requests) |"), "{t}");
        assert!(
            t.contains("| 80.00 req/s, `issue_duration` p95 120.0 ms |"),
            "{t}"
        );
        assert!(t.contains("| 500× faster |"), "{t}");
        assert!(
            t.contains("| rules held; 250/250 issued; **1 threshold(s) crossed**; exit 4 |"),
            "{t}"
        );
        assert_eq!(exit_code(&rows), 4);
    }

    #[test]
    fn failures_fill_the_outcome_and_set_the_exit_code() {
        let mut broken = outcome("charge", PRODUCT, None, &[]);
        broken.rules.push(RuleResult {
            name: "balance never below zero".into(),
            design_rule: 3,
            outcome: Outcome::Broken {
                violations: 1,
                sample: "1=-5".into(),
            },
        });
        broken.ceiling = None;
        broken.seed = None;
        let rows = vec![
            Row {
                entry: entry("charge", None),
                result: RowResult::Done {
                    exit: 5,
                    outcome: Some(broken),
                },
            },
            Row {
                entry: entry("contention", None),
                result: RowResult::Error("k6 wrote no summary | exit 107\nmore".into()),
            },
            Row {
                entry: entry("queue-poll", None),
                result: RowResult::Done {
                    exit: 3,
                    outcome: None,
                },
            },
            Row {
                entry: entry("order", None),
                result: RowResult::NotRun,
            },
        ];
        let t = table(&rows);
        assert!(
            t.contains(
                "| [charge](charge-2026-11-22.md) | – | – | 5 000.0 req/s, `charge_duration` p95 – \
                 | – | – | **broken**: balance never below zero; thresholds held; exit 5 |"
            ),
            "{t}"
        );
        assert!(
            t.contains("| contention | – | – | – | – | – | **error**: k6 wrote no summary \\| exit 107; exit 1 |"),
            "{t}"
        );
        assert!(t.contains("not available: the server lacks its routes; exit 3"));
        assert!(t.contains("| order | – | – | – | – | – | not run (stopped) |"));
        assert_eq!(exit_code(&rows), 5);
        assert_eq!(exit_code(&rows[1..]), 1);
        assert_eq!(exit_code(&rows[2..]), 1);
        assert_eq!(exit_code(&rows[3..]), 0);
    }

    #[test]
    fn flows_and_contention_show_their_counters() {
        const FLOW: &str = r#"{"metrics": {
            "http_reqs": {"count": 6000, "rate": 120.0},
            "http_req_duration": {"avg": 5.0, "min": 1.0, "med": 4.0, "max": 90.0, "p(90)": 9.0, "p(95)": 12.0, "p(99)": 40.0, "count": 6000},
            "flow_completed": {"count": 1189, "rate": 24.0}
        }}"#;
        const RACE: &str = r#"{"metrics": {
            "http_reqs": {"count": 2500, "rate": 300.0},
            "order_duration": {"avg": 50.0, "min": 1.0, "med": 40.0, "max": 900.0, "p(90)": 90.0, "p(95)": 100.0, "p(99)": 300.0, "count": 1000},
            "order_won": {"count": 500, "rate": 60.0},
            "order_lost": {"count": 500, "rate": 60.0}
        }}"#;
        let rows = vec![
            Row {
                entry: entry("flow-load", None),
                result: RowResult::Done {
                    exit: 0,
                    outcome: Some(outcome("flow-load", FLOW, None, &[])),
                },
            },
            Row {
                entry: entry("contention", None),
                result: RowResult::Done {
                    exit: 0,
                    outcome: Some(outcome("contention", RACE, None, &[])),
                },
            },
        ];
        let t = table(&rows);
        assert!(
            t.contains("rules held; 1 189 flows completed; thresholds held |"),
            "{t}"
        );
        // 16.07 / 12 = 1.3× faster; 120 / 122.16 req/s.
        assert!(t.contains("| 1.3× faster, req/s 0.98× |"), "{t}");
        assert!(
            t.contains("rules held; 500 won / 500 lost; thresholds held |"),
            "{t}"
        );
        // 2 009.8 ms / 100 ms.
        assert!(t.contains("| 20× faster, req/s 0.79× |"), "{t}");
    }

    #[test]
    fn flash_sales_show_sold_units_other_answers_and_dropped_iterations() {
        const SALE: &str = r#"{"metrics": {
            "http_reqs": {"count": 2000, "rate": 500.0},
            "order_duration": {"avg": 900.0, "min": 1.0, "med": 800.0, "max": 9000.0, "p(90)": 2500.0, "p(95)": 3100.0, "p(99)": 6000.0, "count": 2000,
                               "thresholds": {"p(95)<500": true}},
            "order_created": {"count": 500, "rate": 100.0},
            "order_out_of_stock": {"count": 1443, "rate": 300.0},
            "order_other": {"count": 57, "rate": 10.0}
        }}"#;
        const PAY: &str = r#"{"metrics": {
            "http_reqs": {"count": 10800, "rate": 540.0},
            "order_duration": {"avg": 900.0, "min": 1.0, "med": 800.0, "max": 9000.0, "p(90)": 2500.0, "p(95)": 3100.0, "p(99)": 6000.0, "count": 5400},
            "order_paid": {"count": 5400, "rate": 270.0},
            "dropped_iterations": {"count": 600, "rate": 30.0}
        }}"#;
        let counts = |created, other| OrderCounts {
            created,
            out_of_stock: 2000.0 - created - other,
            other,
            unavailable: other,
        };
        let mut sale = outcome("flash-sale", SALE, None, &[]);
        sale.sale_units = Some(500);
        sale.thresholds_crossed = 2;
        sale.orders_per_burst = vec![counts(500.0, 57.0), counts(500.0, 0.0), counts(500.0, 61.0)];
        let mut uneven = outcome("flash-sale", SALE, None, &[]);
        uneven.sale_units = Some(500);
        uneven.orders_per_burst = vec![counts(500.0, 0.0), counts(499.0, 0.0)];
        let mut pay = outcome("flash-sale-pay", PAY, None, &[]);
        pay.sale_units = Some(10_000);
        let done = |name: &str, o| Row {
            entry: entry(name, None),
            result: RowResult::Done {
                exit: 4,
                outcome: Some(o),
            },
        };
        let rows = vec![
            done("flash-sale", sale),
            done("flash-sale", uneven),
            done("flash-sale-pay", pay),
        ];
        let t = table(&rows);
        assert!(
            t.contains("rules held; 500/500 sold in each of 3 bursts; **118 other answers** (not 201 / 409); **2 threshold(s) crossed**; exit 4 |"),
            "{t}"
        );
        assert!(
            t.contains("rules held; 500, 499 of 500 sold; no other answers;"),
            "{t}"
        );
        assert!(
            t.contains("rules held; 5 400 orders paid; 600 dropped iteration(s);"),
            "{t}"
        );
        // 3 100 ms over the ceiling's 2 ms.
        assert!(t.contains("`order_duration` p95 3 100.0 ms"), "{t}");
    }

    #[test]
    fn the_file_has_table_legend_and_command() {
        let rows = vec![Row {
            entry: entry("order", None),
            result: RowResult::NotRun,
        }];
        let md = render(
            &rows,
            &Meta {
                date: "2026-11-22".into(),
                started: "2026-11-22T02:00:00Z".into(),
                finished: "2026-11-22T03:00:00Z".into(),
                minutes: 60.0,
                command: "cargo run -p loadtest --release -- all --quick".into(),
                server: Some("`target/release/commerce-server`".into()),
                exit: 130,
                stopped: true,
            },
        );
        assert!(md.starts_with("# All scenarios — 2026-11-22"));
        assert!(md.contains("entries: 1; stopped by a signal"));
        assert!(md.contains(
            "| scenario | seed | ceiling | ours | ours / ceiling | ours vs seed | outcome |"
        ));
        assert!(md.contains("- **ours vs seed**:"));
        assert!(md.contains("Command: `cargo run -p loadtest --release -- all --quick`"));
        assert!(md.contains("Exit code 130 (stopped)."));
        assert_eq!(file_name(None, "2026-11-22"), "all-2026-11-22.md");
        assert_eq!(file_name(Some("x"), "2026-11-22"), "all-x-2026-11-22.md");
    }
}
