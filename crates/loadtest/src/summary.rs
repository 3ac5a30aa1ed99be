//! Reads k6's `--summary-export` JSON.
//!
//! Trends: `{avg, min, med, max, p(90), p(95), p(99), count}` in ms for time
//! trends; counters: `{count, rate}`; rates: `{passes, fails, value}`;
//! thresholds under each metric as `{"p(95)<500": false}` where `true` means
//! the threshold was crossed. Checks sit in `root_group` (and its groups).

use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TrendStats {
    pub count: Option<f64>,
    pub avg: Option<f64>,
    pub min: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub metric: String,
    pub expression: String,
    pub crossed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    pub passes: u64,
    pub fails: u64,
}

#[derive(Debug, Clone)]
pub struct Summary {
    metrics: BTreeMap<String, Value>,
    pub checks: Vec<Check>,
}

impl Summary {
    pub fn parse(text: &str) -> Result<Self, String> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| format!("summary is not JSON: {e}"))?;
        let metrics = v
            .get("metrics")
            .and_then(Value::as_object)
            .ok_or("summary has no `metrics` object")?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut checks = Vec::new();
        if let Some(root) = v.get("root_group") {
            collect_checks(root, &mut checks);
        }
        Ok(Self { metrics, checks })
    }

    fn metric(&self, name: &str) -> Option<&Value> {
        self.metrics.get(name)
    }

    fn field(&self, name: &str, key: &str) -> Option<f64> {
        self.metric(name)?.get(key)?.as_f64()
    }

    /// A Trend's statistics (None when the metric was never recorded).
    pub fn trend(&self, name: &str) -> Option<TrendStats> {
        let m = self.metric(name)?;
        m.get("avg")?;
        let f = |k: &str| m.get(k).and_then(Value::as_f64);
        Some(TrendStats {
            count: f("count"),
            avg: f("avg"),
            min: f("min"),
            p50: f("med"),
            p90: f("p(90)"),
            p95: f("p(95)"),
            p99: f("p(99)"),
            max: f("max"),
        })
    }

    /// Names of the recorded trends whose name ends with `_duration` and
    /// that are not k6's own `http_req_*` phases: the scenario's steps.
    pub fn step_trends(&self) -> Vec<String> {
        self.metrics
            .iter()
            .filter(|(k, v)| {
                k.ends_with("_duration")
                    && !k.starts_with("http_req")
                    && !k.contains('{')
                    && v.get("avg").is_some()
            })
            .filter(|(k, _)| k.as_str() != "iteration_duration")
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// A Counter's count (0 when never incremented: k6 leaves it out).
    pub fn count(&self, name: &str) -> f64 {
        self.field(name, "count").unwrap_or(0.0)
    }

    /// A Counter's rate per second.
    pub fn rate_per_s(&self, name: &str) -> Option<f64> {
        self.field(name, "rate")
    }

    /// A Rate metric's value (share of true samples).
    pub fn rate(&self, name: &str) -> Option<f64> {
        self.field(name, "value")
    }

    /// A Rate metric's (passes, fails): for `http_req_failed`, passes are failed requests.
    pub fn rate_counts(&self, name: &str) -> Option<(u64, u64)> {
        let p = self.field(name, "passes")?;
        let f = self.field(name, "fails")?;
        Some((p as u64, f as u64))
    }

    /// Counters the script defined (not k6's built-ins).
    pub fn custom_counters(&self) -> Vec<(String, f64)> {
        const BUILTIN: &[&str] = &[
            "http_reqs",
            "iterations",
            "data_sent",
            "data_received",
            "dropped_iterations",
        ];
        self.metrics
            .iter()
            .filter(|(k, v)| {
                !BUILTIN.contains(&k.as_str())
                    && v.get("count").is_some()
                    && v.get("avg").is_none()
                    && !k.contains('{')
            })
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.get("count").and_then(Value::as_f64).unwrap_or(0.0),
                )
            })
            .collect()
    }

    pub fn thresholds(&self) -> Vec<Threshold> {
        let mut out = Vec::new();
        for (metric, v) in &self.metrics {
            if let Some(th) = v.get("thresholds").and_then(Value::as_object) {
                for (expression, crossed) in th {
                    out.push(Threshold {
                        metric: metric.clone(),
                        expression: expression.clone(),
                        crossed: crossed.as_bool().unwrap_or(true),
                    });
                }
            }
        }
        out
    }

    pub fn thresholds_crossed(&self) -> usize {
        self.thresholds().iter().filter(|t| t.crossed).count()
    }
}

