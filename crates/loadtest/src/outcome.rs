//! What a run came to: the median burst and ceiling, every burst's row,
//! the rules checked in SQL, and the exit code they give.

use crate::base::{log, EXIT_ERROR, EXIT_OK, EXIT_RULES, EXIT_THRESHOLDS};
use crate::bursts::Measured;
use crate::report::{BurstRow, OrderCounts};
use crate::rules::{self, RuleResult};
use crate::scenarios::Scenario;
use crate::seeds::SeedFigures;
use crate::setup;
use crate::summary::Summary;
use anyhow::{anyhow, Result};
use std::path::PathBuf;

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

/// The figures of the measured runs.
pub struct Figures {
    /// The median burst (by the headline p95).
    pub ours: Summary,
    /// The median ceiling run.
    pub ceiling: Option<Summary>,
    pub ceiling_p95s: Vec<f64>,
    pub burst_rows: Vec<BurstRow>,
    /// The most k6 thresholds one burst crossed.
    pub thresholds_crossed: usize,
    pub k6_exit: Option<i32>,
}

/// The medians of the measured runs and a row per burst.
pub fn figures(scenario: &Scenario, m: Measured) -> Result<Figures> {
    let need = scenario.data;
    let headline_p95 = |s: &Summary| {
        s.trend(scenario.headline)
            .or_else(|| s.trend("http_req_duration"))
            .and_then(|t| t.p95)
    };
    let live_p95 = |s: &Summary| s.trend("live_duration").and_then(|t| t.p95);
    let Measured {
        runs,
        ceilings: measured,
        dashboard_run,
        ..
    } = m;
    let burst_rows: Vec<BurstRow> = runs
        .iter()
        .enumerate()
        .map(|(i, (s, code))| BurstRow {
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
    Ok(Figures {
        ours,
        ceiling,
        ceiling_p95s,
        burst_rows,
        thresholds_crossed,
        k6_exit,
    })
}

/// The rules, on a fresh connection (an idle one may have been cut during
/// the run); a failed connection is every rule's error.
pub async fn check_rules(db_url: &str) -> Vec<RuleResult> {
    let rule_results = match setup::connect(db_url).await {
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
    rule_results
}

/// A broken rule first, then a crossed threshold, then k6's own failure.
pub fn exit_code(rules: &[RuleResult], thresholds_crossed: usize, k6_exit: Option<i32>) -> u8 {
    if rules.iter().any(|r| r.failed()) {
        EXIT_RULES
    } else if thresholds_crossed > 0 {
        EXIT_THRESHOLDS
    } else if !matches!(k6_exit, Some(0) | Some(99)) {
        EXIT_ERROR
    } else {
        EXIT_OK
    }
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
    use super::median_by;

    #[test]
    fn median_run_is_the_middle_one() {
        assert_eq!(median_by(vec![149.0, 33.0, 66.0], |v| *v), Some(66.0));
        assert_eq!(median_by(vec![2.0, 1.0], |v| *v), Some(2.0));
        assert_eq!(median_by(Vec::<f64>::new(), |v| *v), None);
    }
}