fn collect_checks(group: &Value, out: &mut Vec<Check>) {
    if let Some(checks) = group.get("checks").and_then(Value::as_object) {
        for (name, c) in checks {
            out.push(Check {
                name: c
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or(name)
                    .to_owned(),
                passes: c.get("passes").and_then(Value::as_u64).unwrap_or(0),
                fails: c.get("fails").and_then(Value::as_u64).unwrap_or(0),
            });
        }
    }
    if let Some(groups) = group.get("groups").and_then(Value::as_object) {
        for g in groups.values() {
            collect_checks(g, out);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Trimmed from a real k6 v1.1 `--summary-export`.
    pub const SAMPLE: &str = r#"{
      "metrics": {
        "http_reqs": {"count": 6110, "rate": 305.5},
        "iterations": {"count": 3055, "rate": 152.7},
        "http_req_duration": {"avg": 2.1, "min": 0.4, "med": 1.9, "max": 30.2, "p(90)": 3.5, "p(95)": 4.4, "p(99)": 9.9, "count": 6110},
        "charge_duration": {"avg": 3.0, "min": 1.0, "med": 2.8, "max": 30.2, "p(90)": 4.5, "p(95)": 5.1, "p(99)": 11.0, "count": 3055,
                            "thresholds": {"p(95)<9.12": false}},
        "balance_duration": {"avg": 1.2, "min": 0.4, "med": 1.1, "max": 9.0, "p(90)": 1.9, "p(95)": 2.2, "p(99)": 4.0, "count": 3055,
                             "thresholds": {"p(95)<3.30": false}},
        "iteration_duration": {"avg": 4000.0, "min": 3001.0, "med": 4001.0, "max": 5010.0, "p(90)": 4800.0, "p(95)": 4900.0, "p(99)": 5000.0, "count": 3055},
        "http_req_failed": {"passes": 3, "fails": 6107, "value": 0.000491, "thresholds": {"rate<0.01": false}},
        "checks": {"passes": 6109, "fails": 1, "value": 0.99983, "thresholds": {"rate>0.99": false}},
        "coupon_issued": {"count": 250, "rate": 12.5, "thresholds": {"count<=250": true}},
        "vus": {"value": 100, "min": 100, "max": 100}
      },
      "root_group": {
        "name": "", "path": "", "id": "x",
        "groups": {"g": {"name": "g", "checks": {"inner": {"name": "inner", "passes": 1, "fails": 0}}, "groups": {}}},
        "checks": {
          "charge 200 with the new balance": {"name": "charge 200 with the new balance", "passes": 3054, "fails": 1},
          "balance 200 for the caller": {"name": "balance 200 for the caller", "passes": 3055, "fails": 0}
        }
      }
    }"#;

    #[test]
    fn parses_trends_counters_rates() {
        let s = Summary::parse(SAMPLE).unwrap();
        let t = s.trend("charge_duration").unwrap();
        assert_eq!(t.p50, Some(2.8));
        assert_eq!(t.p95, Some(5.1));
        assert_eq!(t.p99, Some(11.0));
        assert_eq!(t.count, Some(3055.0));
        assert!(s.trend("http_reqs").is_none(), "a counter is not a trend");
        assert!(s.trend("nope").is_none());
        assert_eq!(s.count("http_reqs"), 6110.0);
        assert_eq!(s.count("never_incremented"), 0.0);
        assert_eq!(s.rate_per_s("http_reqs"), Some(305.5));
        assert_eq!(s.rate("http_req_failed"), Some(0.000491));
        assert_eq!(s.rate_counts("http_req_failed"), Some((3, 6107)));
    }

    #[test]
    fn finds_steps_counters_thresholds_checks() {
        let s = Summary::parse(SAMPLE).unwrap();
        assert_eq!(
            s.step_trends(),
            vec!["balance_duration".to_owned(), "charge_duration".to_owned()]
        );
        assert_eq!(
            s.custom_counters(),
            vec![("coupon_issued".to_owned(), 250.0)]
        );
        let th = s.thresholds();
        assert_eq!(th.len(), 5);
        assert_eq!(s.thresholds_crossed(), 1);
        assert!(th
            .iter()
            .any(|t| t.metric == "coupon_issued" && t.expression == "count<=250" && t.crossed));
        assert_eq!(s.checks.len(), 3);
        assert!(s
            .checks
            .iter()
            .any(|c| c.name == "charge 200 with the new balance" && c.fails == 1));
        assert!(s.checks.iter().any(|c| c.name == "inner"));
    }

    #[test]
    fn rejects_what_is_not_a_summary() {
        assert!(Summary::parse("nope").is_err());
        assert!(Summary::parse("{}").is_err());
    }
}
